"""Reading models people already have: what a source is, and how its variables get the spec's names.

A source is read in its own framework's process (``tf_impl.port``,
``torch_impl.port``), which reports every layer with weights it found as a
:class:`Found`: its *native* path (how the source names it), and either

* a *role* in the post's structure, read off the object paths:
  ``("stem",)``, ``("block", stage, block, "left" | "shortcut")`` or ``("fc",)``,
  with the layer's position inside that part; or
* the canonical layer name itself, for this project's own models, whose layers
  already carry the spec's names.

:func:`canonical_tensors` turns roles into names by one structural rule (the
i-th convolution of a block's left branch is ``conv{i+1}``, its shortcut's
convolution ``shortcut.conv``, and so on), not by a table per key;
:func:`resolve_arch` recognises the architecture from the tensors (blocks per
stage, widths, biases) or checks the one asked for, naming the first variable
that does not fit.  Nothing here imports a framework.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import frameworks, libraries, rundir
from .libraries import PortError, Vocabulary
from .spec import ResNetSpec, available, get_spec, shortcut_pools, split_name

#: source kinds: what the CLI says, the framework that runs the source
KINDS = {
    "savedmodel": ("Keras 2 SavedModel", frameworks.KERAS),
    "keras": ("Keras 3 .keras model", frameworks.KERAS),
    "keras-weights": ("Keras 3 .weights.h5", frameworks.KERAS),
    "keras2-h5": ("Keras 2 .h5 weights", frameworks.KERAS),
    "h5": ("HDF5 weights file", frameworks.KERAS),  # refined by the reader into keras-weights or keras2-h5
    "torch": ("PyTorch state_dict", frameworks.PYTORCH),
    "hf-folder": ("Hugging Face folder (timm)", frameworks.PYTORCH),
    "keras-hub-preset": ("keras-hub preset folder", frameworks.KERAS),
    "run": ("run directory checkpoint", None),  # the run's own framework
}
#: every library's vocabulary (resnet_port.libraries: one module per library), in the order tried
VOCABULARIES = libraries.vocabularies()
vocabulary = libraries.vocabulary


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def place(native: str, vocab: Vocabulary) -> tuple[tuple, tuple] | None:
    """(role, order key) of a layer named ``native`` in ``vocab``'s library, or None where it has no place."""
    native = vocab.placed_name(native)
    parts = native.split(vocab.separator)
    if (m := re.match(vocab.stage, parts[0])) and len(parts) >= 3 and (b := re.match(vocab.block, parts[1])):
        stage, block, rest = int(m.group(1)) + vocab.stage_offset, int(b.group(1)) + vocab.block_offset, parts[2:]
        if rest[0] in vocab.shortcut and len(rest) > 1:
            return ("block", stage, block, "shortcut"), _natural(vocab.separator.join(rest[1:]))
        if vocab.left and rest[0] in vocab.left and len(rest) > 1:
            return ("block", stage, block, "left"), (
                vocab.left.index(rest[0]),
                *_natural(vocab.separator.join(rest[1:])),
            )
        if not vocab.left and len(rest) == 1:
            return ("block", stage, block, "left"), _natural(rest[0])
        return None
    if parts[0] in vocab.head and len(parts) == 1:
        return ("fc",), ()
    if native in vocab.head_norm:
        return ("head",), ()
    if parts[0] in vocab.stem and len(parts) <= 2:
        return ("stem",), (vocab.stem.index(parts[0]), *_natural(vocab.separator.join(parts[1:])))
    return None


def place_all(
    layers: list[tuple[str, str, dict]], source: str, vocabularies=VOCABULARIES
) -> tuple[list["Found"], Vocabulary]:
    """Every ``(native name, kind, params)`` placed by the first vocabulary that places them all.

    The error names the layer that no library's vocabulary places, with the
    vocabulary that placed the most.
    """
    best = None
    for vocab in vocabularies:
        placed, missed = [], []
        for native, kind, params in layers:
            where = place(native, vocab)
            (missed if where is None else placed).append((native, kind, params, where))
        if not missed:
            orders: dict[tuple, list] = {}
            for native, kind, _params, (role, key) in placed:
                orders.setdefault((role, kind), []).append((key, native))
            rank = {native: i for members in orders.values() for i, (_, native) in enumerate(sorted(members))}
            found = [Found(native, kind, params, role, rank[native]) for native, kind, params, (role, _) in placed]
            return found, vocab
        if best is None or len(missed) < len(best[1]):
            best = (vocab, missed)
    vocab, missed = best
    other = other_family([native for native, _, _ in layers])
    if other:
        raise PortError(
            f"{source} is {other}; this tool ports ResNets of basic and bottleneck blocks (ResNet18-152, wide, ResNeXt)"
        )
    known = ", ".join(v.library for v in vocabularies)
    raise PortError(
        f"{source}: cannot place {missed[0][0]} ({missed[0][1]}) in a ResNet's stem, stages, blocks or head, in the names of any library "
        f"this tool reads ({known}); closest: {vocab.library}, which places all but {len(missed)} of {len(layers)} layers"
    )


