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

import errno
import hashlib
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


#: PyTorch's name of each neutral parameter (a state_dict says running_var where Keras says moving_variance)
TORCH_NAMES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def normalization_of(metadata: dict[str, str]) -> Normalization | None:
    """The input normalisation a weights file's metadata states (None: inputs are pixels / 255)."""
    raw = metadata.get("normalization")
    return Normalization.from_dict(json.loads(raw)) if raw else None


def save(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    arch: str,
    producer: str = "",
    extra: dict | None = None,
    normalization: Normalization | None = None,
) -> Path:
    """Validate ``tensors`` against the spec of ``arch`` and write them atomically."""
    spec = get_spec(arch)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    check_tensors(arrays, spec, source="tensors to save")
    check_values(arrays, source=f"the weights to write to {path}")
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": spec.name, "producer": producer}
    if normalization is not None:
        metadata["normalization"] = json.dumps(normalization.to_dict())
    metadata.update({k: str(v) for k, v in (extra or {}).items()})
    from safetensors.numpy import save as st_save

    payload = reproducible(st_save(arrays, metadata=metadata))
    return atomic_write_bytes(Path(path), payload)


def reproducible(payload: bytes) -> bytes:
    """The same safetensors payload with its metadata in sorted order.

    The safetensors writer keeps metadata in a hash map, so the header's order (and
    with it the file's bytes and digest) changed from one write of the same tensors
    to the next.  Sorted, equal tensors and metadata give byte-identical files.  The
    tensor entries keep the writer's order (it matches their data offsets), and the
    header is padded with spaces to 8 bytes as the format asks.
    """
    n = struct.unpack("<Q", payload[:8])[0]
    header = json.loads(payload[8 : 8 + n])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))} if "__metadata__" in header else {}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload[8 + n :]


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
    check_values(tensors, source=str(path))
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
            raise WeightsError(
                f"{path} is not a resnet-port weights file (its header is not safetensors JSON)"
            ) from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a resnet-port weights file (its safetensors header is not a JSON object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise WeightsError(f"{path} is damaged: its safetensors '__metadata__' is not a JSON object")
    if meta.get("format") != FORMAT:
        raise WeightsError(
            f"{path} is a safetensors file but not a resnet-port weights file (no format={FORMAT!r} in its metadata); "
            "export weights with tf_impl/torch_impl to get one"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{path} has weights format version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION!r}"
        )
    if "arch" not in meta:
        raise WeightsError(f"{path} does not say which architecture it holds (no 'arch' in its metadata)")
    end = 8 + n
    for k, t in header.items():
        if k == "__metadata__":
            continue
        offsets = t.get("data_offsets") if isinstance(t, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise WeightsError(
                f"{path} is damaged: the header entry of tensor {k!r} has no valid 'data_offsets' (found {t!r:.80}); re-export the weights"
            )
        end = max(end, 8 + n + offsets[1])
    if size < end:
        raise WeightsError(f"{path} is truncated: {size} bytes, its header describes {end}; re-export the weights")
    return dict(meta)


def _listed(keys: list[str], shown: int = 4) -> str:
    more = f", ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def check_tensors(tensors: dict[str, np.ndarray], spec: ResNetSpec, source: str = "weights") -> None:
    """Strict check: exactly the spec's keys, each with the spec's shape.

    Raises :class:`WeightsError` naming the missing, unexpected and mis-shaped
    keys (a few of each, with counts) and, when the tensors fit another
    registered architecture, that one.
    """
    expected = spec.parameters()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k} {tuple(shape)} expected, {tuple(tensors[k].shape)} found"
        for k, shape in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape ({_listed(shapes, 2)})")
    if problems:
        fits = fitting_architectures(tensors)
        hint = f"; they are a {' or '.join(repr(a) for a in fits)}" if fits else ""
        raise WeightsError(f"{source} does not match architecture {spec.name!r}: " + "; ".join(problems) + hint)


