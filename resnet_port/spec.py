"""The framework-neutral architecture spec: the seed's CIFAR ResNet, written down once.

Both realizations (``tf_impl.model`` and ``torch_impl.model``) are built from the
frozen dataclasses below and take their layer names from them.  Those names are
the parity keys and the keys of the neutral weights file, so they are frozen.

Conventions held here, once:

* Shapes are per sample and channels-last: ``(height, width, channels)``.
* Parameter shapes are given in the neutral layout of the weights file: conv
  kernels ``(kh, kw, in, out)``, dense kernels ``(in, out)``, vectors ``(c,)``.
* BatchNorm ``momentum`` is Keras' convention: the weight of the *old* moving
  value (``moving = momentum * moving + (1 - momentum) * batch_stat``).  PyTorch's
  ``momentum`` is the weight of the new value: ``1 - momentum`` (see
  :func:`BatchNormSpec.torch_momentum`).
* Padding is one of three conventions, held by :func:`conv_output_size` and
  realized by each framework in one place: ``'same'`` is TensorFlow's (when the
  total padding is odd, the extra row/column goes after, bottom/right;
  :func:`same_padding` computes it), ``'valid'`` is none, and an ``int`` ``p`` is
  PyTorch's ``padding=p`` (``p`` rows/columns on *both* sides; for a max-pool the
  padded values never win).
* BatchNorm constants are per variant: Keras' (epsilon 1e-3, momentum 0.99, the
  biased batch variance in the moving update) for the seed's family, PyTorch's
  (1e-5, 0.1 in its convention, the *unbiased* variance ``n / (n - 1)``) for the
  PyTorch-convention variants (:data:`PYTORCH_BN`).
* A variant's class count is part of its name when it is not the registry's
  default: ``resnet18-torch@1000`` is ``resnet18-torch`` with a 1000-class head
  (:func:`get_spec` parses it), so the name in a weights file says everything.
* Initialisers are named here (:data:`INITIALISERS`), and each framework maps a
  name to its own function: the distributions are equal, the draws are not (a
  weights file is how two realizations get the same values).
* Every layer has a canonical name, also the parameter-free ones (ReLU, add,
  pooling), so that per-layer comparisons can point at any node of the graph.

This module imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterator

#: Keras' BatchNormalization defaults, which the seed used.
KERAS_BN_EPSILON = 1e-3
KERAS_BN_MOMENTUM = 0.99
#: ``nn.BatchNorm2d``'s defaults: epsilon 1e-5, momentum 0.1 in PyTorch's convention (the
#: weight of the new value), 0.9 in Keras' (the spec's); the moving variance takes the
#: unbiased batch variance.
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9

#: The initialisers a spec may name, as distributions (fans of a conv kernel
#: (kh, kw, in, out): fan_in = kh*kw*in, fan_out = kh*kw*out; of a dense kernel:
#: in and out).  Keras' and PyTorch's functions for each are in tf_impl/model.py
#: and torch_impl/model.py.
INITIALISERS = {
    "glorot_uniform": "U(-a, a), a = sqrt(6 / (fan_in + fan_out)); Keras' default, the seed's",
    "he_normal_fan_out": "N(0, 2 / fan_out), not truncated; torchvision's ResNet convolutions",
    "uniform_fan_in": "U(-b, b), b = 1 / sqrt(fan_in), weight and bias alike; PyTorch's nn.Linear/nn.Conv2d default",
    "zeros": "0",
    "ones": "1",
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding ``(before, after)`` for one spatial axis.

    The output size is ``ceil(size / stride)``; the total padding needed for that
    is split with the odd pixel *after*.  PyTorch's ``padding=k // 2`` pads both
    sides equally, which differs whenever the total is odd (stride 2 on an even
    input): that is the main silent parity break between the frameworks.
    """
    if size < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"same_padding needs positive sizes, got size={size}, kernel={kernel}, stride={stride}")
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def check_padding(padding) -> None:
    """'same', 'valid' or a non-negative int (PyTorch's symmetric ``padding=p``)."""
    if padding in ("same", "valid") or (isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0):
        return
    raise ValueError(f"padding must be 'same', 'valid' or a non-negative int (symmetric, as PyTorch's padding=p), got {padding!r}")


