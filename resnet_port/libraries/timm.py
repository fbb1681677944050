"""timm's ResNets: Hugging Face folders (``save_for_hf``, the hub cache) and state_dicts in, a folder out.

Read: the folder's ``model.safetensors``/``pytorch_model.bin`` (``torch_impl.port``), placed by
torchvision's vocabulary (timm's ResNet names its modules the same); the folder's
``pretrained_cfg`` gives the preprocessing.  ``--check`` builds ``timm.create_model(
config["architecture"])``.  Export writes ``timm/`` with ``save_for_hf`` (config.json with the
neutral file's normalisation), reloaded by ``timm.create_model("local-dir:...", pretrained=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import timm_resnetv2, torchvision

NAME = "timm"
FRAMEWORK = "torch"
FILE = "timm"  # a folder
SHOWN = "timm/"
PACKAGE = "timm"  # what export needs beyond the framework
VOCABULARY = torchvision.VOCABULARY
#: the registered variants timm builds under its names (its ResNets name their modules as torchvision's)
MODELS = {
    **torchvision.MODELS,
    "resnet26-torch": "resnet26",
    # ResNet-D: the deep stem and the average-pool shortcut
    "resnet18d-torch": "resnet18d",
    "resnet34d-torch": "resnet34d",
    "resnet50d-torch": "resnet50d",
    **timm_resnetv2.MODELS,  # named as timm_resnetv2's vocabulary says
}


def vocabulary_for(spec):
    """The names timm gives ``spec``'s modules: its ResNet's (torchvision's) or its ResNetV2's."""
    return timm_resnetv2.VOCABULARY if timm_resnetv2.defines(spec) else VOCABULARY


def depth(spec) -> str | None:
    from resnet_port.spec import split_name

    return MODELS.get(split_name(spec.name)[0])


def defines(spec) -> bool:
    return depth(spec) is not None


why_not = torchvision.why_not


def is_folder(config: dict) -> bool:
    """Whether a folder's config.json is timm's (it names the ``architecture``)."""
    return "architecture" in config


def model(spec, src=None):
    """timm's model of the folder ``src`` (its config's architecture), or of ``spec``'s depth."""
    import timm

    if src is not None and Path(src).is_dir():
        config = json.loads((Path(src) / "config.json").read_text())
        return timm.create_model(
            config["architecture"], pretrained=False, num_classes=config.get("num_classes", spec.num_classes)
        )
    return timm.create_model(depth(spec), pretrained=False, num_classes=spec.num_classes)


def write(state: dict, spec, out: str, weights_path: str) -> None:
    """timm's folder: the model loaded strictly, its config's mean/std the neutral file's (not ImageNet's)."""
    from timm.models._hub import save_for_hf

    from resnet_port import weights as neutral

    net = model(spec)
    expected = net.state_dict()
    if "head.fc.weight" in state and expected.get("head.fc.weight") is not None:  # ResNetV2's 1x1-conv classifier
        state = {**state, "head.fc.weight": state["head.fc.weight"].reshape(expected["head.fc.weight"].shape)}
    net.load_state_dict(state, strict=True)
    norm = neutral.normalization_of(neutral.read_metadata(Path(weights_path)))
    channels = spec.input_shape[-1]
    net.pretrained_cfg = {
        **net.pretrained_cfg,
        "mean": tuple(norm.mean) if norm else (0.0,) * channels,
        "std": tuple(norm.std) if norm else (1.0,) * channels,
    }
    save_for_hf(net, out, safe_serialization=True)
    for f in Path(out).iterdir():  # safetensors writes 0600; a model folder is for sharing
        f.chmod(0o644)


def reload(path: str, meta: dict):
    import timm

    return timm.create_model("local-dir:" + path, pretrained=True).eval()
