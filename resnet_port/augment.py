"""Input preprocessing and augmentation, written once: the spec, the random draws, a numpy reference.

The seed used Keras' ``ImageDataGenerator(width_shift_range=0.2,
height_shift_range=0.2, horizontal_flip=True, fill_mode='nearest')`` on pixels
divided by 255.  Per image that is, exactly as Keras draws and applies it:

* ``dy = U(-0.2, 0.2) * height`` and ``dx = U(-0.2, 0.2) * width``, in pixels,
  not rounded: the shift is sub-pixel;
* ``flip`` with probability 0.5;
* ``out[i, j] = in(i + dy, j' + dx)`` with ``j' = W - 1 - j`` when flipped
  (Keras shifts, then flips), sampled with bilinear interpolation (spline order
  1), where coordinates outside the image take the nearest edge pixel
  (``fill_mode='nearest'``: clamping the coordinate is the same thing).

A modern CIFAR recipe (``--recipe modern``) uses the same machinery with other
settings: a random 32x32 crop of the image zero-padded by 4 is an *integer*
shift in [-4, 4] with zero fill (``crop_padding=4``, ``fill_mode='constant'``);
then the flip; then per-channel normalisation; then Cutout, one square of zeros
of side 8 whose centre is uniform over the image, clipped at the borders
(DeVries & Taylor 2017, applied after normalisation as in their code).

The order, for every framework: scale to [0, 1] (divide by :data:`PIXEL_SCALE`),
shift (and flip), normalise (:class:`Normalization`), Cutout.

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
applying them: each framework draws uniforms with its own RNG and turns them
into draws with :func:`draws_from_uniform` (plain arithmetic, so the same code
runs on numpy arrays and on TF and PyTorch tensors), and the tests feed all
three the same :class:`Draws`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: uint8 pixels are divided by this, to [0, 1] (the seed's ``/ 255.0``)
PIXEL_SCALE = 255.0
#: probability of a horizontal flip
FLIP_PROBABILITY = 0.5
FILL_MODES = ("nearest", "constant")


@dataclass(frozen=True)
class AugmentSpec:
    height_shift: float = 0.2  # fraction of the height, drawn uniformly in [-h, h], sub-pixel
    width_shift: float = 0.2  # fraction of the width
    horizontal_flip: bool = True  # with probability FLIP_PROBABILITY
    interpolation: str = "bilinear"  # Keras' default spline order 1
    fill_mode: str = "nearest"  # what is shifted in: the edge pixel (the seed) or 'constant' zeros
    crop_padding: int = 0  # > 0: random crop of the image zero-padded by this many pixels (integer shifts)
    cutout: int = 0  # > 0: one square of zeros of this side, after normalisation

    def __post_init__(self):
        if not (0 <= self.height_shift < 1 and 0 <= self.width_shift < 1):
            raise ValueError(
                f"shift ranges are fractions of the image in [0, 1), got {self.height_shift}, {self.width_shift}"
            )
        if self.interpolation != "bilinear" or self.fill_mode not in FILL_MODES:
            raise ValueError(
                f"interpolation must be 'bilinear' and fill_mode one of {FILL_MODES}, got {self.interpolation!r}, {self.fill_mode!r}"
            )
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(
                f"crop_padding and cutout are sizes in pixels >= 0, got {self.crop_padding}, {self.cutout}"
            )
        if self.crop_padding and (self.height_shift or self.width_shift):
            raise ValueError("a random crop (crop_padding) and fractional shifts exclude each other: set one")
        if self.crop_padding and self.fill_mode != "constant":
            raise ValueError("a random crop from the zero-padded image needs fill_mode='constant'")

    @property
    def is_identity(self) -> bool:
        return not (self.height_shift or self.width_shift or self.crop_padding or self.horizontal_flip or self.cutout)

    @property
    def uniforms_per_image(self) -> int:
        """Uniform numbers each image draws: dy, dx, flip, and the Cutout centre (y, x) when on."""
        return 5 if self.cutout else 3


#: no augmentation (``--no-augment``): only the scaling (and normalisation)
NONE = AugmentSpec(height_shift=0.0, width_shift=0.0, horizontal_flip=False)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` on pixels in [0, 1], after the shift and flip.

    The statistics are the training split's (:func:`channel_stats`), stored in
    the run's config and in its weights file, since the model needs them.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.std) or min(self.std, default=1.0) <= 0:
            raise ValueError(
                f"normalisation needs one mean and one positive std per channel, got {self.mean}, {self.std}"
            )

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Normalization | None":
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])) if d else None


def channel_stats(images: np.ndarray) -> Normalization:
    """Mean and (population) standard deviation per channel of uint8 NHWC images scaled to [0, 1]."""
    if len(images) == 0:
        raise ValueError("cannot compute normalisation statistics of an empty training split")
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / PIXEL_SCALE
    return Normalization(tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0)))


@dataclass
class Draws:
    """One augmentation per image: shifts in pixels, the flip, the Cutout centre."""

    dy: np.ndarray  # (N,) float32, rows: out[i] samples in[i + dy]
    dx: np.ndarray  # (N,) float32, columns
    flip: np.ndarray  # (N,) bool, horizontal flip after the shift
    cut_y: np.ndarray | None = None  # (N,) float32 integral: Cutout centre row (None: no Cutout)
    cut_x: np.ndarray | None = None

    def __len__(self):
        return len(self.dy)

    def save(self, path) -> None:
        extra = {} if self.cut_y is None else {"cut_y": self.cut_y, "cut_x": self.cut_x}
        np.savez(path, dy=self.dy, dx=self.dx, flip=self.flip, **extra)

    @classmethod
    def load(cls, path) -> "Draws":
        with np.load(path) as z:
            cut = (z["cut_y"].astype(np.float32), z["cut_x"].astype(np.float32)) if "cut_y" in z.files else (None, None)
            return cls(z["dy"].astype(np.float32), z["dx"].astype(np.float32), z["flip"].astype(bool), *cut)


def draws_from_uniform(u, spec: AugmentSpec, height: int, width: int):
    """``(dy, dx, flip, cut_y, cut_x)`` from uniforms ``u`` in [0, 1) of shape (uniforms_per_image, N).

    Plain arithmetic, so that numpy, TensorFlow and PyTorch tensors all go through
    this one formula (``//`` is floor division in all three); ``cut_y`` and
    ``cut_x`` are None without Cutout.
    """
    if spec.crop_padding:
        p = spec.crop_padding
        dy = (u[0] * (2 * p + 1)) // 1 - p  # integer offsets in [-p, p], each with probability 1/(2p+1)
        dx = (u[1] * (2 * p + 1)) // 1 - p
    else:
        dy = (u[0] * 2 - 1) * (spec.height_shift * height)
        dx = (u[1] * 2 - 1) * (spec.width_shift * width)
    flip = u[2] < (FLIP_PROBABILITY if spec.horizontal_flip else 0.0)
    if not spec.cutout:
        return dy, dx, flip, None, None
    return dy, dx, flip, (u[3] * height) // 1, (u[4] * width) // 1


def draw(
    spec: AugmentSpec, n: int, image_shape: tuple[int, int] | tuple[int, int, int], rng: np.random.Generator
) -> Draws:
    h, w = image_shape[0], image_shape[1]
    u = rng.random((spec.uniforms_per_image, n), dtype=np.float32)
    dy, dx, flip, cy, cx = draws_from_uniform(u, spec, h, w)
    f32 = lambda a: None if a is None else np.asarray(a, np.float32)
    return Draws(f32(dy), f32(dx), np.asarray(flip), f32(cy), f32(cx))


def sample_coords(shift: np.ndarray, size: int, reverse: np.ndarray | None = None):
    """Indices, weights and validity of a 1-D shifted, linearly interpolated resampling.

    Returns ``(i0, i1, w, inside)`` of shape (N, size): ``out[k] = (1 - w) in[i0] +
    w in[i1]``, where the sample point ``k + shift`` (``reverse`` (N,) bool reads
    the axis backwards first: the flip) is clamped to the image (fill 'nearest');
    ``inside`` says whether it was in the image before clamping (fill 'constant'
    zeroes the others).
    """
    k = np.arange(size, dtype=np.float32)[None, :].repeat(len(shift), 0)
    if reverse is not None:
        k = np.where(reverse[:, None], size - 1 - k, k)
    c = k + shift[:, None].astype(np.float32)
    inside = (c >= 0) & (c <= size - 1)
    c = np.clip(c, 0, size - 1)
    i0 = np.floor(c)
    w = (c - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return i0, np.minimum(i0 + 1, size - 1), w, inside


def cutout_mask(centre: np.ndarray, size: int, side: int) -> np.ndarray:
    """(N, size) float32: 0 on ``[c - side // 2, c + side // 2)`` clipped to the image, 1 elsewhere."""
    k = np.arange(size, dtype=np.float32)[None, :]
    c = centre.astype(np.float32)[:, None]
    return ~((k >= c - side // 2) & (k < c + side // 2))


def apply_reference(
    images: np.ndarray, d: Draws, spec: AugmentSpec | None = None, normalization: Normalization | None = None
) -> np.ndarray:
    """Apply draws to a batch (N, H, W, C), float in [0, 1] or uint8; float32 out.

    The reference both realizations are checked against: scale, shift (with the
    spec's fill), flip, normalise, Cutout.
    """
    spec = spec or AugmentSpec()
    x = images.astype(np.float32) / np.float32(PIXEL_SCALE) if images.dtype == np.uint8 else images.astype(np.float32)
    n, h, w, _ = x.shape
    r0, r1, wr, rin = sample_coords(d.dy, h)
    rows = np.arange(n)[:, None]
    x = x[rows, r0] * (1 - wr)[..., None, None] + x[rows, r1] * wr[..., None, None]
    c0, c1, wc, cin = sample_coords(d.dx, w, d.flip)
    x = (
        x[rows[:, :, None], np.arange(h)[None, :, None], c0[:, None, :]] * (1 - wc)[:, None, :, None]
        + x[rows[:, :, None], np.arange(h)[None, :, None], c1[:, None, :]] * wc[:, None, :, None]
    )
    if spec.fill_mode == "constant":
        x = x * (rin[:, :, None, None] & cin[:, None, :, None])
    if normalization is not None:
        x = (x - np.float32(normalization.mean)) / np.float32(normalization.std)
    if spec.cutout:
        x = x * (
            cutout_mask(d.cut_y, h, spec.cutout)[:, :, None, None]
            | cutout_mask(d.cut_x, w, spec.cutout)[:, None, :, None]
        )
    return x.astype(np.float32)
