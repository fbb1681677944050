"""The neutral spec: registry, shapes, counts, padding rules, and its independence."""

import subprocess
import sys

import pytest

from resnet_port import spec as S
from resnet_port.summary import main as summary_main

# Measured from the seed's own Keras program, independently of this spec; the CIFAR
# ResNets' from kuangliu/pytorch-cifar's ResNet18/34 (11,173,962 / 21,282,122 parameters with 10
# classes, BatchNorm affine included) with a 100-class head (+ 512 * 90 + 90), and their BatchNorm
# moving statistics (the same BatchNorms as the seed's: 9,600 / 17,024).
SEED_COUNTS = {
    "resnet18": (11_224_932, 9_600),
    "resnet34": (21_336_804, 17_024),
    "resnet18-cifar": (11_173_962 + 512 * 90 + 90, 9_600),
    "resnet34-cifar": (21_282_122 + 512 * 90 + 90, 17_024),
    # torchvision's own counts (sum of parameters() of resnet18/34(num_classes=N)); buffers apart
    "resnet18-torch@1000": (11_689_512, 9_600),
    "resnet34-torch@1000": (21_797_672, 17_024),
    "resnet18-torch": (11_227_812, 9_600),
    "resnet34-torch": (21_335_972, 17_024),
    "resnet18-cifar-torch": (11_220_132, 9_600),
    "resnet34-cifar-torch": (21_328_292, 17_024),
}


