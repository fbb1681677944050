"""The Keras side of ``python -m resnet_port.port`` and ``resnet_port.export``: reading Keras files, running them, exporting.

Readers report every layer with weights as a ``resnet_port.porting.Found``; the
structural mapping to the spec's names is ``resnet_port.porting``'s.  None of
this needs the user's classes or ``tf-keras``:

* a Keras 2 SavedModel is read from the checkpoint inside it
  (``variables/variables``) with TensorFlow's checkpoint reader, following the
  object graph stored in that checkpoint from the model down (``pre``,
  ``layer2/layer-0/left/layer-3/kernel``, ...); optimizer slots and metrics are
  never visited;
* Keras 3 ``.keras`` / ``.weights.h5`` files are HDF5 trees of the same
  structure (``layer2/layers/basic_block_1/left/layers/conv2d_1/vars/0``);
* a Keras 2 ``.h5`` from ``save_weights`` lists each top-level layer's weights
  in Keras 2's order (a layer's trainable weights, depth first, then its moving
  statistics); its blocks are told apart by shape (a block is conv, BN, conv,
  BN, and a 1x1 conv and BN when it has a projection).

keras-hub's ResNets (``ResNetImageClassifier`` around a ``ResNetBackbone``) are read
through keras-hub itself, which must be installed to read its files: a ``.keras``
file with Keras' loader (``safe_mode``: no lambdas, only classes keras-hub
registers), a preset folder with ``from_preset``, a bare ``.weights.h5`` into the
keras-hub ResNet18/34 whose saved layout and shapes it matches.  Their layers,
named in keras-hub's vocabulary (``stack1_block0_0_conv``), are placed by
``resnet_port.porting.place_all``.

To *run* a source as it is (``--check``), a SavedModel is restored with
``tf.saved_model.load`` from a copy of its ``saved_model.pb`` without the
legacy optimizer's slot references (restoring those needs Keras 2's optimizer
class, which fails with "'_UserObject' object has no attribute 'add_slot'"), and
called through its saved serving signature; a Keras file of the post's model is
loaded by Keras' own loader into ``tf_impl.seed_model``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from resnet_port import cli, frameworks, porting
from resnet_port.libraries import keras_applications, keras_hub, post
from resnet_port.libraries.post import HEAD_NAMES, STAGE_PATTERN, STEM_NAMES, block_part
from resnet_port.porting import PARAMS, Found, PortError, kind_of

_VAR_NAMES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


# -- Keras 2 SavedModel ----------------------------------------------------------------------


def read_savedmodel(path: Path) -> list[Found]:
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    index = path / "variables" / "variables.index"
    if not index.is_file():
        raise PortError(f"{path} has a saved_model.pb but no variables/variables.index: the SavedModel is incomplete")
    try:
        reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except Exception as e:  # a damaged checkpoint: name it, no traceback
        raise PortError(f"{path}: its checkpoint (variables/) cannot be read ({cli.reason(e)})") from None

    def children(i: int) -> dict[str, int]:
        return {c.local_name: c.node_id for c in graph.nodes[i].children}

    def value(node: int, native: str) -> np.ndarray:
        attrs = [a for a in graph.nodes[node].attributes if a.name == "VARIABLE_VALUE"]
        if not attrs:
            raise PortError(f"{path}: {native} is not a variable in the checkpoint's object graph")
        try:
            return reader.get_tensor(attrs[0].checkpoint_key)
        except Exception:
            raise PortError(
                f"{path}: the checkpoint lacks {native} (key {attrs[0].checkpoint_key}); the SavedModel is incomplete"
            ) from None

    def layer(node: int, native: str, role: tuple, order: int) -> Found | None:
        ch = children(node)
        params = {p: value(ch[p], f"{native}/{p}") for p in _VAR_NAMES if p in ch}
        kind = kind_of(params)
        return Found(native, kind, params, role, order) if kind else None

    def sequential(node: int) -> list[tuple[int, int]]:
        ch = children(node)
        out, i = [], 0
        while f"layer-{i}" in ch:
            out.append((i, ch[f"layer-{i}"]))
            i += 1
        return out

    found: list[Found] = []
    root = children(0)
    for name, node in root.items():
        if name in STEM_NAMES:
            found += [f for i, n in sequential(node) if (f := layer(n, f"{name}/layer-{i}", ("stem",), i))]
        elif m := STAGE_PATTERN.match(name):
            for b, block in sequential(node):
                for part_name, part_node in children(block).items():
                    part = block_part(part_name)
                    if part:
                        role = ("block", int(m.group(1)), b, part)
                        found += [
                            f
                            for i, n in sequential(part_node)
                            if (f := layer(n, f"{name}/layer-{b}/{part_name}/layer-{i}", role, i))
                        ]
        elif name in HEAD_NAMES:
            if f := layer(node, name, ("fc",), 0):
                found.append(f)
    if not found:
        shown = ", ".join(
            n
            for n in root
            if not n.startswith(("_", "keras_api", "variables", "trainable", "non_trainable", "regularization"))
        )
        raise PortError(
            f"{path} is a SavedModel, but not of the post's ResNet: its model has no 'pre', 'layer1'... or 'fc' (it has: {shown})"
        )
    return found


def _strip_optimizer_slots(path: Path, into: Path) -> Path:
    """A copy of the SavedModel whose object graph no longer points the optimizer at slot variables."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    for graph in sm.meta_graphs:
        for node in graph.object_graph_def.nodes:
            del node.slot_variables[:]
    into.mkdir(parents=True, exist_ok=True)
    (into / "saved_model.pb").write_bytes(sm.SerializeToString())
    for sub in ("variables", "assets"):
        if (path / sub).exists():
            os.symlink((path / sub).resolve(), into / sub)
    return into


