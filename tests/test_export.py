"""python -m resnet_port.export: portable files, each reloaded without this project and compared with its source."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from resnet_port import export, forkserver, parity
from resnet_port import weights as W
from resnet_port.formats import onnx_graph
from resnet_port.spec import get_spec

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

# An independent loader (not export.py's): this project's packages made unimportable, then only the runtime.
BLOCKED_RUN = r"""
import sys, importlib.abc, numpy as np
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("resnet_port", "tf_impl", "torch_impl"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
fmt, path, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]  # then X.npy OUT.npy, X.npy OUT.npy, ...
if fmt == "keras":
    import keras
    model = keras.models.load_model(path)
    run = lambda x: model.predict(x, verbose=0)
elif fmt in ("torch", "pytorch-module"):
    import torch
    if fmt == "torch":
        module = torch.export.load(path).module()
    else:  # the folder's model.py, imported by path, and its state_dict, loaded strictly
        import importlib.util, os
        found = importlib.util.spec_from_file_location("model", os.path.join(path, "model.py"))
        model = importlib.util.module_from_spec(found)
        found.loader.exec_module(model)
        module = model.resnet()
        module.load_state_dict(torch.load(os.path.join(path, "state_dict.pth"), weights_only=True), strict=True)
        module.eval()
    run = lambda x: module(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).detach().numpy()
else:
    import onnxruntime as ort
    s = ort.InferenceSession(path)
    run = lambda x: s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x.transpose(0, 3, 1, 2) if fmt == "onnx-torch" else x)})[0]
