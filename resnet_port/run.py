"""The life of a training run, written once for both frameworks.

``python -m tf_impl.train`` and ``python -m torch_impl.train`` are this module's
:func:`main` with a framework :class:`Backend`.  Here, once:

flags -> recipe -> engine start (devices, distribution, precision) -> data ->
run directory (create / resume / force) -> epochs (progress bar, interruption
accounting) -> checkpoint -> metrics.jsonl and TensorBoard -> evaluation ->
weights, predictions, plots, results and the summary.

A backend supplies only what is truly its framework's: build the model and
optimiser, train one epoch from a position, evaluate a split, save and load its
checkpoint, export the neutral weights.  Distribution stays each engine's own
(DistributedDataParallel, tf.distribute) behind the backend; processes that do
not write the run directory (``backend.chief`` false) run the same loop and
write nothing.

Interruptions: Ctrl-C while training is deferred to the end of the step under
way (:class:`StopRequest`): the backend stops *between* steps and raises
:class:`Interrupted` with the sums so far and the batch reached, which are
written into the checkpoint (with the augmentation RNG's position), and the run
exits with 130.  ``--resume`` then continues from exactly that point: the same
shuffle, draws, optimiser, BatchNorm and schedule state, and loss sums that go
on adding in the same order, so the run ends bit-identical to an uninterrupted
one.  A second Ctrl-C abandons the checkpoint being written (the one on disk
stays).  A run killed outright (SIGKILL) resumes from its last checkpoint.
``metrics.jsonl`` is always rewritten from the history stored in the
checkpoint, and TensorBoard gets each epoch exactly once, so a run killed at any
moment and resumed has every epoch once.

Divergence: a non-finite training loss stops the run (:class:`Diverged`) with
one line naming the epoch and step; nothing of the diverged state is written,
so the last checkpoint on disk is the last good one.  Under a gradient scaler a
run of :data:`SCALER_PATIENCE` non-finite steps is needed (the scaler skips them
first).  A write that fails (a full disk) stops the run at once, saying which
checkpoint is intact.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import cli, data, rundir
from .frameworks import Framework
from .recipe import RECIPES, Recipe
from .spec import available
from .weights import WeightsError, WriteError, describe_write_error

#: the training loss is reported (progress bar, TensorBoard) every this many steps;
#: reading it synchronises with the device, so not every step
REPORT_EVERY = 20
#: under a gradient scaler (float16), this many non-finite steps in a row stop a run: each one
#: halves the scale, so by then it has fallen by 2**20 and lowering it further cannot help
SCALER_PATIENCE = 20


@dataclass
class EpochSums:
    """What a (part of an) epoch trained: summed over images, and its wall time."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0

    def __add__(self, other: "EpochSums") -> "EpochSums":
        return EpochSums(
            self.loss_sum + other.loss_sum,
            self.correct + other.correct,
            self.seen + other.seen,
            self.seconds + other.seconds,
        )

    @classmethod
    def from_dict(cls, d: dict) -> "EpochSums":
        return cls(**{k: d[k] for k in ("loss_sum", "correct", "seen", "seconds")})


class Interrupted(Exception):
    """Ctrl-C inside an epoch: ``sums`` of the part trained since ``train_epoch`` began, ``batch`` reached."""

    def __init__(self, sums: EpochSums, batch: int):
        super().__init__(f"interrupted at batch {batch}")
        self.sums, self.batch = sums, batch