#: networks of the ResNet family's wider circle, known by the modules their blocks add
OTHER_FAMILIES = (
    (
        re.compile(r"(^|[._])(se|se_module|squeeze|excite)([._]|$)"),
        "a squeeze-and-excitation ResNet (SE-ResNet/SE-ResNeXt: an SE module in each block)",
    ),
    (
        re.compile(r"(^|[._])(radix|rsoftmax)([._]|$)|conv2[._]fc1"),
        "a ResNeSt (split-attention convolutions in each block)",
    ),
    (
        re.compile(r"(^|[._])(attn|attention|qkv|self_attn)([._]|$)"),
        "a ResNet with attention layers (BoTNet/HaloNet/LambdaNet-style blocks)",
    ),
)


def other_family(natives: list[str]) -> str | None:
    """What a network of the wider circle is, from its layers' names; None for none of them."""
    for pattern, what in OTHER_FAMILIES:
        if any(pattern.search(n) for n in natives):
            return what
    return None


def is_preactivation(found: list["Found"]) -> bool:
    """A pre-activation (v2) ResNet, from its placed layers: no BatchNorm after the stem's convolution or in a
    projection shortcut (every conv of an original ResNet has its BatchNorm; a v2 block normalises first)."""
    shortcut_kinds: dict[tuple, set] = {}
    for f in found:
        if f.role and f.role[0] == "block" and f.role[3] == "shortcut":
            shortcut_kinds.setdefault(f.role, set()).add(f.kind)
    stem = {f.kind for f in found if f.role == ("stem",)}
    return any(kinds == {"conv2d"} for kinds in shortcut_kinds.values()) or bool(stem and "batchnorm" not in stem)


