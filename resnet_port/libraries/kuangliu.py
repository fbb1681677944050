"""kuangliu/pytorch-cifar's ResNets (``models/resnet.py``): its checkpoints ``{"net", "acc", "epoch"}``.

Read as a state_dict (``torch_impl.port``; DataParallel's ``module.`` removed), placed by
:data:`VOCABULARY`.  No installed package defines the repo's classes, so ``--check`` runs the
user's copy of them (``--source-class models/resnet.py:ResNet18``).  Nothing is written in its
format: export's torchvision and timm files hold the same ImageNet-stem networks only.
"""

from __future__ import annotations

from .base import Vocabulary, no_package_defines

NAME = "kuangliu/pytorch-cifar"
FRAMEWORK = "torch"
VOCABULARY = Vocabulary(
    NAME,
    ".",
    r"^layer(\d+)$",
    r"^(\d+)$",
    shortcut=("shortcut",),
    head=("linear",),
    stem=("conv1", "bn1"),
    names=(
        ("stem.conv", "conv1"),
        ("stem.bn", "bn1"),
        ("block", "layer{stage}.{block}"),
        ("conv1", "conv1"),
        ("bn1", "bn1"),
        ("conv2", "conv2"),
        ("bn2", "bn2"),
        ("conv3", "conv3"),
        ("bn3", "bn3"),
        ("shortcut.conv", "shortcut.0"),
        ("shortcut.bn", "shortcut.1"),
        ("fc", "linear"),
    ),
)


def defines(spec) -> bool:
    return False  # no package to write for


def model(spec, src=None):
    raise no_package_defines(NAME, spec, src)
