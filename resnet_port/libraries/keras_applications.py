"""keras.applications' ResNets (``keras.applications.ResNet50/101/152``, v1): ``.keras`` and
``.weights.h5`` files as Keras writes them, and the V2 (pre-activation) ``ResNet50V2/101V2/152V2``.

Read: a ``.keras`` file is recognised by its config's layer names (``conv2_block1_1_conv``) and loaded
by Keras (``safe_mode=True``: the config only, no code); a bare ``.weights.h5`` goes into the
``ResNet50/101/152(weights=None, classes=N)`` whose weight layout it has.  Every layer is placed by
:data:`VOCABULARY` (blocks ``conv{stage}_block{b}``, counted from 2 and 1; ``_0_`` the projection).
``--check`` runs Keras' own model, its classifier's softmax taken off (the port computes logits).
The V2 models' blocks start with ``preact_bn`` and end in ``post_bn`` (:data:`VOCABULARY`).

Export writes ``keras-applications.weights.h5``, the weights of ``keras.applications.ResNet50(weights=None,
classes=N)`` (101, 152 alike), reloaded by exactly that call, in a process where this project cannot be
imported; only keras.applications' own networks have it: a torchvision ResNet50 (v1.5) is refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .base import PortError, Vocabulary, h5_layout, keras_weighted_layers, weights_layout

NAME = "keras.applications"
FRAMEWORK = "tf"
FILE = "keras-applications.weights.h5"  # what export writes
FIXED_SIZE = True  # ResNet50(weights=None, classes=N) takes 224x224 images only (include_top)
MODELS = {
    "resnet50-keras": "ResNet50",
    "resnet101-keras": "ResNet101",
    "resnet152-keras": "ResNet152",
    "resnet50v2-keras": "ResNet50V2",
    "resnet101v2-keras": "ResNet101V2",
    "resnet152v2-keras": "ResNet152V2",
}
VOCABULARY = Vocabulary(
    NAME,
    "_",
    r"^conv(\d+)$",
    r"^block(\d+)$",
    shortcut=("0",),
    head=("predictions",),
    stem=("conv1",),
    left=("preact", "1", "2", "3"),  # V2's pre-activation BatchNorm first
    stage_offset=-1,
    block_offset=-1,
    conventions="keras-applications",
    block_output="_out",
    head_norm=("post_bn",),
    names=(
        ("stem.conv", "conv1_conv"),
        ("stem.bn", "conv1_bn"),
        ("head.bn", "post_bn"),
        ("block", "conv{stage}_block{block}"),
        ("bn0", "preact_bn"),
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
_MARKS = (b'"conv2_block1_1_conv"', b'"conv2_block1_preact_bn"')


def defines(spec) -> bool:
    from resnet_port.spec import split_name

    return split_name(spec.name)[0] in MODELS


#: what keras.applications' bottleneck ResNets are, beside torchvision's and timm's of the same depth
V1 = "v1 (the stride on the first 1x1, a bias on every convolution, BatchNorm epsilon 1.001e-5)"
V1_5 = "v1.5 (the stride on the 3x3, no conv biases, BatchNorm epsilon 1e-5)"


def why_not(spec) -> str:
    """Why a network of keras.applications' depth is not its (for export's refusal), or ''."""
    from resnet_port.spec import split_name

    base = split_name(spec.name)[0]
    twin = base.replace("-torch", "-keras")
    if base.endswith("-torch") and twin in MODELS:
        return f": {base} is {V1_5}, keras.applications' {MODELS[twin]} {V1}: the same shapes, another function"
    return ""


def holds(path: Path, kind: str) -> bool:
    """Whether a .keras file's config names keras.applications' ResNet layers, or a bare ``.weights.h5`` has the
    weight layout of one of its ResNets (at the file's class count)."""
    if kind in ("keras-weights", "h5"):
        return _weights_network(path) is not None
    if kind != "keras":
        return False
    try:
        with zipfile.ZipFile(path) as z:
            config = z.read("config.json") if "config.json" in z.namelist() else b""
    except (zipfile.BadZipFile, OSError):
        return False
    return any(mark in config for mark in _MARKS) and b'"keras_hub' not in config


_WEIGHTS_NETWORKS: dict = {}


def _weights_network(path: Path) -> tuple[str, int | None] | None:
    """(keras.applications function, classes) whose ``save_weights`` layout a bare weights file has, or None;
    classes None: the network without its classifier (``include_top=False``).

    Keras 3 names a functional model's layers by class in its weights file (``layers/conv2d_7/vars/0``), so the
    layout (every dataset's path and shape) is the network's; only the functions whose number of convolutions
    and biased 7x7 stem the file has are built, and each once."""
    import tempfile

    from resnet_port.spec import get_spec

    key = (str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
    if key in _WEIGHTS_NETWORKS:
        return _WEIGHTS_NETWORKS[key]
    try:
        layout = h5_layout(path)
    except OSError:
        return None
    found = None
    kernels = {name: shape for name, shape in layout.items() if len(shape) == 4}
    stem = [name for name, shape in kernels.items() if shape[:2] == (7, 7) and shape[3] == 64]
    biased = any(layout.get(name.rsplit("/", 1)[0] + "/1") == (64,) for name in stem)
    candidates = [a for a in MODELS if len(get_spec(a).convolutions()) == len(kernels)] if biased else []
    if candidates:
        import keras

        with tempfile.TemporaryDirectory(prefix="resnet-port-layout-") as tmp:
            heads = sorted({shape[-1] for shape in layout.values() if len(shape) == 2}) or [None]
            for arch in candidates:
                for classes in heads:
                    build = getattr(keras.applications, MODELS[arch])
                    net = (
                        build(weights=None, include_top=False)
                        if classes is None
                        else build(weights=None, classes=classes)
                    )
                    if weights_layout(net, tmp) == layout:
                        found = (MODELS[arch], classes)
                        break
                if found:
                    break
    _WEIGHTS_NETWORKS[key] = found
    return found


def load(path: Path, kind: str, workdir: Path | None = None):
    """The model a .keras file holds, loaded by Keras alone (its config as data: ``safe_mode``); a bare
    ``.weights.h5`` loaded into the keras.applications network whose layout it has."""
    import keras

    if kind in ("keras-weights", "h5"):
        found = _weights_network(path)
        if found is None:
            raise PortError(f"{path}: not the weights of keras.applications' {', '.join(MODELS.values())}")
        name, classes = found
        if classes is None:
            raise PortError(
                f"{path}: the weights of keras.applications' {name} without its classifier (include_top=False); this "
                "tool ports classifiers: save the model with its head (include_top=True, classes=N)"
            )
        return _with_weights(name, classes, path, workdir)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:
        from resnet_port import cli

        raise PortError(f"{path}: Keras cannot load it as keras.applications' ResNet ({cli.reason(e)})") from None


def read(net, label: str) -> list[tuple[str, str, dict]]:
    return keras_weighted_layers(net.layers, label)


def _weights_file(src: Path, workdir: Path | None) -> Path:
    """The Keras 3 weights file of ``src``, named so that ``load_weights`` reads it as one: a .keras file's
    ``model.weights.h5`` extracted into ``workdir``, a bare file as it is or (another suffix: Keras would read it
    as a Keras 2 .h5) linked there as ``model.weights.h5``."""
    src = Path(src)
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            z.extract("model.weights.h5", workdir)
        return Path(workdir) / "model.weights.h5"
    if src.name.endswith(".weights.h5") or workdir is None:
        return src
    target = Path(workdir) / "model.weights.h5"
    target.symlink_to(src.resolve())
    return target


def _with_weights(name: str, classes: int, src: Path, workdir: Path | None):
    """``keras.applications.<name>(weights=None, classes=classes)`` without its softmax (the port computes logits),
    the weights of ``src`` (a .keras file's or a bare weights file) loaded into it, in Keras' current dtype policy."""
    import keras

    net = getattr(keras.applications, name)(weights=None, classes=classes, classifier_activation=None)
    try:
        net.load_weights(_weights_file(src, workdir))
    except Exception as e:
        from resnet_port import cli

        raise PortError(f"{src}: its weights do not load into keras.applications.{name} ({cli.reason(e)})") from None
    return net


def model(spec, src: Path, workdir: Path):
    """The source as keras.applications runs it, for ``--check``: the library's own function builds the
    network (in Keras' current dtype policy: float64 where the check asks), without the classifier's
    softmax (the port computes logits), and the file's weights load into it."""
    from resnet_port.spec import split_name

    return _with_weights(MODELS[split_name(spec.name)[0]], spec.num_classes, src, workdir)


def write(ours, spec, out: str) -> None:
    """The weights of ``ours`` (tf_impl's model of ``spec``) in keras.applications' own network, saved as
    its ``.weights.h5`` (the layout ``model.load_weights`` reads)."""
    import keras

    from resnet_port.spec import split_name

    net = getattr(keras.applications, MODELS[split_name(spec.name)[0]])(weights=None, classes=spec.num_classes)
    for layer in spec.parameter_layers():
        net.get_layer(VOCABULARY.native_name(layer.name)).set_weights(ours.get_layer(layer.name).get_weights())
    net.save_weights(out)


def reload(path: str, meta: dict) -> list[tuple[str, object]]:
    """The file loaded into ``keras.applications.ResNetN(weights=None, classes=N)``, exactly as a user calls it;
    its classifier's softmax is then taken off (``predictions`` computes logits), since the check compares logits."""
    import keras

    net = getattr(keras.applications, MODELS[meta["arch"].split("@")[0]])(weights=None, classes=meta["classes"])
    net.load_weights(path)
    net.get_layer("predictions").activation = keras.activations.linear
    return [("", net)]
