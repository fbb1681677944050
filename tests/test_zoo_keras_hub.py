"""keras-hub's ResNets (18/34, the v1.5 bottleneck ResNet26, the pre-activation ResNet18 V2 and ResNet50 V2, ResNet_vd 18
and 50) in and out, and the two directions through the libraries' own formats.

keras-hub writes its models itself (tests/zoo_keras.py, in a process of its own); the port reads
them with keras-hub, runs them in PyTorch and holds that to keras-hub's own run.  Then the journeys
a user makes, each file loaded by its library in a process where this project cannot be imported:
keras-hub -> neutral -> torchvision and timm, and torchvision -> neutral -> keras-hub and Keras.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zoo_check

from resnet_port import export, forkserver, parity
from resnet_port import weights as W
from resnet_port.spec import get_spec

HERE = Path(__file__).parent
#: source: (file, the variant it must be, checked at 224x224 too)
SOURCES = {
    "kh18.keras": ("resnet18-torch", True),
    "kh18.weights.h5": ("resnet18-torch", False),
    "kh18-preset": ("resnet18-torch", False),
    "kh34.keras": ("resnet34-torch@10", False),
    "kh26.keras": ("resnet26-torch", False),  # bottleneck blocks: the smallest
    "kh50v2.keras": ("resnetv2-50-torch@10", False),  # pre-activation: timm's resnetv2_50
    "khpre.keras": ("resnetv2-18-torch", True),  # pre-activation BasicBlocks: timm's resnetv2_18; the -inf pool at 224
    "khvd.keras": ("resnet18vd-torch@10", True),  # ResNet_vd of BasicBlocks: its own network; the deep stem at 224
    "khvd50.keras": ("resnet50d-torch@10", False),  # ResNet_vd of bottlenecks: timm's resnet50d
}


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=parity.worker_env()
    )


def clean(code: str, *args, framework: str = "torch") -> subprocess.CompletedProcess:
    """``code`` in a fresh process where resnet_port, tf_impl and torch_impl cannot be imported (forked from the
    ``framework``'s fork server, which has imported the framework alone)."""
    blocker = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('resnet_port', 'tf_impl', 'torch_impl'): raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, B())\n"
    )
    return forkserver.run(
        [sys.executable, "-c", blocker + code, *map(str, args)],
        capture_output=True,
        text=True,
        env=parity.worker_env(),
        framework=framework,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("hub")
    make = f"import sys; sys.path.insert(0, {str(HERE)!r}); import zoo_keras\n" + "".join(
        f"zoo_keras.main({a!r})\n"
        for a in (
            ["18", str(d / "kh18")],
            ["34", str(d / "kh34"), "--classes", "10"],
            ["26", str(d / "kh26")],
            ["50v2", str(d / "kh50v2"), "--classes", "10"],
            ["18", str(d / "khpre"), "--preactivation"],
            ["18vd", str(d / "khvd"), "--classes", "10"],
            ["50vd", str(d / "khvd50"), "--classes", "10"],
            ["3stacks", str(d / "kh3"), "--classes", "10"],
        )
    )
    forkserver.run([sys.executable, "-c", make], check=True, env=parity.worker_env(), framework="tf")
    facts = zoo_check.port_all(
        d,
        {name: (("x32", "x224") if at_224 else ("x32",), None) for name, (_, at_224) in SOURCES.items()},
        "tf",
        "torch",
    )
    return d, facts


@pytest.mark.parametrize("name", list(SOURCES))
def test_keras_hub_resnets_port_to_pytorch(hub, name):
    """keras-hub's ResNetImageClassifier (.keras, .weights.h5, preset folder) in PyTorch against keras-hub's own
    run: every layer both name and the logits, inference and training mode (and at 224x224)."""
    d, facts = hub
    arch, at_224 = SOURCES[name]
    got, info = facts[name]
    assert (got, info["library"], info["conventions"]) == (arch, "keras-hub", "pytorch")
    assert str(zoo_check.npz(d / f"src_{name}_x32.npz")["library_class"]) == "keras_hub.ResNetImageClassifier"
    zoo_check.assert_held_to_source(d, name, arch, ("x32", "x224") if at_224 else ("x32",))


def test_the_three_keras_hub_files_hold_the_same_model(hub):
    d, _ = hub
    a, b, c = (W.load(d / f"{n}.safetensors").tensors for n in ("kh18.keras", "kh18.weights.h5", "kh18-preset"))
    assert a.keys() == b.keys() == c.keys() and all(
        np.array_equal(a[k], b[k]) and np.array_equal(a[k], c[k]) for k in a
    )


def test_a_keras_hub_network_no_variant_is_refused_naming_it(hub, tmp_path):
    """ResNetBackbone builds whatever stacks it is given; three stacks of one BasicBlock are no ResNet any
    library ships and no registered variant: refused in one line that says what the file holds."""
    d, _ = hub
    p = cli("resnet_port.port", d / "kh3.keras", "--out", tmp_path / "w.safetensors")
    lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert "3 stages of [1, 1, 1] blocks" in lines[0] and "stem 7x7 conv" in lines[0], lines[0]
    assert "none of the variants" in lines[0]
    assert not (tmp_path / "w.safetensors").exists()


def test_keras_hub_resnet_vd_18_to_plain_pytorch_and_back_to_keras_hub(hub, tmp_path):
    """keras-hub's ResNet_vd 18 (a projection on stage 1's first block too) is no PyTorch library's network: the
    port exports to a plain PyTorch module file and to keras-hub again, each reloaded without this project and
    held to the neutral file's logits; torchvision and timm are refused, naming the formats that hold it."""
    d, _ = hub
    src = d / "khvd.keras.safetensors"
    p = cli("resnet_port.export", src, "--format", "pytorch-module,keras-hub", "--out", tmp_path / "e")
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "ok (loaded as model.ResNet)" in p.stdout
    assert p.stdout.count("loaded as keras_hub.ResNetImageClassifier") == 2  # the .keras file and the preset
    p = cli("resnet_port.export", src, "--format", "timm", "--out", tmp_path / "t")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "timm has no network that is resnet18vd-torch@10" in lines[0]
    assert "pytorch-module" in lines[0] and "keras-hub" in lines[0], lines[0]


@pytest.mark.parametrize(
    "name,timm_name,formats",
    [("kh50v2.keras", "resnetv2_50", "timm"), ("khpre.keras", "resnetv2_18", "timm,keras-hub")],
)
def test_keras_hub_resnet_v2_to_timm_and_back_to_keras_hub(hub, tmp_path, name, timm_name, formats):
    """keras-hub's pre-activation ResNets are timm's resnetv2 (of bottlenecks and of BasicBlocks): the port exports
    to timm's folder and (ResNet18 V2: the same writer, use_pre_activation=True, at a third of the cost) to keras-hub
    again, each reloaded by its library alone and held to the neutral file's logits."""
    d, _ = hub
    p = cli("resnet_port.export", d / f"{name}.safetensors", "--format", formats, "--out", tmp_path / "e")
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "loaded as timm.models.resnetv2.ResNetV2" in p.stdout
    # the .keras file and the preset
    assert p.stdout.count("loaded as keras_hub.ResNetImageClassifier") == (2 if "keras-hub" in formats else 0)
    assert json.loads((tmp_path / "e" / "timm" / "config.json").read_text())["architecture"] == timm_name


def test_keras_hub_to_torchvision_and_timm(hub, tmp_path):
    """keras-hub -> neutral -> torchvision's state_dict and timm's folder, each loaded by its library alone
    and run on keras-hub's own probe batch: the logits keras-hub gave."""
    d, _ = hub
    p = cli("resnet_port.export", d / "kh18.keras.safetensors", "--format", "torchvision,timm", "--out", tmp_path / "e")
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout + p.stderr[-2000:]
    probe = zoo_check.npz(d / "kh18-probe.npz")
    np.save(tmp_path / "x.npy", probe["x"])
    code = (
        "import sys, numpy as np, torch, torchvision, timm\n"
        "tv = torchvision.models.resnet18(num_classes=100); tv.load_state_dict(torch.load(sys.argv[1], weights_only=True), strict=True)\n"
        "tm = timm.create_model('local-dir:' + sys.argv[2], pretrained=True)\n"
        "x = torch.from_numpy(np.load(sys.argv[3])).permute(0, 3, 1, 2)\n"
        "with torch.no_grad(): np.savez(sys.argv[4], tv=tv.eval()(x).numpy(), timm=tm.eval()(x).numpy())\n"
    )
    r = clean(
        code, tmp_path / "e" / "torchvision.pth", tmp_path / "e" / "timm", tmp_path / "x.npy", tmp_path / "out.npz"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = zoo_check.npz(tmp_path / "out.npz")
    tol = parity.tolerance(probe["logits"])
    for lib in ("tv", "timm"):
        assert np.abs(got[lib] - probe["logits"]).max() <= tol, lib
    assert json.loads((tmp_path / "e" / "timm" / "config.json").read_text())["architecture"] == "resnet18"


def test_torchvision_to_keras_hub_and_keras_and_back_bit_exact(tmp_path):
    """A torchvision resnet18 -> neutral (port) -> keras-hub and Keras (export, each reloaded by Keras /
    keras-hub alone) and torchvision again, whose state_dict is the source's bit for bit (BatchNorm's
    num_batches_tracked counters too: the neutral file carries them in its metadata)."""
    zoo_check.zoo_models("torchvision18", tmp_path / "tv.pth")
    p = cli("resnet_port.port", tmp_path / "tv.pth", "--out", tmp_path / "w.safetensors")
    assert p.returncode == 0, p.stderr[-2000:]
    p = cli(
        "resnet_port.export",
        tmp_path / "w.safetensors",
        "--format",
        "keras-hub,keras,torchvision",
        "--out",
        tmp_path / "e",
    )
    assert p.returncode == 0 and "export: PASS" in p.stdout, p.stdout + p.stderr[-2000:]
    assert (
        "loaded as keras_hub.ResNetImageClassifier" in p.stdout
        and "loaded as torchvision.models.resnet.ResNet" in p.stdout
    )
    code = (
        "import sys, torch\n"
        "a, b = torch.load(sys.argv[1], weights_only=True), torch.load(sys.argv[2], weights_only=True)\n"
        "assert a.keys() == b.keys(), sorted(set(a) ^ set(b))\n"
        "diff = [k for k in a if not torch.equal(a[k], b[k])]\n"
        "assert not diff, diff\n"
        "print(len(a))\n"
    )
    r = clean(code, tmp_path / "tv.pth", tmp_path / "e" / "torchvision.pth")
    assert r.returncode == 0 and int(r.stdout) == 122, r.stderr[
        -2000:
    ]  # 62 parameters, 60 BatchNorm statistics and counters


def test_native_formats_only_for_the_libraries_models(tmp_path):
    """torchvision, timm and keras-hub define torchvision's ResNet18/34/50/101/152, timm and keras-hub ResNet26 and
    timm's resnetv2_50 too; other variants are refused in one line that names the formats holding them."""
    assert export.formats_for(get_spec("resnet18-torch@1000"))[-3:] == ["torchvision", "timm", "keras-hub"]
    assert export.formats_for(get_spec("resnet50-torch@1000"))[-3:] == ["torchvision", "timm", "keras-hub"]
    assert export.formats_for(get_spec("resnet26-torch"))[-2:] == ["timm", "keras-hub"]
    for depth in (18, 34, 50, 101, 152):  # timm's resnetv2_*, keras-hub's ResNet V2 (use_pre_activation=True)
        assert export.formats_for(get_spec(f"resnetv2-{depth}-torch"))[-2:] == ["timm", "keras-hub"], depth
    assert "torchvision" not in export.formats_for(get_spec("resnet26-torch"))
    assert export.formats_for(get_spec("resnet50d-torch"))[-2:] == ["timm", "keras-hub"]  # keras-hub's ResNet_vd 50
    assert export.formats_for(get_spec("resnet18vd-torch"))[-1] == "keras-hub"
    for arch in ("resnet18vd-torch", "resnet18d-torch"):  # one is keras-hub's ResNet_vd, the other timm's
        assert ("timm" in export.formats_for(get_spec(arch))) == (arch == "resnet18d-torch"), arch
    for arch in ("wide-resnet50-2-torch", "resnext50-32x4d-torch", "resnet18d-torch", "resnet50-keras", "tiny-torch"):
        assert "keras-hub" not in export.formats_for(get_spec(arch)), arch
    assert not set(export.NATIVE) & set(export.formats_for(get_spec("resnet18-cifar-torch")))
    assert set(export.NATIVE) & set(export.formats_for(get_spec("resnet50-keras"))) == {"keras.applications"}
    assert "pytorch-module" in export.formats_for(get_spec("resnet50-keras"))  # plain PyTorch, for every variant
    parity.run_worker(
        "torch", [{"op": "init", "arch": "tiny-torch", "seed": 1, "out": str(tmp_path / "w.safetensors")}], tmp_path
    )
    p = cli("resnet_port.export", tmp_path / "w.safetensors", "--format", "torchvision", "--out", tmp_path / "e")
    assert (
        p.returncode == 2
        and "torchvision has no network that is tiny-torch (it defines resnet18-torch (resnet18)" in p.stderr
        and "the formats that hold tiny-torch: keras, torch, onnx-keras, onnx-torch" in p.stderr
        and not (tmp_path / "e").exists()
    ), p.stderr
