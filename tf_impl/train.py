"""``python -m tf_impl.train``: the recipe in Keras, the reference, faithful to the seed.

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
under that strategy (see ``_patch_fit_for_multiworker``).  ``--float64`` trains in
float64 from the float32 initial weights, for exact comparisons of runs.
``--amp`` maps to Keras' ``mixed_float16`` policy on a GPU (``mixed_bfloat16``
with ``--amp-dtype bfloat16``); on a CPU it says so and trains in float32, like
the PyTorch CLI.  Same run directory, resume and Ctrl-C behaviour as
``torch_impl.train``.
"""

from __future__ import annotations

import io
import json
import platform
import sys
import time

import numpy as np

from resnet_port import cli, data, rundir
from resnet_port.recipe import Recipe
from resnet_port.weights import WeightsError, atomic_write_bytes

FRAMEWORK = "tf_impl"


def resolve_policy(recipe: Recipe, has_gpu: bool, amp_dtype_given: bool):
    """(Keras dtype policy name, notice or None)."""
    if recipe.float64:
        return "float64", None
    if not recipe.amp:
        return "float32", None
    if has_gpu:
        return f"mixed_{recipe.amp_dtype}", None
    if amp_dtype_given:
        return f"mixed_{recipe.amp_dtype}", f"notice: {recipe.amp_dtype} mixed precision on a CPU, as asked (often much slower than float32)"
    return "float32", "notice: --amp needs a GPU; training in float32 on the CPU (add --amp-dtype bfloat16 to force mixed_bfloat16)"


def is_chief(strategy: str) -> bool:
    """Whether this process writes the run: always, but under ``multiworker`` only the
    chief does (the "chief" task, or worker 0 when the cluster names no chief)."""
    import os

    if strategy != "multiworker":
        return True
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--strategy multiworker needs TF_CONFIG (cluster and task) in the environment of every worker")
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task, cluster = tf_config["task"], tf_config["cluster"]
        kind, index = task["type"], int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not valid ({type(e).__name__}: {e}); it needs a 'cluster' and a 'task' with 'type' and 'index'") from None
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


def _patch_fit_for_multiworker(model, strategy) -> None:
    """Let ``model.fit`` run under MultiWorkerMirroredStrategy (Keras 3 bug workaround).

    First place: before its first step, Keras' TF trainer builds the model symbolically from one
    batch, which it gets as ``strategy.reduce("MEAN", per_replica_batch)``.  Under
    MultiWorkerMirroredStrategy that reduce raises "Attempt to convert a value
    (PerReplica...)" (keras-team/keras#20585, tensorflow/tensorflow#72388, open).  The
    batch only gives the build its shapes, so this model builds from this worker's
    first local replica's part instead: same shapes, no collective.  Second place:
    see below; that patch is to Keras' trainer module, and acts only on this strategy.
    """
    import types

    import tensorflow as tf

    if not (hasattr(model, "_maybe_symbolic_build") and hasattr(model, "_symbolic_build")):
        return  # a Keras without this code path

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

    # The same bug, second place: each step's logs (scalars) are averaged over the
    # workers with ``strategy.reduce("MEAN", v, axis=0)``, which fails on a scalar.
    # Averaged with ``axis=None`` (the mean over replicas) instead.
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = getattr(tf_trainer, "reduce_per_replica", None)
    if original is None or getattr(original, "_resnet_port", False):
        return

    def reduce_per_replica(values, strategy_, reduction="auto"):
        if reduction in ("auto", "mean") and isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy):
            return tf.nest.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v, values)
        return original(values, strategy_, reduction)

    reduce_per_replica._resnet_port = True
    tf_trainer.reduce_per_replica = reduce_per_replica


