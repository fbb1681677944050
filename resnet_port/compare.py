"""``python -m resnet_port.compare RUN_DIR [RUN_DIR ...]``: runs side by side, across frameworks.

Prints one table (framework, arch, epochs, AMP, best and final validation
accuracy, test accuracy, training time, images/s) and writes a report folder:
the table as Markdown and CSV, and the runs' accuracy and loss curves overlaid
(one figure each, coloured by framework).

Cross-evaluation: each run's final weights are evaluated in the *other*
framework as well (its own process, through the neutral file), and the report
shows both test accuracies and how many test predictions disagree.  A correct
port disagrees on none or a handful (float rounding at a near-tie); more than
0.1% is flagged loudly and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import cli, frameworks, rundir
from .parity import worker_env

COLOURS = {
    "tf_impl": ["tab:orange", "tab:red", "tab:brown", "gold"],
    "torch_impl": ["tab:blue", "tab:cyan", "tab:purple", "navy"],
}
FLAG_FRACTION = 0.001  # more disagreeing predictions than this is not rounding


class CompareError(ValueError):
    pass


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def precision_label(recipe: dict, runtime: dict) -> str:
    """The precision a run trained in, and what was asked when it differs (``--amp`` on a CPU)."""
    effective = runtime.get("amp_effective", "float32")
    if recipe.get("amp") and "16" not in effective:
        return f"{effective} (--amp asked, not available on {runtime.get('device', 'this device')})"
    return effective


def data_label(cfg: dict) -> str:
    d = cfg.get("data", {})
    if not d:
        return "?"
    return f"{d.get('train', '?')}/{d.get('val', '?')}/{d.get('test', '?')}" + (
        "" if d.get("verified", True) else " unverified"
    )


def load_run(path: Path) -> dict:
    cfg = rundir.read_config(path)
    metrics = rundir.read_metrics(path)
    results = rundir.read_results(path) or {}
    recipe = cfg.get("recipe", {})
    runtime = cfg.get("runtime", {})
    try:
        fw = frameworks.get(cfg["framework"])
    except (KeyError, ValueError):
        raise rundir.RunDirError(
            f"{path / rundir.CONFIG} names no framework this tool knows ({cfg.get('framework')!r})"
        ) from None
    val = _finite(m.get("val_accuracy") for m in metrics)
    missing = float("nan")
    return {
        "path": path,
        "name": path.name,
        "framework": fw.package,
        "framework_name": fw.display_name(runtime),  # as users know it, with the versions that trained the run
        "arch": recipe.get("arch", "?"),
        "recipe": recipe.get("name", "seed"),
        "data": data_label(cfg),
        "data_fingerprint": cfg.get("data", {}).get("fingerprint"),
        "epochs": len(metrics),
        "amp": precision_label(recipe, runtime),
        "best_val_accuracy": max(val) if val else missing,
        "final_val_accuracy": val[-1] if val and len(val) == len(metrics) else missing,
        "test_accuracy": results.get("test_accuracy") if results.get("test_accuracy") is not None else missing,
        "train_seconds": sum(m.get("seconds") or 0.0 for m in metrics),
        "images_per_sec": results.get("images_per_sec") if results.get("images_per_sec") is not None else missing,
        "metrics": metrics,
        "finished": bool(results),
    }


def cross_evaluate(run: dict, workdir: Path) -> dict:
    """Evaluate a run's weights in the other framework; compare with its own predictions."""
    other_fw = frameworks.other(run["framework"])
    other = other_fw.package
    if not other_fw.installed():
        raise CompareError(f"cross-evaluation needs {other_fw.install_hint()} (or pass --no-cross-eval)")
    pred_path, json_path = workdir / f"{run['name']}_{other}.npy", workdir / f"{run['name']}_{other}.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"{other}.evaluate",
            str(run["path"]),
            "--predictions",
            str(pred_path),
            "--json",
            str(json_path),
        ],
        capture_output=True,
        text=True,
        env=worker_env(),
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise CompareError(f"evaluating {run['path']} in {other} failed (exit {proc.returncode}):\n{tail}")
    theirs = np.load(pred_path)
    mine = np.load(run["path"] / rundir.PREDICTIONS)
    if mine.shape != theirs.shape:
        raise CompareError(
            f"{run['path']}: {len(mine)} stored predictions but {len(theirs)} test images now; was the data changed?"
        )
    disagree = int((mine != theirs).sum())
    return {
        "other_framework": other_fw.label,
        "other_test_accuracy": json.loads(json_path.read_text())["accuracy"],
        "disagreements": disagree,
        "total": len(mine),
        "flagged": disagree > FLAG_FRACTION * len(mine),
    }


COLUMNS = [
    ("run", "name", "{}"),
    ("framework", "framework_name", "{}"),
    ("recipe", "recipe", "{}"),
    ("arch", "arch", "{}"),
    ("data (train/val/test)", "data", "{}"),
    ("epochs", "epochs", "{}"),
    ("AMP", "amp", "{}"),
    ("best val acc", "best_val_accuracy", "{:.4f}"),
    ("final val acc", "final_val_accuracy", "{:.4f}"),
    ("test acc", "test_accuracy", "{:.4f}"),
    ("train time (s)", "train_seconds", "{:.1f}"),
    ("images/s", "images_per_sec", "{:.1f}"),
]
CROSS_COLUMNS = [
    ("test acc, other framework", "other_test_accuracy", "{:.4f}"),
    ("predictions differing", "disagree_text", "{}"),
]


