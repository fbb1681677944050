"""``python -m resnet_port.bench``: throughput of both frameworks side by side, against the machine's ceiling.

In one run, each framework in its own process (one at a time, so they do not
share the cores), in several rounds that alternate which framework goes first
(``--rounds``, default 3: on a shared machine a job that starts in between then
shows as a wide spread, not as a ratio), after warm-up, the median of several
timed windows of:

* training, a full step (forward, loss with L2, backward, Adam step) with the
  augmentation included and excluded;
* inference;
* the augmentation pipeline alone;
* the process's peak memory.

Each figure is also given as a fraction of the ceiling: the FLOPs per image
counted from the spec (forward; training = 3 x forward: the backward pass costs
two forwards) at the measured images/s, over the float32 matrix-multiply rate
measured in the same run (the best of the two frameworks' rates).  Every figure
is the median over the rounds, printed with its range (min-max).  ``--json``
writes everything.  ``--sweep`` (CUDA) adds PyTorch rows for fp32, AMP float16
and bfloat16, with torch.compile off and on.

``--cli`` also measures the commands users run.  A fast step inside a slow loop
is a slow tool, and on shared machines a lone figure says little, so in the same
invocation, interleaved with fresh step measurements (rounds alternate the
order of the frameworks), it runs each training CLI for a few epochs on
synthetic CIFAR-format data (validation off) and times every epoch after the
first from the moment its line lands in ``metrics.jsonl``: the whole epoch,
input pipeline, callbacks and checkpoint write included.  It reports the CLI's
rate next to its own step's, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import cli, forkserver, parity, rundir
from . import frameworks as F
from .recipe import RECIPES
from .spec import available, get_spec

ROWS = [
    ("train_aug", "train step, augmentation included"),
    ("train", "train step, augmentation excluded"),
    ("inference", "inference"),
    ("augment", "augmentation alone"),
]
TRAIN_FLOP_FACTOR = 3  # forward + backward (grads of inputs and of weights: 2 forwards)


def flops_per_image(arch: str) -> dict[str, float]:
    f = get_spec(arch).forward_flops()
    return {"inference": f, "train": TRAIN_FLOP_FACTOR * f, "train_aug": TRAIN_FLOP_FACTOR * f}


FIGURES = ("train_aug", "train", "inference", "augment", "matmul_gflops", "peak_memory_mb")


def run_rounds(
    arch: str,
    batch_size: int,
    precision: str,
    frameworks: list[str],
    warmup: int,
    windows: int,
    steps: int,
    extra_torch: dict | None = None,
    rounds: int = 3,
    recipe: str = "seed",
    progress=None,
) -> dict:
    """:func:`run_bench` ``rounds`` times, alternating which framework goes first; each figure the
    median over the rounds, with every round's value under ``<figure>_rounds``."""
    per_round: dict[str, list[dict]] = {fw: [] for fw in frameworks}
    for r in range(rounds):
        order = frameworks if r % 2 == 0 else frameworks[::-1]  # alternate, so drift favours neither
        for fw in order:
            if progress:
                progress(f"round {r + 1} of {rounds}: the training step in {F.get(fw).label}")
            per_round[fw].append(
                run_bench(arch, batch_size, precision, [fw], warmup, windows, steps, extra_torch, recipe=recipe)[fw]
            )
    out = {}
    for fw, results in per_round.items():
        good = [x for x in results if "error" not in x]
        if not good:
            out[fw] = {"error": results[0]["error"]}
            continue
        merged = dict(good[-1])
        for key in FIGURES:
            values = [x[key] for x in good if isinstance(x.get(key), (int, float))]
            if values:
                merged[key] = statistics.median(values)
                merged[f"{key}_rounds"] = values
        merged["rounds"] = len(good)
        if len(good) < len(results):
            merged["errors"] = [x["error"] for x in results if "error" in x]
        out[fw] = merged
    return out


def spread(r: dict, key: str) -> str:
    """' (min-max)' of a figure's rounds, or '' for one round."""
    values = r.get(f"{key}_rounds") or []
    if len(values) < 2:
        return ""
    return f" ({min(values):.1f}-{max(values):.1f})"


