"""weiaicunzai/pytorch-cifar100's ResNets (``models/resnet.py``): its ``.pth`` state_dicts.

Read as a state_dict (``torch_impl.port``), placed by :data:`VOCABULARY` (stages
``conv2_x``..``conv5_x``, each block's ``residual_function`` Sequential).  As for kuangliu's
repo, ``--check`` needs the user's copy of the class (``--source-class``); nothing is written in
its format.
"""

from __future__ import annotations

from .base import Vocabulary, no_package_defines

NAME = "weiaicunzai/pytorch-cifar100"
FRAMEWORK = "torch"
VOCABULARY = Vocabulary(
    NAME,
    ".",
    r"^conv(\d+)_x$",
    r"^(\d+)$",
    shortcut=("shortcut",),
    head=("fc",),
    stem=("conv1",),
    left=("residual_function",),
    stage_offset=-1,
    names=(
        ("stem.conv", "conv1.0"),
        ("stem.bn", "conv1.1"),
        ("block", "conv{stage}_x.{block}"),
        ("conv1", "residual_function.0"),
        ("bn1", "residual_function.1"),
        ("conv2", "residual_function.3"),
        ("bn2", "residual_function.4"),
        ("conv3", "residual_function.6"),
        ("bn3", "residual_function.7"),
        ("shortcut.conv", "shortcut.0"),
        ("shortcut.bn", "shortcut.1"),
        ("fc", "fc"),
    ),
)


def defines(spec) -> bool:
    return False


def model(spec, src=None):
    raise no_package_defines(NAME, spec, src)
