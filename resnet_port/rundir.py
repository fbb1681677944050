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
import time
from pathlib import Path

from . import frameworks
from .recipe import Recipe
from .tensorboard_log import PREFIX as TENSORBOARD_PREFIX
from .weights import atomic_write_bytes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
WEIGHTS = "weights.safetensors"
PREDICTIONS = "predictions.npy"
CHECKPOINTS = {fw.package: fw.checkpoint for fw in frameworks.ALL}
ARTIFACTS = [CONFIG, METRICS, RESULTS, WEIGHTS, PREDICTIONS, "accuracy.png", "loss.png", "test_visualisation.png", *CHECKPOINTS.values()]
METRIC_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_sec")
# recipe fields a resumed run may change: continuing a run for more epochs is fine
RESUMABLE_CHANGES = {"epochs"}


def empty_partial() -> dict:
    """The sums of an epoch's part done before an interruption (none yet)."""
    return {"loss_sum": 0.0, "correct": 0.0, "seen": 0, "seconds": 0.0}


class RunDirError(ValueError):
    pass


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not is_run_dir(path):
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); point at a folder written by tf_impl.train or torch_impl.train")
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path / CONFIG} is damaged ({e})") from None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    f = Path(path) / METRICS
    if not f.is_file():
        return []
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def read_results(path: str | os.PathLike) -> dict | None:
    f = Path(path) / RESULTS
    return json.loads(f.read_text()) if f.is_file() else None


class RunDir:
    """Opens ``path`` for a run of ``framework``, enforcing --resume / --force rules.

    * a new or empty folder: a fresh run;
    * a folder holding a run: refused, unless ``resume`` (the same recipe, bar
      ``epochs``, and the same framework) or ``force`` (its artifacts are deleted);
    * a non-empty folder that is not a run: refused, unless ``force``.

    The constructor only checks; :meth:`create` (called once the data is loaded)
    clears and creates the folder, so a refused or failed start writes nothing.
    """

    def __init__(self, path: str | os.PathLike, framework: str, recipe: Recipe, resume: bool = False, force: bool = False):
        self.path = Path(path)
        self.framework = framework
        self.checkpoint = self.path / CHECKPOINTS[framework]
        self.resuming = False
        self._clear_first = False
        if is_run_dir(self.path):
            old = read_config(self.path)
            if resume:
                self._check_same_run(old, recipe)
                self.resuming = self.checkpoint.exists()
            elif force:
                self._clear_first = True
            else:
                raise RunDirError(
                    f"{self.path} already holds a {old.get('framework', '?')} run ({old.get('recipe', {}).get('arch', '?')}); "
                    "pass --resume to continue it, --force to overwrite it, or choose another --out"
                )
        elif self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise RunDirError(f"{self.path} is not empty and is not a run directory; choose another --out or pass --force")
            self._clear_first = True
        elif self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} is a file, not a directory")

    @classmethod
    def follow(cls, path: str | os.PathLike, framework: str, resume: bool = False) -> "RunDir":
        """The run directory as a worker that never writes it sees it (a multi-worker
        run's other processes): no checks, nothing created.  To resume, every worker
        reads the chief's checkpoint, so ``path`` must be on a filesystem they share."""
        self = cls.__new__(cls)
        self.path, self.framework = Path(path), framework
        self.checkpoint = self.path / CHECKPOINTS[framework]
        self._clear_first = False
        if resume and not is_run_dir(self.path):
            raise RunDirError(f"--resume: this worker does not see the run in {self.path}; every worker must read the chief's run directory (put --out on a shared filesystem)")
        self.resuming = resume and self.checkpoint.exists()
        return self

    def create(self) -> "RunDir":
        if self._clear_first:
            self._clear()
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def _check_same_run(self, old: dict, recipe: Recipe) -> None:
        if old.get("framework") != self.framework:
            raise RunDirError(f"{self.path} holds a {old.get('framework')} run; resume it with python -m {old.get('framework')}.train")
        new = json.loads(json.dumps(recipe.to_dict()))
        # a field newer than the run's config had its default value in that run, at any depth
        before = json.loads(json.dumps(Recipe.from_dict(old["recipe"]).to_dict()))
        diffs = [k for k in new if k not in RESUMABLE_CHANGES and new[k] != before.get(k)]
        if diffs:
            shown = ", ".join(f"{k}: {before.get(k)!r} -> {new[k]!r}" for k in diffs)
            raise RunDirError(f"--resume: {self.path} holds a different run ({shown}); use the same settings, or another --out")

    def _clear(self) -> None:
        for name in ARTIFACTS:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in [*self.path.glob(".*.tmp"), *self.path.glob(f"{TENSORBOARD_PREFIX}*")]:
            p.unlink()

    def write_config(self, recipe: Recipe, **facts) -> None:
        cfg = {"framework": self.framework, "recipe": recipe.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **facts}
        if self.resuming and (self.path / CONFIG).exists():
            old = read_config(self.path)
            cfg["created"] = old.get("created", cfg["created"])
            cfg["resumed"] = old.get("resumed", 0) + 1
        write_json(self.path / CONFIG, cfg)

    def write_metrics(self, history: list[dict]) -> None:
        payload = "".join(json.dumps({k: h[k] for k in METRIC_KEYS}) + "\n" for h in history)
        atomic_write_bytes(self.path / METRICS, payload.encode())

    def write_results(self, results: dict) -> None:
        write_json(self.path / RESULTS, {"framework": self.framework, **results})
