"""Holds a backend to the contract (``resnet_port.backends.Backend``), variant by variant.

``python -m resnet_port.conformance --backend KEY [--train VARIANTS|all] [--out FILE] [VARIANT ...]`` checks, in
one process of that framework, for each variant: every operation offered; the model built with
exactly the spec's parameters (canonical keys, execution order, neutral shapes, count); every
spec layer's output under its canonical name with the spec's shape, logits finite; weights
round trip bit-exact through numpy and through the neutral file; and, for the ``--train`` ones, one
optimiser step of the seed's recipe that moves every trainable tensor and leaves them finite.
It prints one line per variant (``PASS``/``FAIL: ...``), writes ``{variant: [problems]}`` as JSON
with ``--out``, and exits 1 when a variant fails.  A new backend runs it before anything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from . import backends, cli
from .spec import MIN_INPUT_SIZE, available, get_spec


def fixed_tensors(spec) -> dict[str, np.ndarray]:
    """Deterministic tensors for ``spec``: a normal draw seeded by the variant's name (variances > 0.5)."""
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    out = {}
    for key, shape in spec.parameters().items():
        a = rng.standard_normal(shape).astype(np.float32) * np.float32(0.1)
        out[key] = np.abs(a) + np.float32(0.5) if key.endswith("moving_variance") else a
    return out