def run_bench(
    arch: str,
    batch_size: int,
    precision: str,
    frameworks: list[str],
    warmup: int,
    windows: int,
    steps: int,
    extra_torch: dict | None = None,
    timeout: float = 1800,
    rows: list[str] | None = None,
    recipe: str = "seed",
) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="resnet-port-bench-") as tmp:
        for fw in frameworks:
            op = {
                "op": "bench",
                "recipe": recipe,
                "arch": arch,
                "batch_size": batch_size,
                "precision": precision,
                "warmup": warmup,
                "windows": windows,
                "steps": steps,
                "out": str(Path(tmp) / f"{fw}.json"),
            }
            if rows:
                op["rows"] = rows
            if fw == F.PYTORCH.key:
                op.update(extra_torch or {})
            try:
                parity.run_worker(fw, [op], tmp, timeout=timeout)
                results[fw] = json.loads(Path(op["out"]).read_text())
            except parity.WorkerError as e:  # recorded and shown, never silently dropped
                results[fw] = {"error": str(e)}
    return results


def cli_flags(fw: F.Framework, precision: str, extra_torch: dict, recipe: str = "seed") -> list[str]:
    """The training CLI's flags for a bench configuration."""
    flags = ["--recipe", recipe] + {
        "fp32": [],
        "amp-fp16": ["--amp", "--amp-dtype", "float16"],
        "amp-bf16": ["--amp", "--amp-dtype", "bfloat16"],
    }[precision]
    if fw is F.PYTORCH:
        flags += ["--compile"] if extra_torch.get("compile") else []
        flags += [] if extra_torch.get("channels_last", True) else ["--no-channels-last"]
    return flags


def time_cli(
    fw: F.Framework,
    arch: str,
    batch_size: int,
    data_dir: Path,
    epochs: int,
    out: Path,
    flags: list[str],
    timeout: float = 3600,
) -> dict:
    """Run ``python -m <fw>.train`` as a user would and time each epoch by its line in metrics.jsonl."""
    cmd = [
        sys.executable,
        "-m",
        f"{fw.package}.train",
        "--arch",
        arch,
        "--batch-size",
        str(batch_size),
        "--epochs",
        str(epochs),
        "--data-dir",
        str(data_dir),
        "--no-verify",
        "--val-size",
        "0",
        "--out",
        str(out),
        "--quiet",
        "--force",
        *flags,
    ]
    log = out.with_suffix(".log")
    metrics = out / rundir.METRICS
    marks: list[float] = []
    with open(log, "w") as err:
        start = time.perf_counter()
        # as a user starts it (forked where a fork server runs: the tests'; the epochs timed are after its start)
        proc = forkserver.start(cmd, stdout=subprocess.DEVNULL, stderr=err, env=parity.worker_env())
        while True:
            done = proc.poll() is not None
            lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
            marks += [time.perf_counter()] * (lines - len(marks))
            if done:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                return {"error": f"{fw.package}.train did not finish within {timeout:.0f} s"}
            time.sleep(0.01)
    if proc.returncode != 0 or len(marks) < 2:
        tail = "\n".join(log.read_text().strip().splitlines()[-10:])
        return {"error": f"{fw.package}.train exited with {proc.returncode} after {len(marks)} epochs:\n{tail}"}
    history = rundir.read_metrics(out)
    n = rundir.read_config(out)["data"]["train"]
    walls = [b - a for a, b in zip(marks, marks[1:])]
    return {
        "images": n,
        "epoch_seconds": walls,
        "epoch_images_per_sec": [n / w for w in walls],
        "train_images_per_sec": [h["images_per_sec"] for h in history[1:]],
        "first_epoch_seconds": marks[0] - start,
    }


