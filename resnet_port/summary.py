"""``python -m resnet_port.summary resnet18``: the spec's layer table, with no framework.

Prints, for every layer in execution order, its canonical name, kind, output
shape (per sample, channels-last) and parameter count, then the totals that
both ``tf_impl`` and ``torch_impl`` report for the same architecture.
"""

from __future__ import annotations

import argparse
import sys

from . import cli
from .spec import available, get_spec


def summary_table(arch: str, input_shape: tuple[int, int, int] | None = None, all_layers: bool = True) -> str:
    spec = get_spec(arch)
    layers = spec.layers(input_shape)
    if not all_layers:
        layers = [layer for layer in layers if layer.params]
    w = max(len(layer.name) for layer in layers)
    rows = [f"{'layer':<{w}}  {'kind':<15} {'output shape':<15} {'params':>11}", "-" * (w + 45)]
    for layer in layers:
        rows.append(f"{layer.name:<{w}}  {layer.kind:<15} {str(layer.output_shape):<15} {layer.num_params:>11,}")
    c = spec.count_parameters()
    shape = tuple(input_shape or spec.input_shape)
    rows += [
        "-" * (w + 45),
        f"architecture {spec.name}, input {shape}, {spec.num_classes} classes",
        f"trainable parameters:      {c.trainable:>12,}",
        f"non-trainable (BN moving): {c.non_trainable:>12,}",
        f"total parameters:          {c.total:>12,}",
        f"forward GFLOPs per image:  {spec.forward_flops(shape) / 1e9:>12.3f}",
    ]
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.summary", description=cli.description(__doc__))
    ap.add_argument("arch", help=f"one of: {', '.join(available())}")
    ap.add_argument(
        "--input-size", type=int, default=None, help="square input size in pixels (default: the spec's, 32)"
    )
    ap.add_argument("--params-only", action="store_true", help="list only the layers that hold parameters")
    args = ap.parse_args(argv)
    try:
        spec = get_spec(args.arch)
        shape = None
        if args.input_size is not None:
            shape = (args.input_size, args.input_size, spec.input_shape[-1])
        print(summary_table(args.arch, shape, all_layers=not args.params_only))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
