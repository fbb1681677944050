"""The augmentation and input pipeline in PyTorch: batched tensor code, on the GPU when there is one.

The training set lives on the device as uint8 (150 MB for CIFAR-100); each step
indexes a batch, draws its augmentation on the device and applies it with two
gathers per axis, so no Python per-sample work or host-device copy stands
between the GPU and its next batch.  Semantics: ``resnet_port.augment``.
"""

from __future__ import annotations

import numpy as np
import torch

from resnet_port.augment import PIXEL_SCALE, AugmentSpec, Normalization, draws_from_uniform


def _coords(shift: torch.Tensor, size: int, reverse: torch.Tensor | None = None):
    k = torch.arange(size, device=shift.device, dtype=torch.float32).expand(len(shift), size)
    if reverse is not None:
        k = torch.where(reverse[:, None], (size - 1) - k, k)
    c = k + shift[:, None]
    inside = (c >= 0) & (c <= size - 1)
    c = c.clamp_(0, size - 1)
    i0 = c.floor()
    w = c - i0
    i0 = i0.long()
    return i0, (i0 + 1).clamp_(max=size - 1), w, inside


def _cutout_keep(centre: torch.Tensor, size: int, side: int) -> torch.Tensor:
    k = torch.arange(size, device=centre.device, dtype=torch.float32)[None, :]
    c = centre.float()[:, None]
    return ~((k >= c - side // 2) & (k < c + side // 2))


def normalize(x: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """Per-channel (x - mean) / std of an (N, C, H, W) batch, when the recipe asks for it."""
    if normalization is None:
        return x
    mean = torch.tensor(normalization.mean, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(normalization.std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def scale(x: torch.Tensor, normalization: Normalization | None = None) -> torch.Tensor:
    """uint8 (or float) images to float32 in [0, 1], then normalised when asked."""
    x = x.float().div_(PIXEL_SCALE) if x.dtype == torch.uint8 else x.float()
    return normalize(x, normalization)


def augment(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor,
    cut_y=None,
    cut_x=None,
    spec: AugmentSpec | None = None,
    normalization: Normalization | None = None,
) -> torch.Tensor:
    """Shift (sub-pixel, bilinear, with the spec's fill) then flip a batch (N, C, H, W), normalise, Cutout.

    uint8 input is scaled to [0, 1]; the result is float32 in the input's memory format.
    """
    spec = spec or AugmentSpec()
    x = scale(x)
    n, c, h, w = x.shape
    r0, r1, wr, rin = _coords(dy.float(), h)
    g0 = torch.gather(x, 2, r0[:, None, :, None].expand(n, c, h, w))
    g1 = torch.gather(x, 2, r1[:, None, :, None].expand(n, c, h, w))
    x = torch.lerp(g0, g1, wr[:, None, :, None])
    c0, c1, wc, cin = _coords(dx.float(), w, flip.bool())
    g0 = torch.gather(x, 3, c0[:, None, None, :].expand(n, c, h, w))
    g1 = torch.gather(x, 3, c1[:, None, None, :].expand(n, c, h, w))
    x = torch.lerp(g0, g1, wc[:, None, None, :])
    if spec.fill_mode == "constant":
        x = x * (rin[:, None, :, None] & cin[:, None, None, :])
    x = normalize(x, normalization)
    if spec.cutout:
        x = x * (
            _cutout_keep(cut_y, h, spec.cutout)[:, None, :, None]
            | _cutout_keep(cut_x, w, spec.cutout)[:, None, None, :]
        )
    return x


def random_draws(spec: AugmentSpec, n: int, height: int, width: int, device, generator: torch.Generator | None = None):
    """(dy, dx, flip, cut_y, cut_x) drawn on ``device`` by the neutral formula."""
    u = torch.rand(spec.uniforms_per_image, n, device=device, generator=generator)
    return draws_from_uniform(u, spec, height, width)


class DeviceLoader:
    """Batches of a uint8 NHWC numpy set held on ``device``, augmented there.

    Yields ``(images NCHW in [0, 1] (normalised when given), labels int64)``, the images in ``dtype``
    (float32; float64 for ``--float64`` runs, augmented in float32 first, as Keras'
    pipeline does, then converted); ``channels_last``
    makes the images' memory layout NHWC, which convolutions on GPUs and oneDNN
    prefer.  The order is a permutation drawn from ``generator`` per epoch; the
    last, smaller batch is kept (as Keras does).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        device,
        augment_spec: AugmentSpec | None = None,
        shuffle: bool = True,
        channels_last: bool = True,
        rank: int = 0,
        world: int = 1,
        dtype: torch.dtype = torch.float32,
        normalization: Normalization | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.normalization = normalization
        # NHWC uint8 -> NCHW view with channels-last strides: no copy of the pixels' order
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
        if not channels_last:
            self.images = self.images.contiguous()
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.batch_size, self.spec, self.shuffle = batch_size, augment_spec, shuffle
        self.h, self.w = images.shape[1], images.shape[2]
        self.rank, self.world = rank, world
        self.global_count = 0  # images in the current global batch (all processes together)

    def __len__(self):
        n = -(-len(self.labels) // self.batch_size)
        if self.world > 1 and 0 < len(self.labels) % self.batch_size < self.world:
            n -= 1  # a last global batch smaller than the number of processes is dropped
        return n

    def batches(self, generator: torch.Generator | None = None, start: int = 0, draw_state: torch.Tensor | None = None):
        """Yield the epoch's batches from batch index ``start``.

        The shuffle is drawn first from ``generator``; to resume mid-epoch with the
        same augmentation draws, pass the generator's state saved at batch ``start``
        as ``draw_state``.
        """
        n = len(self.labels)
        order = (
            torch.randperm(n, device=self.device, generator=generator)
            if self.shuffle
            else torch.arange(n, device=self.device)
        )
        if draw_state is not None:
            generator.set_state(draw_state)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            self.global_count = len(idx)
            # Under DistributedDataParallel every process draws the same order and the same
            # augmentation for the whole global batch, and keeps its own contiguous chunk:
            # the processes together see exactly what one process would.
            part = slice(None)
            if self.world > 1:
                bounds = np.linspace(0, len(idx), self.world + 1).round().astype(int)
                part = slice(bounds[self.rank], bounds[self.rank + 1])
            x, y = self.images[idx[part]], self.labels[idx[part]]
            if self.spec is None or self.spec.is_identity:
                yield scale(x, self.normalization).to(self.dtype), y
                continue
            draws = [
                d if d is None else d[part]
                for d in random_draws(self.spec, len(idx), self.h, self.w, self.device, generator)
            ]
            yield augment(x, *draws, spec=self.spec, normalization=self.normalization).to(self.dtype), y
