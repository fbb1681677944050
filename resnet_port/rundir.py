"""The run directory both training CLIs write, in one format.

=========================  =======================================================
``config.json``            the resolved recipe, the framework, runtime and data facts
``metrics.jsonl``          one JSON object per completed epoch: epoch, loss,
                           accuracy, val_loss, val_accuracy, lr, seconds, images_per_sec
``checkpoint.pt`` /        the framework's checkpoint (model, optimiser, schedule
``checkpoint.npz``         step, position in the epoch, metrics history), written
                           atomically at the end of every epoch and on Ctrl-C
``weights.safetensors``    the final weights in the neutral format
``results.json``           test accuracy, timing and throughput of the run
``predictions.npy``        the predicted fine label of every test image
``accuracy.png``,          train vs validation curves, as the seed drew them
``loss.png``
``test_visualisation.png`` the seed's OpenCV mosaic of test predictions
``events.out.tfevents.*``  TensorBoard: the epoch metrics and the training loss
                           every few steps (``tensorboard --logdir runs/``)
=========================  =======================================================

``metrics.jsonl`` is always rewritten from the history stored *in* the
checkpoint, so a run killed at any moment and resumed has each epoch exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import frameworks
from . import weights as W
from .recipe import Recipe
from .tensorboard_log import PREFIX as TENSORBOARD_PREFIX
from .weights import atomic_write_bytes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
WEIGHTS = "weights.safetensors"
PREDICTIONS = "predictions.npy"
CHECKPOINTS = {fw.package: fw.checkpoint for fw in frameworks.ALL}
ARTIFACTS = [
    CONFIG,
    METRICS,
    RESULTS,
    WEIGHTS,
    PREDICTIONS,
    "accuracy.png",
    "loss.png",
    "test_visualisation.png",
    *CHECKPOINTS.values(),
]
METRIC_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_sec")
# recipe fields a resumed run may change: continuing a run for more epochs is fine
RESUMABLE_CHANGES = {"epochs"}


def empty_partial() -> dict:
    """The sums of an epoch's part done before an interruption (none yet)."""
    return {"loss_sum": 0.0, "correct": 0.0, "seen": 0, "seconds": 0.0}


class RunDirError(ValueError):
    pass


def finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None: JSON has no NaN (``null`` instead)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON (never a bare NaN or Infinity): non-finite numbers become ``null``."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kw)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(
            f"{path} is not a run directory (no {CONFIG}); point at a folder written by tf_impl.train or torch_impl.train"
        )
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path / CONFIG} is damaged ({e})") from None


def weights_of(target: str | os.PathLike) -> Path:
    """The neutral weights file a CLI argument names: the file itself, or a finished run directory's."""
    path = Path(target)
    if path.is_dir():
        read_config(path)
        path = path / WEIGHTS
        if not path.is_file():
            raise RunDirError(
                f"{target} has no {WEIGHTS} yet (the run has not finished); use it after it ends, or --resume it"
            )
    if not path.is_file():
        raise RunDirError(f"{target}: no such weights file or run directory")
    return path


def read_metrics(path: str | os.PathLike) -> list[dict]:
    f = Path(path) / METRICS
    if not f.is_file():
        return []
    records = []
    for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise RunDirError(
                f"{f}, line {n}, is not a JSON record ({e.msg}: {line[:60]!r}); the file is damaged (a run's --resume rewrites it from the checkpoint)"
            ) from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise RunDirError(f"{f}, line {n}, is not an epoch record (a JSON object with 'epoch'): {line[:60]!r}")
        records.append(record)
    return records


def read_results(path: str | os.PathLike) -> dict | None:
    f = Path(path) / RESULTS
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{f} is damaged ({e}); run --resume of that run to write it again") from None


def remove_leftovers(path: Path) -> list[Path]:
    """Delete the temporary files of writes that never finished (``.NAME.*.tmp``: a process killed while
    writing it); the finished files are never touched.  Returns what it removed."""
    gone = []
    for p in Path(path).glob(".*.tmp"):
        if p.is_file():
            p.unlink()
            gone.append(p)
    return gone


def check_writable(path: Path, flag: str) -> None:
    """Fail now, before any slow start-up, when ``path`` (a folder, existing or to be made) cannot be written."""
    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"{flag} {path}: {probe} is a file, so the folder cannot be created")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".resnet-port-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        why = "no space left" if e.errno in (28, 122) else e.strerror or str(e)
        raise RunDirError(f"{flag} {path}: cannot write in {probe} ({why}); choose a folder you can write") from None


