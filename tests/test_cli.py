"""The one console script, ``resnet-port COMMAND`` (and ``python -m resnet_port COMMAND``)."""

import subprocess
import sys
from pathlib import Path

from resnet_port import data as D


def run(*args, exe=(sys.executable, "-m", "resnet_port")):
    return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_and_unknown_ones_are_one_line():
    p = run("--help")
    assert p.returncode == 0
    for name in ("port", "export", "compare", "diff", "bench", "summary", "data"):
        assert f"  {name} " in p.stdout, name
    assert run().returncode == 2
    p = run("trian")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: unknown command 'trian'; choose one of: port, export, compare, diff, bench, summary, data (resnet-port --help)"
    ]


def test_the_installed_script_runs_the_commands(tmp_path):
    """pip installs ``resnet-port`` beside the interpreter; its commands are the modules' own."""
    script = Path(sys.executable).parent / "resnet-port"
    assert script.is_file(), "resnet-port is not installed: pip install -e . (make venv does)"
    p = run("data", tmp_path / "d", "--train", "20", "--test", "10", exe=(str(script),))
    assert p.returncode == 0, p.stderr
    assert len(D.read(D.find(tmp_path / "d"), verify=False, val_size=0).test.images) == 10
    p = run("summary", "tiny", "--params-only", exe=(str(script),))
    assert p.returncode == 0 and p.stdout.strip()


def test_cpu_threads_default_leaves_a_core_and_keeps_the_environments(monkeypatch):
    """--threads wins; else OMP_NUM_THREADS / MKL_NUM_THREADS / TF_NUM_INTRAOP_THREADS, when set, are kept;
    else every core but one (a second busy process stalls PyTorch at every core: BENCHMARKS.md)."""
    import os

    from resnet_port import cli

    for var in cli.THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cli.cpu_threads(None) == (max(1, cores - 1), f"every core but one, of {cores}; --threads to change")
    assert cli.cpu_threads(3) == (3, "--threads")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert cli.cpu_threads(None) == (None, "TF_NUM_INTRAOP_THREADS=1") and cli.cpu_threads(2) == (2, "--threads")


def test_bench_table_prints_a_dash_for_what_was_not_run():
    from resnet_port import bench

    text, _ = bench.table(
        {"tf": {"train": 100.0, "train_aug": 90.0, "matmul_gflops": 50.0, "peak_memory_mb": 300}}, "tiny"
    )
    assert "nan" not in text and "90.0" in text
