"""The TensorFlow side of the cross-framework checks (see ``resnet_port.parity``).

``python -m tf_impl.worker JOB.json`` runs the job's operations in order."""

from __future__ import annotations

import json
import sys

import numpy as np

from resnet_port import parity
from resnet_port import weights as neutral
from resnet_port.spec import get_spec


def _model(op):
    from . import weights
    from .model import build_model

    spec = get_spec(op["arch"])
    model = build_model(spec, input_shape=(None, None, spec.input_shape[-1]))
    if "weights" in op:
        weights.load_into(model, spec, op["weights"])
    return spec, model


def op_init(op):
    import keras

    from . import weights
    from .model import build_model

    keras.utils.set_random_seed(op["seed"])
    spec = get_spec(op["arch"])
    model = build_model(spec)
    weights.from_numpy(model, spec, parity.randomize_batchnorm_affine(weights.to_numpy(model, spec), op["seed"]))
    bns = [model.get_layer(layer.name) for layer in spec.layers() if layer.kind == "batchnorm"]
    saved = [bn.momentum for bn in bns]
    for bn in bns:  # one training pass whose batch statistics replace the moving ones
        bn.momentum = 0.0
    model(parity.calibration_batch(spec, op["seed"]), training=True)
    for bn, m in zip(bns, saved):
        bn.momentum = m
    tensors = parity.perturb_moving_statistics(weights.to_numpy(model, spec), op["seed"])
    neutral.save(op["out"], tensors, spec.name, producer="tf_impl")


def op_forward(op):
    from . import weights
    from .model import intermediate_model

    spec, model = _model(op)
    probe = intermediate_model(model, spec)
    outputs = probe(np.load(op["inputs"]), training=bool(op["training"]))
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    arrays["logits"] = arrays[spec.fc.name]
    np.savez(op["out"], **arrays)
    if op.get("weights_out"):
        weights.export(model, spec, op["weights_out"])


def op_roundtrip(op):
    from . import weights

    spec, model = _model(op)
    weights.export(model, spec, op["out"])


HANDLERS = {"init": op_init, "forward": op_forward, "roundtrip": op_roundtrip}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m tf_impl.worker JOB.json")
    with open(argv[0]) as f:
        ops = json.load(f)["ops"]
    for op in ops:
        if op["op"] not in HANDLERS:
            sys.exit(f"tf_impl.worker: unknown operation {op['op']!r}; known: {sorted(HANDLERS)}")
        HANDLERS[op["op"]](op)


if __name__ == "__main__":
    main()
