"""The TensorFlow side of the cross-framework checks (see ``resnet_port.parity``).

``python -m tf_impl.worker JOB.json`` runs the job's operations in order."""

from __future__ import annotations

import json

import numpy as np

from resnet_port import parity
from resnet_port import weights as neutral
from resnet_port.spec import get_spec


def _model(op):
    """The op's model; ``op['dtype']`` (default float32) sets Keras' dtype policy for it."""
    import keras

    from . import weights
    from .model import build_model

    spec = get_spec(op["arch"])
    keras.config.set_dtype_policy(op.get("dtype", "float32"))
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
    outputs = probe(np.load(op["inputs"]).astype(op.get("dtype", "float32")), training=bool(op["training"]))
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    arrays["logits"] = arrays[spec.fc.name]
    np.savez(op["out"], **arrays)
    if op.get("weights_out"):
        weights.export(model, spec, op["weights_out"])


def op_roundtrip(op):
    from . import weights

    spec, model = _model(op)
    weights.export(model, spec, op["out"])


def op_loss(op):
    import tensorflow as tf

    from . import weights
    from .objective import loss_parts

    spec, model = _model(op)
    objective = parity.objective_of(op)
    keys = list(spec.trainable_parameters())
    variables = [weights.variable(model, k) for k in keys]
    x, y = np.load(op["images"]).astype(op.get("dtype", "float32")), np.load(op["labels"])
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        ce, l2 = loss_parts(model, spec, objective, y, logits)
        total = ce + l2
    grads = tape.gradient(total, variables)
    out = {"total": total.numpy(), "ce": ce.numpy(), "l2": l2.numpy()}
    out.update({f"grad/{k}": g.numpy() for k, g in zip(keys, grads)})
    np.savez(op["out"], **out)


def op_train(op):
    """The recipe's optimiser steps through Keras' own train step (what model.fit runs)."""
    from . import weights
    from .objective import make_loss, make_optimizer, momentum_buffers

    spec, model = _model(op)
    recipe, schedule = parity.recipe_of(op), parity.schedule_of(op)
    objective = recipe.objective
    if op.get("variant"):
        from . import naive

        optimizer, objective = naive.optimizer(op["variant"], recipe, schedule)
    else:
        optimizer = make_optimizer(recipe.optimizer, schedule)
    model.compile(optimizer=optimizer, loss=make_loss(model, spec, objective))
    with np.load(op["batches"]) as z:
        images, labels = z["images"], z["labels"]
    for x, y in zip(images, labels):
        model.train_on_batch(x.astype(op.get("dtype", "float32")), y)
    weights.export(model, spec, op["out"])
    probe = np.load(op["probe"]).astype(op.get("dtype", "float32"))
    np.savez(op["probe_out"], eval=model(probe, training=False).numpy(), train=model(probe, training=True).numpy())
    if op.get("momentum_out"):
        np.savez(op["momentum_out"], **momentum_buffers(optimizer, model, spec))


def op_augment(op):
    from resnet_port.augment import Draws

    from .data import augment

    d = Draws.load(op["draws"])
    spec, normalization = parity.augmentation_of(op)
    np.save(op["out"], augment(np.load(op["images"]), d.dy, d.dx, d.flip, d.cut_y, d.cut_x, spec=spec, normalization=normalization).numpy())


def op_schedule(op):
    from .objective import make_optimizer

    opt = make_optimizer(parity.recipe_of(op).optimizer, parity.schedule_of(op))
    values = []
    for step in op["steps"]:
        opt.iterations.assign(step)
        values.append(np.float32(opt.learning_rate.numpy()))
    np.save(op["out"], np.array(values, dtype=np.float32))


def op_bench(op):
    from .bench import run

    with open(op["out"], "w") as f:
        json.dump(run(op), f)


def _port():
    from . import port

    return port


HANDLERS = {
    "read_source": lambda op: _port().op_read_source(op),
    "run_source": lambda op: _port().op_run_source(op),
    "export_keras": lambda op: _port().op_export_keras(op),
    "export_onnx": lambda op: _port().op_export_onnx(op),
    "export_keras_hub": lambda op: _port().op_export_keras_hub(op),
    "bench": op_bench,
    "init": op_init,
    "forward": op_forward,
    "roundtrip": op_roundtrip,
    "loss": op_loss,
    "train": op_train,
    "augment": op_augment,
    "schedule": op_schedule,
}


def main(argv=None):
    parity.worker_main("tf_impl.worker", HANDLERS, argv)


if __name__ == "__main__":
    main()
