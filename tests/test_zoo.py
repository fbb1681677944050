"""The PyTorch world's ResNet18/34 (torchvision, timm, kuangliu/pytorch-cifar, weiaicunzai/pytorch-cifar100):
ported into the neutral file, run in Keras, and held to the source run by its own library.

The sources are written by the libraries themselves (tests/zoo_models.py, in a process of its own:
torchvision's and timm's classes, and the repos' classes written out in the repos' structure), with
BatchNorm that looks trained.  The port is what ``python -m resnet_port.port`` does, step by step
(``read_source`` in PyTorch, the neutral placing rule, ``run_source`` in the source's library,
``forward`` in Keras), batched into one process per framework; the CLI itself runs below on a few.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import zoo_check

from resnet_port import forkserver, parity, port, porting
from resnet_port import weights as W
from resnet_port.spec import get_spec

ZOO = zoo_check.ZOO_MODELS
#: file: (kind for zoo_models.py, classes, the variant it must be, its library, --source-class)
SOURCES = {
    "tv18.pth": ("torchvision18", 100, "resnet18-torch", "torchvision/timm", None),
    "tv34.pth": ("torchvision34", 1000, "resnet34-torch@1000", "torchvision/timm", None),
    "timm18": ("timm18-hf", 100, "resnet18-torch", "torchvision/timm", None),
    "timm34": ("timm34-hf", 10, "resnet34-torch@10", "torchvision/timm", None),
    "kuangliu18.pth": ("kuangliu18-net", 100, "resnet18-cifar-torch", "kuangliu/pytorch-cifar", "ResNet18"),
    "kuangliu34.pth": ("kuangliu34", 100, "resnet34-cifar-torch", "kuangliu/pytorch-cifar", "ResNet34"),
    "weiaicunzai18.pth": ("weiaicunzai18", 100, "resnet18-cifar-torch", "weiaicunzai/pytorch-cifar100", "resnet18"),
    "weiaicunzai34.pth": ("weiaicunzai34", 100, "resnet34-cifar-torch", "weiaicunzai/pytorch-cifar100", "resnet34"),
    "tv50.pth": ("torchvision50", 100, "resnet50-torch", "torchvision/timm", None),
    "timm18d.pth": ("timm18d", 10, "resnet18d-torch@10", "torchvision/timm", None),
    "preact18.pth": ("preact18", 10, "preact-resnet18-cifar-torch@10", "kuangliu/pytorch-cifar", "PreActResNet18"),
    "kuangliu50.pth": ("kuangliu50", 100, "resnet50-cifar-torch", "kuangliu/pytorch-cifar", "ResNet50"),
    "timmv2-50.pth": ("timmv2-50", 10, "resnetv2-50-torch@10", "timm/resnetv2", None),
    "timmv2-18.pth": ("timmv2-18", 10, "resnetv2-18-torch@10", "timm/resnetv2", None),
}
BAD: dict = {}
#: the sources also checked at 224x224 here: timm's ResNet18 (torchvision's is, by the CLI below, and timm's
#: ResNet26, the smallest bottleneck member); the deeper ones at 32x32, the same code at another size
AT_224 = ("timm18",)
PERTURBED = "layer3.0.conv1"


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=parity.worker_env(), cwd=cwd
    )


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    plan = {"folder": str(d), "files": {name: (kind, classes) for name, (kind, classes, *_) in SOURCES.items()} | BAD}
    (d / "plan.json").write_text(json.dumps(plan))
    zoo_check.zoo_models("plan", d / "plan.json")
    sources = {
        name: (("x32", "x224") if name in AT_224 else ("x32",), f"{ZOO}:{cls}" if cls else None)
        for name, (*_, cls) in SOURCES.items()
    }

    def perturbed():  # tv18's port with one tensor moved, run in Keras with the others
        bad = W.load(d / "tv18.pth.safetensors").tensors
        bad[f"{PERTURBED}.kernel"] = (
            bad[f"{PERTURBED}.kernel"] + np.float32(0.05) * np.abs(bad[f"{PERTURBED}.kernel"]).max()
        )
        W.save(d / "perturbed.safetensors", bad, "resnet18-torch")
        return zoo_check.forward_ops(d, "resnet18-torch", d / "perturbed.safetensors", "x32", "perturbed", "float64")

    return d, zoo_check.port_all(d, sources, "torch", "tf", more_ports=perturbed)


@pytest.mark.parametrize("name", list(SOURCES))
def test_port_runs_in_keras_as_the_library_runs_the_source(zoo, name):
    """The port in Keras against the source in its own library (torchvision's / timm's class, or the repo's),
    every layer both name and the logits, inference and training mode, at 32x32 and, for one ResNet18 and
    one ResNet34, 224x224; the variant recognised from the tensors and the library's conventions."""
    d, facts = zoo
    _, classes, arch, library, _ = SOURCES[name]
    got_arch, info = facts[name]
    assert (got_arch, info["library"], info["conventions"]) == (arch, library, "pytorch")
    assert get_spec(arch).num_classes == classes
    sizes = ("x32", "x224") if name in AT_224 else ("x32",)
    for size in sizes:
        cls = str(zoo_check.npz(d / f"src_{name}_{size}.npz")["library_class"])
        assert cls.startswith(("torchvision.models", "timm.models", "resnet_port_user_zoo_models")), cls
    zoo_check.assert_held_to_source(d, name, arch, sizes)


def test_a_perturbed_tensor_is_caught_and_named(zoo):
    d, _ = zoo
    names = [layer.name for layer in get_spec("resnet18-torch").layers()]
    for mode in zoo_check.MODES:
        ok, _, _, _, first = port.judge(
            zoo_check.npz(d / f"perturbed_{mode}.npz"), zoo_check.source_outputs(d, "tv18.pth", "x32", mode), names
        )
        assert not ok and first is not None and first.name == PERTURBED, (mode, first)


def test_the_cli_ports_and_checks_a_torchvision_resnet18_at_both_sizes(zoo, tmp_path):
    d, _ = zoo
    p = cli("resnet_port.port", d / "tv18.pth", "--out", tmp_path / "w.safetensors", "--check")
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "as torchvision.models.resnet.ResNet (torchvision/timm)" in p.stdout and "parity: PASS" in p.stdout
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith(("inference", "training"))]
    assert sorted((r[0], r[1], r[2]) for r in rows) == sorted(
        (m, s, t) for m in ("inference", "training") for s in ("32x32", "224x224") for t in ("float32", "float64")
    ), p.stdout
    # float64 decides (a correct port agrees to ~1e-12 there), float32 is printed beside
    assert (
        all(r[-1] == "ok" and float(r[3]) < 1e-9 for r in rows if r[2] == "float64")
        and "parity: PASS (in float64;" in p.stdout
    )
    assert ": resnet18-torch, 102 tensors" in p.stdout


