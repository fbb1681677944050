"""The recipes' objectives and optimisers in Keras.

``make_loss`` is the seed's custom loss: mean sparse cross-entropy on logits plus
``l2 * tf.nn.l2_loss`` summed over the variables the objective names.  The L2
term reads the model's variables directly, as the seed's did, so it is also part
of ``val_loss``.  With label smoothing (the modern recipe) the cross-entropy is
written out, since Keras' SparseCategoricalCrossentropy has none.  The modern
recipe's weight decay is this same term (its gradient ``wd * w`` is added to the
gradient before the momentum: coupled), and its SGD is PyTorch's form
(:class:`TorchSGD`), not Keras' built-in SGD.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from resnet_port.recipe import AdamSpec, InverseTimeDecay, ObjectiveSpec, SGDSpec, WarmupCosine
from resnet_port.spec import ResNetSpec, get_spec

from .weights import variable


def l2_variables(model: keras.Model, arch: str | ResNetSpec, objective: ObjectiveSpec) -> list:
    return [variable(model, key) for key in objective.l2_keys(get_spec(arch))]


def _full(t):
    """float16/bfloat16 (mixed precision) is computed in float32; float32/64 stay as they are."""
    return tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t


def cross_entropy(y_true, logits, label_smoothing: float = 0.0):
    """Per-sample cross-entropy on logits: ``(1 - s) * -log p_y + s * mean_k(-log p_k)``."""
    if not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    y = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    logp = tf.nn.log_softmax(logits)
    nll = -tf.gather(logp, y, axis=1, batch_dims=1)
    s = tf.constant(label_smoothing, logp.dtype)
    return (1 - s) * nll - s * tf.reduce_mean(logp, axis=-1)


def loss_parts(model, arch, objective: ObjectiveSpec, y_true, logits):
    """(cross-entropy, L2 term) as scalars in the logits' precision (float32 at least)."""
    logits = _full(tf.convert_to_tensor(logits))
    ce = tf.reduce_mean(cross_entropy(y_true, logits, objective.label_smoothing))
    variables = l2_variables(model, arch, objective)
    if not variables or not objective.l2:
        return ce, tf.zeros((), ce.dtype)
    l2 = tf.add_n([tf.nn.l2_loss(tf.cast(_full(tf.convert_to_tensor(v)), ce.dtype)) for v in variables])
    return ce, tf.constant(objective.l2, dtype=ce.dtype) * l2


def make_loss(model, arch, objective: ObjectiveSpec):
    """The seed's loss, per sample: cross-entropy of each image + the L2 term.

    Keras averages it over the batch, which gives the seed's scalar exactly.  Per
    sample rather than a scalar, because Keras only scales a loss for tf.distribute
    (1 / replicas) when it is not a scalar: a scalar loss, like the seed's, would be
    counted once per replica under MirroredStrategy.
    """

    def loss(y_true, y_pred):
        logits = _full(tf.convert_to_tensor(y_pred))
        ce = cross_entropy(y_true, logits, objective.label_smoothing)
        variables = l2_variables(model, arch, objective)
        if not variables or not objective.l2:
            return ce
        l2 = tf.add_n([tf.nn.l2_loss(tf.cast(_full(tf.convert_to_tensor(v)), ce.dtype)) for v in variables])
        return ce + tf.constant(objective.l2, dtype=ce.dtype) * l2

    loss.__name__ = "cross_entropy_plus_l2"
    return loss


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The neutral schedule's float32 values (``resnet_port.recipe``), looked up per optimiser step.

    A table, not a formula re-written in TF ops: cos and the divisions would
    round differently from the values PyTorch reads, and the schedule is
    written once.  Steps past the end keep the last value.
    """

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)

    def __call__(self, step):
        i = tf.minimum(tf.cast(step, tf.int32), len(self.values) - 1)
        return tf.gather(tf.constant(self.values), i)

    def get_config(self):
        return {"values": self.values.tolist()}


def make_schedule(schedule) -> keras.optimizers.schedules.LearningRateSchedule:
    """Keras' schedule computing the neutral ``schedule.lr(step)`` (the same float32 values)."""
    if isinstance(schedule, InverseTimeDecay):  # Keras' own computes the seed's formula in float32, bit for bit
        return keras.optimizers.schedules.InverseTimeDecay(schedule.initial, decay_steps=1, decay_rate=schedule.decay)
    if isinstance(schedule, WarmupCosine):  # every step of the run, and the one after it (the rate reported at the end)
        return TableSchedule(schedule.table(schedule.total + 1))
    raise TypeError(f"no Keras schedule for {type(schedule).__name__}")


class TorchSGD(keras.optimizers.Optimizer):
    """SGD in PyTorch's form (``resnet_port.recipe.SGDSpec``): ``b = m b + g``, then
    ``w -= lr (g + m b)`` with Nesterov, ``w -= lr b`` without.

    Keras' SGD keeps ``v = m v - lr g``, the rate inside the velocity, so under a
    schedule it is another optimiser; ``tf_impl.naive`` shows the difference.
    """

    def __init__(self, learning_rate, momentum: float = 0.9, nesterov: bool = True, name: str = "torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum, self.nesterov = momentum, nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if hasattr(self, "add_optimizer_variables"):
            self.momentums = self.add_optimizer_variables(variables, "momentum")
        else:  # Keras before 3.9
            self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        m = ops.cast(self.momentum, variable.dtype)
        b = self.momentums[self._get_variable_index(variable)]
        self.assign(b, ops.add(ops.multiply(b, m), g))
        step = ops.add(g, ops.multiply(b, m)) if self.nesterov else b
        self.assign_sub(variable, ops.multiply(lr, step))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


def make_optimizer(opt: AdamSpec | SGDSpec, schedule=None) -> keras.optimizers.Optimizer:
    """The recipe's optimiser with its per-step schedule (default: the spec's own, for one epoch of one step)."""
    schedule = make_schedule(schedule or opt.schedule(1, 1, 1))
    if isinstance(opt, SGDSpec):
        return TorchSGD(schedule, momentum=opt.momentum, nesterov=opt.nesterov)
    return keras.optimizers.Adam(learning_rate=schedule, beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon)


def momentum_buffers(optimizer: TorchSGD, model, arch) -> dict[str, np.ndarray]:
    """The momentum buffer of every trainable tensor, keyed by canonical name (the file's layout is Keras')."""
    return {
        key: np.asarray(optimizer.momentums[optimizer._get_variable_index(variable(model, key))].numpy())
        for key in get_spec(arch).trainable_parameters()
    }
