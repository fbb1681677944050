"""The augmentation and input pipeline in TensorFlow (tf.data), from the neutral spec.

``augment`` applies given draws with batched gathers (see ``resnet_port.augment``
for the semantics); ``random_draws`` draws them with TF's RNG inside the
pipeline; ``train_dataset`` is what ``model.fit`` consumes: uint8 images kept as
uint8 until a batch is formed, then shifted, flipped and scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from resnet_port.augment import AugmentSpec


def _coords(shift, size: int, reverse=None):
    n = tf.shape(shift)[0]
    k = tf.broadcast_to(tf.range(size, dtype=tf.float32)[None, :], tf.stack([n, size]))
    if reverse is not None:
        k = tf.where(reverse[:, None], float(size - 1) - k, k)
    c = tf.clip_by_value(k + shift[:, None], 0.0, float(size - 1))
    i0 = tf.floor(c)
    w = c - i0
    i0 = tf.cast(i0, tf.int32)
    return i0, tf.minimum(i0 + 1, size - 1), w


def augment(images, dy, dx, flip):
    """Shift (sub-pixel, bilinear, edge-clamped) then flip a batch (N, H, W, C).

    uint8 images are scaled to [0, 1]; the result is float32.
    """
    x = tf.convert_to_tensor(images)
    x = tf.cast(x, tf.float32) / 255.0 if x.dtype == tf.uint8 else tf.cast(x, tf.float32)
    h, w = x.shape[1], x.shape[2]
    r0, r1, wr = _coords(tf.cast(dy, tf.float32), h)
    wr = wr[:, :, None, None]
    x = tf.gather(x, r0, axis=1, batch_dims=1) * (1.0 - wr) + tf.gather(x, r1, axis=1, batch_dims=1) * wr
    c0, c1, wc = _coords(tf.cast(dx, tf.float32), w, tf.cast(flip, tf.bool))
    wc = wc[:, None, :, None]
    return tf.gather(x, c0, axis=2, batch_dims=1) * (1.0 - wc) + tf.gather(x, c1, axis=2, batch_dims=1) * wc


def random_draws(spec: AugmentSpec, n, height: int, width: int, seed=None):
    """(dy, dx, flip) drawn as ``resnet_port.augment.draw`` does, with TF's RNG.

    ``seed`` is a stateless seed pair (a tensor of 2 ints); the pipeline derives
    one per batch so that a run is reproducible from ``--seed``.
    """
    u = tf.random.stateless_uniform(tf.stack([3, n]), seed=seed, dtype=tf.float32)
    dy = (u[0] * 2.0 - 1.0) * spec.height_shift * height
    dx = (u[1] * 2.0 - 1.0) * spec.width_shift * width
    flip = u[2] < 0.5 if spec.horizontal_flip else tf.zeros(tf.stack([n]), tf.bool)
    return dy, dx, flip


def train_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, spec: AugmentSpec | None, seed: int, epoch: int = 0, shuffle: bool = True):
    """One epoch of (augmented float32 batch, int labels), reshuffled per ``epoch``.

    ``spec=None`` turns augmentation off (only the scaling to [0, 1]).
    """
    n = len(labels)
    h, w = images.shape[1], images.shape[2]
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    if shuffle:
        ds = ds.shuffle(n, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size).enumerate()

    def _map(i, batch):
        x, y = batch
        if spec is None:
            return tf.cast(x, tf.float32) / 255.0, y
        dy, dx, flip = random_draws(spec, tf.shape(x)[0], h, w, seed=tf.stack([tf.cast(seed, tf.int64), epoch * 1_000_003 + i]))
        return augment(x, dy, dx, flip), y

    return ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int):
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64))).batch(batch_size)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)).prefetch(tf.data.AUTOTUNE)
