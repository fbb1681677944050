"""Deliberately wrong PyTorch ports of the spec: what a port that trusts PyTorch's defaults looks like.

They exist only to prove that the parity checks catch such ports and point at
the right layer (``python -m resnet_port.diff --naive NAME``, the parity tests);
nothing trains with them, and the production classes in ``torch_impl.model``
know nothing about them.  Each variant builds the correct model, then breaks one
convention in place.
"""

from __future__ import annotations

import torch.nn.functional as F

from resnet_port.spec import ResNetSpec, get_spec

from .model import KerasBatchNorm2d, ResNet, SameConv2d, build_model


class SymmetricPaddingConv2d(SameConv2d):
    """'same' as ``padding=k // 2`` on both sides (PyTorch's habit), not TF's extra row and column after."""

    def forward(self, x):
        if not self.same:
            return super().forward(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.kernel_size[0] // 2)


def _symmetric_padding(model: ResNet) -> None:
    for m in model.modules():
        if type(m) is SameConv2d:
            m.__class__ = SymmetricPaddingConv2d


def _torch_bn_epsilon(model: ResNet) -> None:
    for m in model.modules():
        if isinstance(m, KerasBatchNorm2d):
            m.eps = 1e-5  # PyTorch's default, not Keras' 1e-3


#: name -> (what it gets wrong, how to break a correct model)
VARIANTS = {
    "symmetric-padding": ("PyTorch's symmetric padding=k//2 for TF 'same' convolutions", _symmetric_padding),
    "torch-bn-epsilon": ("PyTorch's BatchNorm epsilon 1e-5 instead of Keras' 1e-3", _torch_bn_epsilon),
}


def build(arch: str | ResNetSpec, variant: str) -> ResNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown naive variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    model = build_model(get_spec(arch))
    VARIANTS[variant][1](model)
    return model