def rows_for(runs: list[dict], cross: bool) -> tuple[list[str], list[list[str]]]:
    columns = COLUMNS + (CROSS_COLUMNS if cross else [])
    header = [c[0] for c in columns]
    rows = []
    for r in runs:
        row = []
        for _, key, fmt in columns:
            v = r.get(key, "")
            missing = v == "" or v is None or (isinstance(v, float) and not math.isfinite(v))
            row.append("-" if missing else fmt.format(v))
        rows.append(row)
    return header, rows


def format_text(header, rows) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def format_markdown(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def plot_overlay(runs: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = {fw: 0 for fw in COLOURS}
    colour = {}
    for r in runs:
        palette = COLOURS[r["framework"]]
        colour[r["name"]] = palette[used[r["framework"]] % len(palette)]
        used[r["framework"]] += 1
    paths = []
    for metric, ylabel in (("accuracy", "Accuracy"), ("loss", "Loss")):
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
        for r in runs:
            epochs = [m["epoch"] for m in r["metrics"]]
            label = f"{r['name']} ({frameworks.get(r['framework']).label}, {r['arch']})"
            value = lambda m, k: m.get(k) if m.get(k) is not None else float("nan")  # null in metrics.jsonl: no value
            ax.plot(
                epochs,
                [value(m, metric) for m in r["metrics"]],
                "-o",
                ms=3,
                color=colour[r["name"]],
                label=f"{label} train",
            )
            ax.plot(
                epochs,
                [value(m, f"val_{metric}") for m in r["metrics"]],
                "--s",
                ms=3,
                color=colour[r["name"]],
                label=f"{label} val",
            )
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel}: solid, circles = train; dashed, squares = validation")
        ax.legend(
            fontsize=7, handlelength=5
        )  # long enough handles that the dashing shows (and square markers: validation)
        path = out_dir / f"{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def default_report(runs: list[Path]) -> Path:
    """compare-report/ in the folder holding the runs (their nearest common folder): never the current
    folder by accident, so comparing runs/tf-x and runs/torch-x writes runs/compare-report/."""
    import os

    parents = [str(p.resolve().parent) for p in runs]
    return Path(os.path.commonpath(parents)) / "compare-report"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.compare", description=cli.description(__doc__))
    ap.add_argument("runs", nargs="+", help="run directories written by tf_impl.train or torch_impl.train")
    ap.add_argument(
        "--report",
        default=None,
        help="folder for the Markdown/CSV table and plots (default: compare-report/ beside the runs, in the folder that holds them)",
    )
    ap.add_argument(
        "--no-cross-eval", action="store_true", help="skip evaluating each run's weights in the other framework"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    progress = cli.Progress("compare", args.quiet)
    try:
        paths, seen = [], set()
        for p in args.runs:  # a run given twice is one run
            key = Path(p).resolve()
            if key not in seen:
                seen.add(key)
                paths.append(Path(p))
        runs = [load_run(p) for p in paths]
        names = [r["name"] for r in runs]
        if len(set(names)) != len(names):  # make labels unique
            for r in runs:
                r["name"] = str(r["path"])
        cross = not args.no_cross_eval
        if cross:
            with tempfile.TemporaryDirectory(prefix="resnet-port-compare-") as tmp:
                for r in runs:
                    if not r["finished"]:
                        r["disagree_text"] = "run not finished"
                        continue
                    progress(f"evaluating {r['name']}'s weights in {frameworks.other(r['framework']).label}")
                    c = cross_evaluate(r, Path(tmp))
                    r.update(c)
                    r["disagree_text"] = f"{c['disagreements']} of {c['total']}" + (
                        "  <-- FLAGGED" if c["flagged"] else ""
                    )
    except (rundir.RunDirError, CompareError, OSError) as e:
        return cli.fail(str(e))
    header, rows = rows_for(runs, cross)
    print(format_text(header, rows))
    archs = sorted({r["arch"] for r in runs})
    notes = []
    if len(archs) > 1:
        notes.append(f"note: these runs are of different architectures ({', '.join(archs)}); compare like with like")
    recipes = sorted({r["recipe"] for r in runs})
    if len(recipes) > 1:
        notes.append(
            f"note: these runs follow different recipes ({', '.join(recipes)}): their accuracies answer different questions"
        )
    datas = {(r["data"], r["data_fingerprint"]) for r in runs}
    if len(datas) > 1:
        notes.append(
            "note: these runs trained or were tested on different data (see the data column"
            + ("" if len({d for d, _ in datas}) > 1 else "; same sizes, other images")
            + "); their accuracies are not comparable"
        )
    flagged = [r for r in runs if r.get("flagged")]
    for r in flagged:
        notes.append(
            f"WARNING: {r['name']}: its weights give {r['disagreements']} of {r['total']} different test predictions in "
            f"{r['other_framework']} (more than {FLAG_FRACTION:.1%}): the port is not exact; run python -m resnet_port.diff {r['path'] / rundir.WEIGHTS}"
        )
    for n in notes:
        print(n, file=sys.stderr if n.startswith("WARNING") else sys.stdout)
    report = Path(args.report) if args.report else default_report(paths)
    try:
        report.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return cli.fail(f"cannot write the report to {report} ({e.strerror}); give --report FOLDER")
    (report / "compare.md").write_text(
        "# Run comparison\n\n" + format_markdown(header, rows) + "\n\n" + "\n\n".join(notes) + ("\n" if notes else "")
    )
    with open(report / "compare.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    plot_overlay(runs, report)
    print(
        f"report: {report / 'compare.md'}, {report / 'compare.csv'}, {report / 'accuracy.png'}, {report / 'loss.png'}"
    )
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
