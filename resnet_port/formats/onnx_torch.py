"""``model-torch.onnx``: PyTorch's own ONNX exporter on torch_impl's model, NCHW input; run by onnxruntime.
Where ``model-keras.onnx`` is exported too, the two must agree with each other."""

from __future__ import annotations

from . import onnx_graph

NAME = "onnx-torch"
FRAMEWORK = "torch"
FILE = "model-torch.onnx"
SIZED = True
RELOADED_BY = None  # onnxruntime, in a process of its own (not a framework's fork server)


def write_op(path, out) -> dict:
    return {"op": "export_onnx", "out": str(path)}


def reload(path: str, meta: dict):
    return onnx_graph.reload(path, nchw=True)


def check(row: dict, res: dict, path, spec, size) -> None:
    onnx_graph.check(row, res, path, spec, size, hw=(2, 3))


def extra_rows(ctx) -> list[dict]:
    """Both ONNX files, against each other at every size and batch size both ran."""
    if "onnx-keras" not in ctx.outputs:
        return []
    mine = ctx.outputs[NAME]
    common = {k: v for k, v in ctx.outputs["onnx-keras"].items() if k in mine and "/" in k}
    return [
        ctx.compare(
            "onnx", "model-keras.onnx vs model-torch.onnx", "each other", common, {n: None for n in ctx.sizes}, mine
        )
    ]
