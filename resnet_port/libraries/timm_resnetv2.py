"""timm's pre-activation ResNets (``resnetv2_18/34/50/101/152``): state_dicts and Hugging Face folders in.

timm's ``ResNetV2`` names its modules unlike its ResNet: ``stem.conv``, ``stages.{s}.blocks.{b}``
with ``norm1``/``conv1``/``norm2``/``conv2``/``norm3``/``conv3`` (a block normalises first) and
``downsample.conv``, a final ``norm`` and a classifier written as a 1x1 convolution (``head.fc``).
Its BatchNorms apply their ReLU (``BatchNormAct2d``), so ``--check`` compares their outputs with the
spec's ReLU after each BatchNorm.  Read as a state_dict (``torch_impl.port``), placed by
:data:`VOCABULARY`; ``--check`` builds ``timm.create_model("resnetv2_50")``; export writes timm's
folder through :mod:`timm`'s writer with these names.
"""

from __future__ import annotations

from .base import Vocabulary

NAME = "timm resnetv2"
FRAMEWORK = "torch"
VOCABULARY = Vocabulary(
    "timm/resnetv2",
    ".",
    r"^stages(\d+)$",
    r"^(\d+)$",
    shortcut=("downsample",),
    head=("fc",),
    stem=("stem",),
    stage_offset=1,
    head_norm=("norm",),
    rewrite=((r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages\1.\2."), (r"^head\.fc$", "fc")),
    fused_norm_act=True,
    names=(
        ("stem.conv", "stem.conv"),
        ("head.bn", "norm"),
        ("block", "stages.{stage}.blocks.{block}"),
        ("bn0", "norm1"),
        ("conv1", "conv1"),
        ("bn1", "norm2"),
        ("conv2", "conv2"),
        ("bn2", "norm3"),
        ("conv3", "conv3"),
        ("shortcut.conv", "downsample.conv"),
        ("fc", "head.fc"),
    ),
)
#: the registered variants timm's ResNetV2 builds, under timm's names
MODELS = {
    "resnetv2-18-torch": "resnetv2_18",  # PreActBasic: norm1, conv1, norm2, conv2
    "resnetv2-34-torch": "resnetv2_34",
    "resnetv2-50-torch": "resnetv2_50",
    "resnetv2-101-torch": "resnetv2_101",
    "resnetv2-152-torch": "resnetv2_152",
}


def defines(spec) -> bool:
    from resnet_port.spec import split_name

    return split_name(spec.name)[0] in MODELS


def model(spec, src=None):
    from . import timm

    return timm.model(spec, src)
