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
        # timm's deep stem (ResNet-D): one nn.Sequential, conv/BN/ReLU x2 then a conv; its last BatchNorm is bn1
        ("stem.conv1", "conv1.0"),
        ("stem.bn1", "conv1.1"),
        ("stem.conv2", "conv1.3"),
        ("stem.bn2", "conv1.4"),
        ("stem.conv3", "conv1.6"),
        ("stem.bn3", "bn1"),
        ("block", "layer{stage}.{block}"),
        ("conv1", "conv1"),
        ("bn1", "bn1"),
        ("conv2", "conv2"),
        ("bn2", "bn2"),
        ("conv3", "conv3"),
        ("bn3", "bn3"),
        ("shortcut.conv", "downsample.0"),
        ("shortcut.bn", "downsample.1"),
        ("fc", "fc"),
    ),
    pooled_names=(("shortcut.conv", "downsample.1"), ("shortcut.bn", "downsample.2")),
)


#: the registered variants torchvision builds, and its function for each (at any class count)
MODELS = {
    "resnet18-torch": "resnet18",
    "resnet34-torch": "resnet34",
    "resnet50-torch": "resnet50",
    "resnet101-torch": "resnet101",
    "resnet152-torch": "resnet152",
    "wide-resnet50-2-torch": "wide_resnet50_2",
    "wide-resnet101-2-torch": "wide_resnet101_2",
    "resnext50-32x4d-torch": "resnext50_32x4d",
    "resnext101-32x8d-torch": "resnext101_32x8d",
}


def depth(spec) -> str | None:
    """torchvision's (and timm's) function for a spec ('resnet18', 'wide_resnet50_2', ...), or None."""
    from resnet_port.spec import split_name

    return MODELS.get(split_name(spec.name)[0])


def defines(spec) -> bool:
    """torchvision's ResNets at any class count: ImageNet stem, PyTorch's conventions, v1.5 bottlenecks."""
    return depth(spec) is not None


def why_not(spec) -> str:
    """Why keras.applications' network of a torchvision depth is not torchvision's (for export's refusal), or ''."""
    from resnet_port.spec import split_name

    from . import keras_applications

    base = split_name(spec.name)[0]
    if base in keras_applications.MODELS:
        return (
            f": {base} is keras.applications' {keras_applications.MODELS[base]}, {keras_applications.V1}, "
            f"this library's {keras_applications.V1_5}: the same shapes, another function"
        )
    return ""


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
