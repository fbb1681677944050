"""Scaling out on the frameworks' own engines, on CPU: torchrun (gloo) for PyTorch, MirroredStrategy for Keras.

torchrun itself (its launcher, rendezvous and process handling) runs in the refusal and kill tests; the runs
compared number against number start the ranks torchrun would start, with the environment it gives each
(``ranks``), forked from the test process's fork server: the same training code, without a launcher and two
fresh interpreters per run (~10 s of CPU each).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_port import forkserver, rundir, synthetic
from resnet_port import weights as W
from resnet_port.spec import get_spec

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TOL = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    synthetic.write(root, n_train=148, n_test=50, num_classes=10)
    return root


def torch_cmd(n, *args):
    if n == 1:
        return [sys.executable, "-m", "torch_impl.train", *map(str, args)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "torch_impl.train",
        *map(str, args),
    ]


def torchrun(n, *args):
    return subprocess.run(torch_cmd(n, *args), capture_output=True, text=True, env=ENV, timeout=600)


def ranks(n, *args):
    """:func:`run_ranks` ``(n, *args)``, for :func:`run_all`."""
    return ("ranks", n, args)


def run_ranks(n, *args, timeout=600) -> subprocess.CompletedProcess:
    """``torch_impl.train ARGS`` as ``n`` ranks on this machine, each with the environment torchrun gives a rank
    (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT): every rank started (forked where a
    fork server runs), and, as torchrun does, the others stopped as soon as one fails.  The exit code is the first
    failure's, the output every rank's."""
    cmd = [sys.executable, "-m", "torch_impl.train", *map(str, args)]
    with socket.socket() as s:  # a free port for rank 0's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = {"WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    jobs = [
        forkserver.start(
            cmd, capture_output=True, text=True, env={**ENV, **world, "RANK": str(r), "LOCAL_RANK": str(r)}
        )
        for r in range(n)
    ]
    end, failed = time.time() + timeout, None
    while failed is None and any(j.poll() is None for j in jobs) and time.time() < end:
        failed = next((j for j in jobs if j.poll() not in (None, 0)), None)
        time.sleep(0.05)
    for j in jobs:
        if j.poll() is None:
            j.kill()
    outs = [j.communicate() for j in jobs]
    code = failed.returncode if failed else next((j.returncode for j in jobs if j.returncode), 0)
    return subprocess.CompletedProcess(cmd, code, "".join(o for o, _ in outs), "".join(e for _, e in outs))


def three_steps(data, out):
    # 48 training images, global batch 16: three optimiser steps
    return [
        "--arch",
        "tiny",
        "--epochs",
        1,
        "--batch-size",
        16,
        "--limit-train",
        48,
        "--data-dir",
        data,
        "--no-verify",
        "--val-size",
        100,
        "--out",
        out,
        "--quiet",
    ]


def run_all(cmds, parallel=2):
    """Run the commands (or :func:`ranks`), ``parallel`` at a time; each must succeed.  A framework's CLI is forked
    from the test process's fork server (resnet_port.forkserver: a fresh ``python -m`` without the framework's
    import)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(item):
        name, cmd = item
        if cmd[0] == "ranks":
            return name, run_ranks(cmd[1], *cmd[2])
        return name, forkserver.run([str(c) for c in cmd], capture_output=True, text=True, env=ENV, timeout=600)

    with ThreadPoolExecutor(parallel) as pool:
        for name, proc in pool.map(run, cmds.items()):
            assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"


def checkpoint_weights(run_dir) -> dict[str, np.ndarray]:
    """The model's tensors in a run's checkpoint, in the precision it trained in (float64 with --float64)."""
    if (run_dir / "checkpoint.pt").exists():
        import torch

        return {
            k: v.double().numpy()
            for k, v in torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"].items()
            if v.is_floating_point()
        }
    with np.load(run_dir / "checkpoint.npz") as z:
        return {k[6:]: z[k].astype(np.float64) for k in z.files if k.startswith("model/")}


def worst(a_dir, b_dir, skip=()):
    """(max |a - b| over the checkpoints' tensors, where)."""
    a, b = checkpoint_weights(a_dir), checkpoint_weights(b_dir)
    assert a.keys() == b.keys()
    return max((float(np.abs(a[k] - b[k]).max()), k) for k in a if k not in skip)


BN_FED = set(get_spec("tiny").batchnorm_fed_biases())  # the same names in both frameworks' checkpoints


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """3 steps of global batch 16: one process and two (torchrun's ranks, gloo), in float64 and float32."""
    out = tmp_path_factory.mktemp("ddp_runs")
    f64 = ["--float64"]
    run_all(
        {
            "single64": torch_cmd(1, *three_steps(data, out / "single64"), *f64),
            "sync64": ranks(2, *three_steps(data, out / "sync64"), *f64, "--sync-bn"),
            "local64": ranks(2, *three_steps(data, out / "local64"), *f64),
            "single32": torch_cmd(1, *three_steps(data, out / "single32")),
            "sync32": ranks(2, *three_steps(data, out / "sync32"), "--sync-bn"),
        },
        parallel=1,  # two ranks already take both cores
    )
    return out