#: the parameters of each kind of layer, in Keras' variable order
PARAMS = {
    "conv2d": ("kernel", "bias"),
    "batchnorm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str
    framework: frameworks.Framework

    @property
    def description(self) -> str:
        return KINDS[self.kind][0]


def detect(path: str | Path) -> Source:
    """What ``path`` is, from its layout and first bytes (never from trying to load it)."""
    path = Path(path)
    if not path.exists():
        raise PortError(f"{path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return Source(path, "savedmodel", frameworks.KERAS)
        hub = _hub_folder(path)
        if hub:
            return Source(path, hub, frameworks.PYTORCH if hub == "hf-folder" else frameworks.KERAS)
        if rundir.is_run_dir(path):
            fw = frameworks.get(rundir.read_config(path).get("framework", "?"))
            if not (path / fw.checkpoint).is_file():
                raise PortError(f"{path} is a run directory without a checkpoint ({fw.checkpoint}) yet")
            return Source(path, "run", fw)
        raise PortError(
            f"{path} is a folder, but neither a SavedModel (no saved_model.pb), a Hugging Face / keras-hub folder nor a run directory (no {rundir.CONFIG})"
        )
    with open(path, "rb") as f:
        head = f.read(8)
    suffix = path.suffix.lower()
    if head.startswith(_HDF5_MAGIC):
        return Source(path, "keras-weights" if path.name.endswith(".weights.h5") else "h5", frameworks.KERAS)
    if suffix == ".keras":
        if not head.startswith(_ZIP_MAGIC):
            raise PortError(
                f"{path} is not a .keras file (a .keras model is a zip archive; this one does not start like one)"
            )
        return Source(path, "keras", frameworks.KERAS)
    if suffix in (".pt", ".pth", ".bin", ".safetensors"):
        if suffix == ".safetensors":
            _not_neutral(path)
        return Source(path, "torch", frameworks.PYTORCH)
    if suffix in (".h5", ".hdf5"):
        raise PortError(f"{path} is not an HDF5 file (truncated, or another format under that name)")
    raise PortError(
        f"{path}: not a format this tool reads; it reads a Keras 2 SavedModel folder, a .keras model, a .weights.h5 or Keras 2 .h5 "
        "weights file, a keras-hub preset folder, a PyTorch state_dict (.pt/.pth/.bin/.safetensors: torchvision, timm, the CIFAR repos, "
        "torch_impl), a Hugging Face folder (timm's), or a run directory"
    )


#: the weights file a Hugging Face folder (timm's save_for_hf, the hub cache) holds, in the order looked for
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _hub_folder(path: Path) -> str | None:
    """'hf-folder' (timm's config.json with 'architecture'), 'keras-hub-preset' (keras-hub's config.json), or None."""
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        info = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict):
        return None
    if libraries.get("timm").is_folder(info):
        if not any((path / w).is_file() for w in HF_WEIGHTS):
            raise PortError(
                f"{path} is a Hugging Face folder (config.json names {info['architecture']!r}) without weights: none of {', '.join(HF_WEIGHTS)}; download or copy the weights file into it"
            )
        return "hf-folder"
    if libraries.get("keras-hub").is_folder(info):
        if not (path / "model.weights.h5").is_file():
            raise PortError(
                f"{path} is a keras-hub preset folder ({info.get('class_name', '?')}) without model.weights.h5; save it again with preset.save_to_preset(folder)"
            )
        return "keras-hub-preset"
    return None


def _not_neutral(path: Path) -> None:
    """A .safetensors of this project's neutral format is already ported."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(min(n, 1 << 24)) if 0 < n < (1 << 26) else b""
        meta = json.loads(header).get("__metadata__", {}) if header else {}
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return  # the reader says what is wrong with it
    if isinstance(meta, dict) and meta.get("format") == "resnet-port-weights":
        raise PortError(
            f"{path} is already a neutral weights file ({meta.get('arch', '?')}): load it with either framework, or export it with python -m resnet_port.export"
        )


@dataclass
class Found:
    """One layer with weights, as a reader found it."""

    native: str  # the source's own path to it, e.g. "layer2/layer-0/left/layer-3"
    kind: str  # conv2d, batchnorm or dense
    params: dict[str, np.ndarray] = field(default_factory=dict)
    role: tuple | None = None  # ("stem",), ("block", stage, block, part), ("fc",)
    order: int = 0  # its position inside its part
    layer: str | None = None  # the canonical layer name, when the source already uses it

    def to_json(self, arrays: dict, prefix: str) -> dict:
        keys = {}
        for p, a in self.params.items():
            keys[p] = f"{prefix}/{p}"
            arrays[keys[p]] = np.asarray(a)
        return {
            "native": self.native,
            "kind": self.kind,
            "params": keys,
            "role": list(self.role) if self.role else None,
            "order": self.order,
            "layer": self.layer,
        }

    @classmethod
    def from_json(cls, d: dict, arrays) -> "Found":
        return cls(
            d["native"],
            d["kind"],
            {p: arrays[k] for p, k in d["params"].items()},
            tuple(d["role"]) if d["role"] else None,
            d["order"],
            d["layer"],
        )


def write_found(found: list[Found], out: Path, meta: dict | None = None) -> None:
    """What a reader hands back: ``out.npz`` (the arrays) and ``out.json`` (the layers)."""
    arrays: dict = {}
    layers = [f.to_json(arrays, f"t{i}") for i, f in enumerate(found)]
    np.savez(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps({"layers": layers, **(meta or {})}))


def read_found(out: Path) -> tuple[list[Found], dict]:
    info = json.loads(out.with_suffix(".json").read_text())
    if "error" in info:
        raise PortError(info["error"])
    with np.load(out.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return [Found.from_json(d, arrays) for d in info.pop("layers")], info


def kind_of(params: dict) -> str | None:
    """conv2d / batchnorm / dense from a layer's variables (names and shapes), or None."""
    if "moving_mean" in params or "gamma" in params:
        return "batchnorm"
    kernel = params.get("kernel")
    if kernel is not None:
        return {4: "conv2d", 2: "dense"}.get(np.ndim(kernel))
    return None


# -- the structural rule -----------------------------------------------------------------------


def _template(block_type: str, prefix: str):
    """A block of ``block_type`` named ``prefix``, with a projection: where its layers' names come from."""
    from .spec import BLOCKS, KERAS, Layers

    return BLOCKS[block_type](Layers(KERAS), prefix, 8, 8, 2, True)


def _names_for(role: tuple, kind: str, block_type: str = "basic", stem_type: str = "seed") -> tuple[str, ...]:
    """Canonical layer names of a part's layers of one kind, in order, as the spec's block and stem
    types name them (a role: ("stem",), ("fc",) or ("block", stage, block, "left" | "shortcut"))."""
    from .spec import KERAS, STEMS, Layers

    if role[0] == "stem":
        return tuple(dict.fromkeys(layer.name for layer in STEMS[stem_type](Layers(KERAS), 3, 8) if layer.kind == kind))
    if role[0] == "fc":
        return ("fc",) if kind == "dense" else ()
    if role[0] == "head":
        return ("head.bn",) if kind == "batchnorm" else ()
    _, stage, block, part = role
    b = _template(block_type, f"layer{stage}.{block}")
    return tuple(
        layer.name for layer in ((*b.pre, *b.residual) if part == "left" else b.shortcut) if layer.kind == kind
    )


def _block_types(groups: dict, preactivation: bool = False) -> dict[tuple, str]:
    """{(stage, block): block type} from the convolutions of each block's residual branch: two are a
    BasicBlock, three a bottleneck (1x1, 3x3, 1x1); more are no ResNet block this tool knows.  Their
    pre-activation forms (BN-ReLU first) in a pre-activation network."""
    out = {}
    for (role, kind), members in groups.items():
        if role[0] == "block" and role[3] == "left" and kind == "conv2d":
            if len(members) not in (2, 3):
                raise PortError(
                    f"{members[0].native}: block {role[1]}.{role[2]} has {len(members)} convolutions in its residual branch; a ResNet's "
                    "BasicBlock has 2 (ResNet18/34), its bottleneck 3 (ResNet26/50/101/152, wide ResNets, ResNeXt)"
                )
            out[role[1:3]] = ("preact_" if preactivation else "") + ("basic" if len(members) == 2 else "bottleneck")
    return out


def _conv_head_as_dense(f: Found) -> Found:
    """A classifier written as a 1x1 convolution (timm's resnetv2 head) is the dense layer it computes."""
    if f.role == ("fc",) and f.kind == "conv2d" and np.shape(f.params.get("kernel"))[:2] == (1, 1):
        kernel = np.asarray(f.params["kernel"])
        return Found(f.native, "dense", {**f.params, "kernel": kernel.reshape(kernel.shape[2:])}, f.role, f.order)
    return f


def canonical_tensors(found: list[Found]) -> dict[str, tuple[np.ndarray, str]]:
    """``{canonical key: (array in the neutral layout, native path)}`` by the structural rule."""
    groups: dict[tuple, list[Found]] = {}
    layers: dict[str, Found] = {}
    found = [_conv_head_as_dense(f) for f in found]
    for f in found:
        if f.layer is not None:
            layers[f.layer] = f
        elif f.role is not None:
            groups.setdefault((f.role, f.kind), []).append(f)
    preactivation = is_preactivation(found)
    block_types = _block_types(groups, preactivation)
    # a stem of three convolutions is ResNet-D's deep stem; one, the others' (their names are alike); a
    # pre-activation network's stem is a lone convolution
    stem_convs = groups.get((("stem",), "conv2d"), ())
    stem_type = "preact" if preactivation else "deep" if len(stem_convs) == 3 else "seed"
    for (role, kind), members in groups.items():
        block_type = block_types.get(role[1:3], "basic") if role[0] == "block" else "basic"
        names = _names_for(role, kind, block_type, stem_type)
        members = sorted(members, key=lambda f: f.order)
        if len(members) > len(names):
            extra = members[len(names)]
            if role[0] == "stem" and kind == "conv2d":
                raise PortError(
                    f"{extra.native}: a stem of {len(members)} convolutions, where a ResNet has one (7x7 or 3x3) and ResNet-D's deep "
                    "stem three (timm's resnet18d/34d/50d); this is not a ResNet this tool ports"
                )
            raise PortError(
                f"{extra.native}: a {kind} layer where a ResNet's {role[0]} has {len(names) or 'no'} such layer(s); this is not a ResNet this tool ports"
            )
        for name, f in zip(names, members):
            if name in layers:
                raise PortError(f"{f.native} and {layers[name].native} both map to {name}")
            layers[name] = f
    out = {}
    for name, f in layers.items():
        for p, a in f.params.items():
            if p not in PARAMS[f.kind]:
                raise PortError(f"{f.native}/{p}: a {f.kind} variable this tool does not know")
            out[f"{name}.{p}"] = (np.asarray(a, dtype=np.float32), f"{f.native}/{p}")
    return out


def _stem_order() -> dict[str, int]:
    """Each stem layer name's place in its stem's execution order, over every stem type."""
    from .spec import KERAS, STEMS, Layers

    order: dict[str, int] = {}
    for stem_type in STEMS:
        for i, layer in enumerate(STEMS[stem_type](Layers(KERAS), 3, 8)):
            order.setdefault(layer.name, i)
    return order


def _part_order() -> dict[str, int]:
    """Each block-local layer name's place in its block's execution order, over every block type."""
    from .spec import BLOCKS

    order: dict[str, int] = {}
    for block_type in BLOCKS:
        for i, layer in enumerate(_template(block_type, "b").layers()):
            order.setdefault(layer.name[2:], i)
    return order


_PARAM_ORDER = {p: i for i, p in enumerate(("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"))}


def execution_key(key: str) -> tuple:
    """Sort key putting canonical keys in the spec's execution order, whatever architecture they form."""
    layer, param = key.rsplit(".", 1)
    p = _PARAM_ORDER.get(param, 9)
    if layer.startswith("stem."):
        return (0, 0, 0, _stem_order().get(layer, 99), p)
    m = re.match(r"^layer(\d+)\.(\d+)\.(.+)$", layer)
    if m:
        return (1, int(m.group(1)), int(m.group(2)), _part_order().get(m.group(3), 99), p)
    return (2, 0, 0, 0 if layer.startswith("head.") else 1, p)  # a pre-activation network's last BN, then fc


def describe(tensors: dict) -> str:
    """What a set of canonical tensors forms, in the terms that tell ResNets apart."""
    stages: dict[int, set[int]] = {}
    widths: dict[int, int] = {}
    for key, (a, _) in tensors.items():
        m = re.match(r"^layer(\d+)\.(\d+)\.conv1\.kernel$", key)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            stages.setdefault(s, set()).add(b)
            widths[s] = a.shape[-1]
    blocks = [len(stages[s]) for s in sorted(stages)]
    classes = head_classes(tensors) or "?"
    biases = "yes" if any(k.endswith(".bias") and not k.startswith("fc.") for k in tensors) else "no"
    kind = "pre-activation " if any(re.match(r"^layer\d+\.\d+\.bn0\.", k) for k in tensors) else ""
    stem = tensors.get("stem.conv.kernel")
    deep = [tensors[k][0] for k in ("stem.conv1.kernel", "stem.conv2.kernel", "stem.conv3.kernel") if k in tensors]
    if stem is not None:
        stem_text = f"{stem[0].shape[0]}x{stem[0].shape[1]} conv of {stem[0].shape[-1]} filters"
    elif deep:
        stem_text = f"deep: {len(deep)} convs of {[a.shape[-1] for a in deep]} filters"
    else:
        stem_text = "no conv"
    return (
        f"{len(blocks)} stages of {blocks} {kind}blocks, widths {[widths[s] for s in sorted(widths)]}, "
        f"stem {stem_text}, {classes} classes, conv biases: {biases}"
    )


def first_mismatch(tensors: dict, spec: ResNetSpec) -> str | None:
    """The first variable, in execution order, where ``tensors`` and ``spec`` differ; None when they agree."""
    expected = spec.parameters()
    found = sorted(tensors, key=execution_key)
    if set(found) == set(expected):
        for key in expected:
            a, native = tensors[key]
            if tuple(a.shape) != tuple(expected[key]):
                return (
                    f"{key} [{native}] has shape {tuple(a.shape)} in the source, {tuple(expected[key])} in {spec.name}"
                )
        return None
    missing = [k for k in expected if k not in tensors]
    if missing and set(found) < set(expected):
        return f"the source lacks {missing[0]} ({tuple(expected[missing[0]])} in {spec.name})" + (
            f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        )
    for i, (have, want) in enumerate(zip(found, expected)):
        a, native = tensors[have]
        if have != want or tuple(a.shape) != tuple(expected[want]):
            return f"variable #{i + 1} in execution order is the source's {have} {tuple(a.shape)} [{native}] where {spec.name} has {want} {tuple(expected[want])}"
    if len(found) > len(expected):
        extra = found[len(expected)]
        return f"the source has more variables than {spec.name}, from {extra} {tuple(tensors[extra][0].shape)} [{tensors[extra][1]}] on"
    return f"the source lacks {expected and list(expected)[len(found)]} and what follows it in {spec.name}"


def conventions_of(spec: ResNetSpec) -> str:
    """'pytorch' (symmetric padding, PyTorch's BatchNorm), 'keras' (TF 'same', Keras' BatchNorm) or
    'keras-applications' (symmetric zero padding, BatchNorm eps 1.001e-5 with Keras' momentum)."""
    if spec.conventions.name == "keras-applications":
        return "keras-applications"
    return "pytorch" if spec.conventions.padding == "torch" else "keras"


CONVENTIONS = {
    "pytorch": "PyTorch's conventions (symmetric padding=p, BatchNorm eps 1e-5 / momentum 0.1)",
    "keras": "Keras' conventions (TF 'same' padding, BatchNorm eps 1e-3 / momentum 0.99)",
    "keras-applications": "keras.applications' conventions (symmetric zero padding, BatchNorm eps 1.001e-5 / momentum 0.99)",
}


def head_classes(tensors: dict) -> int | None:
    return int(tensors["fc.kernel"][0].shape[-1]) if "fc.kernel" in tensors else None


def candidates(tensors: dict, conventions: str | None = None) -> list[ResNetSpec]:
    """Every registered variant at the tensors' class count, of ``conventions`` when given."""
    classes = head_classes(tensors)
    specs = [get_spec(name, num_classes=classes) for name in available()]
    return [s for s in specs if conventions is None or conventions_of(s) == conventions]


def matching_archs(tensors: dict, conventions: str | None = None) -> list[str]:
    return [s.name for s in candidates(tensors, conventions) if first_mismatch(tensors, s) is None]


def resolve_arch(tensors: dict, requested: str, source: str, facts: dict | None = None) -> ResNetSpec:
    """The registered architecture the tensors form: the one asked for, checked, or the one recognised,
    and the file's names held to what that architecture computes where the weights alone cannot tell
    (:func:`check_shortcut_names`)."""
    spec = _resolve_arch(tensors, requested, source, facts)
    check_shortcut_names(tensors, spec, (facts or {}).get("library"), source)
    return spec


def _resolve_arch(tensors: dict, requested: str, source: str, facts: dict | None = None) -> ResNetSpec:
    """The registered architecture the tensors form: the one asked for, checked, or the one recognised.

    A source whose library fixes its conventions (``facts['conventions']``: a
    torchvision state_dict means PyTorch's padding and BatchNorm) is matched only
    against variants of those conventions; one that fixes its architecture
    (``facts['arch']``: a run directory's) only against that.
    """
    facts = facts or {}
    conventions = facts.get("conventions")
    who = facts.get("library")
    if requested == "auto" and facts.get("arch"):
        requested = facts["arch"]
    if requested != "auto":
        base, classes = split_name(requested)
        spec = get_spec(base, num_classes=classes if classes is not None else head_classes(tensors))
        if conventions and conventions_of(spec) != conventions:
            fits = matching_archs(tensors, conventions)
            hint = f"; it is {fits[0]}: pass --arch {fits[0]} or --arch auto" if fits else ""
            raise PortError(
                f"{source} is a {who or 'model'} ResNet, which follows {CONVENTIONS[conventions]}; --arch {spec.name} follows "
                f"{CONVENTIONS[conventions_of(spec)]}, so its outputs would differ{hint}"
            )
        problem = first_mismatch(tensors, spec)
        if problem:
            others = [a for a in matching_archs(tensors, conventions) if a != spec.name]
            hint = (
                f"; it is {others[0]}: pass --arch {others[0]} or --arch auto"
                if others
                else f"; found {describe(tensors)}"
            )
            raise PortError(f"{source} does not match --arch {spec.name}: {problem}{hint}")
        return spec
    found = matching_archs(tensors, conventions)
    if len(found) > 1 and len({conventions_of(get_spec(a)) for a in found}) > 1:
        listed = " and ".join(f"{a} ({conventions_of(get_spec(a))})" for a in found)
        raise PortError(
            f"{source} matches {listed}: the same tensors in both conventions, which its file does not record; pass --arch with the one it was trained as"
        )
    if found:
        return get_spec(found[0])
    for spec in candidates(tensors, conventions):  # an architecture the source is a part of: name what it lacks
        expected = spec.parameters()
        if set(tensors) < set(expected) and all(tuple(tensors[k][0].shape) == tuple(expected[k]) for k in tensors):
            raise PortError(f"{source} looks like {spec.name} but is incomplete: {first_mismatch(tensors, spec)}")
    family = f" of {CONVENTIONS[conventions]}" if conventions else ""
    names = ", ".join(s.name.split("@")[0] for s in candidates(tensors, conventions))
    raise PortError(f"{source} holds a ResNet of {describe(tensors)}, which is none of the variants{family}: {names}")


def native_names(vocab: Vocabulary, spec: ResNetSpec) -> dict[str, str]:
    """{canonical layer: the library's name for it} for every layer of ``spec`` with parameters."""
    pooled = shortcut_pools(spec)
    return {
        layer.name: vocab.native_name(layer.name, pooled and ".shortcut." in layer.name)
        for layer in spec.parameter_layers()
    }


def check_shortcut_names(tensors: dict, spec: ResNetSpec, library: str | None, source: str) -> None:
    """Where a library names a projection by whether it pools first (timm: ``downsample.1`` after ResNet-D's
    AvgPool2d, ``downsample.0`` without one), the file's names must say what ``spec`` computes: the
    weights alone look the same."""
    vocab = next((v for v in VOCABULARIES if v.library == library), None)
    if vocab is None or not vocab.pooled_names:
        return
    pooled = shortcut_pools(spec)
    names = native_names(vocab, spec)
    for key, (_, native) in sorted(tensors.items(), key=lambda kv: execution_key(kv[0])):
        layer = key.rsplit(".", 1)[0]
        if ".shortcut." not in layer:
            continue
        want, got = names[layer], native.split("/")[0]
        if want != got:
            if pooled:
                what, hint = "projects without pooling first", " (a deep stem with plain projections: timm's resnet*c)"
            else:
                what, hint = "average-pools before projecting (ResNet-D's shortcut)", ""
            raise PortError(
                f"{source}: {got} is where {vocab.library} puts a shortcut that {what}, but {spec.name} needs {want}: "
                f"the same weights compute another function, so the file is none of the registered variants{hint}"
            )


# -- a .keras file's config, read as data ------------------------------------------------------------

#: the Keras class of each spec layer kind in tf_impl's functional model (UnbiasedBatchNormalization is
#: tf_impl's own BatchNormalization with PyTorch's moving-variance update, registered as resnet_port>...)
_KERAS_CLASS = {
    "conv2d": ("Conv2D",),
    "batchnorm": ("BatchNormalization", "UnbiasedBatchNormalization"),
    "relu": ("ReLU",),
    "maxpool": ("MaxPooling2D",),
    "avgpool": ("AveragePooling2D",),
    "add": ("Add",),
    "global_avg_pool": ("GlobalAveragePooling2D",),
    "dense": ("Dense",),
}


def _expected_keras_layers(spec) -> dict[str, tuple[tuple[str, ...], dict, list[str]]]:
    """{layer name: (Keras classes, settings that must hold, the names of its inputs)} of tf_impl's model of ``spec``."""
    from .spec import symmetric_as_same

    out: dict[str, tuple[tuple[str, ...], dict, list[str]]] = {"images": (("InputLayer",), {}, [])}

    def keras_padding(layer, size) -> str:
        return (
            layer.padding
            if isinstance(layer.padding, str)
            else ("same" if symmetric_as_same(size, layer.stride, layer.padding) else "valid")
        )

    def add(layer, inputs: list[str]) -> str:
        settings: dict = {}
        if layer.kind == "conv2d":
            src = inputs
            if (
                not isinstance(layer.padding, str)
                and layer.padding
                and not symmetric_as_same(layer.kernel_size, layer.stride, layer.padding)
            ):
                out[f"{layer.name}.pad"] = (("ZeroPadding2D",), {"padding": [[layer.padding] * 2] * 2}, inputs)
                src = [f"{layer.name}.pad"]
            settings = {
                "filters": layer.filters,
                "kernel_size": [layer.kernel_size] * 2,
                "strides": [layer.stride] * 2,
                "padding": keras_padding(layer, layer.kernel_size),
                "use_bias": layer.use_bias,
                "activation": "linear",
                "groups": layer.groups,
                "dilation_rate": [1, 1],
                "data_format": "channels_last",
            }
            inputs = src
        elif layer.kind == "batchnorm":
            settings = {"epsilon": layer.epsilon, "momentum": layer.momentum, "axis": -1, "center": True, "scale": True}
        elif layer.kind == "relu":
            settings = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}
        elif layer.kind in ("maxpool", "avgpool"):
            src = inputs
            if (
                not isinstance(layer.padding, str)
                and layer.padding
                and not symmetric_as_same(layer.pool_size, layer.stride, layer.padding)
            ):
                out[f"{layer.name}.pad"] = (("ZeroPadding2D",), {"padding": [[layer.padding] * 2] * 2}, inputs)
                src = [f"{layer.name}.pad"]
            settings = {
                "pool_size": [layer.pool_size] * 2,
                "strides": [layer.stride] * 2,
                "padding": keras_padding(layer, layer.pool_size),
                "data_format": "channels_last",
            }
            inputs = src
        elif layer.kind == "global_avg_pool":
            settings = {"data_format": "channels_last", "keepdims": False}
        elif layer.kind == "dense":
            settings = {"units": layer.units, "activation": "linear", "use_bias": True}
        out[layer.name] = (_KERAS_CLASS[layer.kind], settings, inputs)
        return layer.name

    def chain(layers, x: str) -> str:
        for layer in layers:
            x = add(layer, [x])
        return x

    x = chain(spec.stem, "images")
    for b in spec.blocks:
        y = chain(b.pre, x)
        short = chain(b.shortcut, y if b.shortcut_from == "pre" else x)
        x = chain(b.post, add(b.add, [chain(b.residual, y), short]))
    chain((*spec.head, spec.avgpool, spec.fc), x)
    return out


