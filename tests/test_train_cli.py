"""The training and evaluation CLIs, run as users run them (subprocesses), on tiny synthetic data."""

import json
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from resnet_port import conformance, forkserver, report, rundir, synthetic
from resnet_port import weights as W
from resnet_port.spec import get_spec

FRAMEWORKS = ["tf_impl", "torch_impl"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def cli(module, *args, cwd=None, env=None, timeout=600):
    """``python -m module args`` (forked from the test process's framework server where one applies)."""
    return forkserver.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=timeout,
    )


def parallel(*calls):
    """Run subprocess calls side by side (each framework in its own process)."""
    with ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(lambda c: c(), calls))


def tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a run directory's event files, read by TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_tensorboard_holds(run_dir, steps_per_epoch: int) -> None:
    """Every epoch of metrics.jsonl once, with its values; step losses once per step, each epoch's last step included."""
    metrics = rundir.read_metrics(run_dir)
    tb = tensorboard_scalars(run_dir)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec"):
        assert [s for s, _ in tb[f"epoch/{key}"]] == [m["epoch"] for m in metrics], key
        np.testing.assert_allclose(
            [v for _, v in tb[f"epoch/{key}"]], [m[key] for m in metrics], rtol=1e-6, err_msg=key
        )
    steps = [s for s, _ in tb["step/loss"]]
    assert steps == sorted(set(steps)), "a step logged twice or out of order"
    assert {e * steps_per_epoch for e in range(1, len(metrics) + 1)} <= set(steps)
    assert all(np.isfinite(v) and v > 0 for _, v in tb["step/loss"])


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write(root, n_train=300, n_test=100, num_classes=10)
    return root


@pytest.fixture(scope="module")
def long_epoch_data(tmp_path_factory):
    """Per framework, enough images that an epoch at batch 4 lasts a second or more, to interrupt one mid-way:
    800 training images (200 steps, ~15 ms each on a 2-core Xeon) for PyTorch, 440 (110 steps, 12-50 ms each)
    for Keras."""
    made = {}
    for fw, n in (("torch_impl", 860), ("tf_impl", 500)):
        made[fw] = tmp_path_factory.mktemp(f"data_long_{fw}")
        synthetic.write(made[fw], n_train=n, n_test=100, num_classes=10)
    return made


