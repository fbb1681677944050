"""keras-hub's ResNets (``ResNetBackbone`` + ``ResNetImageClassifier``): ``.keras``, ``.weights.h5`` and
preset folders in, ``keras-hub.keras`` and ``keras-hub-preset/`` out.

keras-hub's ``ResNetBackbone`` builds BasicBlocks (ResNet18/34), v1.5 bottlenecks (ResNet26-152) and
pre-activation BasicBlocks and bottlenecks (its ResNet V2: timm's resnetv2_18-152) after a 7x7 stem, and its ResNet-vd
(PaddleClas' ResNet_vd) after a deep stem: of bottlenecks that is timm's ResNet-D (resnet50d), of BasicBlocks a
network of its own (a projection on stage 1's first block too); :func:`arguments` says which registered
variants it builds, by building the spec of its configuration and comparing.

Read: keras-hub loads the file (a bare ``.weights.h5`` goes into the preset network whose weight layout it
has), every layer with weights is listed (:func:`read`) and placed by :data:`VOCABULARY`.  ``--check``
runs keras-hub's model itself, rebuilt in float64 by keras-hub's classes (:func:`in_dtype`).  Export builds
``ResNetImageClassifier`` of the spec's widths and depths, sets its layers from ``tf_impl``'s model, saves
both forms, and reloads them with ``keras.saving.load_model`` and ``ImageClassifier.from_preset``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from .base import PortError, Vocabulary, h5_layout, keras_weighted_layers, weights_layout

NAME = "keras-hub"
FRAMEWORK = "tf"
FILE = "keras-hub"  # keras-hub.keras and keras-hub-preset/
SHOWN = "keras-hub.keras"
PACKAGE = "keras_hub"  # what export needs beyond the framework

# ResNetBackbone's names (stack0_block1_2_conv: the block's 0th conv is its projection) and
# ResNetImageClassifier's head
VOCABULARY = Vocabulary(
    NAME,
    "_",
    r"^stack(\d+)$",
    r"^block(\d+)$",
    shortcut=("0",),
    head=("predictions",),
    stem=("conv1", "conv2", "conv3"),  # conv2/conv3: ResNet-vd's deep stem
    left=("pre", "1", "2", "3"),  # a pre-activation block's BatchNorm (pre_activation_bn) first
    stage_offset=1,
    block_output="_out",
    head_norm=("post_bn",),
    names=(
        ("stem.conv", "conv1_conv"),
        ("stem.bn", "conv1_bn"),
        # ResNet-vd's deep stem
        ("stem.conv1", "conv1_conv"),
        ("stem.bn1", "conv1_bn"),
        ("stem.conv2", "conv2_conv"),
        ("stem.bn2", "conv2_bn"),
        ("stem.conv3", "conv3_conv"),
        ("stem.bn3", "conv3_bn"),
        ("head.bn", "post_bn"),
        ("block", "stack{stage}_block{block}"),
        ("bn0", "pre_activation_bn"),
        ("conv1", "1_conv"),
        ("bn1", "1_bn"),
        ("conv2", "2_conv"),
        ("bn2", "2_bn"),
        ("conv3", "3_conv"),
        ("bn3", "3_bn"),
        ("shortcut.conv", "0_conv"),
        ("shortcut.bn", "0_bn"),
        ("fc", "predictions"),
    ),
)

_GROUP = re.compile(r"^(layers/)?res_net_(backbone|image_classifier)")


def is_folder(config: dict) -> bool:
    """Whether a folder's config.json is a keras-hub preset's."""
    return any(str(config.get(k, "")).startswith("keras_hub") for k in ("module", "registered_name"))


def holds(path: Path, kind: str) -> bool:
    """Whether a Keras file or folder holds a keras-hub model (its config or its weight groups say so)."""
    if kind == "keras-hub-preset":
        return True
    if kind == "keras":
        try:
            with zipfile.ZipFile(path) as z:
                return "config.json" in z.namelist() and b'"keras_hub' in z.read("config.json")
        except (zipfile.BadZipFile, OSError, KeyError):
            return False
    if kind in ("keras-weights", "h5"):
        from tf_impl.port import _h5

        with _h5(path) as h5:
            names = []
            h5.visit(lambda n: names.append(n) if n.count("/") <= 1 else None)
        return any(_GROUP.match(n) for n in names)
    return False


def package():
    try:
        import keras_hub
    except ImportError:
        raise PortError(
            "this is a keras-hub model; reading it needs keras-hub: pip install keras-hub (its classes define the file)"
        ) from None
    return keras_hub


#: keras-hub's ResNetBackbone(block_type, use_pre_activation) in the spec's terms: the config keywords of the
#: network it builds (read from keras_hub/src/models/resnet/resnet_backbone.py and checked by the tests against
#: keras-hub's own runs): its BasicBlock and v1.5 bottleneck under PyTorch's conventions (ZeroPadding2D then
#: 'valid' before every strided conv, BatchNorm 1e-5 / 0.9), and its pre-activation bottleneck, which is timm's
#: resnetv2 (a lone stem conv, a -inf padded max-pool, a projection without BatchNorm, a final BN-ReLU)
BACKBONES = {
    ("basic_block", False): "TORCH",
    ("bottleneck_block", False): "BOTTLENECK",
    ("bottleneck_block", True): "PREACT_TORCH",
    ("basic_block", True): "PREACT_BASIC_TORCH",
    ("basic_block_vd", False): "RESNET_VD_BASIC",
    ("bottleneck_block_vd", False): "RESNET_D_BOTTLENECK",
}
#: the registered variants ResNetBackbone builds, under its ImageNet presets' names (ResNet18/34/152 V2 have
#: none: named likewise; the others are the same backbone at other sizes)
MODELS = {
    "resnet18-torch": "ResNet18",
    "resnet34-torch": "ResNet34",
    "resnet50-torch": "ResNet50",
    "resnet101-torch": "ResNet101",
    "resnet152-torch": "ResNet152",
    "resnetv2-18-torch": "ResNet18 V2",
    "resnetv2-34-torch": "ResNet34 V2",
    "resnetv2-50-torch": "ResNet50 V2",
    "resnetv2-101-torch": "ResNet101 V2",
    "resnetv2-152-torch": "ResNet152 V2",
    "resnet18vd-torch": "ResNet_vd 18",
    "resnet34vd-torch": "ResNet_vd 34",
    "resnet50d-torch": "ResNet_vd 50",
}


#: the only width ResNetBackbone takes for its first stack (it raises on any other)
FIRST_STACK = 64


def _config(spec):
    """The registered config of ``spec``'s variant, or None (a spec built outside the registry)."""
    from resnet_port import spec as S

    return S.REGISTRY.get(S.split_name(spec.name)[0])