class RunDir:
    """Opens ``path`` for a run of ``framework``, enforcing --resume / --force rules.

    * a new or empty folder: a fresh run;
    * a folder holding a run: refused, unless ``resume`` (the same recipe, bar
      ``epochs``, and the same framework) or ``force`` (its artifacts are deleted);
    * a non-empty folder that is not a run: refused, unless ``force``.

    The constructor only checks; :meth:`create` (called once the data is loaded)
    clears and creates the folder, so a refused or failed start writes nothing.
    """

    def __init__(
        self, path: str | os.PathLike, framework: str, recipe: Recipe, resume: bool = False, force: bool = False
    ):
        self.path = Path(path)
        self.framework = framework
        self.checkpoint = self.path / CHECKPOINTS[framework]
        self.resuming = False
        self.complete: str | None = None  # --resume of a finished run: the refusal, given once the data are checked
        self._clear_first = False
        self._old_config: dict | None = None
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} is a file, not a directory; give a folder for the run")
        check_writable(self.path, "--out")
        if is_run_dir(self.path):
            old = self._old_config = read_config(self.path)
            if resume:
                self._check_same_run(old, recipe)
                self._check_resumable(recipe)
            elif force:
                self._clear_first = True
            else:
                raise RunDirError(
                    f"{self.path} already holds a {old.get('framework', '?')} run ({old.get('recipe', {}).get('arch', '?')}); "
                    "pass --resume to continue it, --force to overwrite it, or choose another --out"
                )
        elif self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise RunDirError(
                    f"{self.path} is not empty and is not a run directory; choose another --out or pass --force"
                )
            self._clear_first = True
        elif resume:
            what = "does not exist" if not self.path.exists() else "is empty"
            raise RunDirError(
                f"--resume: {self.path} {what}, so there is no run to continue; leave out --resume to start a new run there"
            )

    def _check_resumable(self, recipe: Recipe) -> None:
        """--resume of a run directory: it must be able to continue exactly, as one story."""
        history = read_metrics(self.path)
        if len(history) > recipe.epochs:
            raise RunDirError(
                f"--resume: the run in {self.path} has trained {len(history)} epochs already; --epochs {recipe.epochs} ends before that: give --epochs {len(history)} or more"
            )
        if self.checkpoint.exists():
            if read_results(self.path) is not None and len(history) == recipe.epochs:
                # said once the data are known to be the run's (check_same_data first): "give --epochs N"
                # would be wrong advice for a run on other data
                self.complete = (
                    f"--resume: the run in {self.path} is complete ({len(history)} epochs, results written); "
                    f"give --epochs {len(history) + 1} or more to train it further, or --force to start it again"
                )
            self.resuming = True
        elif history:
            raise RunDirError(
                f"--resume: {self.path} holds {len(history)} trained epochs ({METRICS}) but no {self.checkpoint.name}, so it cannot continue; "
                f"restore {self.checkpoint.name}, or start the run again with --force"
            )
        else:  # killed before its first checkpoint: nothing was trained that could be kept
            print(
                f"notice: {self.path} has no checkpoint yet (stopped before its first epoch ended); starting the run from the beginning",
                file=sys.stderr,
            )
            self._clear_first = True

    def check_same_data(self, facts: dict) -> None:
        """--resume: the data must be those the run trained on (sizes and content)."""
        before = (self._old_config or {}).get("data", {})
        diffs = [
            f"{k}: {before[k]!r} -> {facts[k]!r}"
            for k in ("train", "val", "test", "fingerprint")
            if k in before and k in facts and before[k] != facts[k]
        ]
        if diffs:
            raise RunDirError(
                f"--resume: the data differ from those the run in {self.path} trained on ({', '.join(diffs)}); "
                "resume with the same --data-dir, --limit-train and --val-size, or start another --out"
            )

    @classmethod
    def follow(cls, path: str | os.PathLike, framework: str, resume: bool = False) -> "RunDir":
        """The run directory as a worker that never writes it sees it (a multi-worker
        run's other processes): no checks, nothing created.  To resume, every worker
        reads the chief's checkpoint, so ``path`` must be on a filesystem they share."""
        self = cls.__new__(cls)
        self.path, self.framework = Path(path), framework
        self.checkpoint = self.path / CHECKPOINTS[framework]
        self._clear_first = False
        self.complete = None  # the chief says whether the run is complete
        if resume and not is_run_dir(self.path):
            raise RunDirError(
                f"--resume: this worker does not see the run in {self.path}; every worker must read the chief's run directory (put --out on a shared filesystem)"
            )
        self.resuming = resume and self.checkpoint.exists()
        return self

    def create(self) -> "RunDir":
        if self._clear_first:
            self._clear()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise W.WriteError(e.errno, W.describe_write_error(self.path / CONFIG, e)) from None
        remove_leftovers(self.path)
        return self

    def _check_same_run(self, old: dict, recipe: Recipe) -> None:
        if old.get("framework") != self.framework:
            raise RunDirError(
                f"{self.path} holds a {old.get('framework')} run; resume it with python -m {old.get('framework')}.train"
            )
        new = json.loads(json.dumps(recipe.to_dict()))
        # a field newer than the run's config had its default value in that run, at any depth
        before = json.loads(json.dumps(Recipe.from_dict(old["recipe"]).to_dict()))
        diffs = [k for k in new if k not in RESUMABLE_CHANGES and new[k] != before.get(k)]
        if diffs:
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {new[k]!r}" for k in diffs)
            raise RunDirError(
                f"--resume: {self.path} holds a different run ({shown}); use the same settings, or another --out"
            )

    def _clear(self) -> None:
        for name in ARTIFACTS:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in self.path.glob(f"{TENSORBOARD_PREFIX}*"):
            p.unlink()

    def write_config(self, recipe: Recipe, **facts) -> None:
        cfg = {
            "framework": self.framework,
            "recipe": recipe.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **facts,
        }
        if self.resuming and (self.path / CONFIG).exists():
            old = read_config(self.path)
            cfg["created"] = old.get("created", cfg["created"])
            cfg["resumed"] = old.get("resumed", 0) + 1
        write_json(self.path / CONFIG, cfg)

    def write_metrics(self, history: list[dict]) -> None:
        payload = "".join(dumps({k: h[k] for k in METRIC_KEYS}) + "\n" for h in history)
        atomic_write_bytes(self.path / METRICS, payload.encode())

    def write_results(self, results: dict) -> None:
        write_json(self.path / RESULTS, {"framework": self.framework, **results})