def train_args(data_dir, out, epochs=2, batch=32, val=60, *extra):
    return [
        "--arch",
        "tiny",
        "--epochs",
        epochs,
        "--batch-size",
        batch,
        "--data-dir",
        data_dir,
        "--no-verify",
        "--val-size",
        val,
        "--out",
        out,
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    procs = parallel(*[lambda fw=fw: cli(f"{fw}.train", *train_args(small_data, out / fw)) for fw in FRAMEWORKS])
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, f"{fw}.train failed:\n{p.stderr[-3000:]}"
    return out, dict(zip(FRAMEWORKS, procs))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_run_directory_artifacts(runs, small_data, fw):
    import cv2

    out, procs = runs
    d = out / fw
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["framework"] == fw and cfg["recipe"]["arch"] == "tiny" and cfg["recipe"]["epochs"] == 2
    assert cfg["recipe"]["optimizer"]["decay"] == 0.004 and cfg["recipe"]["objective"]["l2_scope"] == "all"
    fingerprint = cfg["data"].pop("fingerprint")  # of the images and labels: what --resume checks it trains on
    assert cfg["data"] == {
        "source": str(small_data / "cifar-100-python"),
        "verified": False,
        "train": 240,
        "val": 60,
        "test": 100,
    }
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    metrics = rundir.read_metrics(d)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for m in metrics:
        assert set(m) == set(rundir.METRIC_KEYS)
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["val_accuracy"] <= 1 and m["loss"] > 0 and m["images_per_sec"] > 0
    np.testing.assert_allclose([m["lr"] for m in metrics], [1e-3 / (1 + 0.004 * 8), 1e-3 / (1 + 0.004 * 16)], rtol=1e-6)
    res = rundir.read_results(d)
    pred = np.load(d / "predictions.npy")
    assert len(pred) == res["test_total"] == 100 and res["test_correct"] == int(round(res["test_accuracy"] * 100))
    assert res["epochs"] == 2 and res["best_val_accuracy"] == max(m["val_accuracy"] for m in metrics)
    W.load(d / "weights.safetensors", "tiny")
    for name in ("accuracy.png", "loss.png"):
        img = cv2.imread(str(d / name))
        assert img is not None and img.shape == (480, 640, 3), name
    mosaic = cv2.imread(str(d / "test_visualisation.png"))
    # one row per class of this 10-class data set (labels 0..9 and whatever was predicted), not 100
    shown = np.unique(np.concatenate([np.arange(10), pred]))
    assert len(shown) == 10 and mosaic.shape[:2] == report.mosaic_size(np.searchsorted(shown, pred), len(shown))
    assert (d / rundir.CHECKPOINTS[fw]).is_file()
    assert "acc= " in procs[fw].stdout and str(d) in procs[fw].stdout
    assert_tensorboard_holds(d, steps_per_epoch=8)  # 240 images, batch 32


def test_weights_evaluate_in_the_other_framework(runs):
    """Each run's final weights give the run's own test accuracy in the other framework."""
    out, _ = runs
    other = {"tf_impl": "torch_impl", "torch_impl": "tf_impl"}
    procs = parallel(
        *[
            lambda fw=fw: cli(f"{other[fw]}.evaluate", out / fw, "--predictions", out / f"{fw}_cross.npy")
            for fw in FRAMEWORKS
        ]
    )
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, p.stderr[-2000:]
        res = rundir.read_results(out / fw)
        assert f"acc= {res['test_accuracy']}" in p.stdout
        mine, cross = np.load(out / fw / "predictions.npy"), np.load(out / f"{fw}_cross.npy")
        assert (mine == cross).mean() >= 0.99


def test_mosaic_places_each_image_in_its_predicted_row(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 32, 32, 3)).astype(np.uint8)
    pred = np.array([3, 3, 0, 99, 3, 0, 50])
    path = report.prediction_mosaic(images, pred, [f"c{i}" for i in range(100)], tmp_path / "m.png")
    m = cv2.imread(str(path))[:, :, ::-1]  # back to RGB
    assert m.shape[:2] == report.mosaic_size(pred, 100) == (report.TOP + 102 * 32, report.LEFT + 3 * 32 + 10)

    def cell(row, col):
        y, x = report.TOP + row * 32, report.LEFT + col * 32
        return m[y : y + 32, x : x + 32]

    assert (
        np.array_equal(cell(3, 0), images[0])
        and np.array_equal(cell(3, 1), images[1])
        and np.array_equal(cell(3, 2), images[4])
    )
    assert (
        np.array_equal(cell(0, 1), images[5])
        and np.array_equal(cell(99, 0), images[3])
        and np.array_equal(cell(50, 0), images[6])
    )
    assert m[: report.TOP + 32, :200].max() > 0  # a class name is written at the left