def test_two_processes_with_sync_bn_equal_one_process(runs, capsys):
    """Global batch 16 over 2 processes (8 each) with synchronised BN == 1 process, batch 16.

    In float64, every tensor of the checkpoint, so the comparison measures the
    computation and not float32 rounding (see test_float32_..._rounding).
    """
    diff, key = worst(runs / "single64", runs / "sync64")
    with capsys.disabled():
        print(f"\n[PyTorch, 2 processes with --sync-bn vs 1, 3 steps, float64: max difference {diff:.1e} ({key})]")
    assert diff <= TOL, f"after 3 steps, {key} differs by {diff:.2e} between 2 processes and 1"
    a, b = rundir.read_metrics(runs / "single64")[0], rundir.read_metrics(runs / "sync64")[0]
    assert abs(a["loss"] - b["loss"]) <= 1e-9 and a["accuracy"] == b["accuracy"] and a["lr"] == b["lr"]


# (fixture, framework, "N" side, "1" side) of each engine's runs
ENGINES = {
    "torchrun": ("runs", "PyTorch", "2 processes", "1 process"),
    "mirrored": ("keras_runs", "Keras", "2 replicas", "1 device"),
}


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_difference_is_within_float32_rounding(engine, request, capsys):
    """In float32, 2 processes/replicas are no further from 1 than float32 itself is from float64.

    These images are uint8, so tied values at ReLU and max-pool are common and float32
    rounding decides them; Adam's first steps (about lr x sign(gradient)) turn that into
    weight differences up to ~1e-3 after 3 steps, in ONE process between float32 and
    float64.  Conv biases that feed a BatchNorm are left out: their gradient is pure
    rounding (README, "What parity means").
    """
    fixture, label, many, one = ENGINES[engine]
    out = request.getfixturevalue(fixture)
    floor, fkey = worst(out / "single64", out / "single32", skip=BN_FED)
    diff, key = worst(out / "single32", out / "sync32", skip=BN_FED)
    with capsys.disabled():
        print(
            f"\n[{label} float32, 3 steps: {many} vs {one} differ by {diff:.1e} ({key}); {one} float32 vs float64: {floor:.1e} ({fkey})]"
        )
    assert diff <= max(TOL, floor)


@pytest.mark.parametrize("engine", ENGINES)
def test_without_sync_bn_the_difference_is_reported(engine, request, capsys):
    """Per-replica BatchNorm statistics are a different computation: the difference is real, and shown."""
    fixture, label, many, one = ENGINES[engine]
    out = request.getfixturevalue(fixture)
    diff, key = worst(out / "single64", out / "local64")
    with capsys.disabled():
        print(f"\n[{label}, {many} without --sync-bn vs {one}, 3 steps, float64: max difference {diff:.2e} ({key})]")
    assert diff > 100 * TOL


def test_one_run_directory_from_two_processes(runs):
    import json

    cfg = json.loads((runs / "sync64" / "config.json").read_text())
    assert (
        cfg["runtime"]["processes"] == 2
        and cfg["runtime"]["sync_bn"] is True
        and cfg["runtime"]["amp_effective"] == "float64"
    )
    assert [m["epoch"] for m in rundir.read_metrics(runs / "sync64")] == [1]
    assert len(list((runs / "sync64").glob("metrics*"))) == 1 and len(list((runs / "sync64").glob("checkpoint*"))) == 1
    assert not list(runs.glob("sync*/**/rank*"))


