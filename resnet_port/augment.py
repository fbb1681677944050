"""The seed's augmentation as a neutral spec, its random draws, and a numpy reference.

The seed used Keras' ``ImageDataGenerator(width_shift_range=0.2,
height_shift_range=0.2, horizontal_flip=True, fill_mode='nearest')``.  Per image
that is, exactly as Keras draws and applies it:

* ``dy = U(-0.2, 0.2) * height`` and ``dx = U(-0.2, 0.2) * width``, in pixels,
  not rounded: the shift is sub-pixel;
* ``flip`` with probability 0.5;
* ``out[i, j] = in(i + dy, j' + dx)`` with ``j' = W - 1 - j`` when flipped
  (Keras shifts, then flips), sampled with bilinear interpolation (spline order
  1), where coordinates outside the image take the nearest edge pixel
  (``fill_mode='nearest'``: clamping the coordinate is the same thing).

Keras 3's ``ImageDataGenerator`` has one quirk, checked in the tests: its ``tx``
is drawn from ``height_shift_range`` and scaled by the height, but an axis swap
in ``apply_affine_transform`` applies it to *columns* (and ``ty`` to rows).  So
``apply_transform(x, {'tx': dx, 'ty': dy, 'flip_horizontal': flip})`` is this
spec's ``(dy, dx, flip)``.  For the recipe's square images and equal ranges the
two readings have the same distribution; this spec uses the documented one
(height shifts rows).

Shifting by a constant is separable, so bilinear sampling is a blend of two rows,
then of two columns; the framework realizations (``tf_impl.data``,
``torch_impl.data``) do it with batched gathers.  Draws are made apart from
applying them (:func:`draw`), so both frameworks can be fed the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentSpec:
    height_shift: float = 0.2  # fraction of the height, drawn uniformly in [-h, h]
    width_shift: float = 0.2  # fraction of the width
    horizontal_flip: bool = True  # with probability 0.5
    # fixed by the recipe, stated so they are not assumed
    interpolation: str = "bilinear"  # Keras' default spline order 1
    fill_mode: str = "nearest"

    def __post_init__(self):
        if not (0 <= self.height_shift < 1 and 0 <= self.width_shift < 1):
            raise ValueError(f"shift ranges are fractions of the image in [0, 1), got {self.height_shift}, {self.width_shift}")
        if self.interpolation != "bilinear" or self.fill_mode != "nearest":
            raise ValueError("only bilinear interpolation with fill_mode='nearest' (the recipe's) is implemented")

    @property
    def is_identity(self) -> bool:
        return self.height_shift == 0 and self.width_shift == 0 and not self.horizontal_flip


@dataclass
class Draws:
    """One augmentation per image: shifts in pixels (sub-pixel) and the flip flag."""

    dy: np.ndarray  # (N,) float32, rows: out[i] samples in[i + dy]
    dx: np.ndarray  # (N,) float32, columns
    flip: np.ndarray  # (N,) bool, horizontal flip after the shift

    def __len__(self):
        return len(self.dy)

    def save(self, path) -> None:
        np.savez(path, dy=self.dy, dx=self.dx, flip=self.flip)

    @classmethod
    def load(cls, path) -> "Draws":
        with np.load(path) as z:
            return cls(z["dy"].astype(np.float32), z["dx"].astype(np.float32), z["flip"].astype(bool))


def draw(spec: AugmentSpec, n: int, image_shape: tuple[int, int] | tuple[int, int, int], rng: np.random.Generator) -> Draws:
    h, w = image_shape[0], image_shape[1]
    dy = (rng.uniform(-spec.height_shift, spec.height_shift, n) * h).astype(np.float32)
    dx = (rng.uniform(-spec.width_shift, spec.width_shift, n) * w).astype(np.float32)
    flip = rng.random(n) < 0.5 if spec.horizontal_flip else np.zeros(n, bool)
    return Draws(dy, dx, flip)


def sample_coords(shift: np.ndarray, size: int, reverse: np.ndarray | None = None):
    """Indices and weights of a 1-D shifted, edge-clamped linear resampling.

    Returns ``(i0, i1, w)`` of shape (N, size): ``out[k] = (1 - w) in[i0] + w in[i1]``.
    ``reverse`` (N,) bool reads the axis backwards (the flip), before shifting.
    """
    k = np.arange(size, dtype=np.float32)[None, :].repeat(len(shift), 0)
    if reverse is not None:
        k = np.where(reverse[:, None], size - 1 - k, k)
    c = np.clip(k + shift[:, None].astype(np.float32), 0, size - 1)
    i0 = np.floor(c)
    w = (c - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return i0, np.minimum(i0 + 1, size - 1), w


def apply_reference(images: np.ndarray, d: Draws) -> np.ndarray:
    """Apply draws to a batch (N, H, W, C), float in [0, 1] or uint8; float32 out.

    The reference both realizations are checked against.
    """
    x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    n, h, w, _ = x.shape
    r0, r1, wr = sample_coords(d.dy, h)
    rows = np.arange(n)[:, None]
    x = x[rows, r0] * (1 - wr)[..., None, None] + x[rows, r1] * wr[..., None, None]
    c0, c1, wc = sample_coords(d.dx, w, d.flip)
    x = x[rows[:, :, None], np.arange(h)[None, :, None], c0[:, None, :]] * (1 - wc)[:, None, :, None] + x[
        rows[:, :, None], np.arange(h)[None, :, None], c1[:, None, :]
    ] * wc[:, None, :, None]
    return x.astype(np.float32)
