"""``python -m tf_impl.train``: the recipe in Keras, the reference, faithful to the seed.

The run's life (flags, run directory, epochs, checkpoints, metrics, evaluation,
interruptions) is ``resnet_port.run``; this is Keras' backend for it:
``model.fit`` on the tf.data pipeline (``tf_impl.data``), one epoch per call so
that each epoch gets its own reproducible shuffle and augmentation and a
checkpoint; the seed's custom loss (cross-entropy + L2 over the model's
variables); Adam with the seed's per-step decay as an explicit schedule.

``--strategy mirrored`` trains with ``tf.distribute.MirroredStrategy`` over the
visible GPUs (``--cpu-replicas N`` splits a CPU into N logical devices, for
testing), ``--strategy multiworker`` with ``MultiWorkerMirroredStrategy`` driven
by ``TF_CONFIG``; ``--batch-size`` is the global batch either way (tf.distribute
splits each global batch, after augmentation, across the replicas), and
``--sync-bn`` synchronises BatchNorm.  Only the chief writes; under
``multiworker`` every worker runs the whole input pipeline and keeps its part of
each global batch, and ``model.fit`` is patched around a Keras 3 bug that stops it
under that strategy (``tf_impl.compat``).  ``--float64`` trains in float64 from
the float32 initial weights, for exact comparisons of runs.  ``--amp`` maps to
Keras' ``mixed_float16`` policy on a GPU (``mixed_bfloat16`` with ``--amp-dtype
bfloat16``); on a CPU it says so and trains in float32, like the PyTorch CLI.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys

import numpy as np

from resnet_port import data, frameworks, rundir
from resnet_port import run as lifecycle
from resnet_port.recipe import Recipe


def set_threads(requested: int | None) -> str:
    """Set TensorFlow's compute threads (intra-op: oneDNN's and Eigen's; --threads, else every core but
    one) before its runtime starts; what was chosen, for the notice."""
    import tensorflow as tf

    from resnet_port import cli

    n, how = cli.cpu_threads(requested)
    if n is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
        except RuntimeError:  # the runtime already started (an earlier call in this process)
            pass
    got = tf.config.threading.get_intra_op_parallelism_threads() or n
    return f"{got} thread{'s' if got != 1 else ''} ({how})" if got else f"TensorFlow's default threads ({how})"


def resolve_policy(recipe: Recipe, has_gpu: bool, amp_dtype_given: bool):
    """(Keras dtype policy name, notice or None)."""
    if recipe.float64:
        return "float64", None
    if not recipe.amp:
        return "float32", None
    if has_gpu:
        return f"mixed_{recipe.amp_dtype}", None
    if amp_dtype_given:
        return (
            f"mixed_{recipe.amp_dtype}",
            f"notice: {recipe.amp_dtype} mixed precision on a CPU, as asked (often much slower than float32)",
        )
    return (
        "float32",
        "notice: --amp needs a GPU; training in float32 on the CPU (add --amp-dtype bfloat16 to force mixed_bfloat16)",
    )


def is_chief(strategy: str) -> bool:
    """Whether this process writes the run: always, but under ``multiworker`` only the
    chief does (the "chief" task, or worker 0 when the cluster names no chief)."""
    if strategy != "multiworker":
        return True
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--strategy multiworker needs TF_CONFIG (cluster and task) in the environment of every worker")
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task, cluster = tf_config["task"], tf_config["cluster"]
        kind, index = task["type"], int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"TF_CONFIG is not valid ({type(e).__name__}: {e}); it needs a 'cluster' and a 'task' with 'type' and 'index'"
        ) from None
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def make_strategy(name: str, cpu_replicas: int | None):
    """The tf.distribute strategy ``name`` names, or None for one device."""
    import tensorflow as tf

    if cpu_replicas:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if name == "none":
        return None
    if name == "mirrored":
        devices = None
        if cpu_replicas and not tf.config.list_physical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MultiWorkerMirroredStrategy()


class KerasBackend(lifecycle.Backend):
    framework = frameworks.KERAS
    description = __doc__.splitlines()[0]

    @staticmethod
    def add_arguments(ap) -> None:
        ap.add_argument(
            "--strategy",
            choices=["none", "mirrored", "multiworker"],
            default="none",
            help="tf.distribute strategy (default none: one device)",
        )
        ap.add_argument(
            "--cpu-replicas",
            type=int,
            default=None,
            help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
        )
        ap.add_argument(
            "--sync-bn", action="store_true", help="with a strategy: BatchNorm statistics over the global batch"
        )

    def __init__(self, args, recipe: Recipe):
        super().__init__(args, recipe)
        self.chief = is_chief(args.strategy)
        if args.cpu_replicas is not None and args.cpu_replicas < 1:
            raise ValueError(f"--cpu-replicas must be a positive integer, got {args.cpu_replicas}")

    def start(self, ds) -> None:
        import tensorflow as tf

        args = self.args
        threads = set_threads(getattr(args, "threads", None))  # before TensorFlow's runtime starts
        self.strategy = make_strategy(args.strategy, args.cpu_replicas)
        if self.strategy is not None and self.recipe.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(
                f"--batch-size {self.recipe.batch_size} (the global batch) must be a multiple of the {self.strategy.num_replicas_in_sync} replicas"
            )
        self.gpus = tf.config.list_physical_devices("GPU")
        if not self.gpus:
            self.notice(f"notice: no GPU found; training on the CPU with {threads}")
        self.policy, precision_notice = resolve_policy(self.recipe, bool(self.gpus), args.amp_dtype is not None)
        if precision_notice:
            self.notice(precision_notice)

    def build(self, ds: data.Cifar100) -> None:
        import keras
        import tensorflow as tf

        from . import compat, objective
        from .model import build_model

        recipe, strategy = self.recipe, self.strategy
        self.ds, self.normalization = ds, ds.normalization
        keras.utils.set_random_seed(recipe.seed)
        initial = None
        if self.policy == "float64":  # the float32 initial weights, so a float32 run can be compared with this one
            keras.mixed_precision.set_global_policy("float32")
            initial = [w.astype(np.float64) for w in build_model(recipe.arch).get_weights()]
            keras.utils.set_random_seed(recipe.seed)
        keras.mixed_precision.set_global_policy(self.policy)
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.model = build_model(recipe.arch, synchronized=self.args.sync_bn and strategy is not None)
            if initial is not None:
                self.model.set_weights(initial)
            self.optimizer = objective.make_optimizer(recipe.optimizer, recipe.schedule(self.steps_per_epoch()))
            self.model.compile(
                optimizer=self.optimizer,
                loss=objective.make_loss(self.model, recipe.arch, recipe.objective),
                metrics=["sparse_categorical_accuracy"],
            )
            self.optimizer.build(self.model.trainable_variables)
            if strategy is None:  # a strategy builds them itself (Keras' _maybe_symbolic_build)
                shape = tuple(d or 32 for d in self.model.input_shape[1:])
                compat.build_before_fit(
                    self.model, np.zeros((1, *shape), self.model.compute_dtype), np.zeros((1,), np.int64)
                )
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            compat.patch_fit_for_multiworker(self.model, strategy)
        # inference as one compiled function (no tf.distribute collective: every process evaluates alone)
        self._infer = tf.function(lambda x: self.model(x, training=False))
        # the training set as tensors once per run (each epoch's pipeline only reshuffles indices into it)
        with tf.device("/cpu:0"):
            self.train_images = tf.constant(ds.train.images)
            self.train_labels = tf.constant(ds.train.fine.astype(np.int64))

    def runtime(self) -> dict:
        import keras
        import tensorflow as tf

        return {
            "device": "gpu" if self.gpus else "cpu",
            "device_name": self.gpus[0].name if self.gpus else platform.processor() or platform.machine(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
            "amp_effective": self.policy,
            "strategy": self.args.strategy,
            "replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
            "sync_bn": bool(self.args.sync_bn and self.strategy),
        }

    def steps_per_epoch(self) -> int:
        return self.recipe.steps_per_epoch(len(self.ds.train))

    # -- checkpoints: one .npz (neutral weights + optimiser variables + JSON state + digest) --
    # Read with allow_pickle=False (an .npz can hold pickled objects; this one never does),
    # its digest recomputed and its values checked before anything is assigned.
    def snapshot(self, state: dict):

        from . import weights

        arrays = {f"model/{k}": v for k, v in weights.to_numpy(self.model, self.recipe.arch, dtype=None).items()}
        for i, v in enumerate(self.optimizer.variables):
            arrays[f"opt/{i:04d}"] = np.array(v.numpy())
        state = {**state, "opt_paths": [v.path for v in self.optimizer.variables]}

        from .backend import BACKEND

        return lambda path: BACKEND.write_checkpoint(path, arrays, state)

    def load(self, path) -> dict:
        from . import weights

        arrays, state = rundir.read_npz_checkpoint(path)
        fix = rundir.checkpoint_fix(path)
        weights.from_numpy(
            self.model, self.recipe.arch, {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, str(path)
        )
        opt_vars = self.optimizer.variables
        if state["opt_paths"] != [v.path for v in opt_vars]:
            raise rundir.RunDirError(f"checkpoint {path} holds optimiser state of another layout; {fix}")
        for i, v in enumerate(opt_vars):
            v.assign(arrays[f"opt/{i:04d}"])
        return state

    def export_weights(self, path) -> None:
        from . import weights

        weights.export(self.model, self.recipe.arch, path, normalization=self.normalization)

    # -- training -------------------------------------------------------------------------
    def train_epoch(
        self, epoch: int, start_batch: int, start: lifecycle.EpochSums, on_step, report_every: int
    ) -> lifecycle.EpochSums:
        import keras

        from .data import train_dataset

        r, n, last = self.recipe, len(self.ds.train), self.steps_per_epoch()
        train = train_dataset(
            self.train_images,
            self.train_labels,
            r.batch_size,
            None if r.augment.is_identity else r.augment,
            r.seed,
            epoch=epoch,
            normalization=self.normalization,
        )
        bs = r.batch_size
        # with loss scaling (mixed_float16) Keras skips steps whose gradients are not finite and
        # lowers the scale: it gets SCALER_PATIENCE steps before a non-finite loss stops the run
        patience = lifecycle.SCALER_PATIENCE if self.policy == "mixed_float16" else 1

        class Steps(keras.callbacks.Callback):
            """Per step: the batch's loss and accuracy (Keras' metrics reset before each step, so its
            logs are that batch's), summed in float64 in batch order from the interrupted part's sums,
            so a resumed epoch adds up exactly as an uninterrupted one; then the stop check."""

            def __init__(self):
                super().__init__()
                self.done, self.stopped = 0, False
                self.sums = lifecycle.EpochSums(start.loss_sum, start.correct, start.seen)
                self.window, self.window_seen, self.streak = 0.0, 0, 0

            def on_train_batch_begin(self, batch, logs=None):
                self.model.reset_metrics()

            def on_train_batch_end(self, batch, logs=None):
                logs = logs or {}
                self.done += 1
                b = start_batch + self.done
                images = min(bs, n - (b - 1) * bs)
                loss = float(logs.get("loss", math.nan))
                if math.isfinite(loss):
                    self.streak = 0
                    self.sums.loss_sum += loss * images
                    self.window += loss * images
                else:  # a step the loss scaler skipped trained nothing: left out of the sums
                    self.streak += 1
                    if self.streak >= patience:
                        raise lifecycle.Diverged(b, loss)
                self.sums.correct += round(float(logs.get("sparse_categorical_accuracy", 0.0)) * images)
                self.sums.seen += images
                self.window_seen += images
                if b % report_every and b != last:
                    stop = on_step(b, None)
                else:
                    stop = on_step(b, self.window / max(self.window_seen, 1))
                    self.window, self.window_seen = 0.0, 0
                if stop and b < last:
                    self.stopped = True
                    self.model.stop_training = True  # fit returns after this step

        steps = Steps()
        self.model.fit(
            train.skip(start_batch),
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,  # train_dataset shuffles, reproducibly per epoch
            verbose=0,  # the lifecycle shows progress
            callbacks=[steps],
        )
        if steps.stopped:
            raise lifecycle.Interrupted(steps.sums, start_batch + steps.done)
        return steps.sums

    def evaluate(self, split: data.Split):
        from .data import eval_dataset
        from .objective import loss_parts

        if len(split) == 0:
            return float("nan"), float("nan"), np.zeros(0, np.int64)
        ds = eval_dataset(split.images, split.fine, self.recipe.eval_batch_size, self.normalization)
        logits = np.concatenate([np.asarray(self._infer(x), dtype=np.float32) for x, _ in ds])
        ce, l2 = loss_parts(self.model, self.recipe.arch, self.recipe.objective, split.fine, logits)
        pred = logits.argmax(1)
        return float(ce + l2), float((pred == split.fine).mean()), pred

    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate.numpy())


def main(argv=None) -> int:
    return lifecycle.main(KerasBackend, argv)


if __name__ == "__main__":
    sys.exit(main())
