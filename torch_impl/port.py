"""The PyTorch side of ``python -m resnet_port.port`` and ``resnet_port.export``.

Reads a ``state_dict`` (a ``.pt``/``.pth``/``.bin`` file holding the dict itself,
or a dict with it under ``"model"``, ``"state_dict"`` or ``"net"``, as a run
directory's ``checkpoint.pt`` and kuangliu's training script save it; a
``.safetensors`` file; a Hugging Face folder as timm's ``save_for_hf`` and the
hub cache hold it), with ``torch.load(weights_only=True)`` or safetensors: no
pickled code runs.  Prefixes that DistributedDataParallel (``module.``) and
``torch.compile`` (``_orig_mod.``) add are removed.  A state_dict of
``torch_impl``'s model carries the spec's names; any other is placed by
``resnet_port.porting.place_all`` in the vocabulary of the library that wrote
it (torchvision/timm, kuangliu/pytorch-cifar, weiaicunzai/pytorch-cifar100).

``--check`` runs such a file as it is, in its own library:
``torchvision.models.resnet18/34``, timm's ``create_model`` for its folders, or
the user's own class file for a repo's class no package provides
(``--source-class FILE.py:NAME``); ``load_state_dict(strict=True)`` into it,
every layer's output through forward hooks.  Also writes the exports: a
``torch.export`` program, ONNX from PyTorch's own exporter, and the native state
dicts and folders of torchvision and timm.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from resnet_port import cli, libraries, porting
from resnet_port.libraries.base import no_package_defines
from resnet_port.porting import Found, PortError
from resnet_port.spec import MIN_INPUT_SIZE, ResNetSpec, get_spec

_PREFIXES = ("module.", "_orig_mod.")


def _hf_weights(path: Path) -> Path:
    return next(path / w for w in porting.HF_WEIGHTS if (path / w).is_file())


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in porting.HF_WEIGHTS):
        return load_state_dict(_hf_weights(path))  # a Hugging Face folder: its weights file
    if path.is_dir():  # a run directory: its checkpoint, verified (digest, finite values) like --resume does
        from resnet_port import rundir

        from . import checkpoint

        try:
            return checkpoint.load(path / "checkpoint.pt")["model"]
        except rundir.RunDirError as e:
            raise PortError(str(e)) from None
    src = path
    if src.stat().st_size == 0:
        raise PortError(f"{src} is empty (0 bytes): not a PyTorch state_dict")
    if src.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip(load_file(src))
        except Exception as e:  # a damaged header or truncated data
            raise PortError(f"{src} cannot be read as a safetensors file ({cli.reason(e)})") from None
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise PortError(refusal(src, str(e))) from None
    except Exception as e:  # truncated, not a torch file
        raise PortError(f"{src} cannot be read as a PyTorch state_dict ({cli.reason(e)})") from None
    for key in (
        "model",
        "state_dict",
        "net",
    ):  # a run's checkpoint, Lightning-style files, kuangliu's {"net", "acc", "epoch"}
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(f"{src} does not hold a state_dict (a dict of tensors)")
    return _strip(obj)


def refusal(src: Path, message: str) -> str:
    """One line for a pickle that torch's weights_only loader refused: the Python object it names (torch's
    text holds ANSI colour codes and paragraphs of advice), and, for a whole pickled model, how to save
    the state_dict instead."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", message)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    name = found.group(1) if found else None
    what = f"unsupported GLOBAL {name}" if name else "Python objects other than tensors and plain data"
    hint = ""
    if (
        name
        and name.split(".")[0] in ("torch", "torchvision", "timm", "__main__")
        or (name and name[:1].isupper())
        or (name and "." in name and name.rsplit(".", 1)[1][:1].isupper())
    ):
        hint = "; if it is a whole pickled model, save its weights instead: torch.save(model.state_dict(), 'model.pth')"
    return f"refusing to load {src}: it holds {what}, which loading could run as code; nothing was run{hint}"