def load_savedmodel(path: Path, workdir: Path):
    """The SavedModel restored with its functions (no Keras 2, no user classes)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the skipped optimizer values are reported one by one otherwise
    return tf.saved_model.load(str(_strip_optimizer_slots(path, workdir / "restorable")))


def serving_logits(loaded, x: np.ndarray) -> np.ndarray:
    """The SavedModel's own saved serving function on ``x``."""
    import tensorflow as tf

    fn = loaded.signatures["serving_default"]
    (name,) = fn.structured_input_signature[1]
    outputs = fn(**{name: tf.constant(x)})
    return np.asarray(next(iter(outputs.values())))


# -- Keras HDF5 files ------------------------------------------------------------------------------


def _suffix(name: str) -> int:
    """The order Keras gave same-class siblings: conv2d -> 0, conv2d_1 -> 1, ..."""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise PortError(f"{path} cannot be read as HDF5 (truncated or damaged: {cli.reason(e)})") from None


def _keras3_layers(group, native: str):
    """(path components without Keras' 'layers'/'vars' levels, variables) of every layer group under ``group``."""
    import h5py

    for name, item in group.items():
        if not isinstance(item, h5py.Group) or name == "optimizer":
            continue
        if name == "vars":
            arrays = [np.asarray(item[k]) for k in sorted(item, key=int)]
            if arrays:
                yield native, arrays
            continue
        yield from _keras3_layers(item, native if name == "layers" else f"{native}/{name}".strip("/"))


#: Keras 3 (3.15) stores a functional model's layers by class, in the model's layer order
#: (``layers/conv2d``, ``layers/conv2d_1``, ..., ``layers/batch_normalization``, ...), not by name
_KERAS3_FLAT = re.compile(r"^(conv2d|batch_normalization|unbiased_batch_normalization|dense)(_\d+)?$")
_KERAS3_CLASS_NAME = {
    "Conv2D": "conv2d",
    "BatchNormalization": "batch_normalization",
    "Dense": "dense",
    "UnbiasedBatchNormalization": "unbiased_batch_normalization",
}


def keras3_storage_names(model) -> dict[str, str]:
    """{HDF5 group name Keras 3 gives a layer of ``model``: that layer's name}, for the layers with weights.

    Keras' saver names each layer after its class in snake case, numbered in the
    model's layer order (``saving_lib._save_container_state``); this is that rule.
    """
    used: dict[str, int] = {}
    out = {}
    for layer in model.layers:
        base = _KERAS3_CLASS_NAME.get(
            type(layer).__name__, re.sub(r"(?<!^)(?=[A-Z])", "_", type(layer).__name__).lower()
        )
        n = used.get(base)
        used[base] = 0 if n is None else n + 1
        stored = base if n is None else f"{base}_{n + 1}"
        if layer.weights:
            out[stored] = layer.name
    return out


