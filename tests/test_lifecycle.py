"""The run lifecycle's interruption accounting, with a framework-free backend: what a Ctrl-C
at any moment says about the checkpoint is what is on disk (the end-to-end kills are in
test_train_cli.py, with both real CLIs)."""

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from resnet_port import cli
from resnet_port import run as lifecycle
from resnet_port.recipe import recipe

STEPS = 5


class FakeBackend:
    """Steps are instant; Ctrl-C is raised where a test asks for it; checkpoints are recorded."""

    chief = True

    def __init__(self, ctrl_c_at=None, slow_write: threading.Event | None = None):
        self.ctrl_c_at = ctrl_c_at  # ("train", epoch, batch) or ("evaluate", epoch)
        self.slow_write = slow_write  # end-of-epoch writes wait for it
        self.written: list[tuple[int, int]] = []  # (epochs done, batch) of each checkpoint, in order
        self.epoch = 0

    def steps_per_epoch(self):
        return STEPS

    def train_epoch(self, epoch, start, sums, on_step, every):
        self.epoch = epoch
        for b in range(start, STEPS):
            if self.ctrl_c_at == ("train", epoch, b):
                raise lifecycle.Interrupted(lifecycle.EpochSums(1.0 * (b - start), 0, 4 * (b - start)), b)
            if self.ctrl_c_at == ("signal", epoch, b):  # a real SIGINT, as a terminal sends it, in this step
                os.kill(os.getpid(), signal.SIGINT)
            if (
                on_step(b + 1, None) and b + 1 < STEPS
            ):  # the lifecycle asks to stop: after this step, as the backends do
                raise lifecycle.Interrupted(
                    lifecycle.EpochSums(sums.loss_sum + 1.0, 0, sums.seen + 4 * (b + 1 - start)), b + 1
                )
        return lifecycle.EpochSums(1.0, 1, 4 * (STEPS - start))

    def take_warmup_seconds(self):
        return 0.0

    def evaluate(self, split):
        if self.ctrl_c_at == ("evaluate", self.epoch):
            raise KeyboardInterrupt
        return 0.5, 0.5, []

    def learning_rate(self):
        return 0.1

    def snapshot(self, state):
        def write(path):
            if self.slow_write is not None and state["batch"] == 0:
                self.slow_write.wait(5)
            self.written.append((state["epoch"], state["batch"]))

        return write

    def save(self, path, state):
        self.snapshot(state)(path)


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal():
    """Python's own SIGINT handler, as a process started from a terminal has it.  A suite started as a
    background job without job control inherits SIGINT ignored, and the lifecycle rightly leaves an
    ignored SIGINT alone (nobody can press Ctrl-C there); these tests are about the terminal case."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def run_fit(backend, epochs=3, stop=None):
    r = recipe("seed", arch="tiny", epochs=epochs)
    run = SimpleNamespace(checkpoint=Path("unused"), write_metrics=lambda history: None)
    state, on_disk = lifecycle.RunState(), {}
    with pytest.raises(KeyboardInterrupt):
        with stop or lifecycle.StopRequest():
            lifecycle.fit(backend, run, r, SimpleNamespace(val=[]), state, True, None, on_disk, stop)
    return state, on_disk


def test_a_real_ctrl_c_stops_after_the_step_under_way(capsys):
    """SIGINT in epoch 2's step 3: that step completes, the checkpoint holds 3 batches and their sums."""
    stop = lifecycle.StopRequest()
    backend = FakeBackend(ctrl_c_at=("signal", 1, 2))
    state, on_disk = run_fit(backend, stop=stop)
    assert backend.written == [(1, 0), (1, 3)] and on_disk == {"epoch": 1, "batch": 3}
    assert state.partial["seen"] == 12 and state.partial["loss_sum"] == 1.0 and not stop.abandoned
    assert "stopping after this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_second_ctrl_c_abandons_the_checkpoint_being_written(capsys):
    stop = lifecycle.StopRequest()
    backend = FakeBackend(ctrl_c_at=("signal", 1, 2))
    original = backend.snapshot

    def snapshot(state):  # the second SIGINT arrives while the mid-epoch checkpoint is written
        write = original(state)

        def cut(path):
            if state["batch"]:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            write(path)

        return cut

    backend.snapshot = snapshot
    state, on_disk = run_fit(backend, stop=stop)
    assert stop.abandoned and backend.written == [(1, 0)] and on_disk == {"epoch": 1, "batch": 0}
    cli.interrupted(on_disk["epoch"], on_disk["batch"], "runs/x", abandoned=stop.abandoned)
    err = capsys.readouterr().err
    assert (
        "the checkpoint being written was abandoned; the checkpoint on disk is at the end of epoch 1 in runs/x" in err
    ), err


def test_ctrl_c_in_an_epoch_checkpoints_the_batch_reached(capsys):
    backend = FakeBackend(ctrl_c_at=("train", 1, 3))
    state, on_disk = run_fit(backend)
    assert backend.written == [(1, 0), (1, 3)]  # epoch 1's end, then epoch 2 at batch 3
    assert on_disk == {"epoch": 1, "batch": 3} and state.batch == 3
    assert cli.interrupted(on_disk["epoch"], on_disk["batch"], "runs/x") == 130
    assert "checkpoint written at epoch 2, batch 3 in runs/x" in capsys.readouterr().err


def test_ctrl_c_between_epochs_names_the_checkpoint_on_disk(capsys):
    """Ctrl-C in epoch 2's validation while epoch 1's checkpoint is still being written in the
    background: the write completes, and the message names it (not epoch 2, which is lost)."""
    slow = threading.Event()
    backend = FakeBackend(ctrl_c_at=("evaluate", 1), slow_write=slow)
    threading.Timer(0.2, slow.set).start()
    state, on_disk = run_fit(backend)
    assert backend.written == [(1, 0)] and on_disk == {"epoch": 1, "batch": 0}
    cli.interrupted(on_disk["epoch"], on_disk["batch"], "runs/x")
    assert (
        "checkpoint written at the end of epoch 1 in runs/x; continue with the same command and --resume"
        in capsys.readouterr().err
    )


def test_ctrl_c_before_any_checkpoint_and_after_the_last_epoch(capsys):
    state, on_disk = run_fit(FakeBackend(ctrl_c_at=("evaluate", 0)))
    assert on_disk == {}
    cli.interrupted(on_disk.get("epoch"), on_disk.get("batch", 0), "runs/x")
    assert "before the first checkpoint; nothing in runs/x to resume from" in capsys.readouterr().err
    cli.interrupted(3, 0, "runs/x", finishing=True)
    assert (
        "every epoch (3) is trained and checkpointed in runs/x, but the evaluation and artefacts are not written; --resume writes them"
        in capsys.readouterr().err
    )
