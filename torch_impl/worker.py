"""The PyTorch side of the cross-framework checks (see ``resnet_port.parity``).

``python -m torch_impl.worker JOB.json`` runs the job's operations in order.  An
operation may carry ``variant`` (``{"tf_padding": false}`` or ``{"bn_epsilon":
1e-5}``): a deliberately naive port, used to prove the checks detect it."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from resnet_port import parity
from resnet_port import weights as neutral
from resnet_port.spec import get_spec

from . import weights
from .model import LayerRecorder, build_model


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)


def _model(op):
    spec = get_spec(op["arch"])
    model = build_model(spec, **op.get("variant", {}))
    if "weights" in op:
        weights.load_into(model, op["weights"])
    return spec, model


def op_init(op):
    torch.manual_seed(op["seed"])
    spec = get_spec(op["arch"])
    model = build_model(spec)
    weights.from_numpy(model, parity.randomize_batchnorm_affine(weights.to_numpy(model), op["seed"]))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:  # one training pass whose batch statistics replace the moving ones
        bn.momentum = 1.0
    with torch.no_grad():
        model.train()(_nchw(parity.calibration_batch(spec, op["seed"])))
    for bn, m in zip(bns, saved):
        bn.momentum = m
    tensors = parity.perturb_moving_statistics(weights.to_numpy(model), op["seed"])
    neutral.save(op["out"], tensors, spec.name, producer="torch_impl")


def op_forward(op):
    spec, model = _model(op)
    model.train(bool(op["training"]))
    with torch.no_grad(), LayerRecorder(model) as rec:
        logits = model(_nchw(np.load(op["inputs"])))
    arrays = dict(rec.outputs)
    arrays["logits"] = logits.numpy()
    np.savez(op["out"], **arrays)
    if op.get("weights_out"):
        weights.export(model, op["weights_out"])


def op_roundtrip(op):
    spec, model = _model(op)
    weights.export(model, op["out"])


HANDLERS = {"init": op_init, "forward": op_forward, "roundtrip": op_roundtrip}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m torch_impl.worker JOB.json")
    with open(argv[0]) as f:
        ops = json.load(f)["ops"]
    for op in ops:
        if op["op"] not in HANDLERS:
            sys.exit(f"torch_impl.worker: unknown operation {op['op']!r}; known: {sorted(HANDLERS)}")
        HANDLERS[op["op"]](op)


if __name__ == "__main__":
    main()
