"""Shared fixtures.

TensorFlow and this CUDA build of PyTorch crash when torch._dynamo starts after
TF is loaded in one process.  Tests that need one framework import it in this
pytest process, so torch and torch._dynamo are imported here, first, which is
the order that works.  Tests that compare the frameworks never rely on it: they
run each framework in its own worker process (resnet_port.parity).
"""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (make test): two test processes share the cores.  One compute thread per process,
    # for them and every process they start: with two threads each, PyTorch's and oneDNN's threads
    # spin-wait on cores the other process holds (measured: a 12 s test took 150 s).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(var, "1")

try:  # import order matters; see the docstring
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
except ImportError:  # the torch extra is not installed: torch tests fail on import, loudly
    pass

import numpy as np
import pytest

# -- fork servers -------------------------------------------------------------------------------
# Every worker process and framework CLI the tests start would import its framework afresh (~5 s of CPU
# for TensorFlow, ~4 s for torch, a few hundred times).  Each test process starts one fork server per
# framework (resnet_port.forkserver): the jobs are forked from it, each as a fresh `python -m` with the
# caller's environment, and fall back to a fresh process whenever the environment differs.
# RESNET_PORT_FORKSERVER=0 turns them off.
_SERVERS: list = []


def pytest_configure(config):
    import subprocess
    import sys
    import tempfile

    from resnet_port import forkserver

    if os.environ.get(forkserver.VARIABLE) == "0":
        os.environ.pop(forkserver.VARIABLE)
        return
    distributed = getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER")
    if distributed or os.environ.get(forkserver.VARIABLE):  # the test processes start their own
        return
    folder = tempfile.mkdtemp(prefix="rp-fork-")
    for framework in forkserver.PRELOAD:
        _SERVERS.append(
            subprocess.Popen(
                [sys.executable, "-m", "resnet_port.forkserver", folder, framework],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(folder, f"{framework}.log"), "w"),
                start_new_session=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
            )
        )
    os.environ[forkserver.VARIABLE] = folder
    _SERVERS.append(folder)


def pytest_unconfigure(config):
    for server in _SERVERS:
        if isinstance(server, str):
            shutil.rmtree(server, ignore_errors=True)
        else:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)


# -- disk ----------------------------------------------------------------------------------------
# The modules' fixtures write layer outputs of whole ResNets (a zoo module alone ~5 GB): kept until the
# session ends, a run wrote 16 GB and filled a CI disk.  So a module's folders go when its tests are done
# (a function's `tmp_path` goes when its test passes: tmp_path_retention_policy in pyproject.toml), except
# where a test of the module failed, or RESNET_PORT_KEEP_TMP=1 asks to keep them.
_FAILED_MODULES: set = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _FAILED_MODULES.add(item.path)
    return report


@pytest.fixture(scope="module", autouse=True)
def _module_folders_released(request, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    if request.path in _FAILED_MODULES or os.environ.get("RESNET_PORT_KEEP_TMP") == "1":
        return
    for path in set(base.iterdir()) - before:
        if path.is_symlink() or not path.is_dir():  # pytest's `NAMEcurrent` links
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


# -- tiers -------------------------------------------------------------------------------------
# Every test belongs to one tier by its file (`pytest -m parity`, ...); `make test` runs them all,
# `make test-fast` the `fast` selection: the unit tier, the golden files, the conformance test and
# the parity of the tiny variants.
TIERS = {
    "unit": [
        "test_spec",
        "test_models",
        "test_weights",
        "test_recipe",
        "test_augment",
        "test_data",
        "test_cli",
        "test_compat",
        "test_lifecycle",
        "test_checkpoint_write",
        "test_golden",
        "test_forkserver",
    ],
    "parity": ["test_parity", "test_recipe_parity", "test_parity_gaps", "test_conformance"],
    "zoo": ["test_port", "test_zoo", "test_zoo_keras_hub", "test_family"],
    "e2e": ["test_train_cli", "test_distributed", "test_trust", "test_export", "test_bench"],
}
_TIER_OF = {module: tier for tier, modules in TIERS.items() for module in modules}
_FAST_PARITY = {"test_parity", "test_recipe_parity"}  # their tiny variants are in the fast tier


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        tier = _TIER_OF.get(module)
        if tier is None:
            raise pytest.UsageError(f"{item.path.name} is in no tier: add it to tests/conftest.py's TIERS")
        item.add_marker(getattr(pytest.mark, tier))
        params = item.callspec.id if hasattr(item, "callspec") else ""
        tiny = "tiny" in params and "resnet" not in params
        if tier == "unit" or module == "test_conformance" or (module in _FAST_PARITY and tiny):
            item.add_marker(pytest.mark.fast)
