"""Scaling out on the frameworks' own engines, on CPU: torchrun (gloo) for PyTorch, MirroredStrategy for Keras."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from resnet_port import rundir, synthetic
from resnet_port import weights as W
from resnet_port.spec import get_spec

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TOL = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    synthetic.write(root, n_train=148, n_test=50, num_classes=10)
    return root


def torchrun(n, *args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "torch_impl.train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, **kw)


def three_steps(data, out):
    # 48 training images, global batch 16: three optimiser steps
    return ["--arch", "tiny", "--epochs", 1, "--batch-size", 16, "--limit-train", 48, "--data-dir", data, "--no-verify", "--val-size", 100, "--out", out, "--quiet"]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_runs")
    single = subprocess.run([sys.executable, "-m", "torch_impl.train", *map(str, three_steps(data, out / "single"))], capture_output=True, text=True, env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]
    sync = torchrun(2, *three_steps(data, out / "sync"), "--sync-bn")
    assert sync.returncode == 0, sync.stderr[-3000:]
    local = torchrun(2, *three_steps(data, out / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    return out


def _max_diff(a_dir, b_dir, skip=()):
    a = W.load(a_dir / "weights.safetensors", "tiny").tensors
    b = W.load(b_dir / "weights.safetensors", "tiny").tensors
    return max((float(np.abs(a[k] - b[k]).max()), k) for k in a if k not in skip)


def test_two_processes_with_sync_bn_equal_one_process(runs):
    """Global batch 16 over 2 processes (8 each) with synchronised BN == 1 process, batch 16.

    Every tensor but the conv biases that feed a BatchNorm: their gradient is float
    noise, which Adam scales up to the learning rate (README, "What parity means");
    BN cancels them in training mode.
    """
    worst, key = _max_diff(runs / "single", runs / "sync", skip=set(get_spec("tiny").batchnorm_fed_biases()))
    assert worst <= TOL, f"after 3 steps, {key} differs by {worst:.2e} between 2 processes and 1"
    a, b = rundir.read_metrics(runs / "single")[0], rundir.read_metrics(runs / "sync")[0]
    assert abs(a["loss"] - b["loss"]) <= 1e-5 and a["accuracy"] == b["accuracy"] and a["lr"] == b["lr"]


def test_without_sync_bn_the_difference_is_reported(runs, capsys):
    """Per-process BatchNorm statistics are a different computation: the difference is real, and shown."""
    worst, key = _max_diff(runs / "single", runs / "local", skip=set(get_spec("tiny").batchnorm_fed_biases()))
    with capsys.disabled():
        print(f"\n[2 processes without --sync-bn vs 1 process, 3 steps: max weight difference {worst:.2e} ({key})]")
    assert worst > 10 * TOL


def test_one_run_directory_from_two_processes(runs):
    import json

    cfg = json.loads((runs / "sync" / "config.json").read_text())
    assert cfg["runtime"]["processes"] == 2 and cfg["runtime"]["sync_bn"] is True
    assert [m["epoch"] for m in rundir.read_metrics(runs / "sync")] == [1]
    assert len(list((runs / "sync").glob("metrics*"))) == 1 and len(list((runs / "sync").glob("checkpoint*"))) == 1
    assert not list(runs.glob("sync*/**/rank*"))


def test_batch_smaller_than_processes_is_refused(data, tmp_path):
    p = torchrun(2, "--arch", "tiny", "--batch-size", 1, "--data-dir", data, "--no-verify", "--val-size", 100, "--out", tmp_path / "x")
    assert p.returncode != 0 and "must be at least the number of processes (2)" in p.stderr
    assert not (tmp_path / "x").exists()


def test_two_process_run_resumes_after_kill(data, tmp_path):
    out = tmp_path / "run"
    args = ["--arch", "tiny", "--epochs", 2, "--batch-size", 4, "--data-dir", data, "--no-verify", "--val-size", 40, "--out", out, "--quiet", "--sync-bn"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "torch_impl.train", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    metrics = out / rundir.METRICS
    try:
        end = time.time() + 300
        while time.time() < end and not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None:
            time.sleep(0.05)
        assert metrics.exists(), proc.communicate()[1][-3000:]
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, at once
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = [m["epoch"] for m in rundir.read_metrics(out)]
    assert done in ([1], [1, 2])
    p = torchrun(2, *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1, 2]
    assert rundir.read_results(out)["epochs"] == 2
    W.load(out / "weights.safetensors", get_spec("tiny"))


# -- Keras: tf.distribute.MirroredStrategy over 2 logical CPU devices ------------------------------


def keras_train(data, out, *extra):
    # ONE optimiser step (16 images, global batch 16): see test_mirrored_with_sync_bn_equals_one_device
    args = three_steps(data, out)
    args[args.index("--limit-train") + 1] = 16
    cmd = [sys.executable, "-m", "tf_impl.train", *map(str, args), *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def keras_runs(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    for name, extra in (("single", ()), ("sync", ("--strategy", "mirrored", "--cpu-replicas", 2, "--sync-bn")), ("local", ("--strategy", "mirrored", "--cpu-replicas", 2))):
        p = keras_train(data, out / name, *extra)
        assert p.returncode == 0, f"{name}: {p.stderr[-3000:]}"
    return out


def test_mirrored_with_sync_bn_matches_one_device(keras_runs, tmp_path, capsys):
    """2 replicas (global batch 16) with synchronised BN against one device, after ONE step.

    Checked: the loss is the single device's (not counted once per replica) and
    every value is within Adam's bound for one step (2 x lr).  NOT claimed (issue 7
    stays open): "every weight within 1e-5".  Measured after one step: 3 to 37 of
    28,532 values differ by more than 1e-5 depending on the data, enough to move the
    training-mode logits by ~1.6e-3; after three steps ~10% of the values.  Not yet
    explained; Keras' synchronised moments (E[x^2] - E[x]^2, where one device uses a
    two-pass variance) are the first suspect.  The figures are printed, not hidden.
    """
    from resnet_port import parity

    a = W.load(keras_runs / "single" / "weights.safetensors", "tiny").tensors
    b = W.load(keras_runs / "sync" / "weights.safetensors", "tiny").tensors
    diffs = np.concatenate([np.abs(a[k] - b[k]).ravel() for k in a])
    with capsys.disabled():
        print(f"\n[Keras, 2 replicas with --sync-bn vs 1 device, 1 step: {int((diffs > TOL).sum())} of {diffs.size} values differ by more than {TOL}, max {diffs.max():.2e}]")
    assert diffs.max() <= 2 * 1e-3
    x = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    ops = [
        {"op": "forward", "arch": "tiny", "weights": str(keras_runs / n / "weights.safetensors"), "inputs": str(tmp_path / "x.npy"), "training": True, "out": str(tmp_path / f"{n}.npz")}
        for n in ("single", "sync")
    ]
    parity.run_worker("tf", ops, tmp_path)
    la, lb = np.load(tmp_path / "single.npz")["logits"], np.load(tmp_path / "sync.npz")["logits"]
    with capsys.disabled():
        print(f"[Keras, same: training-mode logits differ by {np.abs(la - lb).max():.2e} (PyTorch DDP: weights within 1e-5)]")
    assert np.isfinite(lb).all()
    ma, mb = rundir.read_metrics(keras_runs / "single")[0], rundir.read_metrics(keras_runs / "sync")[0]
    assert abs(ma["loss"] - mb["loss"]) <= 1e-5, (ma["loss"], mb["loss"])  # the loss is not counted once per replica


def test_mirrored_without_sync_bn_difference_reported(keras_runs, capsys):
    worst, key = _max_diff(keras_runs / "single", keras_runs / "local", skip=set(get_spec("tiny").batchnorm_fed_biases()))
    with capsys.disabled():
        print(f"\n[Keras, 2 replicas without --sync-bn vs 1 device, 1 step: max weight difference {worst:.2e} ({key})]")
    assert worst > 10 * TOL


def test_mirrored_writes_one_run_directory(keras_runs):
    import json

    cfg = json.loads((keras_runs / "sync" / "config.json").read_text())
    assert cfg["runtime"]["strategy"] == "mirrored" and cfg["runtime"]["replicas"] == 2 and cfg["runtime"]["sync_bn"] is True
    assert [m["epoch"] for m in rundir.read_metrics(keras_runs / "sync")] == [1]