def test_the_cli_checks_a_repo_checkpoint_with_the_users_class(zoo, tmp_path):
    """kuangliu's {"net": ..., "acc", "epoch"} checkpoint (module. prefixes): no package defines its class, so
    --check asks for it, and runs it when named."""
    d, _ = zoo
    p = cli("resnet_port.port", d / "kuangliu18.pth", "--out", tmp_path / "w.safetensors", "--check")
    assert (
        p.returncode == 2 and "--source-class FILE.py:NAME" in p.stderr and not (tmp_path / "w.safetensors").exists()
    ), p.stderr
    p = cli(
        "resnet_port.port",
        d / "kuangliu18.pth",
        "--out",
        tmp_path / "w.safetensors",
        "--check",
        "--source-class",
        f"{ZOO}:ResNet18",
    )
    assert p.returncode == 0 and "parity: PASS" in p.stdout and "(kuangliu/pytorch-cifar)" in p.stdout, (
        p.stdout + p.stderr[-2000:]
    )


def test_what_is_not_a_resnet_of_these_is_refused_in_one_line(zoo, tmp_path):
    d, _ = zoo
    code = (
        "import sys, torch\nsd = torch.load(sys.argv[1]); torch.save({k: v for k, v in sd.items() if k != 'layer2.0.bn1.num_batches_tracked'}, sys.argv[2])\n"
        "sd['layer3.1.conv2.weight'] = sd['layer3.1.conv2.weight'][:, :128]; torch.save(sd, sys.argv[3])\n"
        "import os\nclass Boom:\n    def __reduce__(self):\n        return (os.system, ('touch ' + sys.argv[5],))\n"
        "torch.save({'conv1.weight': torch.zeros(1), 'x': Boom()}, sys.argv[4])\n"
        "import timm\nfrom timm.models.resnet import BasicBlock, ResNet\n"
        "torch.save(ResNet(BasicBlock, [2, 2, 2, 2], stem_type='deep', stem_width=32, num_classes=10).state_dict(), sys.argv[6])\n"
        "sd = timm.create_model('resnet18d', num_classes=10).state_dict(); sd['conv1.9.weight'] = sd['conv1.6.weight'][:, :64].clone()\n"
        "torch.save(sd, sys.argv[7])\n"
        "sd = torch.load(sys.argv[1]); sd['layer1.0.bn1.running_var'][3] = float('nan'); torch.save(sd, sys.argv[8])\n"
        "for i, name in enumerate(('seresnet18', 'resnest14d', 'botnet26t_256')):\n"
        "    torch.save(timm.create_model(name, num_classes=10).state_dict(), sys.argv[9 + i])\n"
    )
    forkserver.run(
        [
            sys.executable,
            "-c",
            code,
            d / "tv18.pth",
            tmp_path / "untracked.pth",
            tmp_path / "shape.pth",
            tmp_path / "code.pth",
            tmp_path / "ran",
            tmp_path / "r18c.pth",
            tmp_path / "stem4.pth",
            tmp_path / "nan.pth",
            tmp_path / "se.pth",
            tmp_path / "resnest.pth",
            tmp_path / "botnet.pth",
        ],
        check=True,
        framework="torch",
    )
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 100}))
    cases = [
        # timm's deep stem with plain projections (resnet*c): ResNet-D's weights, another function
        (
            [tmp_path / "r18c.pth"],
            "layer2.0.downsample.0 is where torchvision/timm puts a shortcut that projects without pooling first, but resnet18d-torch@10 needs layer2.0.downsample.1",
        ),
        (
            [tmp_path / "stem4.pth"],
            "conv1.3: a stem of 4 convolutions, where a ResNet has one (7x7 or 3x3) and ResNet-D's",
        ),
        (
            [tmp_path / "nan.pth"],
            "tensor layer1.0.bn1.running_var (layer1.0.bn1.moving_variance) holds 1 non-finite value(s)",
        ),
        ([tmp_path / "se.pth"], "is a squeeze-and-excitation ResNet (SE-ResNet"),
        ([tmp_path / "resnest.pth"], "is a ResNeSt (split-attention convolutions"),
        ([tmp_path / "botnet.pth"], "is a ResNet with attention layers"),
        ([d / "tv18.pth", "--arch", "resnet18"], "follows PyTorch's conventions"),
        (
            [d / "tv18.pth", "--arch", "resnet18-cifar-torch"],
            "does not match --arch resnet18-cifar-torch: stem.conv.kernel [conv1/kernel] has shape (7, 7, 3, 64)",
        ),
        ([tmp_path / "hub"], "Hugging Face folder (config.json names 'resnet18') without weights"),
        ([tmp_path / "untracked.pth"], "BatchNorm layer2.0.bn1 has no num_batches_tracked"),
        (
            [tmp_path / "shape.pth"],
            "holds a ResNet of 4 stages of [2, 2, 2, 2] blocks, widths [64, 128, 256, 512], stem 7x7 conv of 64 filters, 100 classes, conv biases: no",
        ),
        (
            [tmp_path / "code.pth"],
            "it holds unsupported GLOBAL posix.system, which loading could run as code; nothing was run",
        ),
    ]
    for i, (args, message) in enumerate(cases):
        p = cli("resnet_port.port", *args, "--out", tmp_path / f"out{i}.safetensors")
        lines = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, (args, p.stderr[-2000:])
        assert message in lines[0], (message, lines[0])
        assert not (tmp_path / f"out{i}.safetensors").exists()
    assert not (tmp_path / "ran").exists()  # the pickled code never ran