def _wait_for(predicate, timeout, proc):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def uninterrupted(long_epoch_data, tmp_path_factory):
    """The uninterrupted run of each (framework, recipe) the interruption tests resume, made once."""
    made = {}

    def get(fw, recipe, args):
        if (fw, recipe) not in made:
            out = tmp_path_factory.mktemp(f"uninterrupted_{fw}_{recipe}") / "run"
            p = cli(f"{fw}.train", *[out if a == "OUT" else a for a in args])
            assert p.returncode == 0, p.stderr[-3000:]
            made[fw, recipe] = out
        return made[fw, recipe]

    return get


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("how,recipe", [("sigkill", "seed"), ("ctrl-c", "seed"), ("ctrl-c", "modern")])
def test_interrupted_run_resumes(long_epoch_data, uninterrupted, tmp_path, fw, how, recipe):
    """Killed mid-run (SIGKILL: from the last epoch's checkpoint; Ctrl-C: from the batch reached), resumed,
    the run ends bit-identical to the uninterrupted run: every weight and moving statistic, and every
    epoch's loss, accuracy, validation figures and learning rate (shuffle, augmentation draws, optimiser
    and BatchNorm state, schedule position and loss sums all continued exactly).

    The signal goes 0.5 s after epoch 1's line lands in metrics.jsonl.  That line is written after
    the epoch's checkpoint, in the background while epoch 2 trains, so a slow disk could delay it
    past epoch 2's end: hence 3 epochs, and whichever epoch the signal meets is read back from what
    the run says and wrote, never assumed."""
    out = tmp_path / "run"
    args = train_args(long_epoch_data[fw], out, 3, 4, 60)
    steps = {"torch_impl": 200, "tf_impl": 110}[fw]
    if recipe == "modern":
        args += ["--recipe", "modern", "--arch", "tiny-cifar-torch"]  # the modern default's twin (PyTorch conventions)
    reference = uninterrupted(fw, recipe, [a if a != out else "OUT" for a in args])
    # SIGINT as a terminal's Ctrl-C delivers it, even where the suite itself was started with SIGINT
    # ignored (a background job of a shell without job control), which the child would inherit; the run is
    # forked from the test's fork server (resnet_port.forkserver.start: a Popen without the framework's import)
    proc = forkserver.start(
        [sys.executable, "-m", f"{fw}.train", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        sigint_default=True,
    )
    metrics = out / rundir.METRICS
    try:
        assert _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 1, 300, proc), (
            proc.communicate()[1][-3000:]
        )
        time.sleep(0.5)  # into a later epoch, which lasts seconds
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "results.json").exists()  # interrupted mid-run, not after it
    before = rundir.read_metrics(out)
    done = len(before)
    assert done in (1, 2) and [m["epoch"] for m in before] == list(range(1, done + 1))
    if how == "ctrl-c":
        assert proc.returncode == 130, err[-2000:]
        # the checkpoint at the batch reached (the signal meets training: validation is 2 batches of 50)
        found = re.search(r"checkpoint written at epoch (\d+), batch (\d+) in .*--resume", err)
        assert found and int(found[1]) == done + 1 and 0 < int(found[2]) < steps, err[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    p = cli(f"{fw}.train", *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming" in p.stderr
    after = rundir.read_metrics(out)
    assert [m["epoch"] for m in after] == [1, 2, 3]
    assert after[:done] == before
    assert json.loads((out / "config.json").read_text())["resumed"] == 1
    assert rundir.read_results(out)["epochs"] == 3
    assert_tensorboard_holds(
        out, steps_per_epoch=steps
    )  # each epoch once, no step twice, across the two processes' files
    assert len(list(out.glob("events.out.tfevents.*"))) == 2
    # bit-identical to the run that was never interrupted
    exact, resumed = W.load(reference / rundir.WEIGHTS).tensors, W.load(out / rundir.WEIGHTS).tensors
    differing = [k for k in exact if not np.array_equal(exact[k], resumed[k])]
    assert not differing, f"{len(differing)} tensors differ from the uninterrupted run, e.g. {differing[:3]}"
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
    assert [{k: m[k] for k in keys} for m in after] == [{k: m[k] for k in keys} for m in rundir.read_metrics(reference)]
    assert np.array_equal(np.load(out / rundir.PREDICTIONS), np.load(reference / rundir.PREDICTIONS))


def test_both_frameworks_learn(tmp_path):
    """A learnable problem (10 classes of coloured stripes): both far above chance, and close.

    500 steps of batch 16, because Keras' BN momentum 0.99 needs hundreds of steps
    before inference mode follows training (the post's order).  Measured here: both reach
    >= 0.99 validation accuracy by epoch 10.  Bound: each >= 0.8 (chance is 0.1) and
    |difference| <= 0.15: with 200 validation images the binomial standard error of
    one run near 0.9 is 0.02, and the runs differ in their random draws.
    """
    synthetic.write(tmp_path / "data", n_train=1000, n_test=200, num_classes=10)
    procs = parallel(
        *[
            lambda fw=fw: cli(f"{fw}.train", *train_args(tmp_path / "data", tmp_path / fw, 10, 16, 200))
            for fw in FRAMEWORKS
        ]
    )
    finals = {}
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, p.stderr[-3000:]
        finals[fw] = rundir.read_metrics(tmp_path / fw)[-1]["val_accuracy"]
        assert rundir.read_results(tmp_path / fw)["test_accuracy"] >= 0.8, fw
    assert min(finals.values()) >= 0.8, finals
    assert abs(finals["tf_impl"] - finals["torch_impl"]) <= 0.15, finals


@pytest.fixture(scope="module")
def modern_runs(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("modern")
    modern = ["--recipe", "modern", "--arch", "tiny-cifar-torch"]  # the modern default's twin
    procs = parallel(
        *[lambda fw=fw: cli(f"{fw}.train", *train_args(small_data, out / fw), *modern) for fw in FRAMEWORKS]
    )
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, f"{fw}.train --recipe modern failed:\n{p.stderr[-3000:]}"
    return out


def test_modern_recipe_end_to_end_and_cross_evaluated(modern_runs, small_data, tmp_path):
    """Both CLIs train the modern recipe; each run's weights give the same predictions in the other framework."""
    from resnet_port.augment import channel_stats
    from resnet_port.data import load
    from resnet_port.recipe import recipe

    ds = load(small_data, verify=False, val_size=60, quiet=True)
    stats = channel_stats(ds.train.images).to_dict()
    r = recipe("modern", arch="tiny-cifar-torch", epochs=2, batch_size=32)
    sched = r.schedule(r.steps_per_epoch(240))
    for fw in FRAMEWORKS:
        d = modern_runs / fw
        cfg = json.loads((d / "config.json").read_text())
        assert (
            cfg["recipe"]["name"] == "modern"
            and cfg["recipe"]["optimizer"]["kind"] == "sgd"
            and cfg["recipe"]["objective"]["label_smoothing"] == 0.1
        )
        np.testing.assert_allclose(
            cfg["data"]["normalization"]["mean"], stats["mean"], rtol=1e-12
        )  # the training split's statistics
        assert W.load(d / "weights.safetensors").normalization.to_dict() == cfg["data"]["normalization"]
        # the rate after each epoch: the neutral schedule's float32 value, in both frameworks
        assert [m["lr"] for m in rundir.read_metrics(d)] == [float(sched.lr(8)), float(sched.lr(16))]
    p = cli("resnet_port.compare", modern_runs / "tf_impl", modern_runs / "torch_impl", "--report", tmp_path / "report")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith(("tf_impl", "torch_impl"))]
    assert len(rows) == 2 and all("0 of 100" in line for line in rows), p.stdout


def test_seed_recipe_on_an_imagenet_stem_resnet(small_data, tmp_path):
    """Both CLIs train the seed's recipe on a member of the wider family with PyTorch's conventions (the twin
    of timm's ResNet50-D: a deep 3-conv stem, a 3x3/2 max-pool, bottleneck blocks, shortcuts that average-pool
    with ceil_mode, padding=1, PyTorch's BatchNorm), and compare cross-evaluates the two runs: the same
    predictions."""
    arch = "tiny-d-torch"
    procs = parallel(
        *[
            lambda fw=fw: cli(
                f"{fw}.train", *[a if a != "tiny" else arch for a in train_args(small_data, tmp_path / fw, 1)]
            )
            for fw in FRAMEWORKS
        ]
    )
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, f"{fw}.train --arch {arch} failed:\n{p.stderr[-3000:]}"
        assert json.loads((tmp_path / fw / "config.json").read_text())["recipe"]["arch"] == arch
    p = cli("resnet_port.compare", tmp_path / "tf_impl", tmp_path / "torch_impl", cwd=tmp_path / "tf_impl")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith(("tf_impl", "torch_impl"))]
    assert len(rows) == 2 and all("0 of 100" in line for line in rows), p.stdout
    # without --report the report goes beside the runs, not into the current folder
    assert (tmp_path / "compare-report" / "compare.md").is_file() and not (
        tmp_path / "tf_impl" / "compare-report"
    ).exists()


def test_resume_continues_the_runs_architecture(modern_runs, small_data, tmp_path):
    """--resume without --arch continues the run's own architecture, not the recipe's default: the modern
    recipe's default changed from resnet18-cifar to resnet18-cifar-torch, and its earlier runs still resume."""
    run = tmp_path / "run"
    shutil.copytree(modern_runs / "torch_impl", run)
    args = [a for a in train_args(small_data, run, 3) if a not in ("--arch", "tiny")]
    p = cli("torch_impl.train", *args, "--recipe", "modern", "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (
        "--resume continues the run's architecture, tiny-cifar-torch (the modern recipe's default is resnet18-cifar-torch)"
        in p.stderr
    )
    assert [m["epoch"] for m in rundir.read_metrics(run)] == [1, 2, 3] and json.loads(
        (run / "config.json").read_text()
    )["recipe"]["arch"] == "tiny-cifar-torch"


def test_recipe_flags_that_do_not_apply_are_refused(small_data, tmp_path):
    p = cli("torch_impl.train", *train_args(small_data, tmp_path / "x"), "--recipe", "modern", "--lr-decay", "0.01")
    assert (
        p.returncode == 2 and "--lr-decay is the seed recipe's Adam decay" in p.stderr and not (tmp_path / "x").exists()
    )


BAD = [
    (["--arch", "resnet50"], "invalid choice: 'resnet50'"),
    (["--epochs", "0"], "--epochs: must be a positive integer, got 0"),
    (["--batch-size", "-4"], "--batch-size: must be a positive integer, got -4"),
    (["--val-size", "5000"], "--val-size must be between 0 and 299"),
    (["--float64", "--amp"], "--float64 and --amp/--amp-dtype exclude each other"),
]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_inputs_fail_clearly_and_write_nothing(small_data, tmp_path, fw):
    calls = []
    for i, (flags, _) in enumerate(BAD):
        args = train_args(small_data, tmp_path / f"out{i}")
        # later flags win in argparse
        calls.append(lambda a=args + flags: cli(f"{fw}.train", *a))
    # the data missing altogether (an isolated home, no network)
    home = tmp_path / "home"
    home.mkdir()
    offline = {
        **ENV,
        "HOME": str(home),
        "RESNET_PORT_DATA": "",
        "no_proxy": "",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }
    calls.append(
        lambda: cli(
            f"{fw}.train",
            "--arch",
            "tiny",
            "--data-dir",
            tmp_path / "nowhere",
            "--out",
            tmp_path / "outx",
            cwd=tmp_path,
            env=offline,
        )
    )
    procs = parallel(*calls[:3]) + parallel(*calls[3:])
    for (flags, message), p, i in zip(BAD, procs, range(len(BAD))):
        assert p.returncode == 2, (flags, p.stderr[-2000:])
        assert message in p.stderr, (flags, p.stderr[-2000:])
        assert "Traceback" not in p.stderr
        assert not (tmp_path / f"out{i}").exists()
    p = procs[-1]
    assert p.returncode == 2 and "CIFAR-100 not found" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "outx").exists() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_out_directory_holding_another_run(runs, small_data, tmp_path, fw):
    out, _ = runs
    other = "torch_impl" if fw == "tf_impl" else "tf_impl"
    before = {p.name: p.stat().st_mtime_ns for p in (out / other).iterdir()}
    p = cli(f"{fw}.train", *train_args(small_data, out / other))
    assert p.returncode == 2 and "already holds a" in p.stderr and "--resume" in p.stderr and "--force" in p.stderr
    p = cli(f"{fw}.train", *train_args(small_data, out / other, 2, 16), "--resume")
    assert p.returncode == 2 and (f"holds a {other} run" in p.stderr), p.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / other).iterdir()} == before  # untouched
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "precious.txt").write_text("keep")
    p = cli(f"{fw}.train", *train_args(small_data, tmp_path / "notrun"))
    assert p.returncode == 2 and "not empty and is not a run directory" in p.stderr
    assert (tmp_path / "notrun" / "precious.txt").read_text() == "keep"


