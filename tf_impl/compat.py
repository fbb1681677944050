"""Workarounds for Keras bugs, each isolated here, each tied to the Keras versions it was written for.

``patch_fit_for_multiworker``: Keras 3's ``model.fit`` does not run under
``tf.distribute.MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
tensorflow/tensorflow#72388, open at the time of writing).  It fails in two
places, both reductions of per-replica values that this strategy refuses:

1. before the first step, the TF trainer builds the model symbolically from one
   batch, which it gets as ``strategy.reduce("MEAN", per_replica_batch)``;
2. each step's logs (scalars) are averaged over the workers with
   ``strategy.reduce("MEAN", v, axis=0)``, which fails on a scalar.

The patch builds from this worker's first local replica's part of the batch
(same shapes, no collective), and averages the logs with ``axis=None`` (the mean
over replicas), for that strategy only.  It touches Keras internals
(``Model._maybe_symbolic_build``, ``Model._symbolic_build`` and
``keras.src.backend.tensorflow.trainer.reduce_per_replica``), so it is applied
only to the Keras versions it was checked on (:data:`CHECKED`).  A Keras in
that range that lacks one of those internals raises :class:`CompatError` naming
the version and what is missing, instead of silently not patching; a newer Keras
is not patched (the bug may be fixed there) and says so.
"""

from __future__ import annotations

import sys
import types

#: Keras versions the multi-worker patch was written for and tested on: [first, last]
CHECKED = ((3, 0), (3, 15))


class CompatError(RuntimeError):
    """A workaround cannot be applied to the installed Keras."""


def _version(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def multiworker_patch_applies(keras_version: str) -> bool:
    return CHECKED[0] <= _version(keras_version) <= CHECKED[1]


def patch_fit_for_multiworker(model, strategy) -> bool:
    """Let ``model.fit`` run under MultiWorkerMirroredStrategy; returns whether it patched.

    Raises CompatError when the installed Keras is one this was written for but
    lacks an internal the patch needs.
    """
    import keras
    import tensorflow as tf

    version = keras.__version__
    if not multiworker_patch_applies(version):
        print(
            f"notice: Keras {version} is outside the versions the multi-worker workaround was written for "
            f"({'.'.join(map(str, CHECKED[0]))}-{'.'.join(map(str, CHECKED[1]))}); running model.fit unpatched",
            file=sys.stderr,
        )
        return False
    from keras.src.backend.tensorflow import trainer as tf_trainer

    missing = [
        name
        for name, ok in (
            ("Model._maybe_symbolic_build", hasattr(model, "_maybe_symbolic_build")),
            ("Model._symbolic_build", hasattr(model, "_symbolic_build")),
            ("keras.src.backend.tensorflow.trainer.reduce_per_replica", hasattr(tf_trainer, "reduce_per_replica")),
        )
        if not ok
    ]
    if missing:
        raise CompatError(
            f"Keras {version}: the MultiWorkerMirroredStrategy workaround (tf_impl/compat.py) needs {', '.join(missing)}, "
            "which this Keras does not have; use another Keras version or --strategy mirrored/none"
        )

    def local(v):
        return strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v

    def build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(build, model)

    original = tf_trainer.reduce_per_replica
    if not getattr(original, "_resnet_port", False):

        def reduce_per_replica(values, strategy_, reduction="auto"):
            if reduction in ("auto", "mean") and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
                return tf.nest.map_structure(
                    lambda v: (
                        strategy_.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v
                    ),
                    values,
                )
            return original(values, strategy_, reduction)

        reduce_per_replica._resnet_port = True
        tf_trainer.reduce_per_replica = reduce_per_replica
    return True


def build_before_fit(model, x, y) -> bool:
    """Create the compiled loss's and metrics' variables before the first training step, from one batch's
    shapes (``x``, ``y``: arrays), as Keras does itself under a distribution strategy.

    Without a strategy Keras creates them inside the first trace of its train step, and a ``tf.function``
    that creates variables is traced again: every first step paid two traces (measured on a tiny ResNet,
    one thread: ``one_step_on_data`` traced twice, 1.8 s each, of a 12 s run).  Built first, it is traced
    once; the graph that runs is the same.  Uses ``Model._symbolic_build`` (Keras internals, present in the
    :data:`CHECKED` versions); where it is missing nothing is built and Keras traces twice, as before.
    Returns whether it built."""
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return False
    build(data_batch=(x, y))
    return True
