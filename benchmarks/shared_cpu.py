"""How the training step holds up when the CPU is shared: ``python benchmarks/shared_cpu.py``.

For 1 thread and for every core, runs ``python -m resnet_port.bench`` (tiny, batch 64, both
frameworks) on a quiet machine and beside one busy-loop process, the four cases interleaved
over ``--rounds`` rounds (these machines drift), and prints images/s and each case's ratio to
the framework's best quiet speed.  It is how the training CLIs' default thread count (every
core but one) was chosen; it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def bench(threads: int, arch: str, batch: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "resnet_port.bench",
        "--arch",
        arch,
        "--batch-size",
        str(batch),
        "--threads",
        str(threads),
        "--rounds",
        "1",
        "--json",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads(out.read_text())["results"]
    return {fw: r.get("train_aug") for fw, r in res.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    cases = [(t, busy) for t in sorted({1, max(1, cores - 1), cores}) for busy in (False, True)]
    got: dict = {c: {} for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for case in cases if r % 2 == 0 else cases[::-1]:
                threads, busy = case
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    for fw, v in bench(threads, args.arch, args.batch_size, Path(tmp) / "b.json").items():
                        got[case].setdefault(fw, []).append(v)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
    fws = sorted({fw for c in got.values() for fw in c})
    best = {fw: max(statistics.median(got[(t, False)][fw]) for t, b in cases if not b) for fw in fws}
    print(
        f"training step, {args.arch}, batch {args.batch_size}, {cores} cores, median of {args.rounds} rounds (images/s; ratio to the framework's best quiet speed)"
    )
    print(f"{'threads':>7} {'machine':<22} " + " ".join(f"{fw:>16}" for fw in fws))
    for threads, busy in cases:
        cells = []
        for fw in fws:
            v = statistics.median(got[(threads, busy)][fw])
            cells.append(f"{v:8.0f} ({v / best[fw]:4.2f})")
        print(f"{threads:>7} {'beside a busy process' if busy else 'quiet':<22} " + " ".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
