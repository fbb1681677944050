"""``model.pt2`` (``torch.export``'s program, loaded by ``torch.export.load(...).module()``) and
``state_dict.pt``, which loads into ``torch_impl.model.build_model(arch)`` with ``strict=True``.

Written by ``torch_impl`` (``export_torch``); the program takes any image size unless the network's pads
depend on it (TF 'same' padding at stride 2), then its native size only.  The state_dict is checked by
this module run as ``python -m resnet_port.formats.torch_program ARCH STATE_DICT INPUTS OUT`` (it needs
torch_impl, so it is not a reload without this project: the row says what loaded it).
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "torch"
FRAMEWORK = "torch"
FILE = "model.pt2"
SIZED = True
STATE_DICT = "state_dict.pt"


def write_op(path, out) -> dict:
    return {"op": "export_torch", "program": str(path), "state_dict": str(Path(out) / STATE_DICT)}


def _nchw(x):
    import torch

    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def reload(path: str, meta: dict):
    import torch

    module = torch.export.load(path).module()

    def run(x):
        with torch.no_grad():
            return module(_nchw(x)).numpy()

    return run, {}


def extra_rows(ctx) -> list[dict]:
    """The state_dict, loaded with ``load_state_dict(strict=True)`` into torch_impl's model, in a process of
    its own, at the first size checked."""
    import subprocess

    import numpy as np

    from resnet_port import parity

    path, size = ctx.out / STATE_DICT, ctx.sizes[0]
    out = ctx.tmp / "state_dict_logits.npy"
    proc = subprocess.run(
        [sys.executable, "-m", __name__, ctx.spec.name, str(path), str(ctx.inputs[size]), str(out)],
        capture_output=True,
        text=True,
        env=parity.worker_env(),
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ctx.error(f"{path.name} does not load into torch_impl.model.build_model({ctx.spec.name!r}): {last}")
    row = ctx.compare(
        NAME,
        path.name + " (torch_impl.model)",
        "its source, the weights in PyTorch",
        {f"{size}/{ctx.largest_batch}": np.load(out)},
        {size: ctx.reference[FRAMEWORK][size]},
    )
    row["size"] = "any"
    return [row]


def main(argv: list[str]) -> int:
    import numpy as np
    import torch

    from torch_impl.model import build_model

    arch, state_dict, inputs, out = argv
    model = build_model(arch)
    model.load_state_dict(torch.load(state_dict, weights_only=True), strict=True)
    model.eval()
    with torch.no_grad():
        np.save(out, model(_nchw(np.load(inputs))).numpy())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
