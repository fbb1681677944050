"""What ``python -m tf_impl.evaluate`` and ``python -m torch_impl.evaluate`` share.

The target is a neutral weights file or a run directory (its final
``weights.safetensors``; its data settings are reused unless given).  The test
set is evaluated in batches of 50, as the seed did, and the accuracy printed the
way the seed printed it: ``acc= 0.6221``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np

from . import cli, data, rundir
from . import weights as W
from .spec import get_spec


def parser(framework: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=f"python -m {framework}.evaluate",
        description=f"Test accuracy of a weights file or run directory, in {framework}",
    )
    ap.add_argument("target", help="a .safetensors weights file or a run directory")
    ap.add_argument("--arch", help="expected architecture (default: the one the weights file names)")
    ap.add_argument("--data-dir", help="CIFAR-100 location (default: the run's, else search)")
    ap.add_argument(
        "--no-verify", action="store_true", help="skip the md5 checks (your own files in the CIFAR-100 format)"
    )
    ap.add_argument(
        "--val-size",
        type=cli._nonneg_int,
        default=None,
        help="validation size, for --split val (default: the run's, else 5000)",
    )
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--batch-size", type=int, default=50, help="evaluation batch size (default 50, the seed's)")
    ap.add_argument("--predictions", help="write the predicted labels (.npy) here")
    ap.add_argument("--json", help="write {accuracy, correct, total, arch, framework} here")
    cli.add_threads(ap)
    return ap


def resolve(args) -> tuple[Path, str, dict]:
    """(weights path, arch, data settings) for the target."""
    target = Path(args.target)
    settings = {"data_dir": args.data_dir, "verify": not args.no_verify, "val_size": args.val_size}
    run = target if target.is_dir() else (target.parent if (target.parent / "config.json").is_file() else None)
    if run is not None:  # a run directory, or a weights file inside one: the run's data settings
        cfg = rundir.read_config(run)
        weights_path = rundir.weights_of(target) if target.is_dir() else target
        if settings["data_dir"] is None:
            settings["data_dir"] = cfg.get("data", {}).get("source")
            if not cfg.get("data", {}).get("verified", True):
                settings["verify"] = False
        if settings["val_size"] is None:
            settings["val_size"] = cfg["recipe"]["val_size"]
    else:
        weights_path = target
    if not weights_path.is_file():
        raise W.WeightsError(f"weights file not found: {weights_path}")
    meta = W.read_metadata(weights_path)
    arch = meta["arch"]
    if args.arch and get_spec(args.arch).name != arch:
        raise W.WeightsError(f"{weights_path} holds weights for architecture {arch!r}, not {args.arch!r}")
    if args.split == "test":
        settings["val_size"] = (
            0  # the test split does not depend on it; a small data set need not have 5,000 training images
        )
    elif settings["val_size"] is None:
        settings["val_size"] = 5000
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    return weights_path, arch, settings


def main(
    framework: str,
    predict: Callable[[Path, str, np.ndarray, int], np.ndarray],
    argv=None,
    set_threads: Callable[[int | None], str] | None = None,
) -> int:
    """``predict(weights_path, arch, uint8 NHWC images, batch_size) -> logits``; ``set_threads(--threads)``
    sets the framework's CPU threads (every core but one by default) and says how many."""
    args = parser(framework).parse_args(argv)

    def run():
        if set_threads is not None:
            set_threads(args.threads)
        weights_path, arch, s = resolve(args)
        W.load(weights_path, arch)  # strict check before any framework work
        ds = data.load(s["data_dir"], verify=s["verify"], val_size=s["val_size"])
        split = ds.test if args.split == "test" else ds.val
        logits = predict(weights_path, arch, split.images, args.batch_size)
        pred = logits.argmax(1)
        correct = int((pred == split.fine).sum())
        acc = correct / max(len(split), 1)
        if args.predictions:
            np.save(args.predictions, pred)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "framework": framework,
                        "arch": arch,
                        "weights": str(weights_path),
                        "split": args.split,
                        "accuracy": acc,
                        "correct": correct,
                        "total": len(split),
                    }
                )
                + "\n"
            )
        print(f"{framework} {arch} on {len(split)} {args.split} images: {correct} correct")
        print(f"acc= {acc}")
        return 0

    return cli.run_cli(run, (ValueError, data.DataError, rundir.RunDirError, W.WeightsError))
