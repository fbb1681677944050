"""A checkpoint write that dies halfway leaves the previous checkpoint whole and loadable.

For each backend, through the contract's ``write_checkpoint`` / ``read_checkpoint``: a first
checkpoint is written; a second write to the same path is killed (SIGKILL) after writing half
of its first chunk, in its own process.  The path still holds the first checkpoint, read back
verified and equal.  (The fsync failure is tested in test_trust; this is a plain write that
dies.)
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_port import backends

ROOT = Path(__file__).parent.parent

WRITE = r"""
import os, signal, sys
from pathlib import Path
import numpy as np
from resnet_port import backends
from resnet_port.conformance import fixed_tensors
from resnet_port.spec import get_spec

key, path, value, die = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "die"
b = backends.get(key)
t = {k: v + np.float32(value) if not k.endswith("moving_variance") else v for k, v in fixed_tensors(get_spec("tiny")).items()}
if key == "torch":
    import torch
    tensors = {"model": {k: torch.from_numpy(v) for k, v in t.items()}, "optimizer": {"state": {}, "param_groups": []}}
else:
    tensors = {f"model/{k}": v for k, v in t.items()}
state = {"epoch": int(value), "history": [value]}
if die:
    real = os.fdopen

    class Dying:
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(bytes(data)[: max(1, len(data) // 2)])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    os.fdopen = lambda fd, *a, **k: Dying(real(fd, *a, **k))
b.write_checkpoint(path, tensors, state)
"""


@pytest.mark.parametrize("key", backends.all_keys())
def test_a_write_killed_halfway_leaves_the_previous_checkpoint(key, tmp_path):
    path = tmp_path / {"tf": "checkpoint.npz", "torch": "checkpoint.pt"}[key]

    def write(value, die):
        return subprocess.run(
            [sys.executable, "-c", WRITE, key, str(path), str(value), die],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert write(1, "live").returncode == 0
    before = path.read_bytes()
    p = write(2, "die")
    assert p.returncode == -9, p.stderr[-2000:]  # killed mid-write
    assert path.read_bytes() == before
    tensors, state = backends.get(key).read_checkpoint(path)
    assert state["epoch"] == 1 and state["history"] == [1.0]
    assert [
        f.name for f in tmp_path.iterdir() if f.name != path.name
    ] != []  # the dead write's temporary file, not the checkpoint
    model = tensors["model"] if key == "torch" else {k[6:]: v for k, v in tensors.items()}
    assert all(np.isfinite(np.asarray(v)).all() for v in model.values())
