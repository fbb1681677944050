"""python -m resnet_port.port: models people already have, ported and checked against themselves.

The sources are written by the post's own code (tests/post_model.py) in its own
process: Keras 2 through tf-keras (TF_USE_LEGACY_KERAS=1), exactly as
``model.save('saved_model/my_model')`` and ``model.save_weights('x.h5')`` write
them, and Keras 3.  Each also saved its own logits on a probe batch, computed
by the user's model object: the port, loaded into PyTorch, must reproduce them.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from resnet_port import forkserver, parity, synthetic
from resnet_port import weights as W

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = [
    "--blocks",
    "1,1,1,1",
    "--widths",
    "8,16,16,32",
    "--stem",
    "8",
]  # the post's structure at the `tiny` spec's widths
POST_MODELS = {
    "k2tiny": (True, TINY),
    "k2r18": (True, ["--blocks", "2,2,2,2"]),
    "k3tiny": (False, TINY),
}
SOURCES = {  # name: (post model, file, the architecture it is)
    "savedmodel-tiny": ("k2tiny", "saved_model/my_model", "tiny"),
    "savedmodel-resnet18": ("k2r18", "saved_model/my_model", "resnet18"),
    "keras2-h5": ("k2tiny", "weights.h5", "tiny"),
    "keras3-keras": ("k3tiny", "model.keras", "tiny"),
    "keras3-weights-h5": ("k3tiny", "model.weights.h5", "tiny"),
}


@pytest.fixture(scope="module", autouse=True)
def without_tf_keras(tmp_path_factory):
    """Every port here runs with tf-keras unimportable, as for users of Keras 3: the port must not need it.
    (The tests' own Keras 2 files are written with it, in their own processes.)"""
    fake = tmp_path_factory.mktemp("no_tf_keras") / "tf_keras"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('tf_keras is not installed (blocked by the test)')\n")
    PORT_ENV["PYTHONPATH"] = os.pathsep.join([str(fake.parent), *filter(None, [ENV.get("PYTHONPATH")])])
    yield PORT_ENV
    PORT_ENV.pop("PYTHONPATH")


PORT_ENV = dict(ENV)


def cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "resnet_port.port", *map(str, args)],
        capture_output=True,
        text=True,
        env=PORT_ENV,
        timeout=timeout,
    )


def export_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "resnet_port.export", *map(str, args)], capture_output=True, text=True, env=PORT_ENV
    )


