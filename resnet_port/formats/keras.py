"""``model.keras``: the network in Keras' own layers only, loaded by ``keras.models.load_model``.

Written by ``tf_impl`` (``export_keras``: its model of the weights, rebuilt from standard layers so that
no class of this project is needed to load it); takes any image size.
"""

from __future__ import annotations

NAME = "keras"
FRAMEWORK = "tf"
FILE = "model.keras"
SIZED = False


def write_op(path, out) -> dict:
    return {"op": "export_keras", "out": str(path)}


def reload(path: str, meta: dict):
    import keras
    import numpy as np

    model = keras.models.load_model(path)
    classes = sorted({type(layer).__module__.split(".")[0] for layer in model.layers})
    return (lambda x: np.asarray(model(x, training=False))), {"classes": np.array(classes)}


def check(row: dict, res: dict, path, spec, size) -> None:
    row["ok"] &= list(res["classes"]) == ["keras"]  # standard Keras layers only