def test_timm_resnet26_bottlenecks_port_and_check_in_timm_at_both_sizes(tmp_path):
    """timm's ResNet26 (v1.5 bottlenecks, torchvision's names), as timm writes it: recognised as
    resnet26-torch, and --check runs it in timm (no torchvision function builds it) at 32x32 and
    224x224, both modes, deciding in float64."""
    code = (
        "import sys, timm, torch\ntorch.save(timm.create_model('resnet26', num_classes=10).state_dict(), sys.argv[1])\n"
    )
    forkserver.run([sys.executable, "-c", code, tmp_path / "r26.pth"], check=True, framework="torch")
    p = cli("resnet_port.port", tmp_path / "r26.pth", "--out", tmp_path / "w.safetensors", "--check")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert ": resnet26-torch@10, " in p.stdout and "as timm.models.resnet.ResNet" in p.stdout, p.stdout
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith(("inference", "training"))]
    assert {(r[0], r[1]) for r in rows} == {(m, s) for m in ("inference", "training") for s in ("32x32", "224x224")}
    assert all(r[-1] == "ok" for r in rows if r[2] == "float64") and "parity: PASS (in float64;" in p.stdout


def test_weiaicunzais_resnet50_is_read_as_the_cifar_bottleneck_network(tmp_path):
    """weiaicunzai's resnet50 (``residual_function.{0,1,3,4,6,7}``), as its class writes it: placed by the
    repo's vocabulary on the same network as kuangliu's ResNet50 (whose port is run against its source above)."""
    from torch_impl.port import read_state_dict

    zoo_check.zoo_models("weiaicunzai50", tmp_path / "w50.pth")
    found, facts = read_state_dict(tmp_path / "w50.pth")
    tensors = porting.canonical_tensors(found)
    spec = porting.resolve_arch(tensors, "auto", "w50.pth", facts)
    assert (spec.name, facts["library"]) == ("resnet50-cifar-torch", "weiaicunzai/pytorch-cifar100")
    assert tensors["layer1.0.conv3.kernel"][1] == "conv2_x.0.residual_function.6/kernel"