def cli_parallel(calls):
    """Several port commands, two at a time (both cores)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        return list(ex.map(lambda args: cli(*args), calls))


@pytest.fixture(scope="module")
def post(tmp_path_factory):
    root = tmp_path_factory.mktemp("post")
    script = os.path.join(os.path.dirname(__file__), "post_model.py")
    procs = []
    for name, (legacy, args) in POST_MODELS.items():
        env = (
            {**ENV, "TF_USE_LEGACY_KERAS": "1"}
            if legacy
            else {k: v for k, v in ENV.items() if k != "TF_USE_LEGACY_KERAS"}
        )
        # forked from the Keras fork server where its environment allows (Keras 3), a process of its own for
        # Keras 2 (TF_USE_LEGACY_KERAS is read at import)
        procs.append(
            (
                name,
                forkserver.start(
                    [sys.executable, script, str(root / name), *args],
                    capture_output=True,
                    text=True,
                    env=env,
                    framework="tf",
                ),
            )
        )
    for n, p in procs:  # three at once: the two Keras 2 processes and the forked Keras 3 one, which is quick
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"{n}: {err[-3000:]}"
    return root


def port_forward(weights, inputs, workdir):
    """The port run by torch_impl on the probe batch: logits in inference and training mode."""
    ops = [
        {
            "op": "forward",
            "arch": W.read_metadata(weights)["arch"],
            "weights": str(weights),
            "inputs": str(inputs),
            "training": mode == "train",
            "out": str(workdir / f"{mode}.npz"),
        }
        for mode in ("eval", "train")
    ]
    parity.run_worker("torch", ops, workdir)
    out = {}
    for mode in ("eval", "train"):
        with np.load(workdir / f"{mode}.npz") as z:
            out[mode] = z["logits"]
    return out


@pytest.mark.parametrize("name", SOURCES)
def test_port_reproduces_the_source(post, tmp_path, name, capsys):
    folder, rel, arch = SOURCES[name]
    p = cli(post / folder / rel, "--out", tmp_path / "w.safetensors", "--check")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f": {arch}, " in p.stdout and "parity: PASS" in p.stdout and p.stdout.count(" ok\n") == 2
    meta = W.read_metadata(tmp_path / "w.safetensors")
    assert meta["arch"] == arch and meta["producer"].startswith("resnet_port.port")
    # and the port, in PyTorch, reproduces the outputs the user's own model object computed when it was saved
    logits = port_forward(tmp_path / "w.safetensors", post / folder / "x.npy", tmp_path)
    for mode in ("eval", "train"):
        ref = np.load(post / folder / f"logits_{mode}.npy")
        diff = float(np.abs(logits[mode] - ref).max())
        with capsys.disabled():
            print(
                f"\n[{name} -> PyTorch, {mode}: max |logit diff| {diff:.1e} against the source model's own output (max |logit| {np.abs(ref).max():.3g})]"
            )
        assert diff <= parity.tolerance(ref), (mode, diff)
        assert (logits[mode].argmax(1) == ref.argmax(1)).all()
        assert np.ptp(ref) > 0.1  # the source computes something


def test_savedmodel_to_neutral_to_keras_to_neutral_is_bit_exact(post, tmp_path):
    p = cli(post / "k2tiny/saved_model/my_model", "--out", tmp_path / "a.safetensors")
    assert p.returncode == 0, p.stderr
    parity.run_worker(
        "tf",
        [
            {
                "op": "roundtrip",
                "arch": "tiny",
                "weights": str(tmp_path / "a.safetensors"),
                "out": str(tmp_path / "b.safetensors"),
            }
        ],
        tmp_path,
    )
    a, b = W.load(tmp_path / "a.safetensors").tensors, W.load(tmp_path / "b.safetensors").tensors
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_check_fails_when_one_tensor_is_perturbed(post, tmp_path):
    """The check can fail: one kernel 1% off, and it says so, naming the layer."""
    src = post / "k2tiny/saved_model/my_model"
    assert cli(src, "--out", tmp_path / "w.safetensors").returncode == 0
    w = W.load(tmp_path / "w.safetensors")
    bad = dict(w.tensors)
    bad["layer3.0.conv2.kernel"] = bad["layer3.0.conv2.kernel"] * 1.01
    W.save(tmp_path / "bad.safetensors", bad, "tiny")
    p = cli(
        src, "--verify", tmp_path / "bad.safetensors"
    )  # (the unperturbed port passes: test_port_reproduces_the_source)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "parity: FAIL" in p.stdout and "OVER TOLERANCE" in p.stdout
    inference = next(line for line in p.stdout.splitlines() if line.startswith("inference"))
    assert "layer3.0.conv2" in inference


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """This project's own sources: a state_dict of torch_impl's model, and a run directory of each framework."""
    d = tmp_path_factory.mktemp("own")
    parity.run_worker("torch", [{"op": "init", "arch": "tiny", "seed": 3, "out": str(d / "init.safetensors")}], d)
    code = (
        "import sys, torch\nfrom torch_impl import weights\nfrom torch_impl.model import build_model\n"
        "m = build_model('tiny'); weights.load_into(m, sys.argv[1]); torch.save(m.state_dict(), sys.argv[2])\n"
    )
    forkserver.run(
        [sys.executable, "-c", code, str(d / "init.safetensors"), str(d / "model.pt")],
        check=True,
        env=ENV,
        framework="torch",
    )
    synthetic.write(d / "data", n_train=96, n_test=20, num_classes=10)
    runs = {
        name: forkserver.start(
            [
                sys.executable,
                "-m",
                f"{fw}.train",
                *recipe,
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--data-dir",
                str(d / "data"),
                "--no-verify",
                "--val-size",
                "16",
                "--out",
                str(d / name),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=ENV,
        )
        for name, fw, recipe in (
            ("tf_impl", "tf_impl", ["--arch", "tiny"]),
            ("torch_impl", "torch_impl", ["--arch", "tiny"]),
            ("torch_modern", "torch_impl", ["--recipe", "modern", "--arch", "tiny-cifar"]),
        )
    }
    for p in runs.values():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    return d


@pytest.mark.parametrize("source", ["model.pt", "tf_impl", "torch_impl", "torch_modern"])
def test_port_of_this_projects_own_files(own, tmp_path, source):
    p = cli(own / source, "--out", tmp_path / "w.safetensors", "--check")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    arch = "tiny-cifar" if source == "torch_modern" else "tiny"
    assert f": {arch}, " in p.stdout and "parity: PASS" in p.stdout
    other = "Keras" if source != "tf_impl" else "PyTorch"
    assert f"in {other} " in p.stdout  # the port is run in the other framework
    if source != "model.pt":  # a run's checkpoint: its final weights, exactly, and its input normalisation
        final = W.load(own / source / "weights.safetensors")
        ported = W.load(tmp_path / "w.safetensors")
        assert all(np.array_equal(final.tensors[k], ported.tensors[k]) for k in final.tensors)
        assert ported.normalization == final.normalization and (ported.normalization is not None) == (
            source == "torch_modern"
        )


def _truncate(src, dst):
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: len(data) // 2])
    return dst


def test_bad_inputs_one_line_exit_2_nothing_written(post, own, tmp_path):
    (tmp_path / "not_a_savedmodel").mkdir()
    (tmp_path / "not_a_savedmodel" / "notes.txt").write_text("hello")
    shutil.copy(own / "model.pt", tmp_path / "incomplete.pt")
    code = "import sys, torch\nsd = torch.load(sys.argv[1]); del sd['layer3.0.bn2.running_var']; torch.save(sd, sys.argv[1])\n"
    forkserver.run([sys.executable, "-c", code, str(tmp_path / "incomplete.pt")], check=True, framework="torch")
    (tmp_path / "exists.safetensors").write_bytes(b"precious")
    cases = [
        (
            # the first variable, in execution order, where the file and --arch part (a ResNet34 held to
            # resnet18: test_family's test_a_deeper_source_is_named_at_its_first_variable_out_of_place)
            [post / "k2r18/saved_model/my_model", "--arch", "tiny"],
            [
                "does not match --arch tiny",
                "variable #1 in execution order is the source's stem.conv.kernel (3, 3, 3, 64) [pre/layer-0/kernel]",
                "where tiny has stem.conv.kernel (3, 3, 3, 8)",
                "it is resnet18: pass --arch resnet18 or --arch auto",
            ],
        ),
        (
            [tmp_path / "not_a_savedmodel"],
            [
                "is a folder, but neither a SavedModel (no saved_model.pb), a Hugging Face / keras-hub folder nor a run directory"
            ],
        ),
        ([_truncate(post / "k3tiny/model.keras", tmp_path / "cut.keras")], ["cannot be read as a .keras archive"]),
        ([_truncate(post / "k2tiny/weights.h5", tmp_path / "cut.h5")], ["cannot be read as HDF5"]),
        ([_truncate(post / "k3tiny/model.weights.h5", tmp_path / "cut.weights.h5")], ["cannot be read as HDF5"]),
        (
            [tmp_path / "incomplete.pt"],
            ["looks like tiny but is incomplete: the source lacks layer3.0.bn2.moving_variance"],
        ),
        ([post / "k2tiny/saved_model/my_model", "--out", tmp_path / "exists.safetensors"], ["exists; pass --force"]),
    ]
    calls = [
        args + ([] if "--out" in args else ["--out", tmp_path / f"out{i}.safetensors"])
        for i, (args, _) in enumerate(cases)
    ]
    for i, ((args, messages), p) in enumerate(zip(cases, cli_parallel(calls))):
        assert p.returncode == 2, (args, p.stdout, p.stderr[-2000:])
        lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
        for m in messages:
            assert m in lines[0], (m, lines[0])
        assert not (tmp_path / f"out{i}.safetensors").exists()
    assert (tmp_path / "exists.safetensors").read_bytes() == b"precious"


def test_an_unregistered_resnet_is_named_not_guessed(tmp_path):
    """--arch auto on a ResNet of no registered shape: one line saying what was found."""
    code = (
        "import sys, torch\nfrom resnet_port.spec import ResNetConfig, build\nfrom torch_impl.model import build_model\n"
        "spec = build('mine', ResNetConfig(stage_blocks=(1, 2, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=8))\n"
        "torch.save(build_model(spec).state_dict(), sys.argv[1])\n"
    )
    forkserver.run([sys.executable, "-c", code, str(tmp_path / "mine.pt")], check=True, framework="torch")
    p = cli(tmp_path / "mine.pt", "--out", tmp_path / "w.safetensors")
    assert p.returncode == 2 and not (tmp_path / "w.safetensors").exists()
    assert (
        "holds a ResNet of 4 stages of [1, 2, 1, 1] blocks, widths [8, 16, 16, 32], stem 3x3 conv of 8 filters, 100 classes, conv biases: yes, which is none of the variants: "
        in p.stderr
    )


def test_port_needs_no_tf_keras(post, without_tf_keras):
    """Every port in this module ran with tf-keras unimportable.  There, restoring a Keras 2 SavedModel
    naively fails ('_UserObject' object has no attribute 'add_slot'); the port's restore does not."""
    probe = subprocess.run(
        [sys.executable, "-c", "import tf_keras"], capture_output=True, text=True, env=without_tf_keras
    )
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr
    naive = "import tensorflow as tf, sys\ntry:\n    tf.saved_model.load(sys.argv[1])\nexcept AttributeError as e:\n    print(e)\n"
    q = forkserver.run(
        [sys.executable, "-c", naive, str(post / "k2tiny/saved_model/my_model")],
        capture_output=True,
        text=True,
        env=without_tf_keras,
        framework="tf",
    )
    assert "add_slot" in q.stdout, q.stdout + q.stderr[-1000:]