def _own_flat(layers: list, label: str, config: dict | None = None) -> tuple[list[Found], dict]:
    """A Keras 3 file of ``tf_impl``'s model whose groups are named by class: the architectures whose
    model stores exactly these groups with exactly these shapes give every group its spec name.

    Variants of both conventions can store the same groups (``tiny-cifar`` and
    ``tiny-cifar-torch`` built with Keras' own BatchNormalization, as ``export``
    writes them): a ``.keras`` file's config settles it (its BatchNorm epsilon);
    otherwise the facts say the file leaves it open.
    """
    from resnet_port.spec import available, get_spec

    from .model import build_model

    by_group = {native: (kind, params) for native, kind, params in layers}
    kinds = sorted(kind for _, kind, _ in layers)
    fits, naming = [], None
    for arch in available():
        spec = get_spec(arch)
        if sorted(layer.kind for layer in spec.parameter_layers()) != kinds:
            continue
        expected = spec.parameters()
        for plain in (False, True) if spec.conventions.bn_unbiased_variance else (False,):
            names = keras3_storage_names(build_model(spec, plain_batchnorm=plain))
            if set(names) != set(by_group):
                continue
            if all(
                tuple(a.shape) == tuple(expected[f"{names[g]}.{p}"])
                for g, (_, params) in by_group.items()
                for p, a in params.items()
                if f"{names[g]}.{p}" in expected
            ):
                fits.append(spec)
                naming = naming or names
    if not fits:
        pointwise = sum(
            1
            for _, kind, params in layers
            if kind == "conv2d" and "kernel" in params and tuple(params["kernel"].shape[:2]) == (1, 1)
        )
        bns, convs = kinds.count("batchnorm"), kinds.count("conv2d")
        if pointwise > 8:  # ResNet18/34 have at most one 1x1 (the projection) per stage
            what = (
                "pre-activation " if bns != convs else ""
            )  # v1 follows every convolution with a BatchNorm; v2 not its shortcuts
            raise PortError(
                f"{label}: a Keras 3 model whose blocks hold 1x1 convolutions ({pointwise} of its {convs}): {what}bottleneck blocks, "
                "but not the layers and shapes of any registered variant, nor keras.applications' ResNet50/101/152 (V2) with "
                "its classifier; save the whole model (.keras), whose config names its layers"
            )
        raise PortError(
            f"{label}: a Keras 3 model of {len(layers)} layers with weights stored by class (conv2d, batch_normalization, dense), but not with the layers and shapes of any architecture here ({', '.join(available())})"
        )
    facts = {}
    conventions = {porting.conventions_of(s) for s in fits}
    if len(conventions) > 1 and config is not None:
        epsilon = _config_epsilon(config, "stem.bn")
        if epsilon is not None:
            conventions = {"pytorch" if abs(epsilon - 1e-5) < 1e-9 else "keras"}
    if len(conventions) == 1:
        facts["conventions"] = conventions.pop()
    return [
        Found(f"{label}:layers/{g}", kind, params, layer=naming[g]) for g, (kind, params) in by_group.items()
    ], facts


def _config_epsilon(config: dict, layer: str) -> float | None:
    """The epsilon a .keras config gives the layer named ``layer``, if it is there."""
    for item in config.get("config", {}).get("layers", []):
        if item.get("name") == layer or item.get("config", {}).get("name") == layer:
            return item.get("config", {}).get("epsilon")
    return None