def test_neutral_package_imports_no_framework():
    code = (
        "import importlib, pkgutil, sys, resnet_port\n"
        "for m in pkgutil.iter_modules(resnet_port.__path__):\n"
        "    importlib.import_module('resnet_port.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'torch', 'keras', 'jax'))\n"
        "assert not bad, bad\n"
        "print(len([m for m in pkgutil.iter_modules(resnet_port.__path__)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 4  # it really imported the modules


@pytest.mark.parametrize("arch", list(SEED_COUNTS))
def test_parameter_counts_match_independent_counts(arch):
    c = S.get_spec(arch).count_parameters()
    assert (c.trainable, c.non_trainable) == SEED_COUNTS[arch]


def test_cifar_spatial_sizes_and_the_issues_count():
    layers = {l.name: l.output_shape for l in S.get_spec("resnet18-cifar").layers()}
    assert layers["stem.relu"] == (32, 32, 64) and "stem.pool" not in layers
    assert [layers[f"layer{s}.1.relu2"] for s in (1, 2, 3, 4)] == [
        (32, 32, 64),
        (16, 16, 128),
        (8, 8, 256),
        (4, 4, 512),
    ]
    assert S.get_spec("resnet18-cifar").count_parameters().trainable == 11_220_132


def test_pytorch_conventions_sizes_and_names():
    """torchvision's ResNet18 at 224 and at 32; PyTorch's padding=p arithmetic; NAME@CLASSES."""
    spec = S.get_spec("resnet18-torch@1000")
    assert spec.name == "resnet18-torch@1000" and spec.num_classes == 1000
    at224 = {l.name: l.output_shape for l in spec.layers((224, 224, 3))}
    assert at224["stem.conv"] == (112, 112, 64) and at224["stem.pool"] == (56, 56, 64)
    assert [at224[f"layer{s}.1.relu2"] for s in (1, 2, 3, 4)] == [
        (56, 56, 64),
        (28, 28, 128),
        (14, 14, 256),
        (7, 7, 512),
    ]
    at32 = {l.name: l.output_shape for l in spec.layers((32, 32, 3))}
    assert at32["stem.pool"] == (8, 8, 64) and at32["layer4.1.relu2"] == (1, 1, 512)
    assert (
        S.conv_output_size(15, 3, 2, 1) == 8
        and S.conv_output_size(15, 3, 2, "same") == 8
        and S.conv_output_size(15, 3, 2, "valid") == 7
    )
    assert S.get_spec("resnet18-torch", num_classes=100).name == "resnet18-torch"
    assert S.get_spec("resnet18-torch", num_classes=10).name == "resnet18-torch@10"
    for bad in ("resnet18-torch@0", "resnet18-torch@ten", "resnet50@1000"):
        with pytest.raises(ValueError):
            S.get_spec(bad)
    with pytest.raises(ValueError, match="padding must be"):
        S.conv_output_size(8, 3, 1, -1)


def test_spatial_sizes_follow_the_recipe():
    layers = {l.name: l.output_shape for l in S.get_spec("resnet18").layers()}
    assert layers["stem.conv"] == (30, 30, 64)
    assert layers["stem.pool"] == (30, 30, 64)
    assert layers["layer1.1.relu2"] == (30, 30, 64)
    assert layers["layer2.1.relu2"] == (15, 15, 128)
    assert layers["layer3.1.relu2"] == (8, 8, 256)
    assert layers["layer4.1.relu2"] == (4, 4, 512)
    assert layers["fc"] == (100,)


@pytest.mark.parametrize(
    "arch",
    [
        a
        for a in S.available()
        if S.REGISTRY[a].block == "basic" and S.REGISTRY[a].stem in ("seed", "cifar", "imagenet")
    ],
)
def test_projection_shortcuts_exactly_where_the_family_says(arch):
    """The seed's ResNets project where the stride is not 1; the CIFAR ones also where the width changes.
    (The wider family's structure: tests/test_family.py.)"""
    spec, config = S.get_spec(arch), S.REGISTRY[arch]
    seed_family = config.projection == "stride"
    torch_family = arch.endswith("-torch")  # PyTorch's conventions: padding=1, shortcuts padding=0
    for b in spec.blocks:
        conv1, conv2, bn1 = b.get("conv1"), b.get("conv2"), b.get("bn1")
        changes = b.stride != 1 or conv1.in_channels != conv1.filters
        assert b.has_projection == (b.stride != 1 if seed_family else changes), b.name
        assert conv1.padding == conv2.padding == (1 if torch_family else "same")
        if b.has_projection:
            short = b.get("shortcut.conv")
            assert (short.kernel_size, short.padding) == (1, 0 if torch_family else "valid")
        assert bn1.unbiased_variance == torch_family and bn1.epsilon == (1e-5 if torch_family else 1e-3)
    if torch_family:  # torchvision's ImageNet stem, or the CIFAR repos' 3x3 stride-1 padding-1 one; no conv biases
        stem = (7, 2, 3, (3, 2, 1)) if config.stem == "imagenet" else (3, 1, 1, None)
        stem_pool = [l for l in spec.stem if l.kind == "maxpool"]
        pool = stem_pool[0] if stem_pool else None
        pool = pool and (pool.pool_size, pool.stride, pool.padding)
        conv = spec.layer("stem.conv")
        assert (conv.kernel_size, conv.stride, conv.padding, pool) == stem
        assert all(l.kind != "conv2d" or "bias" not in l.params for l in spec.layers())
    elif seed_family:  # the seed: valid stem, 'same' max-pool, a bias on every conv
        assert spec.layer("stem.conv").padding == "valid" and spec.layer("stem.pool").padding == "same"
        assert all(l.kind != "conv2d" or "bias" in l.params for l in spec.layers())
    else:  # CIFAR: 'same' stem, no pool, no conv biases (each conv feeds a BatchNorm)
        assert spec.layer("stem.conv").padding == "same" and [l.kind for l in spec.stem] == [
            "conv2d",
            "batchnorm",
            "relu",
        ]
        assert all(l.kind != "conv2d" or "bias" not in l.params for l in spec.layers())
        assert spec.batchnorm_fed_biases() == []


@pytest.mark.parametrize("arch", S.available())
def test_names_unique_and_counts_consistent(arch):
    spec = S.get_spec(arch)
    names = [l.name for l in spec.layers()]
    assert len(names) == len(set(names))
    keys = list(spec.parameters())
    assert len(keys) == len(set(keys))
    c = spec.count_parameters()
    assert c.total == sum(l.num_params for l in spec.layers())


def test_block_counts():
    assert [b.name for b in S.get_spec("resnet18").blocks][:3] == ["layer1.0", "layer1.1", "layer2.0"]
    assert len(S.get_spec("resnet34").blocks) == len(S.get_spec("resnet34-cifar").blocks) == 16
    assert len(S.get_spec("tiny").blocks) == 4 and len(S.get_spec("tiny-cifar").blocks) == 5
    assert (
        S.get_spec("tiny-cifar").blocks[0].has_projection and S.get_spec("tiny-cifar").blocks[0].stride == 1
    )  # width only


@pytest.mark.parametrize(
    "size,kernel,stride,expected",
    [
        (30, 3, 2, (0, 1)),
        (15, 3, 2, (1, 1)),
        (8, 3, 2, (0, 1)),
        (30, 3, 1, (1, 1)),
        (30, 2, 1, (0, 1)),
        (4, 1, 2, (0, 0)),
    ],
)
def test_same_padding_is_tensorflows(size, kernel, stride, expected):
    assert S.same_padding(size, kernel, stride) == expected


def test_bn_conventions_held_once():
    bn = S.get_spec("resnet18").layer("stem.bn")
    assert (bn.epsilon, bn.momentum) == (1e-3, 0.99)
    assert bn.torch_momentum == pytest.approx(0.01)


def test_bad_arch_and_bad_config():
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'.*resnet18"):
        S.get_spec("resnet50")
    with pytest.raises(ValueError, match="same non-zero length"):
        S.ResNetConfig(stage_blocks=(2, 2))
    with pytest.raises(ValueError, match="identity shortcut"):
        S.build("x", S.ResNetConfig(stage_blocks=(1, 1, 1, 1), stage_strides=(1, 1, 2, 2)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        S.get_spec("tiny").layers((2, 2, 3))


def test_other_input_sizes():
    out = S.get_spec("tiny").layers((64, 64, 3))
    assert out[0].output_shape == (62, 62, 8)
    assert out[-1].output_shape == (100,)


def test_summary_cli(capsys):
    assert summary_main(["resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer2.0.shortcut.conv" in out and "11,234,532" in out and "11,224,932" in out and "9,600" in out
    assert summary_main(["resnet34"]) == 0
    assert "21,353,828" in capsys.readouterr().out
    assert summary_main(["nope"]) == 2
    assert "unknown architecture" in capsys.readouterr().err


def test_summary_module_runs():
    out = subprocess.run([sys.executable, "-m", "resnet_port.summary", "tiny"], capture_output=True, text=True)
    assert out.returncode == 0 and "total parameters" in out.stdout
