"""``model-keras.onnx``: Keras' own ONNX exporter (tf2onnx) on tf_impl's model, NHWC input; run by onnxruntime."""

from __future__ import annotations

from . import onnx_graph

NAME = "onnx-keras"
FRAMEWORK = "tf"
FILE = "model-keras.onnx"
SIZED = True
RELOADED_BY = None  # onnxruntime, in a process of its own (not a framework's fork server)


def write_op(path, out) -> dict:
    return {"op": "export_onnx", "out": str(path)}


def reload(path: str, meta: dict):
    return onnx_graph.reload(path, nchw=False)


def check(row: dict, res: dict, path, spec, size) -> None:
    onnx_graph.check(row, res, path, spec, size, hw=(1, 2))
