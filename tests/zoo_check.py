"""What ``python -m resnet_port.port SRC --check`` does, step by step, for many sources at once.

Shared by tests/test_zoo.py (PyTorch libraries, the port run in Keras) and
tests/test_zoo_keras_hub.py (keras-hub, the port run in PyTorch): the sources are read in
their framework, placed by the neutral rule and written as neutral files; then one process per
framework runs every source in its own library (``run_source``) and every port (``forward``),
on batches saved as ``x32.npy`` / ``x224.npy``.  No framework is imported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from resnet_port import forkserver, parity, port, porting
from resnet_port import weights as W
from resnet_port.spec import get_spec

MODES = ("eval", "train")
#: the largest share of the check's tolerance a float64 difference may take here: 1e-9 of the outputs' scale,
#: where float32 rounding anywhere (input, weights, a read-out) shows as ~1e-7
FLOAT64_SHARE = 1e-5
ZOO_MODELS = Path(__file__).with_name("zoo_models.py")


def zoo_models(*args) -> None:
    """``python tests/zoo_models.py ARGS``: the libraries write their files.  Forked from the PyTorch fork server,
    a fresh process where none runs; it must succeed."""
    forkserver.run(
        [sys.executable, str(ZOO_MODELS), *map(str, args)], check=True, env=parity.worker_env(), framework="torch"
    )


def write_batches(d) -> None:
    """Four images at 32x32 (in training mode an ImageNet stem's last stage is 1x1 there: each BatchNorm of it
    normalises four values a channel, still a batch statistic), two at 224x224."""
    rng = np.random.default_rng(0)
    np.save(d / "x32.npy", rng.random((4, 32, 32, 3), dtype=np.float32))
    np.save(d / "x224.npy", rng.random((2, 224, 224, 3), dtype=np.float32))


def port_all(d, sources: dict[str, tuple], framework: str, other: str, more_ports=lambda: []) -> dict:
    """``sources``: {file in d: (sizes, source_class or None)}.  Reads, ports and runs them all;
    returns {file: (the variant it was recognised as, the reader's facts)}.  ``more_ports()``, called
    once the neutral files are written, gives more ``forward`` ops for the port's process.

    Sources and their ports run in float64, as ``port --check`` decides (float32 rounding alone moved a ResNet34's
    layer4 by 7.8e-4 at 224x224 with one thread): PyTorch's cast, keras-hub's rebuilt in float64 by keras-hub."""
    dtype = "float64"
    write_batches(d)
    parity.run_worker(
        framework,
        [
            {"op": "read_source", "src": str(d / n), "kind": porting.detect(d / n).kind, "out": str(d / f"found_{n}")}
            for n in sources
        ],
        d,
    )
    src_ops, port_ops, facts = [], [], {}
    for name, (sizes, source_class) in sources.items():
        layers, info = porting.read_found(d / f"found_{name}")
        tensors = porting.canonical_tensors(layers)
        spec = porting.resolve_arch(tensors, "auto", name, info)
        W.save(d / f"{name}.safetensors", {k: a for k, (a, _) in tensors.items()}, spec.name)
        facts[name] = (spec.name, info)
        for size in sizes:
            src_ops.append(
                {
                    "op": "run_source",
                    "src": str(d / name),
                    "kind": info["kind"],
                    "structure": info["structure"],
                    "library": info["library"],
                    "arch": spec.name,
                    "layers": port.native_layers(tensors, info["library"], spec),
                    "source_class": source_class,
                    "inputs": str(d / f"{size}.npy"),
                    "out": str(d / f"src_{name}_{size}.npz"),
                    "dtype": dtype,
                }
            )
            port_ops += forward_ops(d, spec.name, d / f"{name}.safetensors", size, f"port_{name}_{size}", dtype)
    parity.run_worker(framework, src_ops, d)
    parity.run_worker(other, port_ops + more_ports(), d)
    return facts


def forward_ops(d, arch: str, weights, size: str, stem: str, dtype: str = "float32") -> list[dict]:
    return [
        {
            "op": "forward",
            "arch": arch,
            "weights": str(weights),
            "inputs": str(d / f"{size}.npy"),
            "training": mode == "train",
            "dtype": dtype,
            "out": str(d / f"{stem}_{mode}.npz"),
        }
        for mode in MODES
    ]


def npz(path) -> dict:
    with np.load(path) as z:
        return dict(z)


def source_outputs(d, name: str, size: str, mode: str) -> dict:
    src = npz(d / f"src_{name}_{size}.npz")
    return {k.split("/", 1)[1]: v for k, v in src.items() if k.startswith(f"{mode}/")}


def assert_held_to_source(d, name: str, arch: str, sizes) -> None:
    """The port against the source run by its library: every layer both name and the logits, both modes."""
    spec = get_spec(arch)
    names = [layer.name for layer in spec.layers()]
    for size in sizes:
        for mode in MODES:
            ref = source_outputs(d, name, size, mode)
            ok, logit_diff, tol, rows, first = port.judge(npz(d / f"port_{name}_{size}_{mode}.npz"), ref, names)
            assert ok, (
                f"{name} {size} {mode}: logits {logit_diff:.2e} (tolerance {tol:.2e}), first divergent layer {first and first.name}"
            )
            # every conv, BatchNorm and block output of the source was compared, not only the logits
            assert len(rows) >= len(spec.parameter_layers()) - 1 + len(spec.blocks), len(rows)
            # in float64 a correct port is the source to rounding (~1e-12), far inside the check's tolerance:
            # held there, so that nothing computed or read out in float32 hides on either side
            worst = max([r.max_abs / r.tol for r in rows] + [logit_diff / tol])
            assert worst < FLOAT64_SHARE, (
                f"{name} {size} {mode}: float64 differences up to {worst:.1e} of the tolerance"
            )
            assert np.ptp(ref["logits"], axis=0).max() > 1e-3  # logits that differ between images
