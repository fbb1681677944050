"""The recipe's objective and optimiser in Keras.

``make_loss`` is the seed's custom loss: mean sparse cross-entropy on logits plus
``l2 * tf.nn.l2_loss`` summed over the variables the objective names.  The L2
term reads the model's variables directly, as the seed's did, so it is also part
of ``val_loss``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from resnet_port.recipe import AdamSpec, InverseTimeDecay, ObjectiveSpec
from resnet_port.spec import ResNetSpec, get_spec

from .weights import variable


def l2_variables(model: keras.Model, arch: str | ResNetSpec, objective: ObjectiveSpec) -> list:
    return [variable(model, key) for key in objective.l2_keys(get_spec(arch))]


def _full(t):
    """float16/bfloat16 (mixed precision) is computed in float32; float32/64 stay as they are."""
    return tf.cast(t, tf.float32) if t.dtype in (tf.float16, tf.bfloat16) else t


def loss_parts(model, arch, objective: ObjectiveSpec, y_true, logits):
    """(cross-entropy, L2 term) as scalars in the logits' precision (float32 at least)."""
    logits = _full(tf.convert_to_tensor(logits))
    ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True))
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
        ce = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        variables = l2_variables(model, arch, objective)
        if not variables or not objective.l2:
            return ce
        l2 = tf.add_n([tf.nn.l2_loss(tf.cast(_full(tf.convert_to_tensor(v)), ce.dtype)) for v in variables])
        return ce + tf.constant(objective.l2, dtype=ce.dtype) * l2

    loss.__name__ = "cross_entropy_plus_l2"
    return loss


def make_schedule(schedule) -> keras.optimizers.schedules.LearningRateSchedule:
    """Keras' schedule computing the neutral ``schedule.lr(step)`` (the same float32 values)."""
    if isinstance(schedule, InverseTimeDecay):
        return keras.optimizers.schedules.InverseTimeDecay(schedule.initial, decay_steps=1, decay_rate=schedule.decay)
    raise TypeError(f"no Keras schedule for {type(schedule).__name__}")


def make_optimizer(opt: AdamSpec, schedule=None) -> keras.optimizers.Optimizer:
    """The recipe's optimiser with its per-step schedule (default: the spec's own, for one epoch of one step)."""
    schedule = schedule or opt.schedule(1, 1, 1)
    return keras.optimizers.Adam(learning_rate=make_schedule(schedule), beta_1=opt.beta_1, beta_2=opt.beta_2, epsilon=opt.epsilon)