def read_keras3_h5(h5, label: str, config: dict | None = None) -> tuple[list[Found], str, dict]:
    """(layers, structure, facts) of a Keras 3 weights tree: this project's model (layers named by the spec) or the post's."""
    found = []
    layers = []
    for native, arrays in _keras3_layers(h5, ""):
        kind = (
            "dense"
            if len(arrays) == 2 and arrays[0].ndim == 2
            else "conv2d"
            if arrays[0].ndim == 4
            else "batchnorm"
            if len(arrays) == 4
            else None
        )
        if kind is not None:
            layers.append((native, kind, dict(zip(PARAMS[kind], arrays))))
    if any(native == "stem.conv" for native, _, _ in layers):  # tf_impl's model: the names are the spec's
        return [Found(f"{label}:{native}", kind, params, layer=native) for native, kind, params in layers], "own", {}
    if layers and all(_KERAS3_FLAT.match(native) for native, _, _ in layers):  # tf_impl's model as Keras 3.15 names it
        found, facts = _own_flat(layers, label, config)
        return found, "own", facts
    for native, kind, params in layers:
        parts = native.split("/")
        role = None
        if parts[0] in STEM_NAMES or (len(parts) == 2 and re.match(r"^sequential(_\d+)?$", parts[0])):
            role = (
                "stem",
            )  # Keras 3 stores the post's `pre` under the model's layer list when it meets it there first
        elif (m := STAGE_PATTERN.match(parts[0])) and len(parts) == 4:
            part = block_part(parts[2])
            role = ("block", int(m.group(1)), _suffix(parts[1]), part) if part else None
        elif parts[0] in HEAD_NAMES and kind == "dense":
            role = ("fc",)
        if role is None:
            raise PortError(
                f"{label}: cannot place layer {native} in the post's structure (pre, layer1.., fc) or this project's names"
            )
        found.append(Found(f"{label}:{native}", kind, params, role, _suffix(parts[-1])))
    if not found:
        raise PortError(f"{label} holds no layer weights in Keras 3's format")
    return found, "post", {"conventions": "keras"}


def read_keras2_h5(h5, label: str) -> tuple[list[Found], str]:
    """Layers of a Keras 2 ``save_weights`` file (see the module docstring)."""
    g = h5["model_weights"] if "model_weights" in h5 else h5
    if "layer_names" not in g.attrs:
        raise PortError(f"{label} is an HDF5 file but not Keras weights (no layer_names)")
    decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    found: list[Found] = []
    names = [decode(n) for n in g.attrs["layer_names"]]
    own = "stem.conv" in names
    stage = 0
    for name in names:
        weights = [(decode(w), np.asarray(g[name][decode(w)])) for w in g[name].attrs.get("weight_names", [])]
        units: dict[str, dict] = {}
        for wname, a in weights:  # "conv2d_5/kernel:0" -> unit conv2d_5, variable kernel
            unit, var = wname.rsplit("/", 1)
            units.setdefault(unit, {})[var.split(":")[0]] = a
        if not units:
            continue
        layers = [(unit, kind_of(p), p) for unit, p in units.items()]
        if own:
            found += [Found(f"{label}:{name}/{unit}", kind, p, layer=name) for unit, kind, p in layers if kind]
        elif len(layers) == 1 and layers[0][1] == "dense":
            found.append(Found(f"{label}:{name}/{layers[0][0]}", "dense", layers[0][2], ("fc",)))
        elif len(layers) == 2 and stage == 0:
            found += [
                Found(f"{label}:{name}/{unit}", kind, p, ("stem",), i) for i, (unit, kind, p) in enumerate(layers)
            ]
        else:
            stage += 1
            found += _blocks_by_shape(layers, stage, f"{label}:{name}")
    if not found:
        raise PortError(f"{label} holds no layer weights")
    return found, "own" if own else "post"


def _blocks_by_shape(layers: list, stage: int, native: str) -> list[Found]:
    """A stage's layers in Keras 2 order, split into blocks: conv, BN, conv, BN [, 1x1 conv, BN]."""
    out, i, block = [], 0, 0
    kinds = [k for _, k, _ in layers]
    while i < len(layers):
        if kinds[i : i + 4] != ["conv2d", "batchnorm", "conv2d", "batchnorm"]:
            raise PortError(
                f"{native}: expected a block (conv, BN, conv, BN) at {layers[i][0]}, found {kinds[i : i + 4]}; this is not the post's ResNet"
            )
        for j in range(4):
            unit, kind, p = layers[i + j]
            out.append(Found(f"{native}/{unit}", kind, p, ("block", stage, block, "left"), j))
        i += 4
        if (
            i + 1 < len(layers)
            and kinds[i : i + 2] == ["conv2d", "batchnorm"]
            and layers[i][2]["kernel"].shape[:2] == (1, 1)
        ):
            for j in range(2):
                unit, kind, p = layers[i + j]
                out.append(Found(f"{native}/{unit}", kind, p, ("block", stage, block, "shortcut"), j))
            i += 2
        block += 1
    return out


