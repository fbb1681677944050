"""keras-hub's ResNets (``ResNetBackbone`` + ``ResNetImageClassifier``): ``.keras``, ``.weights.h5`` and
preset folders in, ``keras-hub.keras`` and ``keras-hub-preset/`` out.

Read: keras-hub loads the file (a bare ``.weights.h5`` goes into the ResNet18/34 whose weight layout it
has), every layer with weights is listed (:func:`read`) and placed by :data:`VOCABULARY`.  ``--check``
runs keras-hub's model itself.  Export builds ``ResNetImageClassifier`` of the spec's widths and depths,
sets its layers from ``tf_impl``'s model, saves both forms, and reloads them with
``keras.saving.load_model`` and ``ImageClassifier.from_preset``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from .base import PortError, Vocabulary, keras_weighted_layers

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
    stem=("conv1",),
    left=("1", "2", "3"),
    stage_offset=1,
    block_output="_out",
    preactivation=("pre_activation", "post_bn"),
    names=(
        ("stem.conv", "conv1_conv"),
        ("stem.bn", "conv1_bn"),
        ("block", "stack{stage}_block{block}"),
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


#: the registered variants export writes as keras-hub's ResNetBackbone (basic blocks, the 7x7 stem)
MODELS = {"resnet18-torch": "ResNet18", "resnet34-torch": "ResNet34"}


def defines(spec) -> bool:
    from resnet_port.spec import split_name

    return split_name(spec.name)[0] in MODELS


def _weights_layout(net, workdir: Path) -> dict[str, tuple]:
    """{HDF5 dataset path: shape} of what ``net.save_weights`` writes."""
    import h5py

    target = workdir / f"layout_{id(net)}.weights.h5"
    net.save_weights(target)
    out = {}
    with h5py.File(target, "r") as h5:
        h5.visititems(lambda n, item: out.__setitem__(n, item.shape) if isinstance(item, h5py.Dataset) else None)
    target.unlink()
    return out


def _backbone_of(blocks, stem_filters=64, stem_kernel=7, filters=(64, 128, 256, 512), strides=(1, 2, 2, 2)):
    keras_hub = package()
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[stem_filters],
        input_conv_kernel_sizes=[stem_kernel],
        stackwise_num_filters=list(filters),
        stackwise_num_blocks=list(blocks),
        stackwise_num_strides=list(strides),
        block_type="basic_block",
        use_pre_activation=False,
    )


def load(path: Path, kind: str, workdir: Path):
    """The keras-hub model a file or preset folder holds, loaded by keras-hub."""
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
    # a bare .weights.h5: the keras-hub ResNet18/34 (as its timm converter builds them) whose layout it has
    import h5py

    with h5py.File(path, "r") as h5:
        layout = {}
        h5.visititems(lambda n, item: layout.__setitem__(n, item.shape) if isinstance(item, h5py.Dataset) else None)
    heads = {shape[-1] for name, shape in layout.items() if len(shape) == 2}
    for blocks in ([2, 2, 2, 2], [3, 4, 6, 3]):
        backbone = _backbone_of(blocks)
        for net in [keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=n) for n in heads] + [
            backbone
        ]:
            if _weights_layout(net, workdir) == layout:
                net.load_weights(path)
                return net
    raise PortError(
        f"{path}: a keras-hub weights file, but not of a keras-hub ResNet18/34 (ResNetBackbone of basic blocks, 64-512 filters, 7x7 stem) with or without a classifier head"
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
    starts = [b for b in spec.blocks if b.name.endswith(".0")]
    body = _backbone_of(
        spec.stage_blocks,
        spec.layer("stem.conv").filters,
        spec.layer("stem.conv").kernel_size,
        [b.out_channels for b in starts],
        [b.stride for b in starts],
    )
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