def without_random_init(obj):
    """``obj`` (a spec, or any of its parts) with every random initialiser replaced by zeros: the same network,
    built without drawing its initial values (a deep ImageNet member's draw is ~1.3 s of its Keras build)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if field.name.endswith("_init") and value not in ("zeros", "ones"):
            changes[field.name] = "zeros"
        elif isinstance(value, tuple):
            changes[field.name] = tuple(without_random_init(part) for part in value)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = without_random_init(value)
    return dataclasses.replace(obj, **changes)


def _round_trips(b: backends.Backend, spec, model) -> list[str]:
    """Fixed tensors in, bit-exact out: through numpy, and through the neutral file into a fresh model."""
    problems: list[str] = []
    tensors = fixed_tensors(spec)
    b.from_numpy(model, spec, tensors)
    back = b.to_numpy(model, spec)
    problems += [
        f"{k}: not bit-exact through from_numpy/to_numpy" for k in tensors if not np.array_equal(back[k], tensors[k])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = b.save_weights(model, spec, Path(tmp) / "w.safetensors")
        fresh = b.build(spec)
        b.load_weights(fresh, spec, path)
        again = b.to_numpy(fresh, spec)
        problems += [
            f"{k}: not bit-exact through the neutral file" for k in tensors if not np.array_equal(again[k], tensors[k])
        ]
    return problems


def check(b: backends.Backend, arch: str, train: bool = False, shallow: bool = False) -> list[str]:
    """What ``b`` gets wrong about ``arch`` (an empty list: conforms).

    ``shallow``: the structure only (parameters, their count, every layer's output in inference
    mode), not the weights' round trips nor the initial values (built with zeros for every random
    initialiser): for full-size variants, whose block types and conventions (initialisers included) the tiny
    ones carry through the round trips and the training step (the same code, more tensors)."""
    problems: list[str] = []
    missing = [op for op in backends.OPERATIONS if not hasattr(b, op)]
    if missing:
        return [f"the backend does not offer {', '.join(missing)}"]
    problems += [f"signature: {d}" for d in backends.signature_differences(b)]
    spec = get_spec(arch)
    model = b.build(without_random_init(spec) if shallow else spec)
    got = b.to_numpy(model, spec)
    want = spec.parameters()
    if list(got) != list(want):
        extra, lacking = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        problems.append(
            f"parameters: {len(extra)} not in the spec {extra[:3]}, {len(lacking)} missing {lacking[:3]}"
            if extra or lacking
            else "parameters out of execution order"
        )
        return problems
    problems += [
        f"{k}: shape {tuple(got[k].shape)}, the spec says {want[k]}"
        for k in want
        if tuple(got[k].shape) != tuple(want[k])
    ]
    if sum(a.size for a in got.values()) != spec.count_parameters().total:
        problems.append(
            f"{sum(a.size for a in got.values())} parameters, the spec counts {spec.count_parameters().total}"
        )
    if not shallow:
        problems += _round_trips(b, spec, model)
    # the smallest input the network takes when shallow (the same layers at 224 cost minutes on a CPU for the
    # deep ImageNet members, and the spec's shapes are checked at any size), else its native one
    size = MIN_INPUT_SIZE if shallow else max(MIN_INPUT_SIZE, min(spec.input_shape[:2]))
    images = np.random.default_rng(0).random((2, size, size, spec.input_shape[-1]), dtype=np.float32)
    for training in (False,) if shallow else (False, True):
        outputs = b.layer_outputs(model, spec, images, training)
        layers = spec.layers((size, size, spec.input_shape[-1]))
        names = [layer.name for layer in layers]
        if set(outputs) != set(names) | {"logits"}:
            problems.append(
                f"layer outputs: {sorted(set(outputs) - set(names) - {'logits'})[:3]} not spec layers, {sorted(set(names) - set(outputs))[:3]} missing"
            )
            break
        problems += [
            f"{layer.name}: output {outputs[layer.name].shape[1:]}, the spec says {layer.output_shape}"
            for layer in layers
            if tuple(outputs[layer.name].shape[1:]) != tuple(layer.output_shape)
        ]
        if outputs["logits"].shape != (2, spec.num_classes) or not np.isfinite(outputs["logits"]).all():
            problems.append(f"logits {outputs['logits'].shape}, finite: {bool(np.isfinite(outputs['logits']).all())}")
    if train:
        from .recipe import recipe

        r = recipe("seed")
        tensors = fixed_tensors(spec)
        b.from_numpy(model, spec, tensors)
        labels = np.array([0, min(1, spec.num_classes - 1)])
        # one step: eager, since tracing Keras' step would cost four times the step (moving every tensor and
        # keeping it finite is what is checked here; the traced step is the parity suite's and the CLIs')
        b.train_steps(model, spec, r, r.optimizer.schedule(1, 1, 2), [(images, labels)], eager=True)
        after = b.to_numpy(model, spec)
        still = [k for k in spec.trainable_parameters() if np.array_equal(after[k], tensors[k])]
        if still:
            problems.append(f"one training step left {len(still)} trainable tensors unchanged ({', '.join(still[:3])})")
        bad = [k for k, a in after.items() if not np.isfinite(a).all()]
        if bad:
            problems.append(f"non-finite after one step: {', '.join(bad[:3])}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.conformance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", required=True, choices=backends.all_keys())
    ap.add_argument(
        "--train",
        default="",
        metavar="VARIANTS",
        help="also take one optimiser step on these (comma-separated, or 'all')",
    )
    ap.add_argument(
        "--shallow",
        default="",
        metavar="VARIANTS",
        help="check only the structure of these (comma-separated, or 'all'): no weight round trips, inference only",
    )
    ap.add_argument("--out", type=Path, help="write {variant: [problems]} here as JSON")
    ap.add_argument("variants", nargs="*", help="registered variants (default: every one)")
    args = ap.parse_args(argv)
    b = backends.get(args.backend)
    results = {}
    for arch in args.variants or available():
        try:
            results[arch] = check(
                b,
                arch,
                args.train == "all" or arch in args.train.split(","),
                args.shallow == "all" or arch in args.shallow.split(","),
            )
        except Exception as e:  # a backend that raises does not conform: say so, go on
            results[arch] = [f"raised {cli.reason(e, 400)}"]
        print(
            f"{b.framework.label} {arch}: " + ("PASS" if not results[arch] else "FAIL: " + "; ".join(results[arch])),
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0 if not any(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