def _same(want, got) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return abs(want - got) <= 1e-9 * max(1.0, abs(want))
    if want == -1 and isinstance(got, list):  # BatchNormalization's axis, -1 or [3]
        return got in ([-1], [3])
    return want == got


def keras_config_problems(config: dict, spec) -> list[str]:
    """What in a .keras file's model config (read as JSON, never deserialized) is not tf_impl's model of
    ``spec``, the architecture recognised from the weights: each problem names the layer.  An empty list:
    the config computes exactly the spec (every layer of the right class and settings, wired as the spec's).

    The weights alone cannot show a Lambda layer, a custom class or a ReLU with a slope: those compute
    another function with the same tensors, so a port that ignored them would be silently wrong."""
    if not isinstance(config, dict) or config.get("class_name") != "Functional":
        return [
            f"the model is a {config.get('class_name') if isinstance(config, dict) else type(config).__name__!r}, not a functional Keras model of {spec.name}"
        ]
    expected = _expected_keras_layers(spec)
    problems, seen = [], set()
    for item in config.get("config", {}).get("layers", []):
        cfg = item.get("config", {}) if isinstance(item.get("config"), dict) else {}
        name, cls = item.get("name") or cfg.get("name"), item.get("class_name")
        if name not in expected:
            problems.append(f"layer {name!r} ({cls}) is not part of {spec.name}")
            continue
        seen.add(name)
        classes, settings, inputs = expected[name]
        if cls not in classes:
            problems.append(f"layer {name!r} is a {cls}, {spec.name} has a {classes[0]} there")
            continue
        if (
            cls == "UnbiasedBatchNormalization"
            and item.get("module") is not None
            and (item.get("registered_name") or "").split(">")[0] != "resnet_port"
        ):
            problems.append(
                f"layer {name!r} is a {cls} of {item.get('registered_name') or item.get('module')!r}, not tf_impl's"
            )
        for key, want in settings.items():
            if key == "activation" and key in cfg and cfg[key] in ("linear", None):
                continue
            if key not in cfg or not _same(want, cfg[key]):
                problems.append(f"layer {name!r} ({cls}) has {key}={cfg.get(key)!r}, {spec.name} has {want!r}")
        got_inputs = []
        for node in item.get("inbound_nodes", []):
            for arg in node.get("args", []):
                for t in arg if isinstance(arg, list) else [arg]:
                    if isinstance(t, dict) and "keras_history" in t.get("config", {}):
                        got_inputs.append(t["config"]["keras_history"][0])
        if got_inputs != inputs:
            problems.append(
                f"layer {name!r} ({cls}) takes {', '.join(got_inputs) or 'nothing'}, in {spec.name} it takes {', '.join(inputs) or 'the images'}"
            )
    missing = [n for n in expected if n not in seen]
    if missing:
        problems.append(
            f"the config has no layer {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f" of {spec.name}"
        )
    outputs = config.get("config", {}).get("output_layers")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], str):  # one output: [name, node, tensor]
        outputs = [outputs]
    if outputs is not None and [o[0] for o in outputs if isinstance(o, list) and o] != [spec.fc.name]:
        problems.append(f"the model's output is {outputs!r}, not the {spec.fc.name!r} layer of {spec.name}")
    return problems


def runs_in_float64(framework: str, kind: str, structure: str | None, library: str | None = None) -> bool:
    """Whether ``port --check`` can run a source in float64: every PyTorch source (its tensors cast), the
    Keras models this project's code builds (a run, the post's model, tf_impl's files),
    keras.applications' (its own function builds the model in float64, the file's weights loaded into
    it) and keras-hub's (rebuilt from its config by keras-hub's classes in float64, the weights copied);
    not a SavedModel (its serving graph is float32)."""
    if framework == frameworks.PYTORCH.key or library in ("keras.applications", "keras-hub"):
        return True
    return kind != "savedmodel" and structure != "library"