@dataclass
class RunState:
    """What every checkpoint holds besides the model and optimiser (both frameworks, same keys)."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch (after a Ctrl-C)
    partial: dict = field(default_factory=rundir.empty_partial)  # sums of that part (EpochSums)
    history: list[dict] = field(default_factory=list)  # one metrics record per completed epoch

    def to_dict(self, recipe: Recipe) -> dict:
        return {**asdict(self), "recipe": recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        return cls(d["epoch"], d["batch"], d["partial"], d["history"])


class Diverged(Exception):
    """A non-finite training loss at ``batch`` (1-based, within the epoch)."""

    def __init__(self, batch: int, value: float):
        super().__init__(f"non-finite loss {value} at batch {batch}")
        self.batch, self.value = batch, value


class StopRequest:
    """Ctrl-C during training, deferred to the end of the step under way.

    The first SIGINT only sets :attr:`requested`; the backends check it between
    steps (through ``on_step``), so a step is never cut in half and the
    checkpoint holds exactly the steps taken.  A second SIGINT raises
    KeyboardInterrupt at once: it abandons what the first one was finishing.
    """

    def __init__(self):
        self.requested = self.abandoned = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            self.abandoned = True
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nCtrl-C: stopping after this step, then writing the checkpoint (Ctrl-C again to abandon it)",
            file=sys.stderr,
        )

    def __enter__(self) -> "StopRequest":
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# on_step(batch index reached in the epoch, mean training loss of the last steps or None) -> stop now?
StepCallback = Callable[[int, "float | None"], bool]


class Backend(ABC):
    """One framework's part of a training run (see the module docstring)."""

    framework: Framework
    description: str  # first line of the CLI's help

    chief: bool = True  # this process writes the run directory

    def __init__(self, args: argparse.Namespace, recipe: Recipe):
        """Check the framework's own flags; no engine work yet (bad flags fail fast)."""
        self.args, self.recipe = args, recipe

    @staticmethod  # noqa: B027 (optional: most backends have no flags of their own)
    def add_arguments(ap: argparse.ArgumentParser) -> None:
        """The framework's own flags."""

    def notice(self, message: str) -> None:
        if self.chief:
            print(message, file=sys.stderr)

    @abstractmethod
    def start(self, ds: data.Cifar100) -> None:
        """Start the engine: devices, distribution, precision (notices for what the user asked and did not get)."""

    @abstractmethod
    def build(self, ds: data.Cifar100) -> None:
        """Model, optimiser and input pipelines.  Called after the run directory exists."""

    @abstractmethod
    def runtime(self) -> dict:
        """Facts about this run's engine for config.json (device, versions, precision, distribution)."""

    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def train_epoch(
        self, epoch: int, start_batch: int, start: EpochSums, on_step: StepCallback, report_every: int
    ) -> EpochSums:
        """Train epoch ``epoch`` from batch ``start_batch`` to its end; the sums over all processes.

        The sums begin at ``start`` (the interrupted part's) and add each step in
        order.  Calls ``on_step`` after every step, with the mean loss of the steps
        since the last report every ``report_every`` steps and at the epoch's last
        step.  When ``on_step`` returns True (Ctrl-C), stops after that step and
        raises :class:`Interrupted` with the sums and the batch reached (keeping
        what it needs to resume the draws in its checkpoint).  A non-finite loss
        raises :class:`Diverged`.
        """

    @abstractmethod
    def evaluate(self, split: data.Split) -> tuple[float, float, np.ndarray]:
        """(loss incl. the objective's penalty, accuracy, predictions) in inference mode; nan/nan/[] when empty."""

    @abstractmethod
    def learning_rate(self) -> float:
        """The learning rate the next step will use (reported per epoch)."""

    @abstractmethod
    def snapshot(self, state: dict) -> Callable[[Path], None]:
        """Copy model, optimiser and ``state`` (:meth:`RunState.to_dict`) now; return the function that
        writes them atomically to a path.  The writing may run in another thread while training goes on."""

    def save(self, path: Path, state: dict) -> None:
        self.snapshot(state)(path)

    @abstractmethod
    def load(self, path: Path) -> dict:
        """Restore model and optimiser from ``path``; return the state saved with them."""

    @abstractmethod
    def export_weights(self, path: Path) -> None:
        """The neutral weights file."""

    def take_warmup_seconds(self) -> float:
        """Seconds of one-off work inside the last epoch (``torch.compile``'s first step), now cleared:
        they are reported apart and not counted in the epoch's images/s."""
        return 0.0

    def close(self) -> None:  # noqa: B027 (optional)
        """Stop the engine (e.g. leave the process group)."""

    def device_label(self) -> str:
        return ""


def parser(backend: type[Backend]) -> argparse.ArgumentParser:
    ap = cli.train_parser(backend.framework.package, backend.description)
    backend.add_arguments(ap)
    return ap


def main(backend_cls: type[Backend], argv=None) -> int:
    """The training CLI of one framework: ``python -m <package>.train``."""
    args = parser(backend_cls).parse_args(argv)
    try:
        return cli.run_cli(
            lambda: train(backend_cls, args), (ValueError, data.DataError, rundir.RunDirError, WeightsError)
        )
    except TrainingDiverged as e:
        cli.fail(str(e))
        return 1


class TrainingDiverged(Exception):
    """The run stopped on a non-finite loss; the message says where and what to do."""


