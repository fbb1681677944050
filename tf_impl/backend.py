"""Keras' side of the backend contract (``resnet_port.backends.Backend``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from resnet_port import frameworks, rundir
from resnet_port import weights as neutral


class KerasBackend:
    framework = frameworks.KERAS
    key = frameworks.KERAS.key

    def seed(self, seed: int) -> None:
        import keras

        keras.utils.set_random_seed(seed)

    def build(self, spec, dtype: str = "float32", naive: str | None = None):
        """The functional model, taking any input size; Keras' dtype policy is set to ``dtype``."""
        import keras

        from .model import build_model

        if naive:
            from . import naive as naive_ports

            if (
                naive not in naive_ports.VARIANTS
            ):  # Keras' naive ports are optimisers (train_steps); the model is the right one
                raise ValueError(
                    f"unknown naive Keras port {naive!r}; choose one of: {', '.join(naive_ports.VARIANTS)}"
                )
        keras.config.set_dtype_policy(dtype)
        return build_model(spec, input_shape=(None, None, spec.input_shape[-1]))

    def to_numpy(self, model, spec):
        from . import weights

        return weights.to_numpy(model, spec)

    def from_numpy(self, model, spec, tensors, source: str = "weights") -> None:
        from . import weights

        weights.from_numpy(model, spec, tensors, source)

    def save_weights(self, model, spec, path, normalization=None, **extra):
        from . import weights

        return weights.export(model, spec, path, normalization=normalization, **extra)

    def load_weights(self, model, spec, path):
        from . import weights

        return weights.load_into(model, spec, path)

    def _cast(self, model, a):
        return np.asarray(a).astype(model.compute_dtype)

    def layer_outputs(self, model, spec, images, training: bool):
        from .model import intermediate_model

        outputs = intermediate_model(model, spec)(self._cast(model, images), training=bool(training))
        arrays = {k: np.asarray(v) for k, v in outputs.items()}
        arrays["logits"] = arrays[spec.fc.name]
        return arrays

    def calibrate_batchnorm(self, model, spec, images) -> None:
        bns = [model.get_layer(layer.name) for layer in spec.batchnorms()]
        saved = [bn.momentum for bn in bns]
        for bn in bns:
            bn.momentum = 0.0
        model(self._cast(model, images), training=True)
        for bn, m in zip(bns, saved):
            bn.momentum = m

    def loss_and_gradients(self, model, spec, images, labels, objective):
        import tensorflow as tf

        from . import weights
        from .objective import loss_parts

        keys = list(spec.trainable_parameters())
        variables = [weights.variable(model, k) for k in keys]
        with tf.GradientTape() as tape:
            logits = model(self._cast(model, images), training=True)
            ce, l2 = loss_parts(model, spec, objective, labels, logits)
            total = ce + l2
        grads = tape.gradient(total, variables)
        out = {"total": total.numpy(), "ce": ce.numpy(), "l2": l2.numpy()}
        out.update({f"grad/{k}": g.numpy() for k, g in zip(keys, grads)})
        return out

    def train_steps(self, model, spec, recipe, schedule, batches, naive: str | None = None, eager: bool = False):
        """Keras' own train step (what model.fit runs), through ``train_on_batch``; traced into a graph, as
        ``fit`` runs it, unless ``eager``."""
        from .objective import make_loss, make_optimizer

        objective = recipe.objective
        if naive:
            from . import naive as naive_ports

            optimizer, objective = naive_ports.optimizer(naive, recipe, schedule)
        else:
            optimizer = make_optimizer(recipe.optimizer, schedule)
        # its variables made before the first step: else Keras traces the step twice (the first trace creates
        # them), which doubles the start of every training here (measured: 8.2 s -> 3.8 s on a tiny ResNet)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, loss=make_loss(model, spec, objective), run_eagerly=bool(eager))
        for x, y in batches:
            model.train_on_batch(self._cast(model, x), y)
        return optimizer

    def momentum_buffers(self, optimizer, model, spec):
        from .objective import momentum_buffers

        return momentum_buffers(optimizer, model, spec)

    def learning_rates(self, optimizer_spec, schedule, steps):
        from .objective import make_optimizer

        opt = make_optimizer(optimizer_spec, schedule)
        values = []
        for step in steps:
            opt.iterations.assign(step)
            values.append(np.float32(opt.learning_rate.numpy()))
        return np.array(values, dtype=np.float32)

    def augment(self, images, draws, spec, normalization):
        from .data import augment

        d = draws
        return augment(
            np.asarray(images), d.dy, d.dx, d.flip, d.cut_y, d.cut_x, spec=spec, normalization=normalization
        ).numpy()

    @property
    def trainer(self):
        from .train import KerasBackend as Trainer

        return Trainer

    def write_checkpoint(self, path, tensors, state) -> None:
        """One .npz: the arrays, the JSON state and a digest of both (checked finite first)."""
        arrays = {k: np.asarray(v) for k, v in tensors.items()}
        neutral.check_values(
            rundir.named_checkpoint_arrays(arrays, state.get("opt_paths", [])), "the checkpoint to write"
        )
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        arrays["digest"] = np.frombuffer(neutral.digest(arrays).encode(), dtype=np.uint8)
        neutral.atomic_write(Path(path), lambda f: np.savez(f, **arrays))

    def read_checkpoint(self, path):
        return rundir.read_npz_checkpoint(Path(path))

    def bench(self, op: dict) -> dict:
        from .bench import run

        return run(op)

    def native_operations(self) -> dict:
        from . import port

        return {
            "read_source": port.op_read_source,
            "run_source": port.op_run_source,
            "export_keras": port.op_export_keras,
            "export_onnx": port.op_export_onnx,
            "export_native": port.op_export_native,
        }


BACKEND = KerasBackend()
