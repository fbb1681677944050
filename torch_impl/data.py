"""The augmentation and input pipeline in PyTorch: batched tensor code, on the GPU when there is one.

The training set lives on the device as uint8 (150 MB for CIFAR-100); each step
indexes a batch, draws its augmentation on the device and applies it with two
gathers per axis, so no Python per-sample work or host-device copy stands
between the GPU and its next batch.  Semantics: ``resnet_port.augment``.
"""

from __future__ import annotations

import numpy as np
import torch

from resnet_port.augment import AugmentSpec


def _coords(shift: torch.Tensor, size: int, reverse: torch.Tensor | None = None):
    k = torch.arange(size, device=shift.device, dtype=torch.float32).expand(len(shift), size)
    if reverse is not None:
        k = torch.where(reverse[:, None], (size - 1) - k, k)
    c = (k + shift[:, None]).clamp_(0, size - 1)
    i0 = c.floor()
    w = c - i0
    i0 = i0.long()
    return i0, (i0 + 1).clamp_(max=size - 1), w


def augment(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Shift (sub-pixel, bilinear, edge-clamped) then flip a batch (N, C, H, W).

    uint8 input is scaled to [0, 1]; the result is float32 in the input's memory format.
    """
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    n, c, h, w = x.shape
    r0, r1, wr = _coords(dy.float(), h)
    g0 = torch.gather(x, 2, r0[:, None, :, None].expand(n, c, h, w))
    g1 = torch.gather(x, 2, r1[:, None, :, None].expand(n, c, h, w))
    x = torch.lerp(g0, g1, wr[:, None, :, None])
    c0, c1, wc = _coords(dx.float(), w, flip.bool())
    g0 = torch.gather(x, 3, c0[:, None, None, :].expand(n, c, h, w))
    g1 = torch.gather(x, 3, c1[:, None, None, :].expand(n, c, h, w))
    return torch.lerp(g0, g1, wc[:, None, None, :])


def random_draws(spec: AugmentSpec, n: int, height: int, width: int, device, generator: torch.Generator | None = None):
    """(dy, dx, flip) drawn as ``resnet_port.augment.draw`` does, on ``device``."""
    u = torch.rand(3, n, device=device, generator=generator)
    dy = (u[0] * 2 - 1) * (spec.height_shift * height)
    dx = (u[1] * 2 - 1) * (spec.width_shift * width)
    flip = u[2] < 0.5 if spec.horizontal_flip else torch.zeros(n, dtype=torch.bool, device=device)
    return dy, dx, flip


class DeviceLoader:
    """Batches of a uint8 NHWC numpy set held on ``device``, augmented there.

    Yields ``(images NCHW in [0, 1], labels int64)``, the images in ``dtype``
    (float32; float64 for ``--float64`` runs, augmented in float32 first, as Keras'
    pipeline does, then converted); ``channels_last``
    makes the images' memory layout NHWC, which convolutions on GPUs and oneDNN
    prefer.  The order is a permutation drawn from ``generator`` per epoch; the
    last, smaller batch is kept (as Keras does).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, device, augment_spec: AugmentSpec | None = None, shuffle: bool = True, channels_last: bool = True, rank: int = 0, world: int = 1, dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
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
        order = torch.randperm(n, device=self.device, generator=generator) if self.shuffle else torch.arange(n, device=self.device)
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
                yield x.float().div_(255.0).to(self.dtype), y
                continue
            dy, dx, flip = random_draws(self.spec, len(idx), self.h, self.w, self.device, generator)
            yield augment(x, dy[part], dx[part], flip[part]).to(self.dtype), y