def arguments(spec) -> dict | None:
    """ResNetBackbone's arguments whose network is ``spec``'s, layer for layer, or None where keras-hub
    has no such network (another stem, block, width rule or convention)."""
    import dataclasses

    from resnet_port import spec as S

    config = _config(spec)
    if config is None or config.stage_filters[0] != FIRST_STACK:
        return None
    stages = {k: getattr(config, k) for k in ("stage_blocks", "stage_filters", "stage_strides", "stem_filters")}
    for (block_type, preact), base in BACKBONES.items():
        candidate = dataclasses.replace(
            S.ResNetConfig(**stages, **getattr(S, base)), num_classes=spec.num_classes, input_shape=spec.input_shape
        )
        if S.build(spec.name, candidate) == spec:
            stem = [layer for layer in spec.stem if layer.kind == "conv2d"]
            return dict(
                input_conv_filters=[layer.filters for layer in stem],
                input_conv_kernel_sizes=[layer.kernel_size for layer in stem],
                stackwise_num_filters=list(config.stage_filters),
                stackwise_num_blocks=list(config.stage_blocks),
                stackwise_num_strides=list(config.stage_strides),
                block_type=block_type,
                use_pre_activation=preact,
            )
    return None


def defines(spec) -> bool:
    """Whether keras-hub's ResNetBackbone builds ``spec``'s network (at any widths, depths and class count)."""
    return arguments(spec) is not None


def why_not(spec) -> str:
    """What keras-hub lacks for ``spec`` (export's refusal)."""
    config = _config(spec)
    if config is not None and config.stage_filters[0] != FIRST_STACK:
        return (
            f": ResNetBackbone takes {FIRST_STACK} filters in its first stack only, {spec.name} has "
            f"{config.stage_filters[0]}"
        )
    return ""


def _backbone(spec):
    return package().models.ResNetBackbone(**arguments(spec))