def named_checkpoint_arrays(arrays: dict, opt_paths: list[str]) -> dict:
    """A Keras checkpoint's arrays under readable names (optimiser variables by their Keras path)."""
    out = {}
    for k, v in arrays.items():
        if k.startswith("opt/") and k[4:].isdigit() and int(k[4:]) < len(opt_paths):
            k = f"optimizer/{opt_paths[int(k[4:])]}"
        out[k] = v
    return out


def read_npz_checkpoint(path: Path) -> tuple[dict, dict]:
    """A Keras run's ``checkpoint.npz``, verified: (arrays without ``state``/``digest``, state).

    Read with ``allow_pickle=False`` (an .npz may hold pickled objects; this one
    never does, and nothing in it may run); the digest written with it is
    recomputed (rotted bytes are caught even when they still read as numbers);
    every floating array must be finite and every BatchNorm variance >= 0.
    """
    path = Path(path)
    fix = checkpoint_fix(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        state = json.loads(arrays["state"].tobytes().decode())
    except Exception as e:  # not a zip, truncated, an object array (pickle), no state
        raise RunDirError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); {fix}") from None
    if not isinstance(state, dict) or not {"epoch", "history"} <= set(state):
        raise RunDirError(f"{path} is not a tf_impl checkpoint (its state lacks epoch and history); {fix}")
    written = arrays.pop("digest", None)
    verify_checkpoint(
        path,
        named_checkpoint_arrays({k: v for k, v in arrays.items() if k != "state"}, state.get("opt_paths", [])),
        None if written is None else written.tobytes().decode(errors="replace"),
        lambda: W.digest(arrays),
    )
    arrays.pop("state")
    return arrays, state


def verify_checkpoint(path: Path, tensors: dict, written_digest: str | None, digest_now: Callable[[], str]) -> None:
    """Both frameworks' checks of a checkpoint read back: first the values (finite, BatchNorm variances
    >= 0), so that a NaN is named; then the digest written with it, for rot that still reads as
    numbers (a checkpoint of an older version has none: said, and its values alone are checked)."""
    fix = checkpoint_fix(path)
    try:
        W.check_values(tensors, f"checkpoint {path}")
    except W.WeightsError as e:
        raise RunDirError(f"{e}. {fix[0].upper()}{fix[1:]}") from None
    if written_digest is None:
        print(
            f"notice: {path} has no digest (written by an older resnet-port); its values are checked, its bytes cannot be",
            file=sys.stderr,
        )
    elif digest_now() != written_digest:
        raise RunDirError(
            f"checkpoint {path} is damaged: its contents no longer match the digest written with them; {fix}"
        )


def checkpoint_fix(path: Path) -> str:
    """What to do about a checkpoint that cannot be used."""
    return f"restore {Path(path).name} from a good copy, or start the run again with --force"