def _edited_keras(src, dst, edit):
    """A copy of the .keras archive ``src`` whose config.json ``edit(config)`` changed (the weights untouched)."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def _layer(config, name):
    return next(item for item in config["config"]["layers"] if item["name"] == name)


def test_a_keras_files_model_is_read_and_held_to_the_weights_architecture(tmp_path):
    """Without --check, a .keras file's config (read as JSON, never run) must be the architecture its
    weights are: a Lambda layer, an unknown class or a ReLU with a slope is refused in one line naming
    the layer, and nothing is written; the unedited file ports."""
    parity.run_worker(
        "tf",
        [
            {"op": "init", "arch": "tiny", "seed": 2, "out": str(tmp_path / "w.safetensors")},
            {"op": "export_keras", "weights": str(tmp_path / "w.safetensors"), "out": str(tmp_path / "model.keras")},
        ],
        tmp_path / "jobs",
    )
    assert cli(tmp_path / "model.keras", "--out", tmp_path / "ok.safetensors").returncode == 0

    def lambda_layer(c):
        item = _layer(c, "layer2.0.relu1")
        item.update(class_name="Lambda", module="keras.layers")
        item["config"]["function"] = {
            "class_name": "__lambda__",
            "config": {"code": "4wEAAAAAAAAA", "defaults": None, "closure": None},
        }

    def custom_class(c):
        _layer(c, "layer3.0.add").update(class_name="MyAdd", module="my_layers", registered_name="my>MyAdd")

    def leaky(c):
        _layer(c, "layer1.0.relu2")["config"]["negative_slope"] = 0.3

    def rewired(c):  # the block's add takes the first convolution's output instead of the second BatchNorm's
        _layer(c, "layer1.0.add")["inbound_nodes"][0]["args"][0][0]["config"]["keras_history"][0] = "layer1.0.bn1"

    for name, edit, says in [
        ("lambda", lambda_layer, "layer 'layer2.0.relu1' is a Lambda, tiny has a ReLU there"),
        ("custom", custom_class, "layer 'layer3.0.add' is a MyAdd, tiny has a Add there"),
        ("leaky", leaky, "layer 'layer1.0.relu2' (ReLU) has negative_slope=0.3, tiny has 0.0"),
        (
            "rewired",
            rewired,
            "layer 'layer1.0.add' (Add) takes layer1.0.bn1, stem.pool, in tiny it takes layer1.0.bn2, stem.pool",
        ),
    ]:
        _edited_keras(tmp_path / "model.keras", tmp_path / f"{name}.keras", edit)
        p = cli(tmp_path / f"{name}.keras", "--out", tmp_path / f"{name}.safetensors")
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and says in lines[0], (name, p.stderr)
        assert not (tmp_path / f"{name}.safetensors").exists()


def test_keras_applications_resnet50_and_50v2_port_checked_in_keras_and_export_back_and_into_pytorch(tmp_path):
    """keras.applications' ResNet50 as Keras 3 writes it: recognised by its config's names as resnet50-keras
    (v1 bottlenecks, the stride on the first 1x1, biases, BatchNorm eps 1.001e-5), and --check runs it as
    keras.applications builds it (float64, its softmax off) against the port in PyTorch at 224x224, the
    only size the file takes; ResNet50V2 (pre-activation, the stride on a stage's last block) likewise.  Then the
    way back and on into PyTorch: export writes the weights keras.applications.ResNet50(weights=None,
    classes=10) loads, and a plain PyTorch module file with its state_dict (no PyTorch library has this
    network), each reloaded without this project; that bare .weights.h5 is read again (into the network whose
    layout it has), checked, and is the .keras file's tensors bit for bit; a headless one (include_top=False) is
    refused in one line; torchvision's format is refused (its ResNet50 is v1.5)."""
    code = (
        "import sys, keras\nkeras.applications.ResNet50(weights=None, classes=10).save(sys.argv[1])\n"
        "keras.applications.ResNet50V2(weights=None, classes=10).save(sys.argv[2])\n"
        "keras.applications.ResNet50(weights=None, include_top=False).save_weights(sys.argv[3])\n"
    )
    forkserver.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "r50.keras"),
            str(tmp_path / "r50v2.keras"),
            str(tmp_path / "notop.weights.h5"),
        ],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=600,
        framework="tf",
    )
    # one 224x224 image: the network is ResNet50's whatever the batch (4 images by default)
    np.save(tmp_path / "one.npy", np.random.default_rng(3).random((1, 224, 224, 3), dtype=np.float32))
    p = cli(tmp_path / "r50.keras", "--out", tmp_path / "r50.safetensors")  # checked below, from its weights file
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "(keras.applications)): resnet50-keras@10, 320 tensors" in p.stdout, p.stdout
    assert "input: float32 images as keras.applications.resnet.preprocess_input makes them ('caffe'" in p.stdout
    assert "'caffe'" in W.load(tmp_path / "r50.safetensors").metadata["input"]  # export writes it
    # ResNet50V2: pre-activation blocks (preact_bn first), the stride on each stage's last block, post_bn
    p = cli(
        tmp_path / "r50v2.keras",
        "--out",
        tmp_path / "r50v2.safetensors",
        "--check",
        "--check-images",
        tmp_path / "one.npy",
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "(keras.applications)): resnet50v2-keras@10, " in p.stdout and "parity: PASS (in float64;" in p.stdout, (
        p.stdout
    )
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith(("inference", "training"))]
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (m, "224x224", t) for m in ("inference", "training") for t in ("float32", "float64")
    }, p.stdout
    # float64 on both sides: rounding only (~1e-13 at logits ~10)
    assert all(r[-1] == "ok" and float(r[3]) < 1e-9 for r in rows if r[2] == "float64"), p.stdout
    p = export_cli(
        tmp_path / "r50.safetensors",
        "--format",
        "keras.applications,pytorch-module",
        "--out",
        tmp_path / "e",
    )
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
    assert "224 only        224" in p.stdout and "ok (loaded as model.ResNet)" in p.stdout, p.stdout
    assert (tmp_path / "e" / "keras-applications.weights.h5").is_file()
    assert "'caffe'" in (tmp_path / "e" / "preprocessing.json").read_text()
    # and read back: a bare .weights.h5 goes into the keras.applications network whose layout it has (Keras 3
    # names its layers by class there), checked in keras.applications against the port in PyTorch; the same
    # tensors as the .keras file's, bit for bit
    p = cli(
        tmp_path / "e" / "keras-applications.weights.h5",
        "--out",
        tmp_path / "back.safetensors",
        "--check",
        "--check-images",
        tmp_path / "one.npy",
    )
    assert p.returncode == 0 and "parity: PASS (in float64;" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
    assert "(Keras 3 .weights.h5 (keras.applications)): resnet50-keras@10, 320 tensors" in p.stdout, p.stdout
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith(("inference", "training"))]
    assert len(rows) == 4 and all(r[-1] == "ok" and float(r[3]) < 1e-9 for r in rows if r[2] == "float64"), p.stdout
    a, b = W.load(tmp_path / "r50.safetensors").tensors, W.load(tmp_path / "back.safetensors").tensors
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    p = cli(tmp_path / "notop.weights.h5", "--out", tmp_path / "notop.safetensors")  # no classifier: said so
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "keras.applications' ResNet50 without its classifier" in lines[0]
    p = export_cli(tmp_path / "r50.safetensors", "--format", "torchvision", "--out", tmp_path / "t")
    lines = p.stderr.strip().splitlines()
    assert (
        p.returncode == 2
        and len(lines) == 1
        and "keras.applications' ResNet50, v1 (the stride on the first 1x1" in lines[0]
    )
    assert (
        "the formats that hold resnet50-keras@10: keras, torch, onnx-keras, onnx-torch, pytorch-module, keras.applications"
        in lines[0]
    )