def test_resume_with_a_different_recipe_is_refused(runs, small_data):
    out, _ = runs
    p = cli("torch_impl.train", *train_args(small_data, out / "torch_impl", 2, 16), "--resume")
    assert p.returncode == 2 and "holds a different run (batch_size: 32 -> 16)" in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_evaluate_refuses_weights_of_another_architecture(runs, fw):
    out, _ = runs
    p = cli(f"{fw}.evaluate", out / fw / "weights.safetensors", "--arch", "resnet18", "--data-dir", "/nonexistent")
    assert p.returncode == 2 and "holds weights for architecture 'tiny', not 'resnet18'" in p.stderr
    p = cli(f"{fw}.evaluate", out / fw / "config.json")
    assert p.returncode == 2 and "not a resnet-port weights file" in p.stderr and "Traceback" not in p.stderr


def test_torch_amp_on_cpu_falls_back_with_one_line(small_data, tmp_path):
    p = cli("torch_impl.train", *train_args(small_data, tmp_path / "amp", 1), "--amp")
    assert p.returncode == 0, p.stderr[-2000:]
    notices = [line for line in p.stderr.splitlines() if "--amp needs a CUDA GPU" in line]
    assert len(notices) == 1
    cfg = json.loads((tmp_path / "amp" / "config.json").read_text())
    assert cfg["recipe"]["amp"] is True and cfg["runtime"]["amp_effective"] == "float32"


