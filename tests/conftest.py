"""Shared fixtures.

TensorFlow and this CUDA build of PyTorch crash when torch._dynamo starts after
TF is loaded in one process.  Tests that need one framework import it in this
pytest process, so torch and torch._dynamo are imported here, first, which is
the order that works.  Tests that compare the frameworks never rely on it: they
run each framework in its own worker process (resnet_port.parity).
"""

import os

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


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)