def run_cli_bench(
    arch: str,
    batch_size: int,
    precision: str,
    frameworks: list[str],
    warmup: int,
    windows: int,
    steps: int,
    extra_torch: dict,
    images: int,
    epochs: int,
    rounds: int,
    recipe: str = "seed",
) -> dict:
    """Step rates and CLI epoch rates, interleaved: each round runs, per framework, a step bench then the CLI."""
    from . import synthetic

    out = {fw: {"step": [], "epoch": [], "train": []} for fw in frameworks}
    with tempfile.TemporaryDirectory(prefix="resnet-port-cli-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        synthetic.write(data_dir, n_train=images, n_test=50, num_classes=100)
        for r in range(rounds):
            order = frameworks if r % 2 == 0 else frameworks[::-1]  # alternate, so drift favours neither
            for key in order:
                fw = F.get(key)
                step = run_bench(
                    arch,
                    batch_size,
                    precision,
                    [key],
                    warmup,
                    windows,
                    steps,
                    extra_torch,
                    rows=["train_aug"],
                    recipe=recipe,
                )[key]
                cli = time_cli(
                    fw,
                    arch,
                    batch_size,
                    data_dir,
                    epochs,
                    Path(tmp) / f"run_{key}_{r}",
                    cli_flags(fw, precision, extra_torch, recipe),
                )
                for what, res in (("step", step), ("cli", cli)):
                    if "error" in res:
                        out[key].setdefault("errors", []).append(f"round {r + 1}, {what}: {res['error']}")
                if "error" not in step:
                    out[key]["step"].append(step["train_aug"])
                if "error" not in cli:
                    out[key]["epoch"] += cli["epoch_images_per_sec"]
                    out[key]["train"] += cli["train_images_per_sec"]
    for r in out.values():
        med = {k: statistics.median(r[k]) if r[k] else float("nan") for k in ("step", "epoch", "train")}
        r.update({f"{k}_median": v for k, v in med.items()})
        r["epoch_over_step"] = med["epoch"] / med["step"]
        r["train_over_step"] = med["train"] / med["step"]
    return out


def cli_table(res: dict, rounds: int, epochs: int) -> str:
    keys = [k for k in (F.KERAS.key, F.PYTORCH.key) if k in res]
    names = [F.get(k).label for k in keys]
    lines = [
        f"CLI vs its own step (images/s, median; {rounds} interleaved round(s); epochs 2..{epochs} of each CLI run, validation off)",
        f"{'':<44}" + "".join(f"{n:>10}" for n in names),
    ]
    for label, k, fmt in (
        ("train step, augmentation included", "step_median", "{:>10.1f}"),
        ("CLI, training phase (metrics.jsonl)", "train_median", "{:>10.1f}"),
        ("CLI, whole epoch (incl. checkpoint)", "epoch_median", "{:>10.1f}"),
        ("training phase / step", "train_over_step", "{:>10.2f}"),
        ("whole epoch / step", "epoch_over_step", "{:>10.2f}"),
    ):
        lines.append(f"{label:<44}" + "".join(fmt.format(res[key][k]) for key in keys))
    for key in keys:
        for e in res[key].get("errors", []):
            lines.append(f"{F.get(key).label}: FAILED {e.splitlines()[0]}")
    return "\n".join(lines)


def table(res: dict, arch: str) -> tuple[str, dict]:
    flops = flops_per_image(arch)
    ceilings = [r["matmul_gflops"] for r in res.values() if "matmul_gflops" in r]
    ceiling = max(ceilings) if ceilings else float("nan")
    tf, pt = res.get(F.KERAS.key, {}), res.get(F.PYTORCH.key, {})
    rounds = max((r.get("rounds", 1) for r in res.values()), default=1)
    lines = [
        f"{f'images/s (median of {rounds} round(s), min-max)':<36} {'Keras':>22} {'PyTorch':>22} {'PT/Keras':>9} {'Keras %ceil':>12} {'PT %ceil':>9}"
    ]
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
        ka = f"{a:.1f}{spread(tf, key)}" if a else "-"  # "-": not run (or failed), never a nan
        kb = f"{b:.1f}{spread(pt, key)}" if b else "-"
        shown = f"{ratio:.2f}" if a and b else "-"
        lines.append(f"{label:<36} {ka:>22} {kb:>22} {shown:>9} {fa:>12} {fb:>9}")
    for fw_key, r in (("keras", tf), ("pytorch", pt)):
        if r.get("augment") and r.get("train"):
            derived[f"{fw_key}_augment_over_train"] = r["augment"] / r["train"]

    def num(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if isinstance(r.get(key), (int, float)) and r[key] == r[key] else "-"

    lines.append(
        f"{'peak memory (MB)':<36} {num(tf, 'peak_memory_mb', '.0f'):>10} {num(pt, 'peak_memory_mb', '.0f'):>10}"
    )
    lines.append(
        f"{'matmul ceiling (GFLOP/s, fp32)':<36} {num(tf, 'matmul_gflops', '.1f'):>10}{spread(tf, 'matmul_gflops'):>12} {num(pt, 'matmul_gflops', '.1f'):>10}{spread(pt, 'matmul_gflops'):>12}"
        f"   ceiling used: {ceiling:.1f}"
    )
    for fw_key, name in (("keras", "Keras"), ("pytorch", "PyTorch")):
        if f"{fw_key}_augment_over_train" in derived:
            lines.append(f"augmentation alone / training, {name}: {derived[f'{fw_key}_augment_over_train']:.0f}x")
    for fw, r in res.items():
        if "error" in r:
            lines.append(f"{fw}: FAILED: {r['error'].splitlines()[0]}")
        for e in r.get("errors", []):
            lines.append(f"{fw}: a round FAILED: {e.splitlines()[0]}")
    return "\n".join(lines), derived


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on Linux), or the machine type."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.bench", description=cli.description(__doc__))
    ap.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="seed",
        help="whose objective, optimiser and augmentation the step runs (default seed)",
    )
    ap.add_argument("--arch", choices=available(), default=None, help="architecture (default: the recipe's)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default: the recipe's)")
    ap.add_argument(
        "--precision",
        choices=["fp32", "amp-fp16", "amp-bf16"],
        default="fp32",
        help="fp32 (default), or mixed precision: amp-fp16 (float16 autocast and a loss scaler) or amp-bf16 (bfloat16 autocast); Keras runs the mixed_float16 / mixed_bfloat16 policy",
    )
    ap.add_argument("--frameworks", default="tf,torch", help="comma-separated: tf, torch (default both)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows; the median is reported (default 3)")
    ap.add_argument("--steps", type=int, default=3, help="steps per window (default 3)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model")
    ap.add_argument(
        "--no-channels-last",
        action="store_true",
        help="PyTorch: keep the model and batches NCHW instead of channels_last (NHWC), to measure what the memory format gives",
    )
    ap.add_argument(
        "--sweep", action="store_true", help="PyTorch: also every precision with compile off and on (for GPUs)"
    )
    ap.add_argument(
        "--cli",
        action="store_true",
        help="also time each training CLI's epochs, interleaved with the step (see the module docstring)",
    )
    ap.add_argument("--cli-images", type=int, default=None, help="training images per CLI epoch (default 20 batches)")
    ap.add_argument("--cli-epochs", type=int, default=3, help="epochs per CLI run; the first is not timed (default 3)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds alternating the frameworks' order, of the step bench and of --cli (default 3)",
    )
    ap.add_argument("--json", help="write all results here")
    cli.add_threads(ap)
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    threads, how = cli.cpu_threads(args.threads)
    if threads is not None:  # for every worker process this bench starts
        for var in cli.THREAD_VARIABLES:
            os.environ[var] = str(threads)
    args.arch = args.arch or RECIPES[args.recipe].arch
    args.batch_size = args.batch_size or RECIPES[args.recipe].batch_size
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in frameworks if f not in parity.FRAMEWORKS]
    if (
        bad
        or not frameworks
        or min(args.batch_size, args.windows, args.steps, args.rounds) < 1
        or args.warmup < 0
        or args.cli_epochs < 2
    ):
        print(
            f"error: --frameworks takes tf and/or torch; --batch-size, --windows, --steps, --rounds must be positive and --cli-epochs at least 2 (got {args.frameworks!r})",
            file=sys.stderr,
        )
        return 2
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    extra = {"compile": args.compile, "channels_last": not args.no_channels_last}
    res = run_rounds(
        args.arch,
        args.batch_size,
        args.precision,
        frameworks,
        args.warmup,
        args.windows,
        args.steps,
        extra,
        args.rounds,
        recipe=args.recipe,
        progress=cli.Progress("bench", args.quiet),
    )
    text, derived = table(res, args.arch)
    header = f"resnet-port bench: {args.recipe} recipe, {args.arch}, batch {args.batch_size}, {args.precision}, {cpu_model()}, {threads or 'default'} CPU thread{'' if threads == 1 else 's'} ({how}), {started}"
    print(header)
    print(text)
    report = {
        "recipe": args.recipe,
        "arch": args.arch,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "date": started,
        "rounds": args.rounds,
        "results": res,
        **derived,
        "sweep": [],
    }
    if args.sweep:
        print("\nPyTorch sweep (train step with augmentation, images/s):")
        for precision in ("fp32", "amp-fp16", "amp-bf16"):
            for comp in (False, True):
                r = run_bench(
                    args.arch,
                    args.batch_size,
                    precision,
                    [F.PYTORCH.key],
                    args.warmup,
                    args.windows,
                    args.steps,
                    {"compile": comp, "channels_last": not args.no_channels_last},
                    recipe=args.recipe,
                )[F.PYTORCH.key]
                report["sweep"].append({"precision": precision, "compile": comp, **r})
                shown = f"{r['train_aug']:.0f}" if "train_aug" in r else f"FAILED: {r['error'].splitlines()[0]}"
                print(f"  {precision:<9} compile={'on ' if comp else 'off'}  {shown}")
    failed = any("error" in r or r.get("errors") for r in res.values())
    if args.cli:
        images = args.cli_images or 20 * args.batch_size
        timed = run_cli_bench(
            args.arch,
            args.batch_size,
            args.precision,
            frameworks,
            args.warmup,
            args.windows,
            args.steps,
            extra,
            images,
            args.cli_epochs,
            args.rounds,
            args.recipe,
        )
        print()
        print(cli_table(timed, args.rounds, args.cli_epochs))
        report["cli"] = {"images": images, "epochs": args.cli_epochs, "rounds": args.rounds, "results": timed}
        failed |= any(r.get("errors") for r in timed.values())
    if args.json:
        Path(args.json).write_text(rundir.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