# -- comparing runs across frameworks (resnet_port.compare, resnet_port.diff) ------------------


def test_compare_table_plots_and_cross_evaluation(runs, tmp_path):
    import csv

    import cv2

    out, _ = runs
    report = tmp_path / "report"
    p = cli("resnet_port.compare", out / "tf_impl", out / "torch_impl", "--report", report)
    assert p.returncode == 0, p.stderr[-3000:]
    with open(report / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    # frameworks named as users know them, with the versions that trained each run
    import keras
    import tensorflow as tf
    import torch

    assert [r["framework"] for r in rows] == [
        f"Keras {keras.__version__} (TensorFlow {tf.__version__})",
        f"PyTorch {torch.__version__}",
    ]
    for r, fw in zip(rows, FRAMEWORKS):
        d = out / fw
        metrics, res = rundir.read_metrics(d), rundir.read_results(d)
        assert r["arch"] == "tiny" and int(r["epochs"]) == len(metrics) and r["AMP"] == "float32"
        assert r["best val acc"] == f"{max(m['val_accuracy'] for m in metrics):.4f}"
        assert r["final val acc"] == f"{metrics[-1]['val_accuracy']:.4f}"
        assert r["test acc"] == f"{res['test_accuracy']:.4f}"
        assert r["train time (s)"] == f"{sum(m['seconds'] for m in metrics):.1f}"
        assert r["images/s"] == f"{res['images_per_sec']:.1f}"
        # cross-evaluation: the same weights give the same predictions in the other framework
        n_diff, total = r["predictions differing"].split(" of ")
        assert int(n_diff) <= 0.001 * int(total) and int(total) == 100
        assert r["test acc, other framework"] == r["test acc"]
    md = (report / "compare.md").read_text()
    assert (
        f"| Keras {keras.__version__} (TensorFlow {tf.__version__}) | seed | tiny | 240/60/100 unverified |" in md
        and "predictions differing" in md
    )
    assert all(r["recipe"] == "seed" and r["data (train/val/test)"] == "240/60/100 unverified" for r in rows)
    for name in ("accuracy.png", "loss.png"):
        assert cv2.imread(str(report / name)).shape == (500, 800, 3)
    assert "FLAGGED" not in p.stdout


def test_compare_flags_a_wrong_port_and_bad_input(runs, tmp_path):
    import shutil

    out, _ = runs
    bad = tmp_path / "tampered"
    shutil.copytree(out / "torch_impl", bad)
    pred = np.load(bad / "predictions.npy")
    np.save(bad / "predictions.npy", (pred + 1) % 10)  # as if the run's own framework had predicted otherwise
    p = cli("resnet_port.compare", bad, "--report", tmp_path / "r")
    assert p.returncode == 1 and "FLAGGED" in p.stdout and "the port is not exact" in p.stderr
    p = cli("resnet_port.compare", tmp_path, "--no-cross-eval")
    assert p.returncode == 2 and "is not a run directory" in p.stderr and "Traceback" not in p.stderr


def test_diff_healthy_and_broken(runs, tmp_path):
    out, _ = runs
    w = out / "tf_impl" / "weights.safetensors"
    p = cli("resnet_port.diff", w, "--batch", 4)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("-> PASS") == 2 and "OVER" not in p.stdout
    assert "layer2.0.shortcut.bn" in p.stdout and "inference mode" in p.stdout and "training mode" in p.stdout
    p = cli("resnet_port.diff", w, "--batch", 4, "--naive", "symmetric-padding", "--mode", "eval")
    assert p.returncode == 1 and "FAIL (first divergent layer: layer2.0.conv1)" in p.stdout
    assert [line for line in p.stdout.splitlines() if "<-- first" in line][0].startswith("layer2.0.conv1 ")
    p = cli("resnet_port.diff", out / "tf_impl" / "config.json")
    assert p.returncode == 2 and "not a resnet-port weights file" in p.stderr
    # a bottleneck network run as the other version (keras.applications' v1 weights with v1.5's stride): the
    # first strided block's conv1 takes another size, named without a traceback
    W.save(
        tmp_path / "v1.safetensors",
        conformance.fixed_tensors(get_spec("tiny-bottleneck-keras")),
        "tiny-bottleneck-keras",
    )
    p = cli("resnet_port.diff", tmp_path / "v1.safetensors", "--batch", 2, "--naive", "stride-on-3x3", "--mode", "eval")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "FAIL (first divergent layer: layer2.0.conv1; the networks differ in structure" in p.stdout, p.stdout


def test_diff_names_a_perturbed_layer(runs, tmp_path):
    """One layer's weights perturbed on the PyTorch side: that layer is the first divergent one."""
    from resnet_port import parity
    from resnet_port.spec import get_spec

    out, _ = runs
    good = W.load(out / "tf_impl" / "weights.safetensors", "tiny")
    bad = dict(good.tensors)
    bad["layer3.0.conv2.kernel"] = bad["layer3.0.conv2.kernel"] * 1.01
    W.save(tmp_path / "bad.safetensors", bad, "tiny")
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    parity.run_worker(
        "tf",
        [
            {
                "op": "forward",
                "arch": "tiny",
                "weights": str(out / "tf_impl" / "weights.safetensors"),
                "inputs": str(tmp_path / "x.npy"),
                "training": False,
                "out": str(tmp_path / "tf.npz"),
            }
        ],
        tmp_path,
    )
    parity.run_worker(
        "torch",
        [
            {
                "op": "forward",
                "arch": "tiny",
                "weights": str(tmp_path / "bad.safetensors"),
                "inputs": str(tmp_path / "x.npy"),
                "training": False,
                "out": str(tmp_path / "torch.npz"),
            }
        ],
        tmp_path,
    )
    with np.load(tmp_path / "tf.npz") as a, np.load(tmp_path / "torch.npz") as b:
        rows = parity.compare_layers(dict(b), dict(a), [l.name for l in get_spec("tiny").layers()], 1e-4)
    assert parity.first_divergence(rows).name == "layer3.0.conv2"
    assert all(r.ok for r in rows[: [r.name for r in rows].index("layer3.0.conv2")])


def test_resume_of_a_complete_run_checks_the_data_first(runs, small_data, tmp_path):
    """--resume of a finished run on other data says the data differ (not "give --epochs 3", which would
    then fail on the data); on its own data it says the run is complete and how to train further."""
    out, _ = runs
    other = tmp_path / "other"
    synthetic.write(other, n_train=300, n_test=100, num_classes=10, seed=7)
    fw = "torch_impl"
    p = cli(f"{fw}.train", *train_args(other, out / fw, 2, 32, 60, "--resume"))
    assert p.returncode == 2 and "the data differ" in p.stderr and "--epochs 3" not in p.stderr, p.stderr[-2000:]
    p = cli(f"{fw}.train", *train_args(small_data, out / fw, 2, 32, 60, "--resume"))
    assert p.returncode == 2 and "is complete (2 epochs, results written); give --epochs 3 or more" in p.stderr, (
        p.stderr[-2000:]
    )


def test_evaluate_of_a_runs_weights_file_uses_the_runs_data(runs, tmp_path):
    """evaluate RUN/weights.safetensors (not only RUN) finds the run's data directory and md5 setting."""
    out, _ = runs
    for fw in FRAMEWORKS:
        p = cli(f"{fw}.evaluate", out / fw / "weights.safetensors", cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        assert f"acc= {rundir.read_results(out / fw)['test_accuracy']}" in p.stdout
