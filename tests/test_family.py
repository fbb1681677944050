"""The wider ResNet family in the spec: each member's structure as its library defines it.

Counts are held to the libraries' own models, built here (torchvision and timm on the meta
device, which allocates nothing; keras.applications with ``weights=None``); the structure facts
(where the stride sits, which blocks project and how, which convolutions carry a bias, the
stems, the pre-activation head) to what the libraries' sources say, member by member.
"""

import pytest

from resnet_port import spec as S
from resnet_port.spec import get_spec

#: member: how its library builds it (at 1000 classes)
TORCH_LIBRARY = {
    "resnet26-torch": ("timm", "resnet26"),
    "resnet50-torch": ("torchvision", "resnet50"),
    "resnet101-torch": ("torchvision", "resnet101"),
    "resnet152-torch": ("torchvision", "resnet152"),
    "wide-resnet50-2-torch": ("torchvision", "wide_resnet50_2"),
    "wide-resnet101-2-torch": ("torchvision", "wide_resnet101_2"),
    "resnext50-32x4d-torch": ("torchvision", "resnext50_32x4d"),
    "resnext101-32x8d-torch": ("torchvision", "resnext101_32x8d"),
    "resnet18d-torch": ("timm", "resnet18d"),
    "resnet34d-torch": ("timm", "resnet34d"),
    "resnet50d-torch": ("timm", "resnet50d"),
    "resnetv2-18-torch": ("timm", "resnetv2_18"),
    "resnetv2-34-torch": ("timm", "resnetv2_34"),
    "resnetv2-50-torch": ("timm", "resnetv2_50"),
    "resnetv2-101-torch": ("timm", "resnetv2_101"),
    "resnetv2-152-torch": ("timm", "resnetv2_152"),
}
KERAS_APPLICATIONS = {
    "resnet50-keras": "ResNet50",
    "resnet101-keras": "ResNet101",
    "resnet152-keras": "ResNet152",
    "resnet50v2-keras": "ResNet50V2",
    "resnet101v2-keras": "ResNet101V2",
    "resnet152v2-keras": "ResNet152V2",
}


@pytest.mark.parametrize("member", list(TORCH_LIBRARY))
def test_counts_equal_torchvisions_and_timms(member):
    import torch

    library, name = TORCH_LIBRARY[member]
    with torch.device("meta"):
        if library == "torchvision":
            import torchvision

            model = getattr(torchvision.models, name)()
        else:
            import timm

            model = timm.create_model(name, pretrained=False)
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    c = get_spec(f"{member}@1000").count_parameters()
    assert (trainable, buffers) == (c.trainable, c.non_trainable)
    weighted = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))]
    assert len(weighted) == len(get_spec(member).parameter_layers())


@pytest.mark.parametrize("member", list(KERAS_APPLICATIONS))
def test_counts_equal_keras_applications(member):
    import keras

    model = getattr(keras.applications, KERAS_APPLICATIONS[member])(weights=None, classes=1000)
    trainable = sum(_size(w) for w in model.trainable_weights)
    fixed = sum(_size(w) for w in model.non_trainable_weights)
    c = get_spec(f"{member}@1000").count_parameters()
    assert (trainable, fixed) == (c.trainable, c.non_trainable)
    assert sum(1 for layer in model.layers if layer.weights) == len(get_spec(member).parameter_layers())
    # a bias exactly where keras.applications puts one
    theirs = sorted(int(layer.use_bias) for layer in model.layers if type(layer).__name__ == "Conv2D")
    ours = sorted(int(layer.use_bias) for layer in get_spec(member).convolutions())
    assert theirs == ours


def _size(w) -> int:
    n = 1
    for d in w.shape:
        n *= int(d)
    return n


def _strides(spec, local):
    return [b.get(local).stride for b in spec.blocks]


