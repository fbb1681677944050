"""Keras side of ``python -m resnet_port.bench``: timed windows of Keras' own train step."""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np


def _windows(fn, n_items: int, warmup: int, windows: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        rates.append(n_items * steps / (time.perf_counter() - t))
    return statistics.median(rates)


def matmul_gflops(n: int = 2048, seconds: float = 0.5, dtype="float32", windows: int = 3) -> float:
    """The best of ``windows`` timed windows of n x n matrix products: the machine's ceiling."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)[:1, :1]))
    mm().numpy()
    best = 0.0
    for _ in range(windows):
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            mm().numpy()
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def run(op: dict) -> dict:
    import keras
    import tensorflow as tf

    from resnet_port import parity
    from resnet_port.augment import AugmentSpec, channel_stats

    from .data import augment, normalize, random_draws
    from .model import build_model
    from .objective import make_loss, make_optimizer

    precision = op.get("precision", "fp32")
    policy = {"fp32": "float32", "amp-fp16": "mixed_float16", "amp-bf16": "mixed_bfloat16"}[precision]
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    b, warmup, windows, steps = op["batch_size"], op["warmup"], op["windows"], op["steps"]
    recipe = parity.recipe_of(op)  # the recipe's objective, optimiser (schedule of a 100-step epoch), augmentation
    model = build_model(op["arch"])
    optimizer = make_optimizer(recipe.optimizer, recipe.schedule(100))
    optimizer.build(model.trainable_variables)  # before the first step, which would trace twice to make them
    model.compile(
        optimizer=optimizer,
        loss=make_loss(model, op["arch"], recipe.objective),
        metrics=["sparse_categorical_accuracy"],
    )
    h, w, _ = model.input_shape[1:]
    rng = np.random.default_rng(0)
    raw_np = rng.integers(0, 256, (b, h, w, 3)).astype(np.uint8)
    raw = tf.constant(raw_np)
    y = tf.constant(rng.integers(0, 100, b))
    norm = channel_stats(raw_np) if recipe.normalize else None
    x_plain = normalize(tf.cast(raw, tf.float32) / 255.0, norm)
    spec = AugmentSpec() if recipe.augment.is_identity else recipe.augment
    seed = tf.Variable([0, 0], dtype=tf.int64)

    @tf.function
    def aug(images):
        seed.assign_add([0, 1])
        return augment(images, *random_draws(spec, tf.shape(images)[0], h, w, seed=seed), spec=spec, normalization=norm)

    out = {
        "framework": "tf_impl",
        "device": "gpu" if tf.config.list_physical_devices("GPU") else "cpu",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    rows = op.get("rows") or ["train_aug", "train", "inference", "augment", "matmul_gflops"]
    out["train_aug"] = _windows(lambda: model.train_on_batch(aug(raw), y), b, warmup, windows, steps)
    if "train" in rows:
        out["train"] = _windows(lambda: model.train_on_batch(x_plain, y), b, warmup, windows, steps)
    if "inference" in rows:
        infer = tf.function(lambda x: model(x, training=False))
        out["inference"] = _windows(lambda: infer(x_plain).numpy(), b, warmup, windows, steps)
    if "augment" in rows:
        big = 50 * b
        raw_big = tf.tile(raw, [50, 1, 1, 1])
        out["augment"] = _windows(lambda: aug(raw_big).numpy(), big, warmup, windows, steps)
    if "matmul_gflops" in rows:
        out["matmul_gflops"] = matmul_gflops(dtype="float32" if precision == "fp32" else policy.split("_")[1])
    out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = tf.config.threading.get_intra_op_parallelism_threads() or "default"
    return out