def fitting_architectures(tensors: dict[str, np.ndarray]) -> list[str]:
    """The registered architectures whose every key and shape ``tensors`` match."""
    from .spec import available

    out = []
    for name in available():
        expected = get_spec(name).parameters()
        if set(expected) == set(tensors) and all(tuple(tensors[k].shape) == tuple(s) for k, s in expected.items()):
            out.append(name)
    return out


def is_variance(key: str) -> bool:
    """Whether a tensor key (canonical ``moving_variance`` or PyTorch ``running_var``) is a BatchNorm variance."""
    return key.endswith(("moving_variance", "running_var"))


def check_values(tensors, source: str = "weights", labels: dict[str, str] | None = None) -> None:
    """Every floating tensor finite, every BatchNorm variance >= 0; else :class:`WeightsError` naming the tensor.

    A model with a NaN or infinite weight computes nothing meaningful, and a
    negative variance makes BatchNorm take the square root of a negative number:
    such a file diverged in training or was damaged, and no result may come of it.
    ``labels`` names tensors for the message (e.g. a source file's own names).
    """
    for key, a in tensors.items():
        shown = (labels or {}).get(key, key)
        a = np.asarray(a)
        if a.dtype.kind not in "fc":
            continue
        finite = np.isfinite(a)
        if not finite.all():
            bad = int(a.size - finite.sum())
            first = (
                tuple(int(i) for i in np.unravel_index(int(np.argmin(finite.reshape(-1))), a.shape)) if a.ndim else ()
            )
            raise WeightsError(
                f"{source}: tensor {shown} holds {bad} non-finite value(s) of {a.size} ({a[first]} at index {list(first)}); "
                "the model diverged in training or the file is damaged: use an earlier checkpoint or a good copy"
            )
        if is_variance(key) and a.size and float(a.min()) < 0:
            raise WeightsError(
                f"{source}: tensor {shown} is a BatchNorm variance but holds {int((a < 0).sum())} negative value(s) (min {float(a.min()):.4g}); "
                "the file is damaged or was not written by a BatchNorm layer"
            )


def digest(obj, to_array=None) -> str:
    """SHA-256 over a nested structure (dicts, lists, arrays, plain values), in a fixed order.

    Written into checkpoints and recomputed on load, so bytes that rotted inside a
    tensor (still finite) are caught.  ``to_array`` turns framework tensors into
    numpy arrays (e.g. ``lambda t: t.numpy()``).
    """
    h = hashlib.sha256()

    def walk(path: str, v) -> None:
        if to_array is not None and not isinstance(
            v, (dict, list, tuple, np.ndarray, str, bytes, int, float, bool, type(None))
        ):
            v = to_array(v)
        if isinstance(v, dict):
            for k in sorted(v, key=str):
                walk(f"{path}/{k}", v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"{path}:[{len(v)}]".encode())
            for i, item in enumerate(v):
                walk(f"{path}/{i}", item)
        elif isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(f"{path}:{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a.reshape(-1).view(np.uint8)))
        else:
            h.update(f"{path}={json.dumps(v)}".encode())

    walk("", obj)
    return h.hexdigest()


class WriteError(OSError):
    """A file that could not be written (full disk, read-only, no permission); the message says which and why."""

    def __str__(self) -> str:
        return str(self.strerror)


def describe_write_error(path: Path, e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {path.parent} (writing {path.name})"
    if e.errno == errno.EROFS:
        return f"{path.parent} is on a read-only filesystem (writing {path.name})"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write {path} ({e.strerror})"
    return f"cannot write {path} ({e.strerror or e})"


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """Write ``payload`` so that ``path`` is either the old file or the whole new one."""
    return atomic_write(path, lambda f: f.write(payload))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on a temporary file, sync it, then move it to ``path``: never a partial file."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if isinstance(e, WriteError):
            raise
        raise WriteError(e.errno, describe_write_error(path, e)) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)