def test_batch_smaller_than_processes_is_refused(data, tmp_path):
    p = torchrun(
        2,
        "--arch",
        "tiny",
        "--batch-size",
        1,
        "--data-dir",
        data,
        "--no-verify",
        "--val-size",
        100,
        "--out",
        tmp_path / "x",
    )
    assert p.returncode != 0 and "must be at least the number of processes (2)" in p.stderr
    assert not (tmp_path / "x").exists()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``.  torchrun starts each worker in a session of its own, so
    killing torchrun's process group leaves the workers running (they would finish the run)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def test_two_process_run_resumes_after_kill(tmp_path):
    """Killed mid-run (proved: epoch 2 had started and not ended), torchrun and every rank at once;
    resumed, it ends whole."""
    # 400 training images at batch 4 over 2 ranks: 50 steps a rank, an epoch of several seconds
    synthetic.write(tmp_path / "data", n_train=440, n_test=50, num_classes=10)
    out = tmp_path / "run"
    args = [
        "--arch",
        "tiny",
        "--epochs",
        2,
        "--batch-size",
        4,
        "--data-dir",
        tmp_path / "data",
        "--no-verify",
        "--val-size",
        40,
        "--out",
        out,
        "--quiet",
        "--sync-bn",
    ]
    proc = subprocess.Popen(
        torch_cmd(2, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True
    )
    metrics = out / rundir.METRICS
    try:
        end = time.time() + 300
        while time.time() < end and not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None:
            time.sleep(0.05)
        assert metrics.exists(), proc.communicate()[1][-3000:]
        time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be killed"
        workers = descendants(proc.pid)
        assert len([w for w in workers if "torch_impl.train" in Path(f"/proc/{w}/cmdline").read_text()]) >= 2, (
            "both ranks should be running"
        )
        for pid in [proc.pid, *workers]:  # torchrun and both workers, at once
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *descendants(proc.pid)]:
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # the kill landed inside epoch 2: epoch 1 is recorded, epoch 2 and the end of the run are not
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1]
    assert not (out / rundir.RESULTS).exists() and not (out / rundir.WEIGHTS).exists()
    p = run_ranks(2, *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1, 2]
    assert rundir.read_results(out)["epochs"] == 2
    W.load(out / "weights.safetensors", get_spec("tiny"))


# -- Keras: MirroredStrategy over 2 logical CPU devices, MultiWorkerMirroredStrategy over 2 processes --


def keras_cmd(data, out, *extra):
    return [sys.executable, "-m", "tf_impl.train", *three_steps(data, out), *extra]


MIRRORED = ("--strategy", "mirrored", "--cpu-replicas", 2)


@pytest.fixture(scope="module")
def keras_runs(data, tmp_path_factory):
    """3 steps of global batch 16: one device and 2 replicas, in float64 and float32."""
    out = tmp_path_factory.mktemp("mirrored")
    run_all(
        {
            "single64": keras_cmd(data, out / "single64", "--float64"),
            "sync64": keras_cmd(data, out / "sync64", "--float64", *MIRRORED, "--sync-bn"),
            "local64": keras_cmd(data, out / "local64", "--float64", *MIRRORED),
            "single32": keras_cmd(data, out / "single32"),
            "sync32": keras_cmd(data, out / "sync32", *MIRRORED, "--sync-bn"),
        }
    )
    return out


def test_mirrored_with_sync_bn_equals_one_device(keras_runs, capsys):
    """2 replicas with synchronised BN == one device after 3 steps: every tensor, in float64."""
    diff, key = worst(keras_runs / "single64", keras_runs / "sync64")
    with capsys.disabled():
        print(
            f"\n[Keras, MirroredStrategy 2 replicas with --sync-bn vs 1 device, 3 steps, float64: max difference {diff:.1e} ({key})]"
        )
    assert diff <= TOL, f"after 3 steps, {key} differs by {diff:.2e} between 2 replicas and 1 device"
    ma, mb = rundir.read_metrics(keras_runs / "single64")[0], rundir.read_metrics(keras_runs / "sync64")[0]
    assert abs(ma["loss"] - mb["loss"]) <= 1e-6, (ma["loss"], mb["loss"])  # not counted once per replica
    assert ma["lr"] == mb["lr"]


def test_mirrored_writes_one_run_directory(keras_runs):
    import json

    cfg = json.loads((keras_runs / "sync64" / "config.json").read_text())
    assert (
        cfg["runtime"]["strategy"] == "mirrored"
        and cfg["runtime"]["replicas"] == 2
        and cfg["runtime"]["sync_bn"] is True
    )
    assert cfg["runtime"]["amp_effective"] == "float64" and cfg["recipe"]["float64"] is True
    assert [m["epoch"] for m in rundir.read_metrics(keras_runs / "sync64")] == [1]


def free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def multiworker(data, out, *extra, epochs=1):
    """Two worker processes on this machine (TF_CONFIG on localhost); worker 0 is the chief."""
    import json

    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    args = keras_cmd(data, out, "--float64", "--strategy", "multiworker", "--sync-bn", *extra)
    args[args.index("--epochs") + 1] = epochs
    from concurrent.futures import ThreadPoolExecutor

    def worker(i):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        return forkserver.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(worker, range(2)))
    for i, p in enumerate(results):
        assert p.returncode == 0, f"worker {i}: {p.stderr[-3000:]}"