for x, out in zip(pairs[::2], pairs[1::2]):
    np.save(out, run(np.load(x)))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    parity.run_worker("tf", [{"op": "init", "arch": "tiny", "seed": 9, "out": str(d / "w.safetensors")}], d)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_port.export",
            str(d / "w.safetensors"),
            "--format",
            "all",
            "--out",
            str(d / "out"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    return d, p


def test_every_format_written_reloaded_and_within_tolerance(exported, capsys):
    d, p = exported
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with capsys.disabled():
        print("\n" + p.stdout)
    assert "export: PASS" in p.stdout
    rows = [
        line
        for line in p.stdout.splitlines()
        if line.split() and line.split()[0] in ("keras", "torch", "onnx-keras", "onnx-torch", "onnx", "pytorch-module")
    ]
    assert len(rows) == 7 and all(line.rstrip().endswith(" ok") or "ok (loaded as" in line for line in rows)
    assert "ok (loaded as model.ResNet)" in p.stdout  # the plain PyTorch module, imported from its folder
    assert all("2 of 2 uneven 'same' convs" in line for line in rows if line.startswith("onnx-"))
    for name in (
        "model.keras",
        "model.pt2",
        "state_dict.pt",
        "model-keras.onnx",
        "model-torch.onnx",
        "preprocessing.json",
        "pytorch-module/model.py",
        "pytorch-module/state_dict.pth",
    ):
        assert (d / "out" / name).is_file(), name
    module_text = (d / "out" / "pytorch-module" / "model.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(resnet_port|tf_impl|torch_impl)", module_text, re.M)
    assert not list((d / "out").glob("*.data"))  # each ONNX file is self-contained


def test_each_export_loads_without_this_project_and_matches(exported, tmp_path):
    """Checked here again with a loader of the test's own, against logits the parity workers compute."""
    d, p = exported
    assert p.returncode == 0
    x = np.random.default_rng(5).random((5, 32, 32, 3), dtype=np.float32)  # a batch size the export never saw
    np.save(tmp_path / "x.npy", x)
    ref = {}
    for fw in parity.FRAMEWORKS:
        parity.run_worker(
            fw,
            [
                {
                    "op": "forward",
                    "arch": "tiny",
                    "weights": str(d / "w.safetensors"),
                    "inputs": str(tmp_path / "x.npy"),
                    "training": False,
                    "out": str(tmp_path / f"ref_{fw}.npz"),
                }
            ],
            tmp_path,
        )
        ref[fw] = np.load(tmp_path / f"ref_{fw}.npz")["logits"]
    for fmt, name, fw in [
        ("keras", "model.keras", "tf"),
        ("torch", "model.pt2", "torch"),
        ("onnx-keras", "model-keras.onnx", "tf"),
        ("onnx-torch", "model-torch.onnx", "torch"),
        ("pytorch-module", "pytorch-module", "torch"),
    ]:
        q = forkserver.run(
            [
                sys.executable,
                "-c",
                BLOCKED_RUN,
                fmt,
                str(d / "out" / name),
                str(tmp_path / "x.npy"),
                str(tmp_path / f"{fmt}.npy"),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            framework=RUNS_IN.get(fmt),
        )
        assert q.returncode == 0, (fmt, q.stderr[-2000:])
        assert np.abs(np.load(tmp_path / f"{fmt}.npy") - ref[fw]).max() <= parity.tolerance(ref[fw]), fmt


def test_same_padding_check_catches_symmetric_padding(tmp_path):
    """An ONNX file of the naive port (PyTorch's symmetric padding) fails the padding count."""
    spec = get_spec("tiny")
    assert onnx_graph.asymmetric_same_convs(spec) == [
        "layer2.0.conv1",
        "layer4.0.conv1",
    ]  # inputs 30 and 8: even; 15 is odd
    code = (
        "import sys, torch\nfrom torch_impl import naive\n"
        "m = naive.build('tiny', 'symmetric-padding').eval()\n"
        "torch.onnx.export(m, (torch.zeros(1, 3, 32, 32),), sys.argv[1], dynamo=True, external_data=False)\n"
    )
    forkserver.run(
        [sys.executable, "-c", code, str(tmp_path / "naive.onnx")],
        check=True,
        capture_output=True,
        env=ENV,
        framework="torch",
    )
    assert onnx_graph.onnx_asymmetric_convs(tmp_path / "naive.onnx") == 0


def test_bad_input(tmp_path, exported):
    d, _ = exported
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    for args, message in [
        ([d / "w.safetensors", "--out", tmp_path / "full"], "exists and is not empty; pass --force"),
        ([tmp_path / "nothing.safetensors", "--out", tmp_path / "o"], "no such weights file or run directory"),
        ([d / "out" / "preprocessing.json", "--out", tmp_path / "o"], "not a resnet-port weights file"),
        (
            [d / "w.safetensors", "--format", "keras,tflite", "--out", tmp_path / "o"],
            "--format 'keras,tflite': choose from",
        ),
    ]:
        p = subprocess.run(
            [sys.executable, "-m", "resnet_port.export", *map(str, args)], capture_output=True, text=True, env=ENV
        )
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep" and not (tmp_path / "o").exists()


def test_the_modern_recipes_model_exports_with_its_normalisation(tmp_path):
    """The CIFAR ResNet (no pool, no biases, 'same' stem) and a normalised input: no code path of its own."""
    from resnet_port.augment import Normalization

    parity.run_worker(
        "torch", [{"op": "init", "arch": "tiny-cifar", "seed": 2, "out": str(tmp_path / "init.safetensors")}], tmp_path
    )
    norm = Normalization((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))
    W.save(tmp_path / "w.safetensors", W.load(tmp_path / "init.safetensors").tensors, "tiny-cifar", normalization=norm)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_port.export",
            str(tmp_path / "w.safetensors"),
            "--format",
            "onnx-keras,onnx-torch",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert onnx_graph.asymmetric_same_convs(get_spec("tiny-cifar")) == [
        "layer2.0.conv1",
        "layer3.0.conv1",
        "layer4.0.conv1",
    ]  # inputs 32, 16, 8
    assert p.stdout.count("3 of 3 uneven 'same' convs") == 2
    import json

    assert json.loads((tmp_path / "out" / "preprocessing.json").read_text())["normalization"] == norm.to_dict()


#: the framework whose fork server (resnet_port.forkserver, which has imported the framework alone) runs
#: BLOCKED_RUN for a format; ONNX files run in a fresh process (onnxruntime)
RUNS_IN = {"keras": "tf", "torch": "torch", "pytorch-module": "torch"}

SAVE_OWN = r"""
import sys
from resnet_port import weights as neutral
from tf_impl import weights
from tf_impl.model import build_model
w = neutral.load(sys.argv[1])
m = build_model(w.arch)
weights.from_numpy(m, w.arch, w.tensors)
m.save(sys.argv[2])
m.save_weights(sys.argv[3])
"""


def test_every_file_export_and_keras_write_of_the_model_ports_back_bit_exact(exported, tmp_path):
    """model.keras and state_dict.pt from export, and tf_impl's model as Keras 3 itself saves it
    (model.save, save_weights: HDF5 groups named by class, not by layer), read back by port:
    the same tensors, bit for bit."""
    d, p = exported
    assert p.returncode == 0, p.stderr[-3000:]
    forkserver.run(
        [
            sys.executable,
            "-c",
            SAVE_OWN,
            str(d / "w.safetensors"),
            str(tmp_path / "saved.keras"),
            str(tmp_path / "saved.weights.h5"),
        ],
        check=True,
        env=ENV,
        framework="tf",
    )
    source = W.load(d / "w.safetensors").tensors
    for path in (
        d / "out" / "model.keras",
        d / "out" / "state_dict.pt",
        tmp_path / "saved.keras",
        tmp_path / "saved.weights.h5",
    ):
        out = tmp_path / f"{path.name}.safetensors"
        q = subprocess.run(
            [sys.executable, "-m", "resnet_port.port", str(path), "--out", str(out)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        assert q.returncode == 0, (path, q.stderr[-2000:])
        back = W.load(out).tensors
        assert set(back) == set(source) and all(np.array_equal(back[k], source[k]) for k in source), path


def _onnx_conv_graph(path, convs):
    """An ONNX graph of 3x3 stride-2 convs on a 1x4x8x8 input, each padded as ``convs`` says:
    ('pads', [t, l, b, r]), ('auto', 'SAME_UPPER'), or ('pad-node', [..8 values..])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for i, (how, value) in enumerate(convs):
        w = f"w{i}"
        inits.append(numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), w))
        src = x
        attrs = {"kernel_shape": [3, 3], "strides": [1, 1]}
        if how == "pads":
            attrs["pads"] = value
        elif how == "auto":
            attrs["auto_pad"] = value
            attrs["strides"] = [2, 2]
        else:
            inits.append(numpy_helper.from_array(np.array(value, np.int64), f"p{i}"))
            nodes.append(helper.make_node("Pad", [x, f"p{i}"], [f"padded{i}"]))
            src = f"padded{i}"
        nodes.append(helper.make_node("Conv", [src, w], [f"y{i}"], **attrs))
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_uneven_same_padding_check_can_fail(tmp_path):
    """The count export holds each ONNX graph to: a graph with fewer (or more) one-sided pads than the
    spec's 'same' convs fails the check, whichever way the pads are written."""
    spec = get_spec("tiny")
    want = len(onnx_graph.asymmetric_same_convs(spec))
    assert want == 2
    cases = {
        "two explicit": ([("pads", [0, 0, 1, 1]), ("pads", [0, 0, 1, 1])], 2),
        "symmetric (a naive exporter)": ([("pads", [1, 1, 1, 1]), ("pads", [1, 1, 1, 1])], 0),
        "one of two": ([("pads", [0, 0, 1, 1]), ("pads", [1, 1, 1, 1])], 1),
        "auto SAME_UPPER on an even input + a Pad node": (
            [("auto", "SAME_UPPER"), ("pad-node", [0, 0, 0, 0, 0, 0, 1, 1])],
            2,
        ),
        "three": ([("pads", [0, 0, 1, 1])] * 3, 3),
    }
    for name, (convs, uneven) in cases.items():
        path = tmp_path / f"{name.split()[0]}.onnx"
        _onnx_conv_graph(path, convs)
        assert onnx_graph.onnx_asymmetric_convs(path) == uneven, name
        text, ok = onnx_graph.same_padding_check(path, spec)
        assert ok is (uneven == want) and text.startswith(f"{uneven} of {want} "), (name, text)


def test_imagenet_variant_exports_size_free_at_any_class_count(tmp_path):
    """An ImageNet-stem ResNet with 1000 classes (every torchvision port): the default export passes,
    its files take any size (Keras (None, None, 3), dynamic height and width in torch.export and both
    ONNX files), the export's own check runs at 224x224, and our own loader agrees at 224 and 57."""
    parity.run_worker(
        "torch",
        [{"op": "init", "arch": "tiny-torch@1000", "seed": 3, "out": str(tmp_path / "w.safetensors")}],
        tmp_path,
    )
    p = subprocess.run(
        [sys.executable, "-m", "resnet_port.export", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**ENV, "RESNET_PORT_PROGRESS": "1"},
        timeout=900,
    )
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [
        line.split()
        for line in p.stdout.splitlines()
        if line.split()
        and line.split()[0] in ("keras", "torch", "onnx-keras", "onnx-torch")
        and "state_dict" not in line
    ]
    assert [r[1] for r in rows] == ["model.keras", "model.pt2", "model-keras.onnx", "model-torch.onnx"], p.stdout
    assert all(r[2] == "any" and r[3] == "224,32" and r[-1] == "ok" for r in rows), p.stdout
    assert "native size 224x224" in p.stdout and "[export" in p.stderr  # progress on stderr
    import json

    prep = json.loads((tmp_path / "out" / "preprocessing.json").read_text())
    assert prep["native_size"] == 224 and set(prep["input_size"].values()) == {"any H, W >= 32"}
    sizes = (224, 57)
    for size in sizes:
        np.save(tmp_path / f"x{size}.npy", np.random.default_rng(size).random((2, size, size, 3), dtype=np.float32))
    ref = {}
    for fw in parity.FRAMEWORKS:  # one process per framework, both sizes
        ops = [
            {
                "op": "forward",
                "arch": "tiny-torch@1000",
                "weights": str(tmp_path / "w.safetensors"),
                "inputs": str(tmp_path / f"x{size}.npy"),
                "training": False,
                "out": str(tmp_path / f"ref_{fw}_{size}.npz"),
            }
            for size in sizes
        ]
        parity.run_worker(fw, ops, tmp_path)
        ref[fw] = {size: np.load(tmp_path / f"ref_{fw}_{size}.npz")["logits"] for size in sizes}
    assert ref["tf"][224].shape == (2, 1000)
    for fmt, name, fw in [
        ("keras", "model.keras", "tf"),
        ("torch", "model.pt2", "torch"),
        ("onnx-keras", "model-keras.onnx", "tf"),
        ("onnx-torch", "model-torch.onnx", "torch"),
        ("pytorch-module", "pytorch-module", "torch"),
    ]:
        pairs = [str(tmp_path / f) for size in sizes for f in (f"x{size}.npy", f"{fmt}_{size}.npy")]
        q = forkserver.run(
            [sys.executable, "-c", BLOCKED_RUN, fmt, str(tmp_path / "out" / name), *pairs],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
            framework=RUNS_IN.get(fmt),
        )
        assert q.returncode == 0, (fmt, q.stderr[-2000:])
        for size in sizes:
            got, want = np.load(tmp_path / f"{fmt}_{size}.npy"), ref[fw][size]
            assert np.abs(got - want).max() <= parity.tolerance(want), (fmt, size)


def test_a_failed_export_leaves_nothing_and_says_one_line(tmp_path, monkeypatch, capsys):
    """A file that does not reload (here: the clean runner made to fail) ends the export with one line
    and exit 2; neither --out nor the staging folder is left behind, and a --force'd --out keeps its files."""
    parity.run_worker(
        "tf", [{"op": "init", "arch": "tiny", "seed": 9, "out": str(tmp_path / "w.safetensors")}], tmp_path / "jobs"
    )

    def broken(fmt, path, *args, **kwargs):
        raise export.ExportError(
            f"{path.name} does not load and run on its own ({fmt}): RuntimeError: broken on purpose"
        )

    monkeypatch.setattr(export, "run_clean", broken)
    assert (
        export.main([str(tmp_path / "w.safetensors"), "--format", "keras", "--out", str(tmp_path / "out"), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model.keras does not load and run on its own (keras): RuntimeError: broken on purpose"]
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("mine")
    assert (
        export.main(
            [
                str(tmp_path / "w.safetensors"),
                "--format",
                "keras",
                "--out",
                str(tmp_path / "kept"),
                "--force",
                "--quiet",
            ]
        )
        == 2
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs", "kept", "w.safetensors"]
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["mine.txt"]


def test_an_onnx_file_with_the_wrong_padding_fails_its_row_and_the_exit_code(tmp_path, monkeypatch, capsys):
    """The ONNX 'same'-padding gate decides the verdict: an exporter that made TF's one-sided pads of tiny's
    two uneven 'same' convs symmetric (counted here as 0 of 2) fails the row and the export (exit 1), even
    though the file reloads; nothing is published."""
    parity.run_worker(
        "tf", [{"op": "init", "arch": "tiny", "seed": 9, "out": str(tmp_path / "w.safetensors")}], tmp_path / "jobs"
    )
    monkeypatch.setattr(onnx_graph, "onnx_asymmetric_convs", lambda path: 0)
    code = export.main(
        [str(tmp_path / "w.safetensors"), "--format", "onnx-torch", "--out", str(tmp_path / "out"), "--quiet"]
    )
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if "model-torch.onnx" in line]
    assert code == 1 and row and "FAIL" in row[0] and "0 of 2 uneven 'same' convs" in out, out
    assert not (tmp_path / "out").exists()


def test_a_pre_activation_stems_keras_file_holds_keras_layers_only(tmp_path):
    """timm's pre-activation stem max-pools a convolution's output (no ReLU between), which Keras pads with -inf
    (tf_impl's NegInfPadding2D).  The exported .keras file builds that padding from Keras' own layers: it loads
    where this project cannot be imported (export's own reload; the format's row checks the layers' classes) and
    gives the project's logits at 224x224 and 32x32."""
    parity.run_worker(
        "torch",
        [{"op": "init", "arch": "tiny-preact-torch", "seed": 5, "out": str(tmp_path / "w.safetensors")}],
        tmp_path,
    )
    p = subprocess.run(
        [sys.executable, "-m", "resnet_port.export", str(tmp_path / "w.safetensors"), "--format", "keras"]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    row = next(line.split() for line in p.stdout.splitlines() if line.startswith("keras "))
    assert row[3] == "224,32" and row[-1] == "ok" and float(row[4]) <= 1e-6, row