def data_facts(ds: data.Cifar100) -> dict:
    facts = {
        "source": ds.source,
        "verified": ds.verified,
        "train": len(ds.train),
        "val": len(ds.val),
        "test": len(ds.test),
        "fingerprint": data.fingerprint(ds),
    }
    if ds.normalization is not None:
        facts["normalization"] = ds.normalization.to_dict()
    return facts


def _resumed_arch(args: argparse.Namespace) -> None:
    """--resume without --arch continues the run's own architecture, also where the recipe's default
    has changed since (the modern recipe trained ``resnet18-cifar`` before ``resnet18-cifar-torch``)."""
    if not (args.resume and args.arch is None and args.out and rundir.is_run_dir(args.out)):
        return
    try:
        stored = rundir.read_config(args.out).get("recipe", {}).get("arch")
    except rundir.RunDirError:
        return  # the run directory's own checks say what is wrong with it
    default = RECIPES[args.recipe].arch
    if stored and stored != default and stored in available():
        print(
            f"notice: --resume continues the run's architecture, {stored} (the {args.recipe} recipe's default is {default})",
            file=sys.stderr,
        )
        args.arch = stored


def train(backend_cls: type[Backend], args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _resumed_arch(args)
    recipe = cli.recipe_from_args(args)
    backend = backend_cls(args, recipe)
    fw = backend.framework.package
    out = args.out or cli.default_out(fw, recipe.arch)
    if backend.chief:
        run = rundir.RunDir(out, fw, recipe, resume=args.resume, force=args.force)
    else:  # another process of a distributed run: the chief checks, creates and writes the run directory
        run = rundir.RunDir.follow(out, fw, resume=args.resume)
    # where the checkpoint on disk stands (completed epochs, batch into the next), as the
    # writes land: what a Ctrl-C at any moment can truthfully promise
    on_disk: dict = {}
    stop = StopRequest()
    try:
        return _train(backend, run, recipe, args, started, on_disk, stop)
    except KeyboardInterrupt:
        backend.close()
        if not backend.chief:
            return 130
        if on_disk.get(
            "finishing"
        ):  # every epoch is trained and checkpointed; only the evaluation and artefacts are missing
            return cli.interrupted(on_disk["epoch"], 0, run.path, finishing=True)
        return cli.interrupted(on_disk.get("epoch"), on_disk.get("batch", 0), run.path, abandoned=stop.abandoned)


def _train(
    backend: Backend, run: rundir.RunDir, recipe: Recipe, args, started: float, on_disk: dict, stop: "StopRequest"
) -> int:
    ds = cli.load_data(recipe, args)
    facts = data_facts(ds)
    if run.resuming and backend.chief:
        run.check_same_data(facts)
    if run.complete:
        raise rundir.RunDirError(run.complete)
    backend.start(ds)
    if backend.chief:
        run.create()
    backend.build(ds)
    state = RunState()
    if run.resuming:  # every process: they continue in step
        state = RunState.from_dict(backend.load(run.checkpoint))
        on_disk.update(epoch=state.epoch, batch=state.batch)
        if state.epoch > recipe.epochs or (state.epoch == recipe.epochs and state.batch):
            raise rundir.RunDirError(
                f"--resume: the run in {run.path} has trained {state.epoch} epochs already; --epochs {recipe.epochs} ends before that: give --epochs {max(state.epoch, 1)} or more"
            )
    log = None
    if backend.chief:
        if run.resuming:
            if state.epoch >= recipe.epochs:
                print(
                    f"resuming {run.path}: all {state.epoch} epochs are trained; evaluating and writing the artefacts",
                    file=sys.stderr,
                )
            else:
                print(f"resuming {run.path} at epoch {state.epoch + 1}, batch {state.batch}", file=sys.stderr)
            run.write_metrics(state.history)
        run.write_config(recipe, runtime=backend.runtime(), data=facts)
        log = TrainingLog(run.path, state.history)
    try:
        with stop:
            fit(backend, run, recipe, ds, state, args.quiet, log, on_disk, stop)
    except Diverged as e:
        backend.close()
        raise TrainingDiverged(diverged_message(e, state, recipe, backend, run, on_disk)) from None
    finally:
        if log:
            log.close()
    backend.close()
    if not backend.chief:
        return 0
    on_disk.update(epoch=state.epoch, batch=0, finishing=True)
    results = finish(run, recipe, ds, state.history, backend, started)
    name = f"{backend.framework.display_name()}{backend.device_label()}"
    print(
        cli.summary(
            summary_lines(
                f"{name} ({results['epochs']} epoch{'' if results['epochs'] == 1 else 's'}, {recipe.arch})",
                results,
                run,
            )
        )
    )
    return 0


def diverged_message(
    e: "Diverged", state: "RunState", recipe: Recipe, backend: Backend, run: rundir.RunDir, on_disk: dict
) -> str:
    steps = backend.steps_per_epoch()
    if on_disk.get("epoch") is None:
        kept = f"no checkpoint was written before it, so {run.path} holds nothing to resume"
    elif on_disk.get("batch"):
        kept = f"the checkpoint at epoch {on_disk['epoch'] + 1}, batch {on_disk['batch']} in {run.path} is the last good one"
    else:
        kept = f"the checkpoint of epoch {on_disk['epoch']} in {run.path} is the last good one"
    return (
        f"training diverged: the loss is {e.value} (not finite) at epoch {state.epoch + 1}, step {e.batch} of {steps} "
        f"(optimizer step {state.epoch * steps + e.batch}); nothing after it was written: {kept}. "
        f"Lower the learning rate (--lr, {recipe.optimizer.learning_rate:g} now) or check the data, and start again with --force"
    )


class TrainingLog:
    """TensorBoard event files in the run directory: per epoch, and the training loss every few steps.

    On a resumed run it writes the epochs of the checkpoint's history that the
    earlier event files lack (a kill between the checkpoint and the log), and no
    step twice.
    """

    EPOCH_TAGS = {
        "loss": "epoch/loss",
        "accuracy": "epoch/accuracy",
        "val_loss": "epoch/val_loss",
        "val_accuracy": "epoch/val_accuracy",
        "lr": "epoch/lr",
        "images_per_sec": "epoch/images_per_sec",
    }
    STEP_TAG = "step/loss"

    def __init__(self, path: Path, history: list[dict]):
        from . import tensorboard_log

        logged = tensorboard_log.read_scalars(path)
        self.logged_epochs = {step for step, _ in logged.get(self.EPOCH_TAGS["loss"], [])}
        self.last_step = max((step for step, _ in logged.get(self.STEP_TAG, [])), default=-1)
        self.writer = tensorboard_log.EventWriter(path)
        self._lock = threading.Lock()  # epochs are logged from the checkpoint writer's thread
        for h in history:
            self.epoch(h)

    def epoch(self, h: dict) -> None:
        with self._lock:
            if h["epoch"] in self.logged_epochs:
                return
            self.writer.scalars(h["epoch"], {tag: h[k] for k, tag in self.EPOCH_TAGS.items()})
            self.logged_epochs.add(h["epoch"])

    def step_loss(self, step: int, loss: float) -> None:
        with self._lock:
            if step > self.last_step:
                self.writer.scalars(step, {self.STEP_TAG: loss})
                self.last_step = step

    def close(self) -> None:
        self.writer.close()


class Background:
    """One end-of-epoch write at a time, in a thread, while the next epoch trains.

    The checkpoint (135 MB for resnet18, synced to disk), then metrics.jsonl and
    the epoch's TensorBoard record, in that order, so nothing is ever ahead of
    the checkpoint.  A new job waits for the previous one.  A failed write is
    raised in the training thread at the next step (:meth:`raise_failure`, called
    after every step), by the next :meth:`submit` or by :meth:`flush`: the run
    stops at once, not an epoch later.
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resnet-port-checkpoint")
        self._pending = None

    def submit(self, job: Callable[[], None]) -> None:
        self.flush()
        self._pending = self._pool.submit(job)

    def raise_failure(self) -> None:
        """Raise the pending write's error if it has failed (cheap: no waiting)."""
        pending = self._pending
        if pending is not None and pending.done() and pending.exception() is not None:
            self._pending = None
            raise pending.exception()

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown()


def progress_bar(total: int, initial: int, desc: str, disable: bool):
    """tqdm: live on a terminal or in a notebook, a line a minute in a log."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    every = 0.5 if tty else 60.0
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        disable=disable,
        leave=False,
        mininterval=every,
        delay=0 if tty else every,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def fit(
    backend: Backend,
    run: rundir.RunDir,
    recipe: Recipe,
    ds: data.Cifar100,
    state: RunState,
    quiet: bool,
    log: TrainingLog | None,
    on_disk: dict | None = None,
    stop: StopRequest | None = None,
) -> None:
    """Train the remaining epochs.  ``on_disk`` is kept at the checkpoint written last: ``epoch``, ``batch``."""
    background = Background()
    try:
        _fit(
            backend,
            run,
            recipe,
            ds,
            state,
            quiet,
            log,
            background,
            {} if on_disk is None else on_disk,
            stop or StopRequest(),
        )
    finally:
        background.close()  # the last epoch's checkpoint is on disk before anything else happens


def _intact(on_disk: dict) -> str:
    if on_disk.get("epoch") is None:
        return "no earlier checkpoint exists"
    if on_disk.get("batch"):
        return f"the checkpoint at epoch {on_disk['epoch'] + 1}, batch {on_disk['batch']} is intact"
    return f"epoch {on_disk['epoch']}'s checkpoint is intact" if on_disk["epoch"] else "no earlier checkpoint exists"


def _fit(
    backend: Backend,
    run: rundir.RunDir,
    recipe: Recipe,
    ds: data.Cifar100,
    state: RunState,
    quiet: bool,
    log: TrainingLog | None,
    background: Background,
    on_disk: dict,
    stop: StopRequest,
) -> None:
    steps = backend.steps_per_epoch()
    while state.epoch < recipe.epochs:
        if stop.requested:  # Ctrl-C during the validation or the checkpoint of the epoch before
            background.flush()
            raise KeyboardInterrupt
        bar = progress_bar(steps, state.batch, f"epoch {state.epoch + 1}/{recipe.epochs}", quiet or not backend.chief)
        first_step = state.epoch * steps

        def on_step(batch: int, loss: float | None, bar=bar, first_step=first_step) -> bool:
            background.raise_failure()  # a failed write (a full disk) stops the run now
            bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if log and math.isfinite(loss):
                    log.step_loss(first_step + batch, loss)
            return stop.requested

        begun = time.perf_counter()
        start = EpochSums.from_dict(state.partial)
        try:
            done = backend.train_epoch(state.epoch, state.batch, start, on_step, REPORT_EVERY)
        except Interrupted as e:
            e.sums.seconds = start.seconds + time.perf_counter() - begun
            state.partial = asdict(e.sums)
            state.batch = e.batch
            background.flush()
            if backend.chief:
                try:
                    backend.save(run.checkpoint, state.to_dict(recipe))
                except WriteError as w:
                    raise WriteError(
                        w.errno,
                        f"{w}: the checkpoint at epoch {state.epoch + 1}, batch {state.batch} was not written; {_intact(on_disk)}",
                    ) from None
                on_disk.update(epoch=state.epoch, batch=state.batch)
            raise KeyboardInterrupt from None
        finally:
            bar.close()
        warmup = backend.take_warmup_seconds()
        done.seconds = start.seconds + time.perf_counter() - begun - warmup
        if warmup and not quiet and backend.chief:
            print(
                f"compile: {warmup:.1f} s in epoch {state.epoch + 1}'s first step (not counted in its images/s)",
                file=sys.stderr,
            )
        val_loss, val_acc, _ = backend.evaluate(ds.val)
        state.history.append(
            {
                "epoch": state.epoch + 1,
                "loss": done.loss_sum / max(done.seen, 1),
                "accuracy": done.correct / max(done.seen, 1),
                "val_loss": float(val_loss),
                "val_accuracy": float(val_acc),
                "lr": backend.learning_rate(),
                "seconds": done.seconds,
                "images_per_sec": done.seen / max(done.seconds, 1e-9),
            }
        )
        state.epoch, state.batch, state.partial = state.epoch + 1, 0, rundir.empty_partial()
        if not backend.chief:
            continue
        write_checkpoint, history = backend.snapshot(state.to_dict(recipe)), list(state.history)

        # runs in the background thread: everything it uses is bound now, not read from the loop later
        def persist(epoch=state.epoch, before=dict(on_disk), write_checkpoint=write_checkpoint, history=history):  # noqa: B006 (a copy, on purpose)
            try:  # the checkpoint first: metrics.jsonl is derived from it
                write_checkpoint(run.checkpoint)
            except WriteError as w:
                raise WriteError(
                    w.errno,
                    f"{w}: the checkpoint of epoch {epoch} was not written; {_intact(before)}; free space and continue with --resume",
                ) from None
            on_disk.update(epoch=epoch, batch=0)
            try:
                run.write_metrics(history)
            except WriteError as w:
                raise WriteError(
                    w.errno,
                    f"{w}: {rundir.METRICS} of epoch {epoch} was not written; epoch {epoch}'s checkpoint is intact (--resume rewrites {rundir.METRICS} from it)",
                ) from None
            if log:
                log.epoch(history[-1])

        background.submit(persist)
        if not quiet:
            h = state.history[-1]
            val = (
                f"val_loss {h['val_loss']:.4f} val_acc {h['val_accuracy']:.4f}"
                if len(ds.val)
                else "no validation split"
            )
            print(
                f"epoch {h['epoch']}/{recipe.epochs}: loss {h['loss']:.4f} acc {h['accuracy']:.4f} {val} lr {h['lr']:.3g} ({h['images_per_sec']:.0f} img/s){time_left(state.history, recipe.epochs)}",
                file=sys.stderr,
            )
    if stop.requested:  # Ctrl-C in the last epoch's last step or validation: every epoch is trained
        background.flush()
        raise KeyboardInterrupt


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 05 min``, ``7 min``, ``40 s``."""
    s = int(round(seconds))
    if s >= 86400:
        return f"{s // 86400} d {s % 86400 // 3600} h"
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min" if s >= 60 else (f"{s} s" if s else "under 1 s")


def time_left(history: list[dict], epochs: int) -> str:
    """``; about 2 h 05 min left (148 epochs)``: the epochs to go at the median time of the last few."""
    left = epochs - len(history)
    times = [h["seconds"] for h in history[-5:] if isinstance(h.get("seconds"), (int, float)) and h["seconds"] > 0]
    if left <= 0 or not times:
        return ""
    import statistics

    return f"; about {duration(left * statistics.median(times))} left ({left} epoch{'s' if left != 1 else ''})"


def finish(
    run: rundir.RunDir, recipe: Recipe, ds: data.Cifar100, history: list[dict], backend: Backend, started: float
) -> dict:
    """The end of a run: the weights, the test predictions, the curves, the mosaic and ``results.json``."""
    try:
        return _finish(run, recipe, ds, history, backend, started)
    except WriteError as e:
        raise WriteError(
            e.errno,
            f"{e}; every epoch is checkpointed: free space and run the same command with --resume to write the artefacts",
        ) from None
    except OSError as e:  # numpy's or matplotlib's own writes
        where = Path(e.filename) if e.filename else run.path / "artefacts"
        raise WriteError(
            e.errno,
            f"{describe_write_error(where, e)}; every epoch is checkpointed: free space and run the same command with --resume to write the artefacts",
        ) from None


def _finish(
    run: rundir.RunDir, recipe: Recipe, ds: data.Cifar100, history: list[dict], backend: Backend, started: float
) -> dict:
    from . import report

    backend.export_weights(run.path / rundir.WEIGHTS)  # checked finite: a diverged model writes no weights
    test_loss, test_acc, pred = backend.evaluate(ds.test)
    if len(ds.test) and not (math.isfinite(test_loss) and math.isfinite(test_acc)):
        raise TrainingDiverged(
            f"the test loss of the trained model is {test_loss} (not finite): its weights are finite but its outputs overflow; no result is reported"
        )
    np.save(run.path / rundir.PREDICTIONS, pred)
    report.plot_curves(history, run.path, title=f"{recipe.arch} ({backend.framework.label})")
    report.prediction_mosaic(
        ds.test.images, pred, ds.fine_names, run.path / "test_visualisation.png", labels=ds.test.fine
    )
    train_seconds = sum(h["seconds"] for h in history)
    val = [h["val_accuracy"] for h in history if h["val_accuracy"] is not None and math.isfinite(h["val_accuracy"])]
    results = {
        "arch": recipe.arch,
        "epochs": len(history),
        "test_accuracy": test_acc,
        "test_correct": int((pred == ds.test.fine).sum()),
        "test_total": len(ds.test),
        "test_loss": test_loss,
        "best_val_accuracy": max(val) if val else None,
        "final_val_accuracy": val[-1] if val and len(val) == len(history) else None,
        "train_seconds": train_seconds,
        "images_per_sec": sum(h["images_per_sec"] * h["seconds"] for h in history) / max(train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
    }
    run.write_results(results)
    return results


def summary_lines(framework_line: str, results: dict, run: rundir.RunDir) -> dict:
    return {
        "framework": framework_line,
        "test accuracy": f"acc= {results['test_accuracy']:.4f} ({results['test_correct']}/{results['test_total']})",
        "best val accuracy": "- (no validation split)"
        if results["best_val_accuracy"] is None
        else f"{results['best_val_accuracy']:.4f}",
        "training time": f"{results['train_seconds']:.1f} s ({results['images_per_sec']:.1f} images/s)",
        "artifacts": str(run.path),
    }
