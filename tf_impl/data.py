"""The input pipeline in TensorFlow (tf.data), from the neutral spec (``resnet_port.augment``).

``augment`` applies given draws with batched gathers; ``random_draws`` draws
them with TF's RNG inside the pipeline; ``train_dataset`` is what ``model.fit``
consumes: uint8 images kept as uint8 until a batch is formed, then shifted,
flipped, scaled (and, for recipes that ask, normalised and cut out).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from resnet_port.augment import PIXEL_SCALE, AugmentSpec, Normalization, draws_from_uniform

PARALLEL_CALLS = max(1, min(4, os.cpu_count() or 1))  # batches augmented at once


def _no_autotune(ds):
    """Fixed parallelism instead of tf.data's autotuning.

    With autotuning on (TF 2.21), destroying an epoch's iterator at the end of
    ``model.fit`` waited for the autotuning thread: measured, 3 of 5 resnet18
    epochs of 20 batches took 41 s instead of 21, the CPUs idle meanwhile (the
    main thread in ``~LogicalThreadWrapper``).  A map over one core per
    thread and a prefetch of two batches keep the accelerator fed just as well
    here: 61 img/s per epoch, with no stall in 10 epochs.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _coords(shift, size: int, reverse=None):
    n = tf.shape(shift)[0]
    k = tf.broadcast_to(tf.range(size, dtype=tf.float32)[None, :], tf.stack([n, size]))
    if reverse is not None:
        k = tf.where(reverse[:, None], float(size - 1) - k, k)
    c = k + shift[:, None]
    inside = (c >= 0.0) & (c <= float(size - 1))
    c = tf.clip_by_value(c, 0.0, float(size - 1))
    i0 = tf.floor(c)
    w = c - i0
    i0 = tf.cast(i0, tf.int32)
    return i0, tf.minimum(i0 + 1, size - 1), w, inside


def _cutout_keep(centre, size: int, side: int):
    k = tf.range(size, dtype=tf.float32)[None, :]
    c = tf.cast(centre, tf.float32)[:, None]
    return ~((k >= c - float(side // 2)) & (k < c + float(side // 2)))


def scale(images, normalization: Normalization | None = None):
    """uint8 (or float) images to float32 in [0, 1], then normalised when asked."""
    x = tf.convert_to_tensor(images)
    x = tf.cast(x, tf.float32) / PIXEL_SCALE if x.dtype == tf.uint8 else tf.cast(x, tf.float32)
    return normalize(x, normalization)


def normalize(x, normalization: Normalization | None):
    if normalization is None:
        return x
    return (x - tf.constant(normalization.mean, tf.float32)) / tf.constant(normalization.std, tf.float32)


def augment(
    images,
    dy,
    dx,
    flip,
    cut_y=None,
    cut_x=None,
    spec: AugmentSpec | None = None,
    normalization: Normalization | None = None,
):
    """Shift (sub-pixel, bilinear, with the spec's fill) then flip a batch (N, H, W, C), normalise, Cutout.

    uint8 images are scaled to [0, 1]; the result is float32.
    """
    spec = spec or AugmentSpec()
    x = scale(images)
    h, w = x.shape[1], x.shape[2]
    r0, r1, wr, rin = _coords(tf.cast(dy, tf.float32), h)
    wr = wr[:, :, None, None]
    x = tf.gather(x, r0, axis=1, batch_dims=1) * (1.0 - wr) + tf.gather(x, r1, axis=1, batch_dims=1) * wr
    c0, c1, wc, cin = _coords(tf.cast(dx, tf.float32), w, tf.cast(flip, tf.bool))
    wc = wc[:, None, :, None]
    x = tf.gather(x, c0, axis=2, batch_dims=1) * (1.0 - wc) + tf.gather(x, c1, axis=2, batch_dims=1) * wc
    if spec.fill_mode == "constant":
        x = x * tf.cast(rin[:, :, None, None] & cin[:, None, :, None], x.dtype)
    x = normalize(x, normalization)
    if spec.cutout:
        keep = (
            _cutout_keep(cut_y, h, spec.cutout)[:, :, None, None]
            | _cutout_keep(cut_x, w, spec.cutout)[:, None, :, None]
        )
        x = x * tf.cast(keep, x.dtype)
    return x


def random_draws(spec: AugmentSpec, n, height: int, width: int, seed=None):
    """(dy, dx, flip, cut_y, cut_x) drawn with TF's RNG by the neutral formula.

    ``seed`` is a stateless seed pair (a tensor of 2 ints); the pipeline derives
    one per batch so that a run is reproducible from ``--seed``.
    """
    u = tf.random.stateless_uniform(tf.stack([spec.uniforms_per_image, n]), seed=seed, dtype=tf.float32)
    return draws_from_uniform(u, spec, height, width)


def train_dataset(
    images,
    labels,
    batch_size: int,
    spec: AugmentSpec | None,
    seed: int,
    epoch: int = 0,
    shuffle: bool = True,
    normalization: Normalization | None = None,
):
    """One epoch of (augmented float32 batch, int labels), reshuffled per ``epoch``.

    ``images`` (uint8 NHWC) and ``labels`` may be numpy arrays or, to build them
    once per run rather than once per epoch, tensors.  Only the image *indices*
    are shuffled (a buffer of integers, not of images); each batch gathers its
    images.  The order is tf.data's shuffle of the training set with the epoch's
    seed, as shuffling the images themselves would give.  ``spec=None`` turns
    augmentation off (only the scaling, and the normalisation).
    """
    images = tf.convert_to_tensor(images)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int64)
    n = int(labels.shape[0])
    h, w = images.shape[1], images.shape[2]
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size).enumerate()

    @tf.autograph.experimental.do_not_convert  # no tensor-valued Python control flow in it; see eval_dataset
    def _map(i, idx):
        x, y = tf.gather(images, idx), tf.gather(labels, idx)
        if spec is None or spec.is_identity:
            return scale(x, normalization), y
        draws = random_draws(
            spec, tf.shape(x)[0], h, w, seed=tf.stack([tf.cast(seed, tf.int64), epoch * 1_000_003 + i])
        )
        return augment(x, *draws, spec=spec, normalization=normalization), y

    return _no_autotune(ds.map(_map, num_parallel_calls=PARALLEL_CALLS).prefetch(2))


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, normalization: Normalization | None = None):
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64))).batch(batch_size)
    # traced as written, without AutoGraph: every `if` in these functions tests Python values (the recipe's
    # spec, a dtype), never a tensor, so the graph is the same, and AutoGraph's conversion of them cost
    # ~0.8 s of every Keras run's start (measured on a 2-core Xeon)
    to_float = tf.autograph.experimental.do_not_convert(lambda x, y: (scale(x, normalization), y))
    return _no_autotune(ds.map(to_float).prefetch(2))
