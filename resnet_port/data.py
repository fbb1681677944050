"""CIFAR-100, loaded once for both frameworks, as numpy uint8 arrays.

Reads the original ``cifar-100-python`` distribution (the pickles ``train``,
``test`` and ``meta``, as a folder or inside ``cifar-100-python.tar.gz``), the
same files Keras and torchvision read, from wherever a user already has them:

1. an explicit ``data_dir`` (``--data-dir``): the folder holding
   ``cifar-100-python/`` or the tarball, the ``cifar-100-python`` folder itself,
   or the tarball's path;
2. ``$RESNET_PORT_DATA`` (same forms);
3. the Keras cache, ``~/.keras/datasets/``;
4. torchvision-style roots: ``./data`` and ``~/data``.

Files are checked against the published md5 sums.  ``verify=False`` (CLI
``--no-verify``) accepts any files in the same format and of any size, e.g. a
subset of one's own, with a one-line warning.  When nothing is found, the data is
downloaded (with a progress bar, atomically: a partial download never looks
complete) into the first location, unless ``download=False``.

The split is the recipe's: the *last* ``val_size`` training images validate
(45,000..49,999 by default), the rest train; the 10,000 test images test.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import Normalization

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
MD5 = {
    ARCHIVE: "eb9058c3a382ffc7106e4002c42a8d85",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
ENV_VAR = "RESNET_PORT_DATA"
NUM_FINE, NUM_COARSE = 100, 20
IMAGE_SHAPE = (32, 32, 3)


class DataError(RuntimeError):
    """The data cannot be used; the message names the file and how to fix it."""


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8, RGB
    fine: np.ndarray  # (N,) int64 fine labels 0..99
    coarse: np.ndarray  # (N,) int64 coarse labels 0..19

    def __len__(self):
        return len(self.fine)


@dataclass
class Cifar100:
    train: Split
    val: Split
    test: Split
    fine_names: list[str]
    coarse_names: list[str]
    fine_to_coarse: np.ndarray  # (100,) coarse label of each fine label (-1: not seen in the files)
    source: str  # where it was read from
    verified: bool  # md5 sums checked
    normalization: Normalization | None = (
        None  # the training split's per-channel statistics, when the recipe normalises
    )


def fingerprint(ds: Cifar100) -> str:
    """SHA-256 (first 16 hex digits) of the images and fine labels of the three splits, in order:
    what a resumed run checks it trains on the same data as before."""
    h = hashlib.sha256()
    for split in (ds.train, ds.val, ds.test):
        h.update(f"{split.images.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(split.images).reshape(-1)))
        h.update(np.ascontiguousarray(split.fine, dtype=np.int64).view(np.uint8))
    return h.hexdigest()[:16]


# -- reading ------------------------------------------------------------------------


class _ForeignObject(pickle.UnpicklingError):
    pass


class _Unpickler(pickle.Unpickler):
    """Loads the CIFAR pickles but refuses anything that could run code.

    The files hold dicts of byte strings, lists of ints and numpy uint8 arrays; only
    the globals needed to rebuild those are allowed.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _ForeignObject(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, name: str, where: str) -> dict:
    try:
        obj = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForeignObject as e:
        raise DataError(
            f"{where}: '{name}' holds an object a CIFAR-100 file never contains ({e}); refusing to load it"
        ) from None
    except Exception as e:  # truncated, corrupted or foreign file: all the same to the user
        raise DataError(
            f"{where}: the CIFAR-100 file '{name}' is truncated or corrupted ({type(e).__name__}: {e}); "
            "delete it and provide the original files again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: '{name}' is not a CIFAR-100 pickle (it holds a {type(obj).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _check_md5(data: bytes, name: str, where: str) -> None:
    got = _md5(data)
    if got != MD5[name]:
        raise DataError(
            f"{where}: md5 of '{name}' is {got}, the original's is {MD5[name]}. The file is damaged or not the "
            "original CIFAR-100; delete it to download it again, or pass --no-verify (verify=False) to use your own "
            "files in the same format"
        )


def _read_members(path: Path, verify: bool) -> dict[str, bytes]:
    """The raw bytes of train, test and meta from a folder or a tarball."""
    if path.is_dir():
        raw = {}
        for name in ("train", "test", "meta"):
            f = path / name
            if not f.is_file():
                raise DataError(f"{path} has no '{name}' file: a cifar-100-python folder holds train, test and meta")
            raw[name] = f.read_bytes()
            if verify:
                _check_md5(raw[name], name, str(f))
        return raw
    data = path.read_bytes()
    if verify:
        _check_md5(data, ARCHIVE, str(path))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            raw = {}
            for name in ("train", "test", "meta"):
                try:
                    member = tar.getmember(f"{FOLDER}/{name}")
                except KeyError:
                    raise DataError(
                        f"{path} does not contain {FOLDER}/{name}; it is not the CIFAR-100 archive"
                    ) from None
                raw[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(
            f"{path} is truncated or not a gzip'd tar archive ({e}); delete it and download it again"
        ) from None
    if verify:
        for name, blob in raw.items():
            _check_md5(blob, name, f"{path}:{FOLDER}/{name}")
    return raw


def _split_from(d: dict, name: str, where: str) -> Split:
    for key in ("data", "fine_labels", "coarse_labels"):
        if key not in d:
            raise DataError(f"{where}: '{name}' has no '{key}' entry; it is not a CIFAR-100 file")
    data = np.asarray(d["data"])
    fine = np.asarray(d["fine_labels"], dtype=np.int64)
    coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
    n = len(fine)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape != (n, 3072) or len(coarse) != n:
        raise DataError(
            f"{where}: '{name}' holds data of shape {data.shape} and dtype {data.dtype} with {n} fine and "
            f"{len(coarse)} coarse labels; CIFAR-100 stores (N, 3072) uint8 with N labels of each kind"
        )
    if n and (fine.min() < 0 or fine.max() >= NUM_FINE or coarse.min() < 0 or coarse.max() >= NUM_COARSE):
        raise DataError(f"{where}: '{name}' has labels out of range (fine must be 0..99, coarse 0..19)")
    # rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), fine, coarse)


def _names(meta: dict, where: str) -> tuple[list[str], list[str]]:
    try:
        fine = [s.decode() if isinstance(s, bytes) else str(s) for s in meta["fine_label_names"]]
        coarse = [s.decode() if isinstance(s, bytes) else str(s) for s in meta["coarse_label_names"]]
    except KeyError as e:
        raise DataError(f"{where}: 'meta' has no {e.args[0]!r} entry; it is not the CIFAR-100 meta file") from None
    if len(fine) != NUM_FINE or len(coarse) != NUM_COARSE:
        raise DataError(f"{where}: 'meta' names {len(fine)} fine and {len(coarse)} coarse classes, not 100 and 20")
    return fine, coarse


def fine_to_coarse_map(*splits: Split, where: str = "") -> np.ndarray:
    """The coarse class of each fine class, read off the labels; -1 for fine classes never seen."""
    m = np.full(NUM_FINE, -1, dtype=np.int64)
    for s in splits:
        for f, c in set(zip(s.fine.tolist(), s.coarse.tolist())):
            if m[f] not in (-1, c):
                raise DataError(
                    f"{where}: fine class {f} is labelled with coarse classes {m[f]} and {c}; the files are inconsistent"
                )
            m[f] = c
    return m


def read(path: str | os.PathLike, verify: bool = True, val_size: int = 5000) -> Cifar100:
    """Read one location (a ``cifar-100-python`` folder or the tarball) and split it."""
    path = Path(path)
    raw = _read_members(path, verify)
    train = _split_from(_unpickle(raw["train"], "train", str(path)), "train", str(path))
    test = _split_from(_unpickle(raw["test"], "test", str(path)), "test", str(path))
    fine_names, coarse_names = _names(_unpickle(raw["meta"], "meta", str(path)), str(path))
    if not 0 <= val_size < len(train):
        raise DataError(
            f"--val-size must be between 0 and {len(train) - 1} (the training file holds {len(train)} images), got {val_size}"
        )
    cut = len(train) - val_size
    tr = Split(train.images[:cut], train.fine[:cut], train.coarse[:cut])
    va = Split(train.images[cut:], train.fine[cut:], train.coarse[cut:])
    mapping = fine_to_coarse_map(train, test, where=str(path))
    return Cifar100(tr, va, test, fine_names, coarse_names, mapping, str(path), verify)


# -- finding and downloading ----------------------------------------------------------


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where to look, in order (see the module docstring)."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots += [Path("~/.keras/datasets").expanduser(), Path("data").absolute(), Path("~/data").expanduser()]
    return roots


def _candidates(root: Path) -> list[Path]:
    if root.name == ARCHIVE or (root.is_file() and root.suffix == ".gz"):
        return [root]
    if root.name == FOLDER:
        return [root]
    return [root / FOLDER, root / ARCHIVE]


def find(data_dir=None) -> Path | None:
    for root in search_roots(data_dir):
        for c in _candidates(root):
            if (c.is_dir() and (c / "train").exists()) or c.is_file():
                return c
    return None


def download(dest_dir: Path, url: str = URL, quiet: bool = False) -> Path:
    """Download the tarball into ``dest_dir`` atomically and check its md5."""
    dest = dest_dir / ARCHIVE
    tmp = dest_dir / f".{ARCHIVE}.part"
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            dest_dir.mkdir(parents=True, exist_ok=True)  # only once the server answered
            from tqdm.auto import tqdm

            total = int(r.headers.get("Content-Length") or 0) or None
            with (
                open(tmp, "wb") as f,
                tqdm(
                    total=total,
                    desc=f"downloading {ARCHIVE}",
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    disable=quiet,
                    file=sys.stderr,
                ) as bar,
            ):
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
        if md5.hexdigest() != MD5[ARCHIVE]:
            raise DataError(f"the download from {url} has md5 {md5.hexdigest()}, expected {MD5[ARCHIVE]}; try again")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def load(
    data_dir=None, verify: bool = True, val_size: int = 5000, download_if_missing: bool = True, quiet: bool = False
) -> Cifar100:
    """Find (or download) CIFAR-100 and return the recipe's split."""
    if not verify and not quiet:
        print(
            "warning: md5 checks are off (--no-verify): any files in the cifar-100-python format are accepted",
            file=sys.stderr,
        )
    found = find(data_dir)
    if found is None:
        roots = search_roots(data_dir)
        looked = "\n  ".join(str(c) for r in roots for c in _candidates(r))
        how = (
            f"Download {URL} (md5 {MD5[ARCHIVE]}) and put it, or the extracted '{FOLDER}' folder, in one of those places "
            f"(or pass --data-dir, or set {ENV_VAR}). To try the tool without it: "
            "python -m resnet_port.synthetic data/synthetic, then train with --data-dir data/synthetic --no-verify --arch tiny --epochs 2."
        )
        if not download_if_missing:
            raise DataError(f"CIFAR-100 not found. Looked in:\n  {looked}\n{how}")
        try:
            found = download(roots[0] if data_dir else Path("~/.keras/datasets").expanduser(), quiet=quiet)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise DataError(
                f"CIFAR-100 not found, and downloading it failed ({reason}). Looked in:\n  {looked}\n{how}"
            ) from None
    return read(found, verify=verify, val_size=val_size)


def write_cifar100(
    folder: str | os.PathLike, train: Split, test: Split, fine_names=None, coarse_names=None, archive: bool = False
) -> Path:
    """Write arrays in the exact original format (pickle protocol 2, byte-string keys).

    For tests and for users who want to feed their own data through the real
    loader: a ``cifar-100-python`` folder under ``folder`` (or the tarball with
    ``archive=True``).  Such files do not match the md5 sums: load them with
    ``verify=False``.
    """
    folder = Path(folder)
    fine_names = fine_names or [f"fine_{i}" for i in range(NUM_FINE)]
    coarse_names = coarse_names or [f"coarse_{i}" for i in range(NUM_COARSE)]

    def blob(split: Split, label: bytes) -> bytes:
        n = len(split)
        d = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": label,
            b"fine_labels": [int(v) for v in split.fine],
            b"coarse_labels": [int(v) for v in split.coarse],
            b"data": np.ascontiguousarray(split.images.transpose(0, 3, 1, 2)).reshape(n, 3072).astype(np.uint8),
        }
        return pickle.dumps(d, protocol=2)

    members = {
        "train": blob(train, b"training batch 1 of 1"),
        "test": blob(test, b"testing batch 1 of 1"),
        "meta": pickle.dumps(
            {
                b"fine_label_names": [s.encode() for s in fine_names],
                b"coarse_label_names": [s.encode() for s in coarse_names],
            },
            protocol=2,
        ),
    }
    if archive:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / ARCHIVE
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{FOLDER}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    out = folder / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        (out / name).write_bytes(data)
    return out
