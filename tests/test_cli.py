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
    assert p.returncode == 2 and p.stderr.strip().splitlines() == ["error: unknown command 'trian'; choose one of: port, export, compare, diff, bench, summary, data (resnet-port --help)"]


def test_the_installed_script_runs_the_commands(tmp_path):
    """pip installs ``resnet-port`` beside the interpreter; its commands are the modules' own."""
    script = Path(sys.executable).parent / "resnet-port"
    assert script.is_file(), "resnet-port is not installed: pip install -e . (make venv does)"
    p = run("data", tmp_path / "d", "--train", "20", "--test", "10", exe=(str(script),))
    assert p.returncode == 0, p.stderr
    assert len(D.read(D.find(tmp_path / "d"), verify=False, val_size=0).test.images) == 10
    p = run("summary", "tiny", "--params-only", exe=(str(script),))
    assert p.returncode == 0 and p.stdout.strip()