def conv_output_size(size: int, kernel: int, stride: int, padding: str | int) -> int:
    """Output length along one axis: 'same' / 'valid' as TF defines them, an int ``p`` as PyTorch does."""
    check_padding(padding)
    if padding == "same":
        return -(-size // stride)
    p = 0 if padding == "valid" else padding
    out = (size + 2 * p - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input of size {size} is smaller than the kernel {kernel} with padding {padding!r}")
    return out


def symmetric_as_same(kernel: int, stride: int, padding) -> bool:
    """Whether PyTorch's ``padding=p`` equals TF 'same' on every input size (stride 1, odd kernel, p = k // 2)."""
    return isinstance(padding, int) and stride == 1 and kernel % 2 == 1 and padding == kernel // 2


@dataclass(frozen=True)
class ConvSpec:
    name: str
    in_channels: int
    filters: int
    kernel_size: int
    stride: int
    padding: str | int  # 'same' (TF semantics), 'valid', or p (PyTorch's symmetric padding=p)
    use_bias: bool = True  # Keras' default, which the seed kept on every conv
    kernel_init: str = "glorot_uniform"
    bias_init: str = "zeros"

    kind = "conv2d"

    def params(self) -> dict[str, tuple[int, ...]]:
        p = {"kernel": (self.kernel_size, self.kernel_size, self.in_channels, self.filters)}
        if self.use_bias:
            p["bias"] = (self.filters,)
        return p

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        h, w, c = shape
        if c != self.in_channels:
            raise ValueError(f"{self.name}: expects {self.in_channels} input channels, got {c}")
        return (
            conv_output_size(h, self.kernel_size, self.stride, self.padding),
            conv_output_size(w, self.kernel_size, self.stride, self.padding),
            self.filters,
        )

    def flops(self, out_shape: tuple[int, int, int]) -> int:
        """Multiply-adds x 2 of one forward pass for one sample (bias adds included)."""
        h, w, c = out_shape
        macs = h * w * c * self.kernel_size * self.kernel_size * self.in_channels
        return 2 * macs + (h * w * c if self.use_bias else 0)


@dataclass(frozen=True)
class BatchNormSpec:
    name: str
    channels: int
    epsilon: float = KERAS_BN_EPSILON
    momentum: float = KERAS_BN_MOMENTUM  # Keras convention: weight of the old value
    gamma_init: str = "ones"
    beta_init: str = "zeros"  # moving mean starts at 0, moving variance at 1, in both
    # the moving variance takes the unbiased batch variance n / (n - 1) (PyTorch) or the biased one (Keras)
    unbiased_variance: bool = False

    kind = "batchnorm"

    @property
    def torch_momentum(self) -> float:
        """The same decay in PyTorch's convention (weight of the new batch statistic)."""
        return 1.0 - self.momentum

    def params(self) -> dict[str, tuple[int, ...]]:
        c = (self.channels,)
        return {"gamma": c, "beta": c, "moving_mean": c, "moving_variance": c}

    def output_shape(self, shape):
        if shape[-1] != self.channels:
            raise ValueError(f"{self.name}: expects {self.channels} channels, got {shape[-1]}")
        return shape


@dataclass(frozen=True)
class MaxPoolSpec:
    name: str
    pool_size: int
    stride: int
    padding: str | int  # 'same' pads after with -inf, as TF does; p pads both sides, as PyTorch does

    kind = "maxpool"

    def params(self):
        return {}

    def output_shape(self, shape):
        h, w, c = shape
        return (
            conv_output_size(h, self.pool_size, self.stride, self.padding),
            conv_output_size(w, self.pool_size, self.stride, self.padding),
            c,
        )


@dataclass(frozen=True)
class _ShapeKeeping:
    """A parameter-free layer whose output has its input's shape."""

    name: str

    def params(self):
        return {}

    def output_shape(self, shape):
        return shape


@dataclass(frozen=True)
class ReluSpec(_ShapeKeeping):
    kind = "relu"


@dataclass(frozen=True)
class AddSpec(_ShapeKeeping):
    """The residual sum: the block's last BatchNorm plus its shortcut."""

    kind = "add"


@dataclass(frozen=True)
class GlobalAvgPoolSpec:
    name: str

    kind = "global_avg_pool"

    def params(self):
        return {}

    def output_shape(self, shape):
        return (shape[-1],)


@dataclass(frozen=True)
class DenseSpec:
    name: str
    in_features: int
    units: int
    kernel_init: str = "glorot_uniform"
    bias_init: str = "zeros"

    kind = "dense"

    def params(self):
        return {"kernel": (self.in_features, self.units), "bias": (self.units,)}

    def output_shape(self, shape):
        if shape[-1] != self.in_features:
            raise ValueError(f"{self.name}: expects {self.in_features} features, got {shape[-1]}")
        return (self.units,)

    def flops(self, out_shape) -> int:
        return 2 * self.in_features * self.units + self.units


@dataclass(frozen=True)
class BlockSpec:
    """A BasicBlock: conv3x3(s)-BN-ReLU-conv3x3(1)-BN, plus the shortcut, add, ReLU.

    The shortcut is a 1x1 'valid' convolution of stride ``s`` and a BatchNorm
    where the architecture's projection rule asks for one (the seed: when the
    stride is not 1), identity otherwise.
    """

    name: str
    conv1: ConvSpec
    bn1: BatchNormSpec
    relu1: ReluSpec
    conv2: ConvSpec
    bn2: BatchNormSpec
    add: AddSpec
    relu2: ReluSpec
    shortcut_conv: ConvSpec | None = None
    shortcut_bn: BatchNormSpec | None = None

    @property
    def stride(self) -> int:
        return self.conv1.stride

    @property
    def has_projection(self) -> bool:
        return self.shortcut_conv is not None


@dataclass(frozen=True)
class ResNetSpec:
    """A whole network: stem, BasicBlocks in execution order, pooling and logits."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem_conv: ConvSpec
    stem_bn: BatchNormSpec
    stem_relu: ReluSpec
    stem_pool: MaxPoolSpec | None  # None: no pooling in the stem (CIFAR-style ResNets)
    blocks: tuple[BlockSpec, ...]
    avgpool: GlobalAvgPoolSpec
    fc: DenseSpec
    stage_blocks: tuple[int, ...] = field(default=())

    # -- derived views -------------------------------------------------------------
    def layers(self, input_shape: tuple[int, int, int] | None = None) -> list["LayerInfo"]:
        """Every layer in execution order with its output shape for ``input_shape``.

        Parameter-free layers (ReLU, add, pooling) are listed too, so that per-layer
        comparisons can name any point of the graph.
        """
        return list(_trace(self, tuple(input_shape or self.input_shape)))

    def parameter_layers(self) -> list["LayerInfo"]:
        """The layers that hold parameters: the canonical names of the weights file."""
        return [layer for layer in self.layers() if layer.params]

    def parameters(self) -> dict[str, tuple[int, ...]]:
        """``{'<layer>.<param>': shape}`` in the neutral layout, execution order."""
        return {f"{layer.name}.{p}": shape for layer in self.parameter_layers() for p, shape in layer.params.items()}

    def trainable_parameters(self) -> dict[str, tuple[int, ...]]:
        return {k: s for k, s in self.parameters().items() if not is_moving_statistic(k)}

    def count_parameters(self) -> "ParamCount":
        trainable = non_trainable = 0
        for key, shape in self.parameters().items():
            n = math.prod(shape)
            if is_moving_statistic(key):
                non_trainable += n
            else:
                trainable += n
        return ParamCount(trainable, non_trainable)

    def batchnorm_fed_biases(self) -> list[str]:
        """Conv biases that feed straight into a BatchNorm.

        BN subtracts the batch mean, so in training mode their gradient is zero in
        exact arithmetic (float noise in practice).  Parity tests compare them
        through the function they produce instead of element by element.
        """
        return [f"{c.name}.bias" for c in self.convolutions() if c.use_bias]

    def convolutions(self) -> list[ConvSpec]:
        """Every convolution, in execution order (each one feeds a BatchNorm here)."""
        out = [self.stem_conv]
        for b in self.blocks:
            out += [b.conv1, b.conv2] + ([b.shortcut_conv] if b.has_projection else [])
        return out

    def forward_flops(self, input_shape: tuple[int, int, int] | None = None) -> int:
        """FLOPs (2 x multiply-adds, plus bias adds) of one forward pass for one image.

        Only convolutions and the dense layer are counted: BatchNorm, ReLU, pooling
        and additions are memory-bound and below 1% of the total here.
        """
        return sum(layer.flops for layer in self.layers(input_shape))


def is_moving_statistic(key: str) -> bool:
    return key.endswith(".moving_mean") or key.endswith(".moving_variance")


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: dict = field(default_factory=dict)
    flops: int = 0

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.params.values())


def _trace(spec: ResNetSpec, shape: tuple[int, int, int]) -> Iterator[LayerInfo]:
    def layer(s, shape_in):
        out = s.output_shape(shape_in)
        flops = s.flops(out) if hasattr(s, "flops") else 0
        return LayerInfo(s.name, s.kind, out, s.params(), flops), out

    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input shape must be (height, width, channels) with positive sizes, got {shape}")
    stem = [spec.stem_conv, spec.stem_bn, spec.stem_relu] + ([spec.stem_pool] if spec.stem_pool else [])
    for s in stem:
        info, shape = layer(s, shape)
        yield info
    for b in spec.blocks:
        block_in = shape
        for s in (b.conv1, b.bn1, b.relu1, b.conv2, b.bn2):
            info, shape = layer(s, shape)
            yield info
        short = block_in
        if b.has_projection:
            for s in (b.shortcut_conv, b.shortcut_bn):
                info, short = layer(s, short)
                yield info
        if short != shape:
            raise ValueError(f"{b.name}: shortcut shape {short} does not match residual shape {shape}")
        for s in (b.add, b.relu2):
            info, shape = layer(s, shape)
            yield info
    for s in (spec.avgpool, spec.fc):
        info, shape = layer(s, shape)
        yield info


# -- building specs ------------------------------------------------------------------


@dataclass(frozen=True)
class ResNetConfig:
    """The few numbers that define a variant; :func:`build` expands them into a spec."""

    stage_blocks: tuple[int, ...]
    stage_filters: tuple[int, ...] = (64, 128, 256, 512)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)
    stem_filters: int = 64
    num_classes: int = 100
    input_shape: tuple[int, int, int] = (32, 32, 3)
    bn_epsilon: float = KERAS_BN_EPSILON
    bn_momentum: float = KERAS_BN_MOMENTUM  # Keras convention
    bn_unbiased_variance: bool = False  # PyTorch's moving-variance update (n / (n - 1)), not Keras'
    # the stem: "seed" (3x3 stride-1 conv with stem_padding, BN, ReLU, then, with stem_pool, the
    # 2x2/1 'same' max-pool) or "imagenet" (torchvision's: 7x7 stride-2 conv padding 3, BN, ReLU,
    # 3x3 stride-2 max-pool padding 1)
    stem: str = "seed"
    stem_padding: str | int = "valid"
    stem_pool: bool = True
    # the blocks' 3x3 convolutions: "same" (TF) or an int p (PyTorch's padding=1)
    block_padding: str | int = "same"
    conv_bias: bool = True  # every conv carries a bias (the seed, Keras' default)
    # when a block gets a 1x1 projection shortcut: "stride" (the seed: stride != 1;
    # a width change at stride 1 is an error) or "stride_or_width"
    projection: str = "stride"
    conv_init: str = "glorot_uniform"
    dense_init: str = "glorot_uniform"
    dense_bias_init: str = "zeros"

    def __post_init__(self):
        n = len(self.stage_blocks)
        if not (n == len(self.stage_filters) == len(self.stage_strides)) or n == 0:
            raise ValueError(
                "stage_blocks, stage_filters and stage_strides must have the same non-zero length, got "
                f"{self.stage_blocks}, {self.stage_filters}, {self.stage_strides}"
            )
        if min(self.stage_blocks) < 1 or min(self.stage_filters) < 1 or min(self.stage_strides) < 1:
            raise ValueError("every stage needs at least one block, one filter and a positive stride")
        if not 0.0 < self.bn_momentum < 1.0 or self.bn_epsilon <= 0:
            raise ValueError(f"bn_momentum must be in (0, 1) and bn_epsilon > 0, got {self.bn_momentum}, {self.bn_epsilon}")
        check_padding(self.stem_padding)
        check_padding(self.block_padding)
        if self.stem not in ("seed", "imagenet") or self.projection not in ("stride", "stride_or_width"):
            raise ValueError(f"stem must be 'seed' or 'imagenet' and projection 'stride' or 'stride_or_width', got {self.stem!r}, {self.projection!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        for init in (self.conv_init, self.dense_init, self.dense_bias_init):
            if init not in INITIALISERS:
                raise ValueError(f"unknown initialiser {init!r}; choose one of: {', '.join(INITIALISERS)}")


def build(name: str, config: ResNetConfig) -> ResNetSpec:
    def bn(layer_name, channels):
        return BatchNormSpec(layer_name, channels, config.bn_epsilon, config.bn_momentum, unbiased_variance=config.bn_unbiased_variance)

    def conv(layer_name, cin, cout, kernel, stride, padding):
        return ConvSpec(layer_name, cin, cout, kernel, stride, padding, use_bias=config.conv_bias, kernel_init=config.conv_init)

    in_ch = config.input_shape[-1]
    if config.stem == "imagenet":  # torchvision's: the pool follows the ReLU, so its padding never wins
        stem_conv = conv("stem.conv", in_ch, config.stem_filters, 7, 2, 3)
        stem_pool = MaxPoolSpec("stem.pool", 3, 2, 1)
    else:
        stem_conv = conv("stem.conv", in_ch, config.stem_filters, 3, 1, config.stem_padding)
        stem_pool = MaxPoolSpec("stem.pool", 2, 1, "same") if config.stem_pool else None
    shortcut_padding = "valid" if isinstance(config.block_padding, str) else 0
    blocks = []
    ch = config.stem_filters
    for stage, (n, filters, stride) in enumerate(zip(config.stage_blocks, config.stage_filters, config.stage_strides), 1):
        for i in range(n):
            s = stride if i == 0 else 1
            prefix = f"layer{stage}.{i}"
            shortcut = (None, None)
            if s != 1 or (ch != filters and config.projection == "stride_or_width"):
                shortcut = (conv(f"{prefix}.shortcut.conv", ch, filters, 1, s, shortcut_padding), bn(f"{prefix}.shortcut.bn", filters))
            elif ch != filters:
                raise ValueError(
                    f"{prefix}: the seed's block has an identity shortcut at stride 1, so the channel count cannot "
                    f"change there ({ch} -> {filters}); give that stage a stride other than 1 or equal filters"
                )
            blocks.append(
                BlockSpec(
                    prefix,
                    conv(f"{prefix}.conv1", ch, filters, 3, s, config.block_padding),
                    bn(f"{prefix}.bn1", filters),
                    ReluSpec(f"{prefix}.relu1"),
                    conv(f"{prefix}.conv2", filters, filters, 3, 1, config.block_padding),
                    bn(f"{prefix}.bn2", filters),
                    AddSpec(f"{prefix}.add"),
                    ReluSpec(f"{prefix}.relu2"),
                    *shortcut,
                )
            )
            ch = filters
    return ResNetSpec(
        name=name,
        input_shape=tuple(config.input_shape),
        num_classes=config.num_classes,
        stem_conv=stem_conv,
        stem_bn=bn("stem.bn", config.stem_filters),
        stem_relu=ReluSpec("stem.relu"),
        stem_pool=stem_pool,
        blocks=tuple(blocks),
        avgpool=GlobalAvgPoolSpec("avgpool"),
        fc=DenseSpec("fc", ch, config.num_classes, kernel_init=config.dense_init, bias_init=config.dense_bias_init),
        stage_blocks=tuple(config.stage_blocks),
    )


#: The CIFAR ResNets of the modern recipe: a 3x3 stride-1 'same' stem, no max-pool,
#: no conv biases (every conv feeds a BatchNorm), a projection wherever the stride
#: or the width changes, torchvision's He-normal (fan-out) convolutions.
CIFAR = dict(stem_padding="same", stem_pool=False, conv_bias=False, projection="stride_or_width", conv_init="he_normal_fan_out")

#: PyTorch's conventions, as torchvision, timm and the published CIFAR repos define their
#: ResNets: symmetric ``padding=1`` (``k // 2``) on every 3x3 conv, BatchNorm eps 1e-5 /
#: momentum 0.1 with the unbiased moving variance, no conv biases, a projection wherever
#: the stride or the width changes, torchvision's He-normal (fan-out) convolutions and
#: ``nn.Linear``'s default head.
TORCH = dict(
    bn_epsilon=TORCH_BN_EPSILON, bn_momentum=TORCH_BN_MOMENTUM, bn_unbiased_variance=True, block_padding=1,
    conv_bias=False, projection="stride_or_width", conv_init="he_normal_fan_out", dense_init="uniform_fan_in", dense_bias_init="uniform_fan_in",
)

#: The registered variants.  ``tiny`` keeps every structural feature of the seed
#: (valid stem, same max-pool, stride-2 stages over even and odd sizes, projection
#: shortcuts) at a width that trains in seconds on a CPU; ``tiny-cifar`` does the
#: same for the CIFAR family (with a projection at stride 1, where only the width
#: changes, and an identity block), ``tiny-torch`` and ``tiny-cifar-torch`` for the
#: PyTorch-convention ones; they exist for tests.  Every strided 1x1 shortcut of
#: theirs has at least 8 input channels: oneDNN's backward of a strided 1x1 conv with 3 or 4
#: input channels corrupts the heap on some CPUs (AMD EPYC without AVX-512, in TF 2.21 and
#: torch 2.14.1 alike), which made ``tiny-cifar`` at widths 2/4 crash or train differently
#: run to run.
#:
#: * ``resnet18`` / ``resnet34``: the post's (Keras conventions);
#: * ``resnet18-cifar`` / ``resnet34-cifar``: CIFAR ResNets in TF's 'same' padding and Keras'
#:   BatchNorm constants (this project's first modern-recipe network, kept so its runs load);
#: * ``resnet18-torch`` / ``resnet34-torch``: torchvision's and timm's ``resnet18``/``resnet34``
#:   (ImageNet stem, PyTorch conventions); ``@1000`` for the ImageNet head;
#: * ``resnet18-cifar-torch`` / ``resnet34-cifar-torch``: the CIFAR ResNets of the published
#:   PyTorch repos (kuangliu/pytorch-cifar, weiaicunzai/pytorch-cifar100): a 3x3 stride-1
#:   ``padding=1`` stem, no pool, PyTorch conventions.
REGISTRY: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig(stage_blocks=(2, 2, 2, 2)),
    "resnet34": ResNetConfig(stage_blocks=(3, 4, 6, 3)),
    "tiny": ResNetConfig(stage_blocks=(1, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=8),
    "resnet18-cifar": ResNetConfig(stage_blocks=(2, 2, 2, 2), **CIFAR),
    "resnet34-cifar": ResNetConfig(stage_blocks=(3, 4, 6, 3), **CIFAR),
    "tiny-cifar": ResNetConfig(stage_blocks=(2, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=4, **CIFAR),
    "resnet18-torch": ResNetConfig(stage_blocks=(2, 2, 2, 2), stem="imagenet", **TORCH),
    "resnet34-torch": ResNetConfig(stage_blocks=(3, 4, 6, 3), stem="imagenet", **TORCH),
    "tiny-torch": ResNetConfig(stage_blocks=(1, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=8, stem="imagenet", **TORCH),
    "resnet18-cifar-torch": ResNetConfig(stage_blocks=(2, 2, 2, 2), stem_padding=1, stem_pool=False, **TORCH),
    "resnet34-cifar-torch": ResNetConfig(stage_blocks=(3, 4, 6, 3), stem_padding=1, stem_pool=False, **TORCH),
    "tiny-cifar-torch": ResNetConfig(stage_blocks=(2, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=4, stem_padding=1, stem_pool=False, **TORCH),
}

#: The input sizes every variant takes besides its spec's (the global average pool makes
#: them size-free): at least this many pixels high and wide.
MIN_INPUT_SIZE = 32
#: the size the ImageNet-stem variants are trained at (torchvision's, timm's, keras-hub's ResNets)
IMAGENET_SIZE = 224


def native_size(spec: ResNetSpec) -> int:
    """The input size a variant is made for: 224 for the ImageNet stem, the spec's (32) otherwise."""
    return IMAGENET_SIZE if REGISTRY[split_name(spec.name)[0]].stem == "imagenet" else spec.input_shape[0]


def size_dependent_padding(spec: ResNetSpec) -> list[str]:
    """The layers whose padding depends on the input size: TF 'same' with a stride above 1 pads
    ``(total // 2, total - total // 2)`` with ``total`` depending on the size's remainder.  Without
    them every pad is a constant and a file of the network can take any size (H, W >= 32)."""
    out = []
    for layer in [spec.stem_conv, spec.stem_pool, *[c for b in spec.blocks for c in (b.conv1, b.conv2, b.shortcut_conv)]]:
        if layer is not None and layer.padding == "same" and layer.stride > 1:
            out.append(layer.name)
    return out


def keras_name(name: str) -> str:
    """A variant's name as a Keras model name (no '@': ``resnet18-torch@1000`` -> ``resnet18-torch_1000``)."""
    return name.replace("@", "_")


def available() -> list[str]:
    return sorted(REGISTRY)


def split_name(name: str) -> tuple[str, int | None]:
    """``'resnet18-torch@1000'`` -> ``('resnet18-torch', 1000)``; a plain name -> ``(name, None)``."""
    base, sep, classes = name.partition("@")
    if not sep:
        return name, None
    if not classes.isdigit() or int(classes) < 1:
        raise ValueError(f"architecture {name!r}: the part after '@' is the number of classes, a positive integer (e.g. {base}@1000)")
    return base, int(classes)


def arch_name(base: str, num_classes: int) -> str:
    """The name of ``base`` with a ``num_classes`` head: the plain name at the registry's class count."""
    return base if REGISTRY[base].num_classes == num_classes else f"{base}@{num_classes}"


def get_spec(name: str, num_classes: int | None = None) -> ResNetSpec:
    """The spec of a registered variant, ``NAME`` or ``NAME@CLASSES``; unknown names get a ValueError listing the choices."""
    if isinstance(name, ResNetSpec):
        return name
    base, classes = split_name(name)
    try:
        config = REGISTRY[base]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of: {', '.join(available())} (NAME@CLASSES for another class count)") from None
    if num_classes is not None and classes is not None and num_classes != classes:
        raise ValueError(f"architecture {name!r} has {classes} classes, not {num_classes}")
    classes = num_classes if num_classes is not None else classes
    if classes is not None and classes != config.num_classes:
        config = dataclasses.replace(config, num_classes=classes)
    return build(arch_name(base, config.num_classes), config)


def arch_type(value: str) -> str:
    """argparse ``type=`` for ``--arch``: a registered name, optionally ``@CLASSES``."""
    import argparse

    try:
        return get_spec(value).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
