"""The framework side of every cross-framework check, written once against the backend contract.

``python -m tf_impl.worker JOB.json`` / ``python -m torch_impl.worker JOB.json`` run a job's
operations in order (``resnet_port.parity`` writes the jobs): each framework in its own
process, exchanging neutral files.  The operations here know nothing of a framework; they
call ``resnet_port.backends.Backend``.  An operation may carry ``variant``, the name of a
deliberately naive port, used to prove the checks detect it.
"""

from __future__ import annotations

import json

import numpy as np

from . import parity
from . import weights as neutral
from .backends import Backend
from .spec import get_spec


def _model(b: Backend, op):
    """The op's model in ``op['dtype']`` (default float32), with ``op['weights']`` when given."""
    spec = get_spec(op["arch"])
    model = b.build(spec, dtype=op.get("dtype", "float32"), naive=op.get("variant"))
    if "weights" in op:
        b.load_weights(model, spec, op["weights"])
    return spec, model


def op_init(b: Backend, op):
    """Weights every check starts from: the framework's initialisers, random BatchNorm affines and
    moving statistics from a calibration pass, perturbed."""
    b.seed(op["seed"])
    spec = get_spec(op["arch"])
    model = b.build(spec)
    b.from_numpy(model, spec, parity.randomize_batchnorm_affine(b.to_numpy(model, spec), op["seed"]))
    b.calibrate_batchnorm(model, spec, parity.calibration_batch(spec, op["seed"]))
    tensors = parity.perturb_moving_statistics(b.to_numpy(model, spec), op["seed"])
    neutral.save(op["out"], tensors, spec.name, producer=b.framework.package)


#: the models forward operations built in this job, by (variant, dtype, naive port): a job runs one network in
#: both modes, at several sizes, on several files; building a Keras ResNet50 costs ~1.5 s, loading its weights
#: (every variable, the moving statistics too, which a training-mode forward moves) ~0.1 s
_FORWARD_MODELS: dict = {}


def op_forward(b: Backend, op):
    key = (op["arch"], op.get("dtype", "float32"), op.get("variant"))
    if "weights" in op and key in _FORWARD_MODELS:
        spec = get_spec(op["arch"])
        model = _FORWARD_MODELS[key]
        b.load_weights(model, spec, op["weights"])
    else:
        spec, model = _model(b, op)
        if "weights" in op:
            _FORWARD_MODELS[key] = model
    arrays = b.layer_outputs(model, spec, np.load(op["inputs"]), bool(op["training"]))
    np.savez(op["out"], **arrays)
    if op.get("weights_out"):
        b.save_weights(model, spec, op["weights_out"])


def op_roundtrip(b: Backend, op):
    spec, model = _model(b, op)
    b.save_weights(model, spec, op["out"])


def op_loss(b: Backend, op):
    spec, model = _model(b, op)
    np.savez(
        op["out"],
        **b.loss_and_gradients(model, spec, np.load(op["images"]), np.load(op["labels"]), parity.objective_of(op)),
    )


def op_train(b: Backend, op):
    """The recipe's optimiser steps through the training CLI's own step."""
    spec, model = _model(b, op)
    with np.load(op["batches"]) as z:
        images, labels = z["images"], z["labels"]
    optimizer = b.train_steps(
        model, spec, parity.recipe_of(op), parity.schedule_of(op), zip(images, labels), naive=op.get("variant")
    )
    b.save_weights(model, spec, op["out"])
    probe = np.load(op["probe"])
    ev = b.layer_outputs(model, spec, probe, training=False)["logits"]
    tr = b.layer_outputs(model, spec, probe, training=True)["logits"]
    np.savez(op["probe_out"], eval=ev, train=tr)
    if op.get("momentum_out"):
        np.savez(op["momentum_out"], **b.momentum_buffers(optimizer, model, spec))


def op_augment(b: Backend, op):
    from .augment import Draws

    spec, normalization = parity.augmentation_of(op)
    np.save(op["out"], b.augment(np.load(op["images"]), Draws.load(op["draws"]), spec, normalization))


def op_schedule(b: Backend, op):
    np.save(op["out"], b.learning_rates(parity.recipe_of(op).optimizer, parity.schedule_of(op), op["steps"]))


def op_bench(b: Backend, op):
    with open(op["out"], "w") as f:
        json.dump(b.bench(op), f)


OPERATIONS = {
    "init": op_init,
    "forward": op_forward,
    "roundtrip": op_roundtrip,
    "loss": op_loss,
    "train": op_train,
    "augment": op_augment,
    "schedule": op_schedule,
    "bench": op_bench,
}


def main(b: Backend, argv=None) -> None:
    """A framework worker's ``main``: the generic operations, and the backend's native-file ones."""
    handlers = {name: (lambda op, fn=fn: fn(b, op)) for name, fn in OPERATIONS.items()}
    handlers.update(b.native_operations())
    parity.worker_main(f"{b.framework.package}.worker", handlers, argv)
