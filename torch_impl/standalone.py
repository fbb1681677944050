"""A ResNet in plain PyTorch, built from a description of its layers (``ARCHITECTURE``, written below).

This file needs nothing but ``torch``: ``python -m resnet_port.export ... --format pytorch-module``
writes it, with the network's description appended, beside ``state_dict.pth``, so that a model
from Keras (keras.applications' ResNet50, the post's ResNet18) becomes a PyTorch module anyone can
read, train and ship without resnet-port::

    import torch, model                      # this file
    net = model.resnet()                     # the architecture described at the end of this file
    net.load_state_dict(torch.load("state_dict.pth", weights_only=True), strict=True)
    logits = net.eval()(images)              # NCHW float32, prepared as preprocessing.json says

Every layer is a module named as the network's description names it (``stem.conv``,
``layer1.0.conv1``, ...), so ``state_dict`` keys are ``<name>.weight`` and so on.  What makes the
numbers equal to the framework the weights come from is spelt out in the layer classes:
TensorFlow's 'same' padding (one row and column more after than before where the sizes are
uneven), zero-padded max-pools (Keras' ``ZeroPadding2D`` then a pool), average pools that count
only the pixels inside the input, and BatchNorm with Keras' epsilon, momentum and moving-variance
update (the batch variance, not PyTorch's n/(n-1) one) where the weights were trained in Keras.
New layers take PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding of one spatial dimension: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """A convolution; ``padding``: an int (PyTorch's symmetric), ``"same"`` (TensorFlow's) or ``"valid"``."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0, bias=False, groups=1):
        super().__init__(
            cin, cout, kernel, stride, 0 if isinstance(padding, str) else padding, bias=bias, groups=groups
        )
        self.same = padding == "same"

    def forward(self, x):
        if self.same:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = same_padding(x.shape[-2], k, s)
            left, right = same_padding(x.shape[-1], k, s)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d; ``biased_update``: the moving variance follows the batch's own (biased) variance, as in
    Keras, where PyTorch's fused kernel uses the unbiased one (an O(channels) correction afterwards)."""

    def __init__(self, channels, eps=1e-5, momentum=0.1, biased_update=False):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.biased_update = biased_update

    def forward(self, x):
        if not (self.training and self.biased_update):
            return super().forward(x)
        n = x.numel() // x.shape[1]
        new_var = self.running_var.clone()
        y = F.batch_norm(x, self.running_mean, new_var, self.weight, self.bias, True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_var.copy_(new_var - (new_var - (1.0 - self.momentum) * self.running_var) / n)
            self.num_batches_tracked.add_(1)
        return y


class Pool(nn.Module):
    """A max or average pool.  ``padding``: an int (max: -inf, as PyTorch pads; average: the pad left out of
    the count), ``"same"`` (TensorFlow's: after, -inf / not counted) or ``"valid"``; ``zero_pad``: a max-pool
    over explicit zeros (Keras' ZeroPadding2D then a 'valid' pool); ``ceil_mode`` as PyTorch's."""

    def __init__(self, kind, size, stride, padding=0, zero_pad=False, ceil_mode=False):
        super().__init__()
        self.kind, self.size, self.stride, self.padding = kind, size, stride, padding
        self.zero_pad, self.ceil_mode = zero_pad, ceil_mode

    def forward(self, x):
        pad = 0 if self.padding == "valid" else self.padding
        if self.padding == "same":
            top, bottom = same_padding(x.shape[-2], self.size, self.stride)
            left, right = same_padding(x.shape[-1], self.size, self.stride)
            if self.kind == "max":
                return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), self.size, self.stride)
            ones = torch.ones_like(x[:1, :1])
            total = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), self.size, self.stride)
            return total / F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), self.size, self.stride)
        if self.kind == "max" and self.zero_pad and pad:
            return F.max_pool2d(F.pad(x, (pad, pad, pad, pad)), self.size, self.stride)
        if self.kind == "max":
            return F.max_pool2d(x, self.size, self.stride, pad, ceil_mode=self.ceil_mode)
        return F.avg_pool2d(x, self.size, self.stride, pad, ceil_mode=self.ceil_mode, count_include_pad=False)


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


def place(root: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Register ``module`` in ``root`` under its dotted ``name``, creating the containers on the way (a
    numbered part, as ``layer1.0``, lives in an ``nn.Sequential``), so that state_dict keys are
    ``<name>.<param>``; returns ``module``."""
    *path, last = name.split(".")
    parent = root
    for i, part in enumerate(path):
        if not hasattr(parent, part):
            nxt = path[i + 1] if i + 1 < len(path) else last
            parent.add_module(part, nn.Sequential() if nxt.isdigit() else nn.Module())
        parent = getattr(parent, part)
    parent.add_module(last, module)
    return module


LAYERS = {
    "conv": Conv,
    "bn": BatchNorm,
    "relu": lambda: nn.ReLU(),
    "pool": Pool,
    "add": lambda: Add(),
    "gap": lambda: GlobalAvgPool(),
    "fc": nn.Linear,
}


class ResNet(nn.Module):
    """The network ``architecture`` describes: ``{"stem": [...], "blocks": [...], "head": [...]}``, each layer a
    ``[name, kind, {settings}]``, each block ``{"pre", "residual", "shortcut", "post": [layers], "add": layer,
    "shortcut_from": "input" | "pre"}``: ``post(add(residual(pre(x)), shortcut(x or pre(x))))``, an empty
    shortcut being the identity."""

    def __init__(self, architecture: dict):
        super().__init__()
        self.architecture = architecture
        self._stem = self._sequence(architecture["stem"])
        self._blocks = [
            {part: self._sequence(block[part]) for part in ("pre", "residual", "shortcut", "post")}
            | {"add": self._sequence([block["add"]])[0], "from_pre": block["shortcut_from"] == "pre"}
            for block in architecture["blocks"]
        ]
        self._head = self._sequence(architecture["head"])

    def _sequence(self, layers) -> list[nn.Module]:
        """Each layer, registered under its dotted name."""
        out = []
        for name, kind, settings in layers:
            out.append(place(self, name, LAYERS[kind](**settings)))
        return out

    @staticmethod
    def _run(modules, x):
        for m in modules:
            x = m(x)
        return x

    def forward(self, x):
        """NCHW images to logits."""
        x = self._run(self._stem, x)
        for block in self._blocks:
            y = self._run(block["pre"], x)
            shortcut = self._run(block["shortcut"], y if block["from_pre"] else x)
            x = self._run(block["post"], block["add"](self._run(block["residual"], y), shortcut))
        return self._run(self._head, x)