@pytest.mark.parametrize("library", [v.library for v in porting.VOCABULARIES])
def test_each_vocabulary_places_the_names_it_writes(library):
    """The one placing rule and each library's name templates agree: every canonical layer of a ResNet34,
    written in the library's names (what export writes), is placed back on that very layer."""
    vocab = porting.vocabulary(library)
    archs = {
        "timm/resnetv2": ["resnetv2-18-torch", "resnetv2-50-torch"],  # a vocabulary of pre-activation networks only
        "keras.applications": ["resnet34-torch", "resnet50-torch", "resnet50v2-keras", "resnet101v2-keras"],
    }.get(library, ["resnet34-torch", "resnet50-torch"])
    archs += ["resnet18d-torch", "resnet50d-torch"] if vocab.pooled_names else []
    for arch in archs:
        _places_back(vocab, get_spec(arch), library)


def _places_back(vocab, spec, library):
    names = porting.native_names(vocab, spec)
    layers = [
        (names[layer.name], layer.kind, {("gamma" if layer.kind == "batchnorm" else "kernel"): np.zeros(1)})
        for layer in spec.parameter_layers()
    ]
    found, placed_by = porting.place_all(layers, library, [vocab])
    back = {
        key.rsplit(".", 1)[0]: native.rsplit("/", 1)[0] for key, (_, native) in porting.canonical_tensors(found).items()
    }
    assert placed_by is vocab and back == names


def test_the_sources_input_convention_is_kept_and_written_into_every_export(zoo, tmp_path):
    """A torchvision ResNet takes ImageNet-normalised inputs: the port says so and carries it in the neutral
    file, and the export writes the same into preprocessing.json and timm's config (not timm's default
    beside a "pixels / 255" of our own)."""
    d, _ = zoo
    p = cli("resnet_port.port", d / "tv18.pth", "--out", tmp_path / "w.safetensors")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (
        "input: RGB pixels / 255, then (x - mean) / std with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"
        in p.stdout
    )
    norm = W.load(tmp_path / "w.safetensors").normalization
    assert norm is not None and norm.mean == (0.485, 0.456, 0.406) and norm.std == (0.229, 0.224, 0.225)
    p = cli("resnet_port.export", tmp_path / "w.safetensors", "--format", "timm", "--out", tmp_path / "out")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    prep = json.loads((tmp_path / "out" / "preprocessing.json").read_text())
    timm_cfg = json.loads((tmp_path / "out" / "timm" / "config.json").read_text())["pretrained_cfg"]
    assert prep["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert timm_cfg["mean"] == prep["normalization"]["mean"] and timm_cfg["std"] == prep["normalization"]["std"]
    assert oct((tmp_path / "out" / "timm" / "model.safetensors").stat().st_mode & 0o777) == "0o644"


def test_a_torchvision_resnet50_exports_back_to_torchvision_and_timm(zoo, tmp_path):
    """The ResNet50 port (v1.5 bottlenecks) written as torchvision's and timm's own files, each reloaded by
    its library alone (load_state_dict(strict=True) / create_model) and run at 224x224 against the port."""
    d, _ = zoo
    p = cli(
        "resnet_port.export",
        d / "tv50.pth.safetensors",
        "--format",
        "torchvision,timm",
        "--out",
        tmp_path / "out",
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    rows = [line for line in p.stdout.splitlines() if line.startswith(("torchvision", "timm"))]
    assert len(rows) == 2 and all(" ok" in r for r in rows), p.stdout
    assert "torchvision.models.resnet.ResNet" in p.stdout and "timm.models.resnet.ResNet" in p.stdout
    assert "224x224" in p.stdout


@pytest.mark.parametrize("name,arch", [("resnext50_32x4d", "resnext50-32x4d-torch")])
def test_wide_and_resnext_files_are_recognised(tmp_path, name, arch):
    """torchvision's grouped bottleneck ResNet, as torchvision writes it: read and recognised (the grouped
    3x3's kernel is (3, 3, in/groups, out)); a wide one differs from ResNet50 by its widths only."""
    code = f"import sys, torch, torchvision\ntorch.save(torchvision.models.{name}(num_classes=10).state_dict(), sys.argv[1])\n"
    forkserver.run([sys.executable, "-c", code, tmp_path / "m.pth"], check=True, framework="torch")
    p = cli("resnet_port.port", tmp_path / "m.pth", "--out", tmp_path / "w.safetensors")
    assert p.returncode == 0, p.stderr[-2000:]
    assert f": {arch}@10, " in p.stdout and W.load(tmp_path / "w.safetensors").arch == f"{arch}@10", p.stdout