def test_multiworker_equals_one_device_and_resumes(data, keras_runs, tmp_path, capsys):
    """MultiWorkerMirroredStrategy, 2 processes with synchronised BN, float64.

    One epoch (3 steps) equals one device; the run then resumes for a second epoch
    in both workers (each reads the chief's checkpoint) and still equals a one-device
    run of 2 epochs.  One run directory, written by the chief only.
    """
    out = tmp_path / "mw"
    multiworker(data, out)
    diff, key = worst(keras_runs / "single64", out)
    with capsys.disabled():
        print(
            f"\n[Keras, MultiWorkerMirroredStrategy 2 processes with --sync-bn vs 1 device, 3 steps, float64: max difference {diff:.1e} ({key})]"
        )
    assert diff <= TOL
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mw"]

    multiworker(data, out, "--resume", epochs=2)
    single = tmp_path / "single2"
    cmd = keras_cmd(data, single, "--float64")
    cmd[cmd.index("--epochs") + 1] = 2
    run_all({"single2": cmd})
    diff, key = worst(single, out)
    assert diff <= TOL, f"after resuming, {key} differs by {diff:.2e} from one device"
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1, 2]
    assert rundir.read_results(out)["epochs"] == 2


def test_modern_recipe_scales_out_exactly(data, tmp_path, capsys):
    """The modern recipe (SGD, normalisation, crop and Cutout draws cut into per-process chunks) through
    torchrun and MirroredStrategy with --sync-bn: no code path of its own, and 2 == 1 in float64; on the
    CIFAR ResNet50's twin (bottleneck blocks, a projection at stride 1), a member of the wider family."""
    modern = [
        "--recipe",
        "modern",
        "--arch",
        "tiny-bottleneck-cifar-torch",
        "--float64",
        "--lr",
        "10",
    ]  # the default's twin; rates 0, 0.083, 0.17: steps that move
    run_all(
        {
            "torch1": torch_cmd(1, *three_steps(data, tmp_path / "torch1"), *modern),
            "torch2": ranks(2, *three_steps(data, tmp_path / "torch2"), *modern, "--sync-bn"),
            "keras1": keras_cmd(data, tmp_path / "keras1", *modern),
            "keras2": keras_cmd(data, tmp_path / "keras2", *modern, *MIRRORED, "--sync-bn"),
        },
        parallel=1,
    )
    from resnet_port.recipe import WarmupCosine

    rate_after = float(WarmupCosine(peak=10 * 16 / 128, warmup=5 * 3, total=3).lr(3))  # 5 warm-up epochs of 3 steps
    for engine, one, two in (("torchrun", "torch1", "torch2"), ("mirrored", "keras1", "keras2")):
        diff, key = worst(tmp_path / one, tmp_path / two)
        with capsys.disabled():
            print(
                f"\n[modern recipe, {engine} 2 vs 1 with --sync-bn, 3 SGD steps, float64: max difference {diff:.1e} ({key})]"
            )
        assert diff <= TOL, (engine, key, diff)
        assert json.loads((tmp_path / two / "config.json").read_text())["recipe"]["name"] == "modern"
        # three optimiser steps were taken: the rate reported after them is the schedule's at step 3
        assert (
            rundir.read_metrics(tmp_path / one)[0]["lr"] == rundir.read_metrics(tmp_path / two)[0]["lr"] == rate_after
        )


def test_multiworker_chief_from_tf_config(monkeypatch):
    import json

    from tf_impl.train import is_chief

    def chief(cfg):
        monkeypatch.setenv("TF_CONFIG", json.dumps(cfg))
        return is_chief("multiworker")

    workers = {"worker": ["a:1", "b:2"]}
    assert chief({"cluster": workers, "task": {"type": "worker", "index": 0}})
    assert not chief({"cluster": workers, "task": {"type": "worker", "index": 1}})
    assert chief({"cluster": {**workers, "chief": ["c:3"]}, "task": {"type": "chief", "index": 0}})
    assert not chief({"cluster": {**workers, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}})
    assert is_chief("mirrored") and is_chief("none")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        is_chief("multiworker")
    with pytest.raises(ValueError, match="needs a 'cluster' and a 'task'"):
        chief({"cluster": workers})


def test_multiworker_without_tf_config_fails_clearly(data, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf_impl.train",
            *map(str, three_steps(data, tmp_path / "x")),
            "--strategy",
            "multiworker",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 2 and "needs TF_CONFIG" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "x").exists()


def test_resuming_a_run_from_before_the_float64_field(tmp_path):
    """A run directory written before a recipe field existed resumes (the field had its default)."""
    import json

    from resnet_port.recipe import Recipe

    run = rundir.RunDir(tmp_path / "old", "torch_impl", Recipe(arch="tiny")).create()
    run.write_config(Recipe(arch="tiny"))
    cfg = json.loads((run.path / "config.json").read_text())
    del cfg["recipe"]["float64"]
    (run.path / "config.json").write_text(json.dumps(cfg))
    assert not rundir.RunDir(
        run.path, "torch_impl", Recipe(arch="tiny"), resume=True
    ).resuming  # no checkpoint yet: starts over
    with pytest.raises(rundir.RunDirError, match="float64: False -> True"):
        rundir.RunDir(run.path, "torch_impl", Recipe(arch="tiny", float64=True), resume=True)
