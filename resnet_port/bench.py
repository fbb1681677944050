"""``python -m resnet_port.bench``: throughput of both frameworks side by side, against the machine's ceiling.

In one run, each framework in its own process (one after the other, so they do
not share the cores), after warm-up, the median of several timed windows of:

* training, a full step (forward, loss with L2, backward, Adam step) with the
  augmentation included and excluded;
* inference;
* the augmentation pipeline alone;
* the process's peak memory.

Each figure is also given as a fraction of the ceiling: the FLOPs per image
counted from the spec (forward; training = 3 x forward: the backward pass costs
two forwards) at the measured images/s, over the float32 matrix-multiply rate
measured in the same run (the best of the two frameworks' rates).  ``--json``
writes everything.  ``--sweep`` (CUDA) adds PyTorch rows for fp32, AMP float16
and bfloat16, with torch.compile off and on.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from . import parity
from .spec import available, get_spec

ROWS = [("train_aug", "train step, augmentation included"), ("train", "train step, augmentation excluded"), ("inference", "inference"), ("augment", "augmentation alone")]
TRAIN_FLOP_FACTOR = 3  # forward + backward (grads of inputs and of weights: 2 forwards)


def flops_per_image(arch: str) -> dict[str, float]:
    f = get_spec(arch).forward_flops()
    return {"inference": f, "train": TRAIN_FLOP_FACTOR * f, "train_aug": TRAIN_FLOP_FACTOR * f}


def run_bench(arch: str, batch_size: int, precision: str, frameworks: list[str], warmup: int, windows: int, steps: int, extra_torch: dict | None = None, timeout: float = 1800) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="resnet-port-bench-") as tmp:
        for fw in frameworks:
            op = {"op": "bench", "arch": arch, "batch_size": batch_size, "precision": precision, "warmup": warmup, "windows": windows, "steps": steps, "out": str(Path(tmp) / f"{fw}.json")}
            if fw == "torch":
                op.update(extra_torch or {})
            try:
                parity.run_worker(fw, [op], tmp, timeout=timeout)
                results[fw] = json.loads(Path(op["out"]).read_text())
            except parity.WorkerError as e:  # recorded and shown, never silently dropped
                results[fw] = {"error": str(e)}
    return results


def table(res: dict, arch: str) -> tuple[str, dict]:
    flops = flops_per_image(arch)
    ceilings = [r["matmul_gflops"] for r in res.values() if "matmul_gflops" in r]
    ceiling = max(ceilings) if ceilings else float("nan")
    tf, pt = res.get("tf", {}), res.get("torch", {})
    lines = [f"{'images/s (median)':<36} {'Keras':>10} {'PyTorch':>10} {'PT/Keras':>9} {'Keras %ceil':>12} {'PT %ceil':>9}"]
    derived = {"ceiling_gflops": ceiling, "flops_per_image": flops, "rows": {}}
    for key, label in ROWS:
        a, b = tf.get(key), pt.get(key)
        ratio = b / a if a and b else float("nan")
        row = {"keras": a, "pytorch": b, "ratio": ratio}
        fa = fb = ""
        if key in flops:
            row["keras_fraction_of_ceiling"] = a * flops[key] / (ceiling * 1e9) if a else None
            row["pytorch_fraction_of_ceiling"] = b * flops[key] / (ceiling * 1e9) if b else None
            fa = f"{row['keras_fraction_of_ceiling']:.1%}" if a else "-"
            fb = f"{row['pytorch_fraction_of_ceiling']:.1%}" if b else "-"
        derived["rows"][key] = row
        lines.append(f"{label:<36} {a if a else float('nan'):>10.1f} {b if b else float('nan'):>10.1f} {ratio:>9.2f} {fa:>12} {fb:>9}")
    for fw_key, r in (("keras", tf), ("pytorch", pt)):
        if r.get("augment") and r.get("train"):
            derived[f"{fw_key}_augment_over_train"] = r["augment"] / r["train"]
    lines.append(
        f"{'peak memory (MB)':<36} {tf.get('peak_memory_mb', float('nan')):>10.0f} {pt.get('peak_memory_mb', float('nan')):>10.0f}"
    )
    lines.append(
        f"{'matmul ceiling (GFLOP/s, fp32)':<36} {tf.get('matmul_gflops', float('nan')):>10.1f} {pt.get('matmul_gflops', float('nan')):>10.1f}"
        f"   ceiling used: {ceiling:.1f}"
    )
    for fw_key, name in (("keras", "Keras"), ("pytorch", "PyTorch")):
        if f"{fw_key}_augment_over_train" in derived:
            lines.append(f"augmentation alone / training, {name}: {derived[f'{fw_key}_augment_over_train']:.0f}x")
    for fw, r in res.items():
        if "error" in r:
            lines.append(f"{fw}: FAILED: {r['error'].splitlines()[0]}")
    return "\n".join(lines), derived


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=available(), default="resnet18")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", choices=["fp32", "amp-fp16", "amp-bf16"], default="fp32")
    ap.add_argument("--frameworks", default="tf,torch", help="comma-separated: tf, torch (default both)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported (default 3)")
    ap.add_argument("--steps", type=int, default=3, help="steps per window (default 3)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="PyTorch: also every precision with compile off and on (for GPUs)")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in frameworks if f not in parity.FRAMEWORKS]
    if bad or not frameworks or min(args.batch_size, args.windows, args.steps) < 1 or args.warmup < 0:
        print(f"error: --frameworks takes tf and/or torch; --batch-size, --windows, --steps must be positive (got {args.frameworks!r})", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    extra = {"compile": args.compile, "channels_last": not args.no_channels_last}
    res = run_bench(args.arch, args.batch_size, args.precision, frameworks, args.warmup, args.windows, args.steps, extra)
    text, derived = table(res, args.arch)
    header = f"resnet-port bench: {args.arch}, batch {args.batch_size}, {args.precision}, {platform.machine()} {platform.processor() or ''}, {started}"
    print(header)
    print(text)
    report = {"arch": args.arch, "batch_size": args.batch_size, "precision": args.precision, "date": started, "results": res, **derived, "sweep": []}
    if args.sweep:
        print("\nPyTorch sweep (train step with augmentation, images/s):")
        for precision in ("fp32", "amp-fp16", "amp-bf16"):
            for comp in (False, True):
                r = run_bench(args.arch, args.batch_size, precision, ["torch"], args.warmup, args.windows, args.steps, {"compile": comp, "channels_last": not args.no_channels_last})["torch"]
                report["sweep"].append({"precision": precision, "compile": comp, **r})
                shown = f"{r['train_aug']:.0f}" if "train_aug" in r else f"FAILED: {r['error'].splitlines()[0]}"
                print(f"  {precision:<9} compile={'on ' if comp else 'off'}  {shown}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any("error" in r for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