class Trainer:
    def __init__(self, recipe: Recipe, ds: data.Cifar100, policy: str, strategy=None, sync_bn: bool = False, chief: bool = True):
        import contextlib

        import keras
        import tensorflow as tf

        from . import objective
        from .model import build_model

        self.recipe, self.ds = recipe, ds
        self.chief = chief
        keras.utils.set_random_seed(recipe.seed)
        initial = None
        if policy == "float64":  # the float32 initial weights, so a float32 run can be compared with this one
            keras.mixed_precision.set_global_policy("float32")
            initial = [w.astype(np.float64) for w in build_model(recipe.arch).get_weights()]
            keras.utils.set_random_seed(recipe.seed)
        keras.mixed_precision.set_global_policy(policy)
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.model = build_model(recipe.arch, synchronized=sync_bn and strategy is not None)
            if initial is not None:
                self.model.set_weights(initial)
            self.optimizer = objective.make_optimizer(recipe.optimizer)
            self.model.compile(optimizer=self.optimizer, loss=objective.make_loss(self.model, recipe.arch, recipe.objective), metrics=["sparse_categorical_accuracy"])
            self.optimizer.build(self.model.trainable_variables)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _patch_fit_for_multiworker(self.model, strategy)
        self.history: list[dict] = []
        self.epoch, self.batch = 0, 0
        self.partial = rundir.empty_partial()

    # -- checkpoints: one .npz (neutral weights + optimiser variables + JSON state) --------
    def save(self, path) -> None:
        from . import weights

        if not self.chief:
            return
        arrays = {f"model/{k}": v for k, v in weights.to_numpy(self.model, self.recipe.arch, dtype=None).items()}
        for i, v in enumerate(self.optimizer.variables):
            arrays[f"opt/{i:04d}"] = np.asarray(v.numpy())
        state = {"epoch": self.epoch, "batch": self.batch, "partial": self.partial, "history": self.history, "recipe": self.recipe.to_dict(), "opt_paths": [v.path for v in self.optimizer.variables]}
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())

    def load(self, path) -> None:
        from . import weights

        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            state = json.loads(arrays.pop("state").tobytes().decode())
        except Exception as e:
            raise rundir.RunDirError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete it to restart the run") from None
        weights.from_numpy(self.model, self.recipe.arch, {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, str(path))
        opt_vars = self.optimizer.variables
        if state["opt_paths"] != [v.path for v in opt_vars]:
            raise rundir.RunDirError(f"checkpoint {path} holds optimiser state of another layout; delete it to restart the run")
        for i, v in enumerate(opt_vars):
            v.assign(arrays[f"opt/{i:04d}"])
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.partial, self.history = state["partial"], state["history"]

    # -- training -------------------------------------------------------------------------
    def fit(self, run: rundir.RunDir, quiet: bool) -> None:
        import keras

        from .data import eval_dataset, train_dataset

        r, ds = self.recipe, self.ds
        val = eval_dataset(ds.val.images, ds.val.fine, r.eval_batch_size) if len(ds.val) else None

        class Tracker(keras.callbacks.Callback):
            """Counts batches and keeps Keras' running means, so Ctrl-C can checkpoint mid-epoch."""

            def on_epoch_begin(self, epoch, logs=None):
                self.done, self.logs = 0, {}

            def on_train_batch_end(self, batch, logs=None):
                self.done += 1
                self.logs = logs or {}

        while self.epoch < r.epochs:
            train = train_dataset(ds.train.images, ds.train.fine, r.batch_size, None if r.augment.is_identity else r.augment, r.seed, epoch=self.epoch)
            tracker = Tracker()
            start = time.perf_counter()
            skip = self.batch
            try:
                hist = self.model.fit(
                    train.skip(skip),
                    epochs=self.epoch + 1,
                    initial_epoch=self.epoch,
                    shuffle=False,  # train_dataset shuffles, reproducibly per epoch
                    verbose=0 if quiet else (1 if sys.stdout.isatty() else 2),  # 2: one line per epoch, as the seed logged
                    callbacks=[tracker],
                )
            except KeyboardInterrupt:
                self._absorb(tracker, skip, time.perf_counter() - start)
                self.save(run.checkpoint)
                raise
            seconds = self.partial["seconds"] + time.perf_counter() - start
            seen_now = len(ds.train) - min(skip * r.batch_size, len(ds.train))
            loss_sum = self.partial["loss_sum"] + hist.history["loss"][-1] * seen_now
            correct = self.partial["correct"] + hist.history["sparse_categorical_accuracy"][-1] * seen_now
            n = len(ds.train)
            if val is not None:
                val_loss, val_acc = self.model.evaluate(val, verbose=0)
            else:
                val_loss = val_acc = float("nan")
            self.history.append(
                {
                    "epoch": self.epoch + 1,
                    "loss": loss_sum / n,
                    "accuracy": correct / n,
                    "seconds": seconds,
                    "images_per_sec": n / max(seconds, 1e-9),
                    "val_loss": float(val_loss),
                    "val_accuracy": float(val_acc),
                    "lr": float(self.optimizer.learning_rate.numpy()),
                }
            )
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = rundir.empty_partial()
            self.save(run.checkpoint)  # the checkpoint first: metrics.jsonl is derived from it
            if self.chief:
                run.write_metrics(self.history)
            if not quiet and self.chief:
                h = self.history[-1]
                print(f"epoch {h['epoch']}/{r.epochs}: val_loss {h['val_loss']:.4f} val_acc {h['val_accuracy']:.4f} lr {h['lr']:.3g} ({h['images_per_sec']:.0f} img/s)", file=sys.stderr)

    def _absorb(self, tracker, skip: int, seconds: float) -> None:
        """Fold the interrupted part of an epoch into the partial sums of the checkpoint."""
        done = getattr(tracker, "done", 0)
        seen = min(done * self.recipe.batch_size, len(self.ds.train) - skip * self.recipe.batch_size)
        logs = getattr(tracker, "logs", {})
        self.partial = {
            "loss_sum": self.partial["loss_sum"] + float(logs.get("loss", 0.0)) * seen,
            "correct": self.partial["correct"] + float(logs.get("sparse_categorical_accuracy", 0.0)) * seen,
            "seen": self.partial["seen"] + seen,
            "seconds": self.partial["seconds"] + seconds,
        }
        self.batch = skip + done

    def evaluate(self, split: data.Split):
        """(loss incl. L2, accuracy, predictions) in inference mode, batches of eval_batch_size."""
        from .data import eval_dataset

        if len(split) == 0:
            return float("nan"), float("nan"), np.zeros(0, np.int64)
        from .objective import loss_parts

        ds = eval_dataset(split.images, split.fine, self.recipe.eval_batch_size)
        logits = np.concatenate([np.asarray(self.model(x, training=False), dtype=np.float32) for x, _ in ds])
        ce, l2 = loss_parts(self.model, self.recipe.arch, self.recipe.objective, split.fine, logits)
        pred = logits.argmax(1)
        return float(ce + l2), float((pred == split.fine).mean()), pred


def main(argv=None) -> int:
    ap = cli.train_parser(FRAMEWORK, __doc__.splitlines()[0])
    ap.add_argument("--strategy", choices=["none", "mirrored", "multiworker"], default="none", help="tf.distribute strategy (default none: one device)")
    ap.add_argument("--cpu-replicas", type=int, default=None, help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)")
    ap.add_argument("--sync-bn", action="store_true", help="with a strategy: BatchNorm statistics over the global batch")
    args = ap.parse_args(argv)

    def run_main():
        started = time.perf_counter()
        recipe = cli.recipe_from_args(args)
        out = args.out or cli.default_out(FRAMEWORK, recipe.arch)
        chief = is_chief(args.strategy)
        if chief:
            run = rundir.RunDir(out, FRAMEWORK, recipe, resume=args.resume, force=args.force)
        else:  # another multiworker process: the chief checks, creates and writes the run directory
            run = rundir.RunDir.follow(out, FRAMEWORK, resume=args.resume)
        ds = cli.load_data(recipe, args)

        import tensorflow as tf

        from . import weights as tf_weights

        if args.cpu_replicas is not None and args.cpu_replicas < 1:
            raise ValueError(f"--cpu-replicas must be a positive integer, got {args.cpu_replicas}")
        strategy = make_strategy(args.strategy, args.cpu_replicas)
        if strategy is not None and recipe.batch_size % strategy.num_replicas_in_sync:
            raise ValueError(f"--batch-size {recipe.batch_size} (the global batch) must be a multiple of the {strategy.num_replicas_in_sync} replicas")
        gpus = tf.config.list_physical_devices("GPU")
        policy, notice = resolve_policy(recipe, bool(gpus), args.amp_dtype is not None)
        if notice:
            print(notice, file=sys.stderr)
        if chief:
            run.create()
        trainer = Trainer(recipe, ds, policy, strategy, args.sync_bn, chief)
        if run.resuming:  # every worker: they continue in step
            trainer.load(run.checkpoint)
        if not chief:  # a MultiWorkerMirroredStrategy worker: trains in step, writes nothing
            try:
                trainer.fit(run, True)
            except KeyboardInterrupt:
                return 130  # the chief says where its checkpoint is
            return 0
        if run.resuming:
            print(f"resuming {run.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}", file=sys.stderr)
            run.write_metrics(trainer.history)
        run.write_config(
            recipe,
            runtime={
                "device": "gpu" if gpus else "cpu",
                "device_name": gpus[0].name if gpus else platform.processor() or platform.machine(),
                "tensorflow": tf.__version__,
                "keras": __import__("keras").__version__,
                "python": platform.python_version(),
                "amp_effective": policy,
                "strategy": args.strategy,
                "replicas": strategy.num_replicas_in_sync if strategy else 1,
                "sync_bn": bool(args.sync_bn and strategy),
            },
            data={"source": ds.source, "verified": ds.verified, "train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
        )
        try:
            trainer.fit(run, args.quiet)
        except KeyboardInterrupt:
            return cli.interrupted(trainer.epoch + 1, trainer.batch, run.path)
        results = rundir.finish(run, recipe, trainer.ds, trainer.history, lambda path: tf_weights.export(trainer.model, recipe.arch, path), trainer.evaluate, f"{recipe.arch} (Keras)", started)
        print(cli.summary(rundir.summary_lines(f"Keras {__import__('keras').__version__} / TensorFlow {tf.__version__} ({results['epochs']} epochs, {recipe.arch})", results, run)))
        return 0

    return cli.run_cli(run_main, (ValueError, data.DataError, rundir.RunDirError, WeightsError))


if __name__ == "__main__":
    sys.exit(main())
