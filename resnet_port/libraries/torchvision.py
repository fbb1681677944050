"""torchvision's ResNets (``torchvision.models.resnet18/34``): state_dicts in, ``torchvision.pth`` out.

Read: a ``.pth``/``.pt``/``.bin``/``.safetensors`` state_dict (``torch_impl.port.read_state_dict``),
placed by :data:`VOCABULARY`.  ``--check`` loads it into ``torchvision.models.resnetN(num_classes=N)``
with ``strict=True``.  Export writes the state_dict of that model, and reloads it the same way in
a process where this project cannot be imported.
"""

from __future__ import annotations

from .base import Vocabulary

NAME = "torchvision"
FRAMEWORK = "torch"
FILE = "torchvision.pth"  # what export writes

#: torchvision's module names (timm's ResNet uses the same ones); one vocabulary for both
VOCABULARY = Vocabulary(
    "torchvision/timm",
    ".",
    r"^layer(\d+)$",
    r"^(\d+)$",
    shortcut=("downsample",),
    head=("fc",),
    stem=("conv1", "bn1"),
    names=(
        ("stem.conv", "conv1"),
        ("stem.bn", "bn1"),
        ("block", "layer{stage}.{block}"),
        ("conv1", "conv1"),
        ("bn1", "bn1"),
        ("conv2", "conv2"),
        ("bn2", "bn2"),
        ("shortcut.conv", "downsample.0"),
        ("shortcut.bn", "downsample.1"),
        ("fc", "fc"),
    ),
)


def depth(spec) -> str | None:
    """torchvision's (and timm's) name for a spec's depth: 'resnet18', 'resnet34', or None."""
    return {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}.get(tuple(spec.stage_blocks))


def defines(spec) -> bool:
    """torchvision's resnet18/34 at any class count: the ImageNet stem, PyTorch's conventions, basic blocks."""
    from resnet_port.spec import REGISTRY, split_name

    base = split_name(spec.name)[0]
    return base in ("resnet18-torch", "resnet34-torch") and REGISTRY[base].stem == "imagenet"


def model(spec, src=None):
    import torchvision

    return getattr(torchvision.models, depth(spec))(num_classes=spec.num_classes)


def write(state: dict, spec, out: str, weights_path: str) -> None:
    """The state_dict as torchvision's own model holds it (loaded strictly first, as a user's will be)."""
    import torch

    net = model(spec)
    net.load_state_dict(state, strict=True)
    torch.save(net.state_dict(), out)


def reload(path: str, meta: dict):
    """The file loaded by torchvision alone (``meta``: depth, classes), in inference mode."""
    import torch
    import torchvision

    net = getattr(torchvision.models, meta["depth"])(num_classes=meta["classes"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()