def test_bottleneck_v1_5_and_v1():
    """torchvision/timm put the stride on the 3x3 (v1.5), keras.applications on the first 1x1 (v1);
    both project in every stage's first block (stage 1's at stride 1: the width changes 64 -> 256)."""
    for name, on in (("resnet50-torch", "conv2"), ("resnet50-keras", "conv1")):
        spec = get_spec(name)
        firsts = [b for b in spec.blocks if b.name.endswith(".0")]
        assert [b.stride for b in firsts] == [1, 2, 2, 2]
        assert [b.get(on).stride for b in firsts] == [1, 2, 2, 2]
        assert all(b.has_projection for b in firsts) and not any(
            b.has_projection for b in spec.blocks if not b.name.endswith(".0")
        )
        assert [b.out_channels for b in firsts] == [256, 512, 1024, 2048]
        assert [firsts[0].get(c).kernel_size for c in ("conv1", "conv2", "conv3")] == [1, 3, 1]
    keras = get_spec("resnet50-keras")
    assert all(c.use_bias for c in keras.convolutions()) and keras.layer("stem.bn").epsilon == 1.001e-5
    assert keras.layer("stem.bn").momentum == 0.99 and not keras.layer("stem.bn").unbiased_variance
    assert not any(c.use_bias for c in get_spec("resnet50-torch").convolutions())


def test_wide_and_resnext_inner_widths():
    for name, inner, groups in (
        ("wide-resnet50-2-torch", 128, 1),
        ("resnext50-32x4d-torch", 128, 32),
        ("resnext101-32x8d-torch", 256, 32),
        ("resnet50-torch", 64, 1),
    ):
        conv2 = get_spec(name).blocks[0].get("conv2")
        assert (conv2.filters, conv2.groups) == (inner, groups), name
        assert get_spec(name).blocks[0].out_channels == 256


def test_resnet_d_deep_stem_and_average_pool_shortcut():
    spec = get_spec("resnet50d-torch")
    convs = [l for l in spec.stem if l.kind == "conv2d"]
    assert [(c.filters, c.kernel_size, c.stride) for c in convs] == [(32, 3, 2), (32, 3, 1), (64, 3, 1)]
    for b in spec.blocks:
        if b.name == "layer1.0":  # stride 1: the projection without a pool
            assert [l.kind for l in b.shortcut] == ["conv2d", "batchnorm"]
        elif b.has_projection:
            pool = b.get("shortcut.pool")
            assert (pool.kind, pool.pool_size, pool.stride, pool.ceil_mode) == ("avgpool", 2, 2, True)
            assert b.get("shortcut.conv").stride == 1
    assert get_spec("resnet18d-torch").blocks[0].shortcut == ()  # BasicBlocks: no projection at stage 1


def test_keras_applications_v2():
    """ResNet50V2: pre-activation; the stride on each of stages 1-3's last block over a 1x1 max-pool
    shortcut; a projection (1x1 with a bias, no BatchNorm, reading the pre-activated tensor) on every
    stage's first block; biases on the projection and the last 1x1 only; a final BatchNorm and ReLU;
    the stem without BatchNorm, its pool padded with zeros."""
    spec = get_spec("resnet50v2-keras")
    by_stage = {}
    for b in spec.blocks:
        by_stage.setdefault(b.name.split(".")[0], []).append(b)
    assert [[b.stride for b in blocks] for blocks in by_stage.values()] == [
        [1, 1, 2],
        [1, 1, 1, 2],
        [1] * 5 + [2],
        [1, 1, 1],
    ]
    for blocks in by_stage.values():
        first = blocks[0]
        assert [l.kind for l in first.shortcut] == ["conv2d"] and first.shortcut_from == "pre"
        assert first.get("shortcut.conv").use_bias
        for b in blocks[1:]:
            assert [l.kind for l in b.shortcut] == (["maxpool"] if b.stride == 2 else []) and b.shortcut_from == "input"
        for b in blocks:
            assert [b.get(c).use_bias for c in ("conv1", "conv2", "conv3")] == [False, False, True]
            assert [l.kind for l in b.pre] == ["batchnorm", "relu"] and b.post == ()
    assert [l.kind for l in spec.head] == ["batchnorm", "relu"]
    assert [l.kind for l in spec.stem] == ["conv2d", "maxpool"] and spec.layer("stem.pool").pad_with == "zero"
    assert spec.layer("stem.conv").use_bias
    assert spec.layers((224, 224, 3))[-3].output_shape == (7, 7, 2048)


