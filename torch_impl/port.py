"""The PyTorch side of ``python -m resnet_port.port`` and ``resnet_port.export``.

Reads a ``state_dict`` of ``torch_impl.model``'s model (a ``.pt``/``.pth`` file
holding the dict itself, or a dict with it under ``"model"`` or
``"state_dict"``, as a run directory's ``checkpoint.pt`` does), with
``torch.load(weights_only=True)``: no pickled code runs.  Prefixes that
DistributedDataParallel (``module.``) and ``torch.compile`` (``_orig_mod.``)
add are removed.  Runs such a file as it is (``load_state_dict(strict=True)``
into the model) for ``--check``, and writes the exports: a ``torch.export``
program and ONNX from PyTorch's own exporter.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from resnet_port import cli, porting
from resnet_port.porting import Found, PortError
from resnet_port.spec import get_spec

_PREFIXES = ("module.", "_orig_mod.")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
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
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise PortError(f"refusing to load {src}: it holds Python objects other than tensors and plain data, which could run code ({cli.reason(e)}); nothing was run") from None
    except Exception as e:  # truncated, not a torch file
        raise PortError(f"{src} cannot be read as a PyTorch state_dict ({cli.reason(e)})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(f"{src} does not hold a state_dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def read_state_dict(path: Path) -> list[Found]:
    """Layers of a state_dict of this project's model: module names are the spec's."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_state_dict(path).items():
        name, param = key.rsplit(".", 1)
        if param != "num_batches_tracked":
            layers.setdefault(name, {})[param] = t.detach().float()
    found = []
    for name, p in layers.items():
        if "running_mean" in p:
            kind, params = "batchnorm", {"gamma": p.get("weight"), "beta": p.get("bias"), "moving_mean": p["running_mean"], "moving_variance": p.get("running_var")}
        elif "weight" in p and p["weight"].dim() == 4:
            kind, params = "conv2d", {"kernel": p["weight"].permute(2, 3, 1, 0), "bias": p.get("bias")}
        elif "weight" in p and p["weight"].dim() == 2:
            kind, params = "dense", {"kernel": p["weight"].T, "bias": p.get("bias")}
        else:
            raise PortError(f"{path}: cannot tell what layer {name} is (parameters {sorted(p)})")
        found.append(Found(name, kind, {k: v.contiguous().numpy() for k, v in params.items() if v is not None}, layer=name))
    if not found:
        raise PortError(f"{path} holds an empty state_dict")
    return found


def op_read_source(op: dict) -> None:
    out = Path(op["out"])
    try:
        porting.write_found(read_state_dict(Path(op["src"])), out, {"kind": op["kind"], "structure": "own"})
    except PortError as e:
        out.with_suffix(".json").write_text(json.dumps({"error": str(e)}))


def op_run_source(op: dict) -> None:
    """``{src, kind, arch, inputs, out}``: the state_dict loaded as it is, every layer's output, both modes."""
    from .model import LayerRecorder, build_model

    model = build_model(get_spec(op["arch"]))
    model.load_state_dict(load_state_dict(Path(op["src"])), strict=True)
    x = torch.from_numpy(np.load(op["inputs"]).astype(np.float32)).permute(0, 3, 1, 2)
    out = {}
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


def op_export_torch(op: dict) -> None:
    """``{weights, program, state_dict}``: a torch.export program (dynamic batch) and a state_dict."""
    from torch.export import Dim

    model, spec = _model_from(op["weights"])
    h, w, c = spec.input_shape
    example = torch.zeros(2, c, h, w)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: Dim("batch", min=1, max=4096)}})
    torch.export.save(program, op["program"])
    torch.save(model.state_dict(), op["state_dict"])


def op_export_onnx(op: dict) -> None:
    """``{weights, out}``: ONNX from PyTorch's own (dynamo) exporter, batch dimension dynamic."""
    from torch.export import Dim

    model, spec = _model_from(op["weights"])
    h, w, c = spec.input_shape
    torch.onnx.export(
        model, (torch.zeros(2, c, h, w),), op["out"], dynamo=True, external_data=False,  # one self-contained file
        dynamic_shapes={"x": {0: Dim("batch", min=1, max=4096)}}, input_names=["images"], output_names=["logits"], verbose=False,
    )