def _with_dtype(config, dtype: str):
    """A Keras config with every layer's dtype policy set to ``dtype``."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return {**config, "config": {**config.get("config", {}), "name": dtype}}
        return {k: _with_dtype(v, dtype) for k, v in config.items()}
    if isinstance(config, list):
        return [_with_dtype(v, dtype) for v in config]
    return config


def in_dtype(net, dtype: str):
    """``net`` rebuilt by keras-hub's own classes from its config, every layer computing and holding its
    variables in ``dtype`` (``--check``'s float64), the weights copied; ``net`` itself where it already does."""
    import numpy as np

    if net.dtype_policy.name == dtype:
        return net
    copy = type(net).from_config(_with_dtype(net.get_config(), dtype))
    copy.set_weights([np.asarray(w).astype(dtype) for w in net.get_weights()])
    return copy


def load(path: Path, kind: str, workdir: Path, dtype: str | None = None):
    """The keras-hub model a file or preset folder holds, loaded by keras-hub (in ``dtype``, where given)."""
    net = _load(path, kind, workdir)
    return in_dtype(net, dtype) if dtype else net


def _load(path: Path, kind: str, workdir: Path):
    import keras

    keras_hub = package()
    try:
        if kind == "keras":
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        if kind == "keras-hub-preset":
            task = (path / "task.json").is_file()
            return (keras_hub.models.ImageClassifier if task else keras_hub.models.Backbone).from_preset(str(path))
    except PortError:
        raise
    except Exception as e:
        from resnet_port import cli

        raise PortError(f"{path}: keras-hub cannot load it ({cli.reason(e)})") from None
    # a bare .weights.h5: the keras-hub ImageNet ResNet (as its presets and timm converter build them) whose
    # layout it has; only those with its number of convolution kernels are built
    from resnet_port.spec import get_spec

    layout = h5_layout(path)
    heads = {shape[-1] for name, shape in layout.items() if len(shape) == 2}
    kernels = sum(len(shape) == 4 for shape in layout.values())
    for arch in MODELS:
        spec = get_spec(arch)
        if len(spec.convolutions()) != kernels:
            continue
        backbone = _backbone(spec)
        for net in [keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=n) for n in heads] + [
            backbone
        ]:
            if weights_layout(net, workdir) == layout:
                net.load_weights(path)
                return net
    raise PortError(
        f"{path}: a keras-hub weights file, but not of keras-hub's {', '.join(MODELS.values())} (ResNetBackbone "
        "of 64-512 wide stages) with or without a classifier head; save the model "
        "(.keras) or its preset folder instead, which say its configuration"
    )


def backbone(net):
    return getattr(net, "backbone", None) or net


def read(net, label: str) -> list[tuple[str, str, dict]]:
    """(layer name, kind, params) of every layer with weights: the backbone's and the classifier's head."""
    body = backbone(net)
    if net is body:
        raise PortError(
            f"{label} is a keras-hub ResNetBackbone without a classification head; wrap it in keras_hub.models.ResNetImageClassifier(backbone, num_classes=N) (with its trained head) and save that"
        )
    return keras_weighted_layers(list(body.layers) + [l for l in net.layers if l is not body], label)


def write(ours, spec, out: str) -> None:
    """keras-hub's ResNetImageClassifier of ``spec`` with the weights of ``ours`` (tf_impl's model of it):
    ``OUT.keras`` and the preset folder ``OUT-preset/``."""
    keras_hub = package()
    body = _backbone(spec)
    net = keras_hub.models.ResNetImageClassifier(backbone=body, num_classes=spec.num_classes)
    for layer in spec.parameter_layers():
        name = VOCABULARY.native_name(layer.name)
        target = net.get_layer(name) if name == "predictions" else body.get_layer(name)
        target.set_weights(ours.get_layer(layer.name).get_weights())
    net.save(f"{out}.keras")
    net.save_to_preset(f"{out}-preset")


def reload(path: str, meta: dict) -> list[tuple[str, object]]:
    """Both forms export wrote, loaded by Keras and keras-hub alone: (prefix of the results, model)."""
    import keras
    import keras_hub

    return [
        ("", keras.saving.load_model(path + ".keras")),
        ("preset/", keras_hub.models.ImageClassifier.from_preset(path + "-preset")),
    ]
