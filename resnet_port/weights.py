"""The neutral weights file: one safetensors file both frameworks write and read.

Why safetensors rather than ``.npz``: it holds no pickle, so loading a file can
never run code; its JSON header carries string metadata (the architecture and
the layout version) that can be read without touching the tensor bytes; and it is
read natively across the PyTorch and Keras ecosystems.

Layout (version 1), keyed by the spec's canonical names ``<layer>.<param>``:

=============  =====================  ===========================================
param          shape                  notes
=============  =====================  ===========================================
``kernel``     conv ``(kh, kw, in,    Keras' layout (HWIO).  PyTorch's
               out)``; dense          ``(out, in, kh, kw)`` / ``(out, in)`` are
               ``(in, out)``          converted in ``torch_impl.weights`` only.
``bias``       ``(out,)``
``gamma``      ``(c,)``               BatchNorm scale
``beta``       ``(c,)``               BatchNorm offset
``moving_mean``      ``(c,)``         BatchNorm moving statistics: part of the
``moving_variance``  ``(c,)``         file, since inference depends on them.
=============  =====================  ===========================================

All tensors are float32.  Metadata: ``format`` (``resnet-port-weights``),
``format_version``, ``arch`` (the registry name) and ``producer`` (which
framework wrote it); ``normalization`` (JSON ``{"mean": [...], "std": [...]}``)
when the model expects its [0, 1] inputs normalised per channel (recipes that
normalise), since the model is wrong without it.  Loading is strict: see
:func:`check_tensors`.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .augment import Normalization
from .spec import ResNetSpec, get_spec

FORMAT = "resnet-port-weights"
FORMAT_VERSION = "1"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message says why and what to do."""


@dataclass
class Weights:
    arch: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def normalization(self) -> Normalization | None:
        return normalization_of(self.metadata)


def normalization_of(metadata: dict[str, str]) -> Normalization | None:
    """The input normalisation a weights file's metadata states (None: inputs are pixels / 255)."""
    raw = metadata.get("normalization")
    return Normalization.from_dict(json.loads(raw)) if raw else None


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], arch: str, producer: str = "", extra: dict | None = None, normalization: Normalization | None = None) -> Path:
    """Validate ``tensors`` against the spec of ``arch`` and write them atomically."""
    spec = get_spec(arch)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    check_tensors(arrays, spec, source="tensors to save")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": spec.name, "producer": producer}
    if normalization is not None:
        metadata["normalization"] = json.dumps(normalization.to_dict())
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    from safetensors.numpy import save as st_save

    payload = st_save(arrays, metadata=metadata)
    return atomic_write_bytes(Path(path), payload)


def load(path: str | os.PathLike, arch: str | ResNetSpec | None = None) -> Weights:
    """Read a weights file; with ``arch``, also check it holds exactly that architecture."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    metadata = read_metadata(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: the tensor data is damaged or truncated ({e}); re-export the weights") from None
    weights = Weights(metadata["arch"], tensors, metadata)
    if arch is not None:
        spec = get_spec(arch)
        if weights.arch != spec.name:
            raise WeightsError(
                f"{path} holds weights for architecture {weights.arch!r}, not {spec.name!r}; "
                f"pass --arch {weights.arch} or use a {spec.name} weights file"
            )
        check_tensors(tensors, spec, source=str(path))
    return weights


def read_metadata(path: Path) -> dict[str, str]:
    """The header's metadata, with a clear error for anything that is not our file.

    The header is parsed by hand (8-byte little-endian length, then JSON) so that a
    random or truncated file gets a message naming the file, not a Rust panic.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path} is not a resnet-port weights file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > min(size - 8, 100 * 2**20):
            raise WeightsError(f"{path} is not a resnet-port weights file (not in safetensors format)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WeightsError(f"{path} is not a resnet-port weights file (its header is not safetensors JSON)") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise WeightsError(
            f"{path} is a safetensors file but not a resnet-port weights file (no format={FORMAT!r} in its metadata); "
            "export weights with tf_impl/torch_impl to get one"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path} has weights format version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION!r}")
    if "arch" not in meta:
        raise WeightsError(f"{path} does not say which architecture it holds (no 'arch' in its metadata)")
    end = 8 + n + max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size < end:
        raise WeightsError(f"{path} is truncated: {size} bytes, its header describes {end}; re-export the weights")
    return dict(meta)


def check_tensors(tensors: dict[str, np.ndarray], spec: ResNetSpec, source: str = "weights") -> None:
    """Strict check: exactly the spec's keys, each with the spec's shape.

    Raises :class:`WeightsError` listing every missing, unexpected and mis-shaped
    key with the expected and found shapes.
    """
    expected = spec.parameters()
    problems = []
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    for k, shape in expected.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(shape):
            problems.append(f"{k}: expected shape {tuple(shape)}, found {tuple(tensors[k].shape)}")
    if problems:
        raise WeightsError(f"{source} does not match architecture {spec.name!r}:\n  " + "\n  ".join(problems))


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """Write ``payload`` so that ``path`` is either the old file or the whole new one."""
    return atomic_write(path, lambda f: f.write(payload))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on a temporary file, sync it, then move it to ``path``: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
