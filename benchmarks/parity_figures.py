"""The README's parity table, measured again: ``python benchmarks/parity_figures.py [--json OUT]``.

Every figure of "What parity means here" comes from here, each framework in its
own worker process (resnet_port.parity), on the same seeds as the README states:

* logits (inference and training mode) of weights made in one framework and run
  in the other, both directions, batch of 16 random images: the worst of both;
* the naive ports' logits and first divergent layers (torch_impl.naive);
* the round trip Keras -> file -> PyTorch -> file -> Keras;
* loss, gradients and optimiser steps of each recipe (the configurations of
  tests/test_recipe_parity.py).

It prints a table and, with ``--json``, writes every number.  It uses only
operations the workers have had since the spec's first version, so it also runs
on an older checkout (PYTHONPATH=that checkout), to show a change left the
figures as they were.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from resnet_port import parity
from resnet_port import weights as W
from resnet_port.spec import get_spec

NAIVE = {"symmetric-padding": {"tf_padding": False}, "torch-bn-epsilon": {"bn_epsilon": 1e-5}}  # the old worker's form


def naive_op(name: str):
    import torch_impl  # the checkout's own package (not imported as torch_impl.naive: an editable
    # install's finder would supply that module from the installed tree when the checkout lacks it)

    # this checkout's workers name the variants; the first version took constructor arguments
    return name if (Path(torch_impl.__file__).parent / "naive.py").is_file() else NAIVE[name]


def forward(fw, arch, weights, x, training, d, tag, variant=None):
    op = {
        "op": "forward",
        "arch": arch,
        "weights": str(weights),
        "inputs": str(x),
        "training": training,
        "out": str(d / f"{tag}.npz"),
    }
    if variant:
        op["variant"] = variant
    parity.run_worker(fw, [op], d)
    with np.load(d / f"{tag}.npz") as z:
        return dict(z)


def models(arch: str, d: Path) -> dict:
    spec = get_spec(arch)
    x = np.random.default_rng(7).random((16, *spec.input_shape), dtype=np.float32)
    np.save(d / "x.npy", x)
    out = {}
    parity.run_worker("tf", [{"op": "init", "arch": arch, "seed": 5, "out": str(d / "w_tf.safetensors")}], d)
    parity.run_worker("torch", [{"op": "init", "arch": arch, "seed": 11, "out": str(d / "w_torch.safetensors")}], d)
    for mode in ("eval", "train"):
        worst = 0.0
        for origin in ("tf", "torch"):
            a = forward(
                "tf", arch, d / f"w_{origin}.safetensors", d / "x.npy", mode == "train", d, f"tf_{origin}_{mode}"
            )
            b = forward(
                "torch", arch, d / f"w_{origin}.safetensors", d / "x.npy", mode == "train", d, f"torch_{origin}_{mode}"
            )
            worst = max(worst, float(np.abs(a["logits"] - b["logits"]).max()))
        out[f"logits_{mode}"] = worst
    ref = forward("tf", arch, d / "w_tf.safetensors", d / "x.npy", False, d, "ref")
    for name in NAIVE:
        bad = forward("torch", arch, d / "w_tf.safetensors", d / "x.npy", False, d, f"naive_{name}", naive_op(name))
        rows = parity.compare_layers(bad, ref, [layer.name for layer in spec.layers()], 1e-4)
        first = parity.first_divergence(rows)
        out[f"naive_{name}"] = {
            "logits": float(np.abs(bad["logits"] - ref["logits"]).max()),
            "argmax_agrees": float((bad["logits"].argmax(1) == ref["logits"].argmax(1)).mean()),
            "first_divergent": first.name if first else None,
        }
    parity.run_worker(
        "torch",
        [{"op": "roundtrip", "arch": arch, "weights": str(d / "w_tf.safetensors"), "out": str(d / "rt1.safetensors")}],
        d,
    )
    parity.run_worker(
        "tf",
        [{"op": "roundtrip", "arch": arch, "weights": str(d / "rt1.safetensors"), "out": str(d / "rt2.safetensors")}],
        d,
    )
    a, b = W.load(d / "w_tf.safetensors").tensors, W.load(d / "rt2.safetensors").tensors
    out["round_trip_bit_exact"] = all(np.array_equal(a[k], b[k]) for k in a)
    return out


def recipe(arch: str, dtype: str, steps: int, d: Path, batch: int = 16, extra: dict | None = None) -> dict:
    """Loss, gradients and optimiser steps, as tests/test_recipe_parity.py runs them."""
    extra = extra or {}
    rng = np.random.default_rng(21)
    np.save(d / "x.npy", rng.random((batch, 32, 32, 3), dtype=np.float32))
    np.save(d / "y.npy", rng.integers(0, 100, batch))
    np.savez(
        d / "batches.npz",
        images=rng.random((max(steps, 1), batch, 32, 32, 3), dtype=np.float32),
        labels=rng.integers(0, 100, (max(steps, 1), batch)),
    )
    w = str(d / "w.safetensors")
    spec = get_spec(arch)

    def ops(fw):
        o = [
            {
                "op": "loss",
                "arch": arch,
                "dtype": dtype,
                "weights": w,
                "images": str(d / "x.npy"),
                "labels": str(d / "y.npy"),
                "out": str(d / f"loss_{fw}.npz"),
                **extra,
            }
        ]
        if steps:
            o.append(
                {
                    "op": "train",
                    "arch": arch,
                    "dtype": dtype,
                    "weights": w,
                    "batches": str(d / "batches.npz"),
                    "out": str(d / f"after_{fw}.safetensors"),
                    "probe": str(d / "x.npy"),
                    "probe_out": str(d / f"probe_{fw}.npz"),
                    **extra,
                }
            )
        return o

    parity.run_worker("tf", [{"op": "init", "arch": arch, "seed": 4, "out": w}] + ops("tf"), d)
    parity.run_worker("torch", ops("torch"), d)
    a, b = dict(np.load(d / "loss_torch.npz")), dict(np.load(d / "loss_tf.npz"))
    out = {f"loss_{p}_rel": abs(float(a[p]) - float(b[p])) / abs(float(b[p])) for p in ("total", "ce", "l2")}
    skip = set(spec.batchnorm_fed_biases())
    out["grad_worst_rel"] = max(
        float(np.abs(a[f"grad/{k}"] - b[f"grad/{k}"]).max() / np.abs(b[f"grad/{k}"]).max())
        for k in spec.trainable_parameters()
        if k not in skip
    )
    if steps:
        ta, tb = W.load(d / "after_torch.safetensors").tensors, W.load(d / "after_tf.safetensors").tensors
        out["steps"] = steps
        out["weights_worst_abs"] = max(float(np.abs(ta[k] - tb[k]).max()) for k in tb if k not in skip)
    return out


def short(v) -> str:
    """A figure as the README prints it: floats to 2 significant digits."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={short(x)}" for k, x in v.items()) + "}"
    return f"{v:.2g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--archs", default="resnet18,resnet34")
    ap.add_argument("--modern", action="store_true", help="also the modern recipe (needs this checkout's workers)")
    args = ap.parse_args(argv)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            d = Path(tmp) / arch
            d.mkdir()
            report[arch] = models(arch, d)
        for name, (arch, dtype, steps) in {
            "tiny-float32": ("tiny", "float32", 3),
            "resnet18-float64": ("resnet18", "float64", 1),
            "resnet18-float32": ("resnet18", "float32", 0),
        }.items():
            d = Path(tmp) / name
            d.mkdir()
            report[name] = recipe(arch, dtype, steps, d)
        if args.modern:
            extra = {
                "recipe": "modern",
                "optimizer": {"warmup_epochs": 3},
                "steps_per_epoch": 1,
                "epochs": 10,
                "batch_size": 128,
            }
            for dtype in ("float32", "float64"):
                d = Path(tmp) / f"modern-{dtype}"
                d.mkdir()
                report[f"modern-tiny-cifar-{dtype}"] = recipe("tiny-cifar", dtype, 5, d, batch=4, extra=extra)
    for key, value in report.items():
        print(f"{key}: " + ", ".join(f"{k}={short(v)}" for k, v in value.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