def _strip(obj: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def read_state_dict(path: Path) -> tuple[list[Found], dict]:
    """(layers, facts) of a state_dict: this project's model (module names are the spec's) or a library's."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    tracked: dict[str, int] = {}
    for key, t in load_state_dict(path).items():
        if "." not in key:
            raise PortError(
                f"{path}: {key!r} is not a module's parameter (no 'module.param' name): not a model's state_dict"
            )
        name, param = key.rsplit(".", 1)
        if param == "num_batches_tracked":
            tracked[name] = int(t.item()) if t.numel() == 1 else 0
        else:
            layers.setdefault(name, {})[param] = t.detach().float()
    other = porting.other_family(list(layers))
    if other:
        raise PortError(
            f"{path} is {other}; this tool ports ResNets of basic and bottleneck blocks (ResNet18-152, wide, ResNeXt)"
        )
    found = []
    for name, p in layers.items():
        if "running_mean" in p:
            kind, params = (
                "batchnorm",
                {
                    "gamma": p.get("weight"),
                    "beta": p.get("bias"),
                    "moving_mean": p["running_mean"],
                    "moving_variance": p.get("running_var"),
                },
            )
        elif "weight" in p and p["weight"].dim() == 4:
            kind, params = "conv2d", {"kernel": p["weight"].permute(2, 3, 1, 0), "bias": p.get("bias")}
        elif "weight" in p and p["weight"].dim() == 2:
            kind, params = "dense", {"kernel": p["weight"].T, "bias": p.get("bias")}
        else:
            raise PortError(f"{path}: cannot tell what layer {name} is (parameters {sorted(p)})")
        if kind == "batchnorm" and name not in tracked:
            raise PortError(
                f"{path}: BatchNorm {name} has no num_batches_tracked: not a whole state_dict of nn.BatchNorm2d layers "
                "(load_state_dict(strict=True) refuses it too); save the model's own model.state_dict()"
            )
        found.append(
            Found(name, kind, {k: v.contiguous().numpy() for k, v in params.items() if v is not None}, layer=name)
        )
    if not found:
        raise PortError(f"{path} holds an empty state_dict")
    counts = {"num_batches_tracked": tracked}  # BatchNorm's step counters: carried, so exports give them back
    if libraries.get("resnet-port").holds_own_names(f.native for f in found):  # torch_impl's own model
        return found, {"structure": "own", **counts}
    placed, vocab = porting.place_all([(f.native, f.kind, f.params) for f in found], str(path))
    return placed, {"structure": "library", "library": vocab.library, "conventions": vocab.conventions, **counts}


def op_read_source(op: dict) -> None:
    out = Path(op["out"])
    try:
        found, facts = read_state_dict(Path(op["src"]))
        porting.write_found(found, out, {"kind": op["kind"], **facts})
    except PortError as e:
        out.with_suffix(".json").write_text(json.dumps({"error": str(e)}))


def library_model(op: dict) -> torch.nn.Module:
    """The source's model from the library that defines it (``op``: src, kind, library, arch, source_class)."""
    spec = get_spec(op["arch"])
    if op.get("source_class"):
        return user_class(op["source_class"], spec.num_classes)
    if op["kind"] == "hf-folder":
        return libraries.get("timm").model(spec, op["src"])
    for library in libraries.ALL:  # torchvision's names are timm's too: the first that has the network
        if library.VOCABULARY and library.VOCABULARY.library == op.get("library") and library.defines(spec):
            return library.model(spec, op["src"])
    raise no_package_defines(op.get("library", "?"), spec, op["src"])


def user_class(ref: str, num_classes: int) -> torch.nn.Module:
    """``FILE.py:NAME`` called with ``num_classes=`` (or with nothing, when it takes no such argument)."""
    import importlib.util
    import inspect

    file, _, name = ref.rpartition(":")
    if not file or not name or not Path(file).is_file():
        raise PortError(f"--source-class {ref}: expected FILE.py:NAME with an existing FILE.py")
    spec = importlib.util.spec_from_file_location(f"resnet_port_user_{Path(file).stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise PortError(f"--source-class {ref}: {file} defines no {name!r}")
    fn = getattr(module, name)
    try:
        takes = "num_classes" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    return fn(num_classes=num_classes) if takes else fn()


def _hooked_modules(model: torch.nn.Module, layers: dict[str, str]) -> dict[str, torch.nn.Module]:
    """{canonical layer: the library model's module} for the layers named in ``layers`` (canonical: native module)."""
    modules = dict(model.named_modules())
    return {canonical: modules[native] for canonical, native in layers.items() if native in modules}


def _nhwc(name: str, output: torch.Tensor) -> np.ndarray:
    """A hooked module's output as the spec's layer gives it: NHWC, and a classifier written as a 1x1
    convolution (timm's resnetv2 head) as the (N, classes) its flattening makes."""
    output = output.detach()
    if name == "fc" and output.dim() == 4:
        return output.flatten(1).numpy().copy()
    return (output.permute(0, 2, 3, 1) if output.dim() == 4 else output).numpy().copy()


def op_run_source(op: dict) -> None:
    """``{src, kind, arch, inputs, out[, library, layers, source_class, dtype]}``: the source loaded as it is, in
    its own library (``load_state_dict(strict=True)``), every layer's output that it names, both modes, in
    ``dtype`` (float32, or float64: the model's tensors and the images cast, nothing else changed)."""
    from .model import LayerRecorder, build_model

    dtype = getattr(torch, op.get("dtype", "float32"))
    x = torch.from_numpy(np.load(op["inputs"]).astype(np.float32)).permute(0, 3, 1, 2).to(dtype)
    out = {}
    if op.get("structure") == "library":
        try:
            model = library_model(op)
            state = load_state_dict(Path(op["src"]))
            model.load_state_dict(state, strict=True)
        except PortError as e:
            Path(op["out"]).with_suffix(".json").write_text(json.dumps({"error": str(e)}))
            return
        except RuntimeError as e:
            Path(op["out"]).with_suffix(".json").write_text(
                json.dumps({"error": f"{op['src']} does not load into its library's model as it is: {cli.reason(e)}"})
            )
            return
        model = model.to(dtype)
        hooked = _hooked_modules(model, op.get("layers", {}))
        for mode in ("eval", "train"):
            model.train(mode == "train")
            seen = {}
            handles = [
                m.register_forward_hook(lambda _m, _a, o, n=n, seen=seen: seen.__setitem__(n, _nhwc(n, o)))
                for n, m in hooked.items()
            ]
            with torch.no_grad():
                logits = model(x)
            for h in handles:
                h.remove()
            out.update({f"{mode}/{k}": v for k, v in seen.items()})
            out[f"{mode}/logits"] = logits.numpy()
        out["library_class"] = np.array(f"{type(model).__module__}.{type(model).__qualname__}")
        np.savez(op["out"], **out)
        return
    model = build_model(get_spec(op["arch"]))
    model.load_state_dict(load_state_dict(Path(op["src"])), strict=True)
    model = model.to(dtype)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        with torch.no_grad(), LayerRecorder(model) as rec:
            logits = model(x)
        out.update({f"{mode}/{k}": v for k, v in rec.outputs.items()})
        out[f"{mode}/logits"] = logits.numpy()
    np.savez(op["out"], **out)


def _model_from(weights_path: str):
    from resnet_port import weights as neutral

    from . import weights
    from .model import build_model

    w = neutral.load(weights_path)
    model = build_model(w.arch)
    weights.from_numpy(model, w.tensors, w.arch, weights_path)
    return model.eval(), get_spec(w.arch)


def _export_shapes(spec: ResNetSpec, size: int | None):
    """(an example input, torch.export's dynamic_shapes, a context for the export): the batch is always
    dynamic; height and width too when ``size`` is None (a network whose pads are all constants)."""
    import contextlib

    from torch.export import Dim

    c = spec.input_shape[-1]
    dims = {0: Dim("batch", min=1, max=4096)}
    context = contextlib.nullcontext()
    if size is None:
        dims.update({2: Dim("height", min=MIN_INPUT_SIZE, max=4096), 3: Dim("width", min=MIN_INPUT_SIZE, max=4096)})
        # without it, torch.export specialises the last feature map's size 1 (a 32x32 input) away
        import torch.fx.experimental._config as fx_config

        context = fx_config.patch(backed_size_oblivious=True)
    example = torch.zeros(2, c, size or 64, size or 64)
    return example, {"x": dims}, context


def op_export_torch(op: dict) -> None:
    """``{weights, program, state_dict, size}``: a torch.export program (dynamic batch; dynamic height and
    width when ``size`` is None, else fixed at ``size``) and a state_dict."""
    model, spec = _model_from(op["weights"])
    example, shapes, context = _export_shapes(spec, op.get("size"))
    with context:
        program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    torch.export.save(program, op["program"])
    torch.save(model.state_dict(), op["state_dict"])


def op_export_onnx(op: dict) -> None:
    """``{weights, out, size}``: ONNX from PyTorch's own (dynamo) exporter, batch dimension dynamic
    (height and width too when ``size`` is None)."""
    model, spec = _model_from(op["weights"])
    example, shapes, context = _export_shapes(spec, op.get("size"))
    with context:
        torch.onnx.export(
            model,
            (example,),
            op["out"],
            dynamo=True,
            external_data=False,  # one self-contained file
            dynamic_shapes=shapes,
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
        )


def native_state_dict(weights_path: str, vocab) -> tuple[dict[str, torch.Tensor], ResNetSpec]:
    """(the neutral file's weights as a library's own state_dict: ``vocab``'s module names (None: the spec's),
    PyTorch's layouts; the spec)."""
    from resnet_port import weights as neutral

    model, spec = _model_from(weights_path)
    ours = model.state_dict()
    counts = json.loads(neutral.read_metadata(Path(weights_path)).get("num_batches_tracked", "{}"))  # the header only
    out = {}
    names = porting.native_names(vocab, spec) if vocab else {l.name: l.name for l in spec.parameter_layers()}
    for layer in spec.parameter_layers():
        native = names[layer.name]
        for key, t in ours.items():
            if key.rsplit(".", 1)[0] == layer.name:
                out[f"{native}.{key.rsplit('.', 1)[1]}"] = t.detach().clone()
        if layer.kind == "batchnorm":  # the source's step counter where the file carries it (0: a model trained here)
            out[f"{native}.num_batches_tracked"] = torch.tensor(int(counts.get(layer.name, 0)), dtype=torch.long)
    return out, spec


def op_export_native(op: dict) -> None:
    """``{weights, library, out}``: a PyTorch library's own files (torchvision's .pth, timm's folder)."""
    from resnet_port import weights as neutral

    library = libraries.get(op["library"])
    vocab = library.VOCABULARY
    if hasattr(library, "vocabulary_for"):  # a library whose networks name their modules in more than one way
        vocab = library.vocabulary_for(get_spec(neutral.read_metadata(Path(op["weights"]))["arch"]))
    state, spec = native_state_dict(op["weights"], vocab)
    library.write(state, spec, op["out"], op["weights"])