def read_keras_file(path: Path, kind: str) -> tuple[list[Found], str, dict, str]:
    """(layers, structure 'own'|'post', facts, the refined kind) of a .keras, .weights.h5 or Keras 2 .h5 file."""
    if kind == "keras":
        try:
            with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
                if "model.weights.h5" not in z.namelist():
                    raise PortError(f"{path} is a zip archive without model.weights.h5: not a .keras model")
                try:
                    config = json.loads(z.read("config.json"))
                except (KeyError, ValueError):
                    config = None
                z.extract("model.weights.h5", tmp)
                with _h5(Path(tmp) / "model.weights.h5") as h5:
                    return (*read_keras3_h5(h5, path.name, config), kind)
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise PortError(f"{path} cannot be read as a .keras archive (truncated or damaged: {e})") from None
    with _h5(path) as h5:
        legacy = "layer_names" in h5.attrs or "model_weights" in h5
        if legacy:
            return (*read_keras2_h5(h5, path.name), {"conventions": "keras"}, "keras2-h5")
        return (*read_keras3_h5(h5, path.name), "keras-weights")


# -- worker operations ------------------------------------------------------------------------------


def op_read_source(op: dict) -> None:
    """``{src, kind, out}``: the source's layers (``resnet_port.porting.write_found``), or its error."""
    out, src, kind = Path(op["out"]), Path(op["src"]), op["kind"]
    try:
        if kind == "savedmodel":
            found, structure = read_savedmodel(src), "post"
        elif library := next((lib for lib in (keras_hub, keras_applications) if lib.holds(src, kind)), None):
            with tempfile.TemporaryDirectory(prefix="resnet-port-library-") as tmp:
                layers = library.read(library.load(src, kind, Path(tmp)), src.name)
            found, vocab = porting.place_all(layers, str(src), [library.VOCABULARY])
            kind = "keras-weights" if kind == "h5" else kind
            porting.write_found(
                found,
                out,
                {"kind": kind, "structure": "library", "library": vocab.library, "conventions": vocab.conventions},
            )
            return
        else:
            found, structure, facts, kind = read_keras_file(src, kind)
            porting.write_found(found, out, {"kind": kind, "structure": structure, **facts})
            return
        porting.write_found(found, out, {"kind": kind, "structure": structure, "conventions": "keras"})
    except PortError as e:
        out.with_suffix(".json").write_text(json.dumps({"error": str(e)}))


def _source_model(op: dict, workdir: Path):
    """(callable for logits, function for every layer's outputs) of the source as it is."""
    from resnet_port.spec import get_spec

    from . import seed_model
    from .model import build_model, intermediate_model

    spec = get_spec(op["arch"])
    src, kind = Path(op["src"]), op["kind"]
    if op.get("dtype", "float32") != "float32":
        if not porting.runs_in_float64(frameworks.KERAS.key, op["kind"], op.get("structure"), op.get("library")):
            raise PortError(f"{src}: this source runs in float32 only")
        import keras

        keras.config.set_dtype_policy(op["dtype"])  # every layer built below computes and keeps variables in it
    if op.get("structure") == "library":  # keras-hub's or keras.applications' model, loaded by its library
        import keras

        if op.get("library") == keras_applications.NAME:
            model = keras_applications.model(spec, src, workdir)
        else:
            model = keras_hub.load(src, kind, workdir, op.get("dtype", "float32"))
        backbone = keras_hub.backbone(model)
        names = {c: n for c, n in op["layers"].items() if n in {l.name for l in backbone.layers}}
        probe = keras.Model(backbone.inputs, {c: backbone.get_layer(n).output for c, n in names.items()})

        def logits(x, training):
            return np.asarray(model(x, training=training))

        logits.library_class = f"{type(model).__module__.split('.')[0]}.{type(model).__name__}"
        return logits, (lambda x, training: probe(x, training=training))
    if kind == "savedmodel":
        loaded = load_savedmodel(src, workdir)

        def logits(x, training):
            return serving_logits(loaded, x) if not training else np.asarray(loaded(x, training=True))

        return logits, lambda x, training: seed_model.layer_outputs(loaded, x, training, len(spec.stage_blocks))
    if kind == "run":
        from . import weights

        model = build_model(spec, input_shape=(None, None, spec.input_shape[-1]))
        from resnet_port import rundir

        arrays, _ = rundir.read_npz_checkpoint(src / "checkpoint.npz")
        weights.from_numpy(model, spec, {k[6:]: a for k, a in arrays.items() if k.startswith("model/")}, str(src))
    elif op["structure"] == "own":
        import keras

        if kind == "keras" and op.get("dtype", "float32") != "float32":  # the file's weights in tf_impl's float64 model
            model = build_model(spec)
            with zipfile.ZipFile(src) as z:
                z.extract("model.weights.h5", workdir)
            model.load_weights(workdir / "model.weights.h5")
        else:
            model = keras.models.load_model(src, compile=False) if kind == "keras" else build_model(spec)
            if kind != "keras":
                model.load_weights(src)
    else:  # the post's model: Keras' own loader, into the post's classes
        model = post.model(spec)
        if kind == "keras":
            with zipfile.ZipFile(src) as z:
                z.extract("model.weights.h5", workdir)
            model.load_weights(workdir / "model.weights.h5")
        else:
            model.load_weights(src)
        return (lambda x, training: np.asarray(model(x, training=training))), (
            lambda x, training: seed_model.layer_outputs(model, x, training, len(spec.stage_blocks))
        )
    probe = intermediate_model(model, spec)
    return (lambda x, training: np.asarray(model(x, training=training))), (
        lambda x, training: probe(x, training=training)
    )


