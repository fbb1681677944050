"""Trust: no file this project reads runs code, no garbage is reported as a result, faults say one line.

Each test is a fault a user meets or an attacker plants, tried the way a user
runs the tools (subprocesses): pickled code in a checkpoint, rotted bytes,
NaN weights, a diverging run, a full disk, runs that would quietly become other
runs, half-written files.  Every case is tried in each framework it concerns.
"""

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_port import forkserver, rundir, synthetic
from resnet_port import weights as W

FRAMEWORKS = ["tf_impl", "torch_impl"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def cli(module, *args, env=None, timeout=600):
    """``python -m module args`` (forked from the test process's framework server where one applies)."""
    return forkserver.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env or ENV, timeout=timeout
    )


def parallel(*calls):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        return list(ex.map(lambda c: c(), calls))


def one_error_line(p, code=2) -> str:
    """The process failed with ``code`` and said why in exactly one 'error:' line, no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout[-1500:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, p.stderr[-3000:]
    return lines[0]


def strict_json_lines(path) -> list[dict]:
    """Every line parsed as strict JSON: a bare NaN or Infinity (Python's json writes them) is an error."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in Path(path).read_text().splitlines() if line.strip()]


def train_args(data_dir, out, epochs=2, *extra):
    return [
        "--arch",
        "tiny",
        "--epochs",
        epochs,
        "--batch-size",
        32,
        "--data-dir",
        data_dir,
        "--no-verify",
        "--val-size",
        60,
        "--out",
        out,
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write(root, n_train=300, n_test=100, num_classes=10)
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """A finished 2-epoch tiny run of each framework (kept pristine: tests copy them)."""
    out = tmp_path_factory.mktemp("runs")
    procs = parallel(*[lambda fw=fw: cli(f"{fw}.train", *train_args(data, out / fw)) for fw in FRAMEWORKS])
    for fw, p in zip(FRAMEWORKS, procs):
        assert p.returncode == 0, f"{fw}: {p.stderr[-3000:]}"
    return out


def copy_run(runs, fw, tmp_path) -> Path:
    dst = Path(tmp_path) / f"copy_{fw}"
    shutil.copytree(runs / fw, dst)
    (dst / rundir.RESULTS).unlink()  # a run to continue (as if the last --resume had not finished)
    return dst


# -- 1. checkpoints never run code ----------------------------------------------------------------

MALICIOUS = r"""
import os, sys
import numpy as np
kind, path, marker = sys.argv[1:4]

class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))

if kind == "torch":
    import torch
    st = torch.load(path, weights_only=True)
    st["draw_state"] = Payload()
    torch.save(st, path)
else:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["opt/0000"] = np.array([Payload()], dtype=object)
    np.savez(path, **arrays)
"""


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_never_runs_code_from_a_checkpoint(runs, data, tmp_path, fw):
    run = copy_run(runs, fw, tmp_path)
    marker = tmp_path / "PWNED"
    ckpt = run / rundir.CHECKPOINTS[fw]
    forkserver.run(
        [sys.executable, "-c", MALICIOUS, "torch" if fw == "torch_impl" else "npz", str(ckpt), str(marker)],
        check=True,
        framework="torch",
    )
    p = cli(f"{fw}.train", *train_args(data, run, 3), "--resume")
    line = one_error_line(p)
    assert not marker.exists(), "loading the checkpoint ran the code in it"
    assert str(ckpt) in line and ("refusing to load" in line or "allow_pickle" in line), line
    # port refuses the same file, and runs nothing either
    q = cli("resnet_port.port", run, "--out", tmp_path / "w.safetensors")
    one_error_line(q)
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


def test_port_refuses_a_pickled_pth_holding_code(tmp_path):
    marker = tmp_path / "PWNED"
    code = (
        "import os, sys, torch\n"
        "class P:\n    def __reduce__(self):\n        return (os.system, ('touch ' + sys.argv[2],))\n"
        "torch.save({'conv1.weight': torch.zeros(1), 'evil': P()}, sys.argv[1])\n"
    )
    forkserver.run([sys.executable, "-c", code, str(tmp_path / "evil.pth"), str(marker)], check=True, framework="torch")
    line = one_error_line(cli("resnet_port.port", tmp_path / "evil.pth", "--out", tmp_path / "w.safetensors"))
    assert "refusing to load" in line and "nothing was run" in line
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


# -- 2. non-finite numbers never pass as results --------------------------------------------------


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_diverging_run_stops_at_its_first_non_finite_loss(data, tmp_path, fw):
    out = tmp_path / "run"
    p = cli(f"{fw}.train", *train_args(data, out, 2), "--lr", "1e9")
    line = one_error_line(p, code=1)
    assert "training diverged" in line and "epoch 1, step" in line and "--lr" in line, line
    # the value it stopped on is the non-finite loss itself, never a finite one reported as divergence
    value = float(line.split("the loss is ")[1].split()[0])
    assert not np.isfinite(value), line
    assert not (out / rundir.WEIGHTS).exists() and not (out / rundir.RESULTS).exists()
    assert not (out / rundir.CHECKPOINTS[fw]).exists()  # nothing of the diverged state was written
    for f in (out / rundir.METRICS, out / rundir.CONFIG):
        if f.exists():
            strict_json_lines(f) if f.suffix == ".jsonl" else json.loads(f.read_text(), parse_constant=lambda c: 1 / 0)


def _overwrite_inside(path: Path, needles: list[bytes], replacement: bytes) -> None:
    """Overwrite, in the file itself, the first place its bytes hold one of ``needles`` (a tensor's data)."""
    blob = bytearray(path.read_bytes())
    at = max(blob.find(n) for n in needles)
    assert at > 0, "tensor bytes not found in the file"
    blob[at : at + len(replacement)] = replacement
    path.write_bytes(bytes(blob))


def _rot(run, fw, value) -> Path:
    """Overwrite 64 bytes of layer3.0.conv1's kernel inside the run's checkpoint with ``value``."""
    final = W.load(run / rundir.WEIGHTS).tensors["layer3.0.conv1.kernel"]
    # the kernel as the checkpoint holds it: HWIO in Keras'; OIHW, or OHWI (channels_last), in PyTorch's
    layouts = [(3, 2, 0, 1), (3, 0, 1, 2)] if fw == "torch_impl" else [(0, 1, 2, 3)]
    needles = [np.ascontiguousarray(final.transpose(order)).tobytes()[:64] for order in layouts]
    ckpt = run / rundir.CHECKPOINTS[fw]
    _overwrite_inside(ckpt, needles, np.full(16, value, np.float32).tobytes())
    return ckpt


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rotted_checkpoint_bytes_are_caught(runs, data, tmp_path, fw):
    """64 bytes of a tensor overwritten with other, finite numbers: the checkpoint reader --resume uses
    catches it (the digest; an .npz, being a zip, already fails its CRC, which names the array).
    Overwritten with NaN: --resume refuses in one line naming the tensor, and trains nothing."""
    ckpt = _rot(copy_run(runs, fw, tmp_path / "finite"), fw, np.float32(0.25))
    if fw == "torch_impl":
        from torch_impl import checkpoint

        with pytest.raises(rundir.RunDirError, match="is damaged: its contents no longer match the digest"):
            checkpoint.load(ckpt)
    else:
        with pytest.raises(rundir.RunDirError, match="Bad CRC-32 for file 'model/layer3.0.conv1.kernel"):
            rundir.read_npz_checkpoint(ckpt)
    run = copy_run(runs, fw, tmp_path / "nan")
    _rot(run, fw, np.float32("nan"))
    line = one_error_line(cli(f"{fw}.train", *train_args(data, run, 3), "--resume"))
    assert "layer3.0.conv1" in line and ("non-finite" in line or "Bad CRC-32" in line), line
    assert len(rundir.read_metrics(run)) == 2  # nothing trained, nothing rewritten


def test_the_digest_catches_what_a_zip_crc_would_not(runs, tmp_path):
    """An .npz rewritten whole (valid CRCs) with one finite value changed: only the digest can tell."""
    src = runs / "tf_impl" / rundir.CHECKPOINTS["tf_impl"]
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["model/layer3.0.conv1.kernel"] = arrays["model/layer3.0.conv1.kernel"].copy()
    arrays["model/layer3.0.conv1.kernel"].flat[7] += np.float32(1e-3)
    np.savez(tmp_path / "checkpoint.npz", **arrays)
    with pytest.raises(rundir.RunDirError, match="is damaged: its contents no longer match the digest"):
        rundir.read_npz_checkpoint(tmp_path / "checkpoint.npz")
    rundir.read_npz_checkpoint(src)  # the untouched one reads


def test_non_finite_or_negative_variance_state_dicts_are_refused_by_port(tmp_path):
    code = (
        "import sys, torch\nfrom torch_impl.model import build_model\n"
        "sd = build_model('tiny').state_dict()\n"
        "a = dict(sd); a['layer2.0.conv1.weight'][0, 0, 0, 0] = float('nan'); torch.save(a, sys.argv[1])\n"
        "b = {k: v.clone() for k, v in build_model('tiny').state_dict().items()}; b['layer1.0.bn1.running_var'][3] = -0.5; torch.save(b, sys.argv[2])\n"
        "c = {k: v.clone() for k, v in build_model('tiny').state_dict().items()}; c['fc.bias'][1] = float('inf'); torch.save(c, sys.argv[3])\n"
    )
    paths = [tmp_path / f"{n}.pt" for n in ("nan", "negvar", "inf")]
    forkserver.run([sys.executable, "-c", code, *map(str, paths)], check=True, env=ENV, framework="torch")
    for path, names in zip(
        paths,
        (
            ["layer2.0.conv1", "kernel", "non-finite"],
            ["layer1.0.bn1", "moving_variance", "negative"],
            ["fc", "bias", "non-finite"],
        ),
    ):
        out = tmp_path / f"{path.stem}.safetensors"
        line = one_error_line(cli("resnet_port.port", path, "--out", out, "--check"))
        assert all(n in line for n in names), line
        assert "FAIL" not in line and not out.exists()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_evaluate_refuses_non_finite_weights(runs, tmp_path, fw):
    from safetensors.numpy import load_file, save_file

    src = runs / fw / rundir.WEIGHTS
    tensors = load_file(str(src))
    tensors["layer4.0.bn2.gamma"][2] = np.nan
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=W.read_metadata(src))
    line = one_error_line(cli(f"{fw}.evaluate", tmp_path / "nan.safetensors"))
    assert "layer4.0.bn2.gamma" in line and "non-finite" in line and "acc=" not in line


def test_metrics_are_strict_json_without_a_validation_split(data, tmp_path):
    out = tmp_path / "run"
    p = cli(
        "torch_impl.train",
        "--arch",
        "tiny",
        "--epochs",
        1,
        "--batch-size",
        64,
        "--data-dir",
        data,
        "--no-verify",
        "--val-size",
        0,
        "--out",
        out,
        "--quiet",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (m,) = strict_json_lines(out / rundir.METRICS)
    assert m["val_loss"] is None and m["val_accuracy"] is None and m["loss"] > 0
    results = json.loads((out / rundir.RESULTS).read_text(), parse_constant=lambda c: 1 / 0)
    assert results["best_val_accuracy"] is None and results["test_accuracy"] >= 0
    assert "no validation split" in p.stdout


# -- 6. a full disk ---------------------------------------------------------------------------------

FULL_DISK = """
import errno, os
_real, _calls = os.fsync, [0]
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.basename(name).startswith(".checkpoint."):
        _calls[0] += 1
        if _calls[0] > int(os.environ["FAIL_CHECKPOINT_AFTER"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _real(fd)
os.fsync = fsync
"""


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_full_disk_stops_the_run_at_once_with_the_last_checkpoint_intact(data, tmp_path, fw):
    """The disk fills while epoch 2's checkpoint is written (the write fails with ENOSPC)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_DISK)
    env = {
        **ENV,
        "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [ENV.get("PYTHONPATH")])]),
        "FAIL_CHECKPOINT_AFTER": "1",
    }
    out = tmp_path / "run"
    p = cli(f"{fw}.train", *train_args(data, out, 3), env=env)
    line = one_error_line(p)
    assert (
        f"no space left on {out}" in line
        and "the checkpoint of epoch 2 was not written; epoch 1's checkpoint is intact" in line
    ), line
    assert len(rundir.read_metrics(out)) == 1  # epoch 2 never counted as written, and the run stopped there
    assert not list(out.glob(".*.tmp"))
    # the disk has room again: the run continues from epoch 1's checkpoint and ends
    q = cli(f"{fw}.train", *train_args(data, out, 3), "--resume")
    assert q.returncode == 0 and "resuming" in q.stderr and "at epoch 2, batch 0" in q.stderr, q.stderr[-2000:]
    assert [m["epoch"] for m in rundir.read_metrics(out)] == [1, 2, 3]


# -- 5, 7, 8, 9. one-line errors, runs that would become other runs, leftovers ----------------------


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_that_cannot_continue_exactly_is_refused(runs, data, tmp_path, fw):
    """The run-directory rules are the lifecycle's, shared by both CLIs: tried in PyTorch's (the quicker
    start); the data check, which needs each framework's data path, in both."""
    run = copy_run(runs, fw, tmp_path)
    config = (run / rundir.CONFIG).read_text()
    cases = []
    # a deleted checkpoint: the run cannot continue, and must not restart in silence
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(run, no_ckpt)
    (no_ckpt / rundir.CHECKPOINTS[fw]).unlink()
    cases.append((train_args(data, no_ckpt, 3) + ["--resume"], "holds 2 trained epochs"))
    cases.append(
        (train_args(data, tmp_path / "nowhere", 3) + ["--resume"], "does not exist, so there is no run to continue")
    )
    cases.append(
        (train_args(data, run, 3) + ["--resume", "--limit-train", "100"], "different run")
    )  # a recipe field: refused as before
    cases.append((train_args(data, run, 1) + ["--resume"], "has trained 2 epochs already; --epochs 1 ends before that"))
    for args, message in cases if fw == "torch_impl" else []:
        line = one_error_line(cli(f"{fw}.train", *args))
        assert message in line, (message, line)
    assert not (tmp_path / "nowhere").exists()
    # the same recipe on other data (here: the validation split taken from other images)
    other = tmp_path / "other_data"
    synthetic.write(other, n_train=300, n_test=100, num_classes=10, seed=7)
    line = one_error_line(cli(f"{fw}.train", *train_args(other, run, 3), "--resume"))
    assert "the data differ" in line and "fingerprint" in line, line
    assert (
        len(rundir.read_metrics(run)) == 2 and (run / rundir.CONFIG).read_text() == config
    )  # the run's story is unchanged


def test_resume_removes_the_leftovers_of_a_killed_write(runs, data, tmp_path):
    """(The run directory's rule, shared by both CLIs: tried in PyTorch's.)"""
    fw = "torch_impl"
    run = copy_run(runs, fw, tmp_path)
    left = run / f".{rundir.CHECKPOINTS[fw]}.k9xq2z.tmp"
    left.write_bytes(b"\0" * 4096)  # what kill -9 during a checkpoint write leaves
    p = cli(f"{fw}.train", *train_args(data, run, 3), "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert not left.exists() and [m["epoch"] for m in rundir.read_metrics(run)] == [1, 2, 3]


def test_one_line_errors(runs, data, tmp_path):
    (tmp_path / "a_file").write_text("x")
    bad_header = tmp_path / "bad_header.safetensors"
    meta = {"format": W.FORMAT, "format_version": W.FORMAT_VERSION, "arch": "tiny"}
    for name, entry in (("bad_header", "not a dict"), ("no_offsets", {"dtype": "F32", "shape": [1]})):
        header = json.dumps({"__metadata__": meta, "stem.conv.kernel": entry}).encode()
        (tmp_path / f"{name}.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    garbage = tmp_path / "garbage_run"
    shutil.copytree(runs / "torch_impl", garbage)
    with open(garbage / rundir.METRICS, "a") as f:
        f.write("{not json\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("x")
    cases = [
        (
            "torch_impl.train",
            train_args(data, "/sys/resnet-port-run"),
            "cannot write in /sys",
        ),  # a read-only place, found before start-up
        ("tf_impl.train", train_args(data, "/sys/resnet-port-run"), "cannot write in /sys"),
        ("torch_impl.train", train_args(data, tmp_path / "a_file"), "is a file, not a directory"),
        ("torch_impl.train", train_args(data, tmp_path / "dev") + ["--device", "tpu7"], "--device tpu7"),
        ("torch_impl.evaluate", [bad_header], "'data_offsets'"),
        ("torch_impl.evaluate", [tmp_path / "no_offsets.safetensors"], "'data_offsets'"),
        (
            "resnet_port.compare",
            [garbage, "--no-cross-eval", "--report", tmp_path / "rep"],
            "line 3, is not a JSON record",
        ),
        (
            "resnet_port.export",
            [runs / "torch_impl", "--out", tmp_path / "a_file", "--force"],
            "is a file; give a folder",
        ),
        (
            "resnet_port.port",
            [runs / "torch_impl", "--out", tmp_path / "full", "--force"],
            "is a folder; give the path of a .safetensors file",
        ),
        ("resnet_port.port", [tmp_path / "empty.pt", "--out", tmp_path / "e.safetensors"], "is empty (0 bytes)"),
        ("tf_impl.evaluate", [runs / "torch_impl", "--arch", "resnet18"], "holds weights for architecture 'tiny'"),
    ]
    results = parallel(*[lambda m=m, a=a: cli(m, *a) for m, a, _ in cases[:2]]) + [cli(m, *a) for m, a, _ in cases[2:]]
    for (module, _args, message), p in zip(cases, results):
        line = one_error_line(p)
        assert message in line, (module, message, line)
    assert not (tmp_path / "dev").exists() and not (tmp_path / "e.safetensors").exists()
    assert (tmp_path / "a_file").read_text() == "x" and (tmp_path / "full" / "keep").read_text() == "x"


def test_an_architecture_mismatch_is_one_short_line(runs, tmp_path):
    """resnet34 weights against resnet18: a few names and the counts, and what the file is."""
    code = "import sys\nfrom torch_impl.model import build_model\nfrom torch_impl import weights\nweights.export(build_model('resnet34'), sys.argv[1])\n"
    forkserver.run(
        [sys.executable, "-c", code, str(tmp_path / "r34.safetensors")], check=True, env=ENV, framework="torch"
    )
    from resnet_port.spec import get_spec

    with pytest.raises(W.WeightsError) as e:
        W.check_tensors(W.load(tmp_path / "r34.safetensors").tensors, get_spec("resnet18"), "r34.safetensors")
    message = str(e.value)
    assert (
        "\n" not in message and len(message) < 600 and "unexpected" in message and "they are a 'resnet34'" in message
    ), message


def test_help_texts_are_plain_and_name_only_real_flags():
    for module in (
        "resnet_port.port",
        "resnet_port.export",
        "resnet_port.diff",
        "resnet_port.compare",
        "resnet_port.bench",
        "torch_impl.train",
        "tf_impl.train",
    ):
        p = cli(module, "--help")
        assert p.returncode == 0 and "``" not in p.stdout, (module, p.stdout[:500])
        if module == "resnet_port.port":
            assert "--check-only" not in p.stdout


def test_small_data_evaluate_diff_and_compare_take_run_directories(runs, tmp_path):
    # evaluate on a data set smaller than the default 5,000 validation images: it only needs the test split
    p = cli(
        "torch_impl.evaluate",
        runs / "tf_impl" / rundir.WEIGHTS,
        "--data-dir",
        rundir.read_config(runs / "tf_impl")["data"]["source"],
        "--no-verify",
    )
    assert p.returncode == 0 and "acc= " in p.stdout, p.stderr[-2000:]
    d = cli("resnet_port.diff", runs / "torch_impl", "--batch", 2)
    assert d.returncode == 0, d.stderr[-2000:]
    # compare: a run given twice is one run; recipe and data columns
    c = cli(
        "resnet_port.compare",
        runs / "torch_impl",
        runs / "torch_impl",
        runs / "tf_impl",
        "--no-cross-eval",
        "--report",
        tmp_path / "rep",
    )
    assert c.returncode == 0, c.stderr[-2000:]
    table = c.stdout.splitlines()
    assert "recipe" in table[0] and "data (train/val/test)" in table[0]
    assert sum(line.startswith("torch_impl ") for line in table) == 1 and "240/60/100" in c.stdout


# -- 5. a second Ctrl-C --------------------------------------------------------------------------------


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_second_ctrl_c_exits_130_in_one_line(data, tmp_path, fw):
    out = tmp_path / "run"
    args = [
        "--arch",
        "tiny",
        "--epochs",
        50,
        "--batch-size",
        4,
        "--data-dir",
        data,
        "--no-verify",
        "--val-size",
        60,
        "--out",
        out,
        "--quiet",
    ]
    proc = forkserver.start(
        [sys.executable, "-m", f"{fw}.train", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        sigint_default=True,
    )
    try:
        end = time.time() + 300
        while not (out / rundir.METRICS).exists() and time.time() < end and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and sum(line.startswith("interrupted: ") for line in err.splitlines()) == 1, err[
        -2000:
    ]
    # whatever the second Ctrl-C cut short, the checkpoint on disk is whole
    assert not list(out.glob(".*.tmp"))
    if fw == "torch_impl":
        from torch_impl import checkpoint

        assert checkpoint.load(out / rundir.CHECKPOINTS[fw])["epoch"] >= 1
    else:
        assert rundir.read_npz_checkpoint(out / rundir.CHECKPOINTS[fw])[1]["epoch"] >= 1
