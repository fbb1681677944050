"""``python -m resnet_port.diff WEIGHTS``: where do Keras and PyTorch part ways?

Loads one neutral weights file into both frameworks (each in its own process),
runs the same batch through both, and prints a per-layer table in execution
order: canonical name, output shape, max abs and max rel difference, and the
first layer over tolerance.  Inference mode, training mode (batch statistics),
or both.  Exit status 0 when every layer and the logits are within tolerance,
1 when not, 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import cli, frameworks, parity, rundir
from . import weights as W
from .spec import bottleneck_stride, get_spec

# the deliberately wrong PyTorch ports of torch_impl.naive (named here, since this module imports no framework)
NAIVE_VARIANTS = (
    "symmetric-padding",
    "torch-bn-epsilon",
    "same-padding",
    "keras-bn-epsilon",
    "stride-on-1x1",
    "stride-on-3x3",
)
#: the conventions each one is a wrong port of: the first two break a Keras-convention model, the last two a PyTorch-convention one
NAIVE_CONVENTIONS = {
    "symmetric-padding": "keras",
    "torch-bn-epsilon": "keras",
    "same-padding": "pytorch",
    "keras-bn-epsilon": "pytorch",
}
#: the bottleneck version each of the others is a wrong port of (where the network's blocks put the stride)
NAIVE_STRIDE = {"stride-on-1x1": "3x3", "stride-on-3x3": "1x1"}


def _padding_family(spec) -> str:
    """ "keras" for a network with TF 'same' padding (and Keras' BatchNorm), else "pytorch" (symmetric padding=p)."""
    return "keras" if spec.conventions.padding == "tf" else "pytorch"


def naive_applicable(spec) -> list[str]:
    """The naive variants that are wrong ports of ``spec`` (torch_impl.naive.applicable, without PyTorch)."""
    return [
        name
        for name in NAIVE_VARIANTS
        if (NAIVE_CONVENTIONS.get(name) == _padding_family(spec))
        or (name in NAIVE_STRIDE and NAIVE_STRIDE[name] == bottleneck_stride(spec))
    ]


def forward_both(weights_path, arch, x: np.ndarray, training: bool, workdir, variant: str | None = None):
    """Every layer's output in Keras and in PyTorch for batch ``x`` (NHWC float32)."""
    workdir = Path(workdir)
    np.save(workdir / "inputs.npy", x)
    mode = "train" if training else "eval"
    outs = {}
    for fw in parity.FRAMEWORKS:
        op = {
            "op": "forward",
            "arch": arch,
            "weights": str(weights_path),
            "inputs": str(workdir / "inputs.npy"),
            "training": training,
            "out": str(workdir / f"{fw}_{mode}.npz"),
        }
        if fw == frameworks.PYTORCH.key and variant:
            op["variant"] = variant
        parity.run_worker(fw, [op], workdir)
        with np.load(workdir / f"{fw}_{mode}.npz") as z:
            outs[fw] = dict(z)
    return outs[frameworks.KERAS.key], outs[frameworks.PYTORCH.key]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.diff", description=cli.description(__doc__))
    ap.add_argument("weights", help="a neutral weights file (.safetensors) or a finished run directory")
    ap.add_argument("--batch", type=int, default=8, help="images in the probe batch (default 8)")
    ap.add_argument(
        "--mode",
        choices=["eval", "train", "both"],
        default="both",
        help="inference, training (batch statistics) or both",
    )
    ap.add_argument(
        "--atol",
        type=float,
        default=parity.ATOL,
        help=f"tolerance: atol x max(1, max |reference output|) per layer and on the logits (default {parity.ATOL:g})",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the random probe batch")
    ap.add_argument("--inputs", help="a .npy batch (N, H, W, C) in [0, 1] to use instead of random images")
    ap.add_argument(
        "--naive",
        choices=NAIVE_VARIANTS,
        help="run a deliberately wrong PyTorch port (torch_impl.naive), to see what a broken port looks like",
    )
    args = ap.parse_args(argv)
    try:
        args.weights = str(rundir.weights_of(args.weights))
        meta = W.read_metadata(Path(args.weights))
        spec = get_spec(meta["arch"])
        W.load(args.weights, spec)  # strict check before starting any framework
        if args.naive and args.naive not in naive_applicable(spec):
            fits = naive_applicable(spec)
            if args.naive in NAIVE_CONVENTIONS:
                owner = {"keras": "Keras'", "pytorch": "PyTorch's"}
                why = f"a model in {owner[NAIVE_CONVENTIONS[args.naive]]} conventions; {spec.name} follows {owner[_padding_family(spec)]}"
            else:
                why = f"a network whose bottlenecks stride on the {NAIVE_STRIDE[args.naive]}; {spec.name} has none"
            raise ValueError(f"--naive {args.naive} is a wrong port of {why}: choose {' or '.join(fits)}")
        if args.batch < 1:
            raise ValueError(f"--batch must be positive, got {args.batch}")
        if args.inputs:
            x = np.load(args.inputs).astype(np.float32)
            if x.ndim != 4 or x.shape[-1] != spec.input_shape[-1]:
                raise ValueError(f"--inputs must hold an (N, H, W, {spec.input_shape[-1]}) array, got shape {x.shape}")
        else:
            x = np.random.default_rng(args.seed).random((args.batch, *spec.input_shape), dtype=np.float32)
    except (ValueError, OSError) as e:  # WeightsError and RunDirError are ValueErrors
        return cli.fail(str(e))
    modes = ["eval", "train"] if args.mode == "both" else [args.mode]
    ok = True
    print(f"weights {args.weights}: {spec.name}, written by {meta.get('producer') or 'unknown'}; batch of {len(x)}")
    with tempfile.TemporaryDirectory(prefix="resnet-port-diff-") as tmp:
        for mode in modes:
            try:
                tf_out, torch_out = forward_both(args.weights, spec.name, x, mode == "train", tmp, args.naive)
            except parity.WorkerError as e:
                return cli.fail(str(e))
            names = [layer.name for layer in spec.layers()]
            title = "inference mode (moving statistics)" if mode == "eval" else "training mode (batch statistics)"
            print(f"\n== {title}: PyTorch vs Keras (reference) ==")
            misshaped = next((n for n in names if torch_out[n].shape != tf_out[n].shape), None)
            if misshaped:  # the two compute different networks (a stride moved): named, not compared
                ok = False
                print(
                    f"{misshaped}: output {torch_out[misshaped].shape[1:]} in PyTorch, {tf_out[misshaped].shape[1:]} in Keras "
                    f"-> FAIL (first divergent layer: {misshaped}; the networks differ in structure, not in numbers)"
                )
                continue
            rows = parity.compare_layers(torch_out, tf_out, names, args.atol)
            logit_abs, _ = parity.diff_arrays(torch_out["logits"], tf_out["logits"])
            agree = float((torch_out["logits"].argmax(1) == tf_out["logits"].argmax(1)).mean())
            print(parity.format_table(rows, args.atol))
            first = parity.first_divergence(rows)
            good = first is None and logit_abs <= args.atol
            ok &= good
            verdict = "PASS" if good else f"FAIL (first divergent layer: {first.name if first else 'logits'})"
            print(
                f"logits: max abs diff {logit_abs:.3e} (tolerance {args.atol:g}); argmax agrees on {agree:.1%} of the batch -> {verdict}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