def test_timm_resnetv2_and_kuangliu_preact():
    """timm's resnetv2_50 and kuangliu's PreActResNet18 put the stride on a stage's first block, whose
    projection has no BatchNorm and no bias; timm's stem pool pads with -inf (PyTorch's MaxPool2d)."""
    spec = get_spec("resnetv2-50-torch")
    assert [b.stride for b in spec.blocks if b.name.endswith(".0")] == [1, 2, 2, 2]
    assert all(b.get("conv2").stride == b.stride for b in spec.blocks)
    assert not any(c.use_bias for c in spec.convolutions())
    assert spec.layer("stem.pool").pad_with == "-inf" and [l.kind for l in spec.head] == ["batchnorm", "relu"]
    kuang = get_spec("preact-resnet18-cifar-torch")
    assert [l.kind for l in kuang.stem] == ["conv2d"] and kuang.head == ()
    assert [l.kind for l in kuang.blocks[2].shortcut] == ["conv2d"] and kuang.blocks[2].shortcut_from == "pre"
    # timm's resnetv2_18 (PreActBasic) and keras-hub's ResNetBackbone(basic_block, use_pre_activation=True):
    # timm's stem and head, kuangliu's blocks (stage 1's first keeps width and size: no projection)
    v18 = get_spec("resnetv2-18-torch")
    assert [l.kind for l in v18.stem] == ["conv2d", "maxpool"] and v18.layer("stem.pool").pad_with == "-inf"
    assert [l.kind for l in v18.head] == ["batchnorm", "relu"] and not any(c.use_bias for c in v18.convolutions())
    assert [bool(b.shortcut) for b in v18.blocks] == [False, False, True, False, True, False, True, False]
    assert all(b.shortcut_from == ("pre" if b.shortcut else "input") for b in v18.blocks)
    assert [[l.name.rsplit(".", 1)[1] for l in b.layers()] for b in v18.blocks[:1]] == [
        ["bn0", "relu0", "conv1", "bn1", "relu1", "conv2", "add"]
    ]


@pytest.mark.parametrize("name", ["ResNet50", "resnet50"])
def test_the_cifar_repos_resnet50_counts(name):
    """kuangliu's ResNet50 and weiaicunzai's resnet50 (their classes written out in tests/zoo_models.py):
    the CIFAR stem, v1.5 bottlenecks (the stride on the 3x3)."""
    import torch
    import zoo_models

    with torch.device("meta"):
        model = getattr(zoo_models, name)() if name == "resnet50" else zoo_models.ResNet50(100)
    spec = get_spec("resnet50-cifar-torch")
    c = spec.count_parameters()
    trainable = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert (trainable, buffers) == (c.trainable, c.non_trainable)
    assert S.bottleneck_stride(spec) == "3x3"


def test_every_member_has_a_tiny_twin_of_its_block_stem_and_conventions():
    """What the parity suites run on: a tiny variant of every (block, stem, conventions, options, projection rule)."""
    kinds = lambda c: (c.block, c.stem, c.conventions.name, dict(c.block_options).get("stride_on"), c.projection)  # noqa: E731
    tiny = {kinds(S.REGISTRY[a]) for a in S.available() if a.startswith("tiny")}
    for name in S.available():
        assert kinds(S.REGISTRY[name]) in tiny, name


def test_a_deeper_source_is_named_at_its_first_variable_out_of_place():
    """A ResNet34's tensors held to resnet18 (a user's ``--arch resnet18`` on a ResNet34 file): the message names
    the first variable, in execution order, where the two part, with its native name and both shapes."""
    import numpy as np

    from resnet_port import porting

    tensors = {k: (np.zeros(s, np.float32), f"native/{k}") for k, s in get_spec("resnet34").parameters().items()}
    assert porting.first_mismatch(tensors, get_spec("resnet18")) == (
        "variable #31 in execution order is the source's layer1.2.conv1.kernel (3, 3, 64, 64) "
        "[native/layer1.2.conv1.kernel] where resnet18 has layer2.0.conv1.kernel (3, 3, 64, 128)"
    )
    assert porting.first_mismatch(tensors, get_spec("resnet34")) is None