def op_run_source(op: dict) -> None:
    """``{src, kind, structure, arch, inputs, out}``: the source's logits and layer outputs, inference and training mode.

    Inference first: training-mode calls move the moving statistics, which
    training-mode outputs do not depend on.
    """
    x = np.load(op["inputs"]).astype(op.get("dtype", "float32"))
    with tempfile.TemporaryDirectory(prefix="resnet-port-source-") as tmp:
        try:
            logits, layers = _source_model(op, Path(tmp))
        except PortError as e:
            Path(op["out"]).with_suffix(".json").write_text(json.dumps({"error": str(e)}))
            return
        out = {}
        for mode in ("eval", "train"):
            training = mode == "train"
            out[f"{mode}/logits"] = logits(x, training)
            out.update({f"{mode}/{k}": np.asarray(v) for k, v in layers(x, training).items()})
        if hasattr(logits, "library_class"):
            out["library_class"] = np.array(logits.library_class)
        np.savez(op["out"], **out)


def _export_model(w, op: dict):
    """tf_impl's model of a neutral file with Keras' own layers only, taking any height and width
    (``op['size']`` None) or ``size`` x ``size`` images."""
    from resnet_port.spec import get_spec

    from .model import build_model

    spec = get_spec(w.arch)
    size = op.get("size")
    return build_model(spec, input_shape=(size, size, spec.input_shape[-1]), plain_batchnorm=True)


def op_export_keras(op: dict) -> None:
    """``{weights, out, size}``: a plain .keras model (standard layers only) of a neutral weights file,
    taking any image size (``size`` None: Keras computes TF's 'same' pads per input) or ``size``."""
    from resnet_port import weights as neutral

    from . import weights

    w = neutral.load(op["weights"])
    model = _export_model(w, op)  # Keras' own layers only: it loads anywhere (equal in inference)
    weights.from_numpy(model, w.arch, w.tensors, op["weights"])
    model.save(op["out"])


def op_export_onnx(op: dict) -> None:
    """``{weights, out, size}``: ONNX from Keras' own exporter (tf2onnx), batch dimension dynamic (height
    and width too when ``size`` is None)."""
    from resnet_port import weights as neutral

    from . import weights

    w = neutral.load(op["weights"])
    model = _export_model(w, op)
    weights.from_numpy(model, w.arch, w.tensors, op["weights"])
    size = op.get("size") or 64
    model(
        np.zeros((1, size, size, model.input_shape[-1]), np.float32), training=False
    )  # Keras exports a model that has been called
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"
        model.export(str(target), format="onnx", verbose=False)
        shutil.move(target, op["out"])


def op_export_native(op: dict) -> None:
    """``{weights, library, out}``: a Keras library's own files (keras-hub's ``OUT.keras`` and ``OUT-preset/``)."""
    from resnet_port import libraries
    from resnet_port import weights as neutral
    from resnet_port.spec import get_spec

    from . import weights
    from .model import build_model

    w = neutral.load(op["weights"])
    spec = get_spec(w.arch)
    ours = build_model(spec)
    weights.from_numpy(ours, spec, w.tensors, op["weights"])
    libraries.get(op["library"]).write(ours, spec, op["out"])
