"""Every backend is held to the contract, and the contract is enough to add a block.

* ``test_conformance``: ``resnet_port.conformance`` over backends x registered variants (one
  process per backend; a training step on the tiny ones).
* The proof of blocks as data: ``plugins/resnet_port_triple.py`` adds a block of three 3x3
  convolutions through the spec module and its registry alone.  It builds in both frameworks,
  conforms, and gives the same layer outputs (both modes) and the same optimiser step in both,
  with no line of ``tf_impl/`` or ``torch_impl/`` naming it.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_port import backends, forkserver, parity
from resnet_port import weights as W
from resnet_port.spec import available

ROOT = Path(__file__).parent.parent
PLUGINS = Path(__file__).parent / "plugins"
TRIPLE = "tiny-triple"


def _plugin_env(monkeypatch=None) -> dict:
    env = {
        "RESNET_PORT_PLUGINS": "resnet_port_triple",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])),
    }
    if monkeypatch is not None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    return {**os.environ, **env}


@pytest.fixture(scope="module")
def conformance(tmp_path_factory):
    """{backend: {variant: [problems]}}: one conformance process per backend, every variant and the plugin's."""
    out = {}
    for key in backends.all_keys():
        path = tmp_path_factory.mktemp("conformance") / f"{key}.json"
        tiny = ",".join([a for a in available() if a.startswith("tiny")] + [TRIPLE])
        # full-size variants: their structure (every block type's round trips and training step are
        # the tiny twins'; the same code with more tensors, which would cost minutes here)
        full = ",".join(a for a in available() if not a.startswith("tiny"))
        cmd = [
            sys.executable,
            "-m",
            "resnet_port.conformance",
            "--backend",
            key,
            "--train",
            tiny,
            "--shallow",
            full,
            "--out",
            str(path),
            *available(),
            TRIPLE,
        ]
        # forked from the backend's fork server (the plugins' folder goes first on the job's path)
        p = forkserver.run(cmd, cwd=ROOT, env=_plugin_env(), capture_output=True, text=True, timeout=900, framework=key)
        assert path.exists(), f"the {key} conformance run wrote nothing (exit {p.returncode}): {p.stderr[-3000:]}"
        out[key] = json.loads(path.read_text())
    return out


@pytest.mark.parametrize("variant", available() + [TRIPLE])
@pytest.mark.parametrize("backend", backends.all_keys())
def test_conformance(conformance, backend, variant):
    assert conformance[backend][variant] == []


def test_a_backend_missing_an_operation_is_named():
    class Partial:
        framework = None

    from resnet_port import conformance

    assert conformance.check(Partial(), "tiny") and "does not offer" in conformance.check(Partial(), "tiny")[0]


def test_an_operation_with_another_signature_is_named():
    """Same-named operations with other parameters (``from_numpy(model, tensors, spec)`` in one backend,
    ``(model, spec, tensors)`` in the other) are what the contract is for: conformance names them."""

    class Swapped:
        framework = None

    for op in backends.OPERATIONS:  # the contract's own functions, then two swapped
        setattr(Swapped, op, vars(backends.Backend)[op])
    Swapped.from_numpy = lambda self, model, tensors, spec, source="weights": None
    Swapped.train_steps = lambda self, model, spec, recipe, schedule, batches, naive=None: None
    got = backends.signature_differences(Swapped())
    assert len(got) == 2 and got[0].startswith("from_numpy(model, tensors, spec, source='weights'), the contract")
    assert "train_steps(model, spec, recipe, schedule, batches, naive=None), the contract says" in got[1]
    assert "eager=False" in got[1]
    for k in backends.all_keys():
        assert backends.signature_differences(backends.get(k)) == []


def test_triple_block_needs_no_framework_code():
    for package in ("tf_impl", "torch_impl"):
        for path in (ROOT / package).glob("*.py"):
            text = path.read_text()
            assert "triple" not in text and "conv3" not in text, path


@pytest.fixture
def triple_registered(monkeypatch):
    """The plugin loaded in this process and in the workers it starts; unregistered afterwards."""
    from resnet_port import spec as S

    _plugin_env(monkeypatch)
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setattr(S, "REGISTRY", dict(S.REGISTRY))
    monkeypatch.setattr(S, "BLOCKS", dict(S.BLOCKS))
    monkeypatch.setattr(S, "_plugins_loaded", set())
    sys.modules.pop("resnet_port_triple", None)
    yield
    sys.modules.pop("resnet_port_triple", None)


