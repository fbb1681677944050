"""Deliberately wrong PyTorch ports of the spec: what a port that trusts PyTorch's defaults looks like.

They exist only to prove that the parity checks catch such ports and point at
the right layer (``python -m resnet_port.diff --naive NAME``, the parity tests);
nothing trains with them, and the production classes in ``torch_impl.model``
know nothing about them.  Each variant builds the correct model, then breaks one
convention in place.
"""

from __future__ import annotations

import torch.nn.functional as F

from resnet_port.spec import ResNetSpec, bottleneck_stride, get_spec, strided_bottlenecks

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


def _same_padding(model: ResNet) -> None:
    """TF 'same' where PyTorch's symmetric padding=p was meant (a port that trusts Keras' habit)."""
    for m in model.modules():
        if type(m) is SameConv2d and m.padding != (0, 0):
            m.same, m.padding = True, (0, 0)


def _keras_bn_epsilon(model: ResNet) -> None:
    for m in model.modules():
        if isinstance(m, KerasBatchNorm2d):
            m.eps = 1e-3  # Keras' default, not PyTorch's 1e-5


def _move_stride(model: ResNet, to: str) -> None:
    """Every strided bottleneck block's stride moved to its first 1x1 (``to="1x1"``) or its 3x3."""
    for one, three, on in strided_bottlenecks(model.spec):
        if on != to:
            a, b = model.get_submodule(one), model.get_submodule(three)
            a.stride, b.stride = (b.stride, (1, 1)) if to == "1x1" else ((1, 1), a.stride)


def _stride_on_1x1(model: ResNet) -> None:
    """v1's bottleneck (the stride on the first 1x1) where v1.5's was meant: the same weights, another function."""
    _move_stride(model, "1x1")


def _stride_on_3x3(model: ResNet) -> None:
    """v1.5's bottleneck (the stride on the 3x3) where v1's (keras.applications') was meant."""
    _move_stride(model, "3x3")


def _keras_conventions(spec: ResNetSpec) -> bool:
    return spec.conventions.padding == "tf"


#: name -> (what it gets wrong, how to break a correct model, the specs it is a wrong port of):
#: the first two are what a port of a Keras model that trusts PyTorch's defaults gets wrong,
#: the next two what a port of a PyTorch model that trusts Keras' gets wrong, the last two a
#: bottleneck network ported as the other version
VARIANTS = {
    "symmetric-padding": (
        "PyTorch's symmetric padding=k//2 for TF 'same' convolutions",
        _symmetric_padding,
        _keras_conventions,
    ),
    "torch-bn-epsilon": (
        "PyTorch's BatchNorm epsilon 1e-5 instead of Keras' 1e-3",
        _torch_bn_epsilon,
        _keras_conventions,
    ),
    "same-padding": (
        "TF 'same' padding for PyTorch's symmetric padding=p convolutions",
        _same_padding,
        lambda spec: not _keras_conventions(spec),
    ),
    "keras-bn-epsilon": (
        "Keras' BatchNorm epsilon 1e-3 instead of PyTorch's 1e-5",
        _keras_bn_epsilon,
        lambda spec: not _keras_conventions(spec),
    ),
    # a bottleneck network's version: v1 (keras.applications) and v1.5 (torchvision, timm) hold the same weights
    "stride-on-1x1": (
        "v1's bottleneck, the stride on the first 1x1, for v1.5's (on the 3x3)",
        _stride_on_1x1,
        lambda spec: bottleneck_stride(spec) == "3x3",
    ),
    "stride-on-3x3": (
        "v1.5's bottleneck, the stride on the 3x3, for v1's (on the first 1x1)",
        _stride_on_3x3,
        lambda spec: bottleneck_stride(spec) == "1x1",
    ),
}


def applicable(arch: str | ResNetSpec) -> list[str]:
    """The naive variants that are wrong ports of ``arch`` (the conventions it does not follow)."""
    spec = get_spec(arch)
    return [name for name, (_, _, applies) in VARIANTS.items() if applies(spec)]


def build(arch: str | ResNetSpec, variant: str) -> ResNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown naive variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    spec = get_spec(arch)
    if variant not in applicable(spec):
        raise ValueError(
            f"naive variant {variant!r} is not a wrong port of {spec.name}, which follows the other conventions; choose one of: {', '.join(applicable(spec))}"
        )
    model = build_model(spec)
    VARIANTS[variant][1](model)
    return model
