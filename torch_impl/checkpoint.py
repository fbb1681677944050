"""The PyTorch run checkpoint (``checkpoint.pt``): written with a digest, read without running code.

A run directory is something people copy between machines and share, so reading
one must never execute anything: the file is read with
``torch.load(weights_only=True)``, which unpickles tensors and plain data only
and refuses any other object (a pickled ``os.system`` call included) before it
is built.  Then, before any value reaches the model:

* the SHA-256 ``digest`` written with the checkpoint is recomputed over its
  contents (every tensor's bytes, every value), so bytes that rotted inside a
  tensor are caught even where they still read as finite numbers;
* every floating tensor of the model and the optimiser must be finite, and every
  BatchNorm running variance non-negative (``resnet_port.weights.check_values``).

The file is serialised in memory and written atomically
(``resnet_port.weights.atomic_write_bytes``), so a full disk is an ``OSError``
naming the file, not a C++ message from the zip writer, and never half a file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from resnet_port import cli, rundir
from resnet_port import weights as neutral

DIGEST = "digest"


def _as_array(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
    raise TypeError(f"cannot digest a {type(t).__name__}")


def content_digest(st: dict) -> str:
    return neutral.digest({k: v for k, v in st.items() if k != DIGEST}, to_array=_as_array)


def tensors_of(obj, path: str = ""):
    """(path, numpy array) for every tensor in a nested structure."""
    if isinstance(obj, torch.Tensor):
        yield path, _as_array(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_of(v, f"{path}/{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_of(v, f"{path}/{i}")


def _checked_tensors(st: dict) -> dict:
    """The tensors whose values must be finite (BatchNorm variances >= 0): the model's and the optimiser's."""
    return dict(tensors_of({"model": st.get("model"), "optimizer": st.get("optimizer")}))


def check_finite(st: dict, source: str) -> None:
    """The model's and the optimiser's tensors finite, BatchNorm variances >= 0 (else WeightsError naming one)."""
    neutral.check_values(_checked_tensors(st), source)


def to_bytes(st: dict) -> bytes:
    """The checkpoint as bytes, with its digest (checked finite first: no checkpoint of a diverged model)."""
    check_finite(st, "the checkpoint to write")
    buf = io.BytesIO()
    torch.save({**st, DIGEST: content_digest(st)}, buf)
    return buf.getvalue()


def save(path: Path, st: dict) -> None:
    neutral.atomic_write_bytes(Path(path), to_bytes(st))


def load(path: Path) -> dict:
    """The checkpoint's contents on the CPU, verified (see the module docstring); RunDirError otherwise."""
    path = Path(path)
    fix = rundir.checkpoint_fix(path)
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise rundir.RunDirError(
            f"refusing to load checkpoint {path}: it holds Python objects other than tensors and plain data, which could run code "
            f"(PyTorch's weights_only loader: {cli.reason(e)}); nothing was run. Use a checkpoint this tool wrote, or {fix}"
        ) from None
    except Exception as e:  # truncated, not a zip, damaged records
        raise rundir.RunDirError(f"cannot read checkpoint {path} ({cli.reason(e)}); {fix}") from None
    if not isinstance(st, dict) or not {"model", "optimizer", "epoch", "history"} <= set(st):
        raise rundir.RunDirError(
            f"{path} is not a torch_impl checkpoint (a dict with model, optimizer, epoch, history); {fix}"
        )
    rundir.verify_checkpoint(path, _checked_tensors(st), st.get(DIGEST), lambda: content_digest(st))
    return st