def test_triple_block_trains_alike_in_both_frameworks(tmp_path, triple_registered, capsys):
    """Same weights, same batch: every layer in both modes within float32 parity, and five steps of the
    modern recipe (SGD, momentum, weight decay) in float64 agree on every weight within 1e-6 (stored in float32)."""
    d = tmp_path
    rng = np.random.default_rng(0)
    # 36x36: stages of 36, 18, 9 and 5, so the shortcut's ceil_mode pool meets an odd size (9 -> 5)
    np.save(d / "x.npy", rng.random((8, 36, 36, 3), dtype=np.float32))
    np.savez(d / "batches.npz", images=rng.random((5, 8, 32, 32, 3)), labels=rng.integers(0, 100, (5, 8)))
    w = str(d / "w.safetensors")

    def ops(fw):
        fwd = [
            {
                "op": "forward",
                "arch": TRIPLE,
                "weights": w,
                "inputs": str(d / "x.npy"),
                "training": t,
                "out": str(d / f"fwd_{fw}_{t}.npz"),
            }
            for t in (False, True)
        ]
        train = {
            "op": "train",
            "arch": TRIPLE,
            "weights": w,
            "recipe": "modern",
            "dtype": "float64",
            "batches": str(d / "batches.npz"),
            "steps_per_epoch": 5,
            "epochs": 2,
            "batch_size": 8,
            "out": str(d / f"after_{fw}.safetensors"),
            "probe": str(d / "x.npy"),
            "probe_out": str(d / f"probe_{fw}.npz"),
        }
        return fwd + [train]

    parity.run_worker("torch", [{"op": "init", "arch": TRIPLE, "seed": 3, "out": w}] + ops("torch"), d)
    parity.run_worker("tf", ops("tf"), d)
    spec = __import__("resnet_port.spec", fromlist=["get_spec"]).get_spec(TRIPLE)
    names = [layer.name for layer in spec.layers()]
    assert "layer2.0.conv3" in names and "layer4.0.shortcut.pool" in names
    assert dict((l.name, l.output_shape) for l in spec.layers((36, 36, 3)))["layer4.0.shortcut.pool"] == (5, 5, 16)
    for t in (False, True):
        a, b = dict(np.load(d / f"fwd_torch_{t}.npz")), dict(np.load(d / f"fwd_tf_{t}.npz"))
        rows = parity.compare_layers(a, b, names + ["logits"], 1e-4)
        assert all(r.ok for r in rows), parity.format_table(rows, 1e-4)
    after_torch, after_tf = W.load(d / "after_torch.safetensors").tensors, W.load(d / "after_tf.safetensors").tensors
    before = W.load(w).tensors
    worst = max(float(np.abs(after_torch[k] - after_tf[k]).max()) for k in before)
    moved = min(float(np.abs(after_tf[k] - before[k]).max()) for k in before)
    worst_layer = max(
        max(
            r.max_abs / max(r.tol, 1e-30)
            for r in parity.compare_layers(
                dict(np.load(d / f"fwd_torch_{t}.npz")), dict(np.load(d / f"fwd_tf_{t}.npz")), names + ["logits"]
            )
        )
        for t in (False, True)
    )
    with capsys.disabled():
        print(
            f"\n[{TRIPLE}: layers within {worst_layer:.2f} of the tolerance; 5 float64 SGD steps: weights {worst:.1e} apart, each tensor moved >= {moved:.1e}]"
        )
    # float64 steps, stored in the float32 neutral file: one float32 rounding (~1.2e-7 at 1) apart at most
    assert worst <= 1e-6 and moved > 100 * worst, (worst, moved)


def test_shallow_builds_are_the_same_networks_without_random_initial_values():
    """``--shallow`` builds with zeros for every random initialiser: every variant's parameters, layers and count are
    the spec's, and nothing random is left to draw."""
    from resnet_port.conformance import without_random_init
    from resnet_port.spec import INITIALISERS, get_spec

    for arch in available():
        spec, cheap = get_spec(arch), without_random_init(get_spec(arch))
        assert cheap.parameters() == spec.parameters() and cheap.count_parameters() == spec.count_parameters()
        assert [(x.name, x.output_shape) for x in cheap.layers()] == [(x.name, x.output_shape) for x in spec.layers()]
        assert not any(f"'{name}'" in repr(cheap) for name in set(INITIALISERS) - {"zeros", "ones"}), arch
