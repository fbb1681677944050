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
    raise ValueError(
        f"padding must be 'same', 'valid' or a non-negative int (symmetric, as PyTorch's padding=p), got {padding!r}"
    )


def conv_output_size(size: int, kernel: int, stride: int, padding: str | int, ceil_mode: bool = False) -> int:
    """Output length along one axis: 'same' / 'valid' as TF defines them, an int ``p`` as PyTorch does
    (``ceil_mode``: PyTorch's pooling option, a last partial window that starts inside the input counts)."""
    check_padding(padding)
    if padding == "same":
        return -(-size // stride)
    p = 0 if padding == "valid" else padding
    if ceil_mode:
        out = -(-(size + 2 * p - kernel) // stride) + 1
        if (out - 1) * stride >= size + p:
            out -= 1
    else:
        out = (size + 2 * p - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input of size {size} is smaller than the kernel {kernel} with padding {padding!r}")
    return out


def symmetric_as_same(kernel: int, stride: int, padding) -> bool:
    """Whether PyTorch's ``padding=p`` equals TF 'same' on every input size (stride 1, odd kernel, p = k // 2)."""
    return isinstance(padding, int) and stride == 1 and kernel % 2 == 1 and padding == kernel // 2


# -- layers --------------------------------------------------------------------------
# Each layer is a frozen value with a canonical ``name``, a ``kind`` (which each
# realization maps to its own layer), ``params()`` in the neutral layout and
# ``output_shape()``.  Blocks, stems and heads are sequences of them.


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
    groups: int = 1  # a grouped convolution (ResNeXt): in_channels and filters split into this many groups

    kind = "conv2d"

    def __post_init__(self):
        if self.groups < 1 or self.in_channels % self.groups or self.filters % self.groups:
            raise ValueError(
                f"{self.name}: groups={self.groups} must divide in_channels={self.in_channels} and filters={self.filters}"
            )

    def params(self) -> dict[str, tuple[int, ...]]:
        p = {"kernel": (self.kernel_size, self.kernel_size, self.in_channels // self.groups, self.filters)}
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
        macs = h * w * c * self.kernel_size * self.kernel_size * (self.in_channels // self.groups)
        return 2 * macs + (h * w * c if self.use_bias else 0)

    @property
    def fan_in(self) -> int:
        return self.kernel_size**2 * self.in_channels // self.groups


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
class _Pool:
    name: str
    pool_size: int
    stride: int
    padding: str | int  # 'same' pads after, as TF does; p pads both sides, as PyTorch does

    @property
    def kernel_size(self) -> int:
        return self.pool_size

    def params(self):
        return {}

    def output_shape(self, shape):
        h, w, c = shape
        return (
            conv_output_size(h, self.pool_size, self.stride, self.padding, self.ceil_mode),
            conv_output_size(w, self.pool_size, self.stride, self.padding, self.ceil_mode),
            c,
        )


@dataclass(frozen=True)
class MaxPoolSpec(_Pool):
    """A max-pool.  ``pad_with="-inf"``: a padded value never wins ('same' pads with -inf in TF, PyTorch's
    ``padding=p`` too); ``"zero"``: explicit zeros first, as keras.applications' ``ZeroPadding2D`` then a
    'valid' pool (equal to -inf only where the input is >= 0, after a ReLU)."""

    pad_with: str = "-inf"
    ceil_mode = False
    kind = "maxpool"

    def __post_init__(self):
        if self.pad_with not in ("-inf", "zero"):
            raise ValueError(f"{self.name}: pad_with must be '-inf' or 'zero', got {self.pad_with!r}")


@dataclass(frozen=True)
class AvgPoolSpec(_Pool):
    """An average pool that averages only the pixels inside the input (``count_include_pad=False``, as
    TF's 'same' pooling and ResNet-D's shortcut do); ``ceil_mode`` is PyTorch's (a last, partial window)."""

    ceil_mode: bool = False
    kind = "avgpool"


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
    """The residual sum: the residual branch's output plus the shortcut's."""

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


LayerSpec = ConvSpec | BatchNormSpec | MaxPoolSpec | AvgPoolSpec | ReluSpec | AddSpec | GlobalAvgPoolSpec | DenseSpec
#: every layer kind a spec may hold; each realization maps each one to its own layer
LAYER_KINDS = ("conv2d", "batchnorm", "maxpool", "avgpool", "relu", "add", "global_avg_pool", "dense")


# -- blocks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockSpec:
    """A residual block as data: ``post(add(residual(x'), shortcut(s)))``.

    ``x'`` is the block's input after ``pre`` (empty but for pre-activation blocks, where
    a BatchNorm and a ReLU come first); ``s`` is the block's input or ``x'``
    (``shortcut_from``: "input" or "pre").  An empty ``shortcut`` is the identity; a
    projection is a 1x1 conv and a BatchNorm, possibly after a pool.  ``post`` follows
    the add (the ReLU of a post-activation block; nothing in a pre-activation one).
    A BasicBlock, a bottleneck and a pre-activation block are all values of this type.
    """

    name: str
    residual: tuple[LayerSpec, ...]
    add: AddSpec
    shortcut: tuple[LayerSpec, ...] = ()
    post: tuple[LayerSpec, ...] = ()
    pre: tuple[LayerSpec, ...] = ()
    shortcut_from: str = "input"

    def __post_init__(self):
        if self.shortcut_from not in ("input", "pre"):
            raise ValueError(f"{self.name}: shortcut_from must be 'input' or 'pre', got {self.shortcut_from!r}")
        if not self.residual:
            raise ValueError(f"{self.name}: a block needs at least one layer on its residual branch")

    def layers(self) -> tuple[LayerSpec, ...]:
        """The block's layers in execution order (the order of the weights file)."""
        return (*self.pre, *self.residual, *self.shortcut, self.add, *self.post)

    def get(self, local: str) -> LayerSpec:
        """The layer ``<block>.<local>``, e.g. ``get('conv1')`` or ``get('shortcut.conv')``."""
        for layer in self.layers():
            if layer.name == f"{self.name}.{local}":
                return layer
        raise KeyError(f"block {self.name} has no layer {local!r}; it has {', '.join(l.name for l in self.layers())}")

    @property
    def stride(self) -> int:
        """The block's downsampling: the product of its residual branch's strides."""
        return math.prod(getattr(layer, "stride", 1) for layer in self.residual)

    @property
    def has_projection(self) -> bool:
        return any(layer.kind == "conv2d" for layer in self.shortcut)

    @property
    def out_channels(self) -> int:
        return [layer for layer in self.residual if layer.kind == "conv2d"][-1].filters


@dataclass(frozen=True)
class ResNetSpec:
    """A whole network: stem, blocks in execution order, head, pooling and logits."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    stem: tuple[LayerSpec, ...]
    blocks: tuple[BlockSpec, ...]
    avgpool: GlobalAvgPoolSpec
    fc: DenseSpec
    stage_blocks: tuple[int, ...] = field(default=())
    conventions: "Conventions" = None
    head: tuple[LayerSpec, ...] = ()  # between the last block and the pool (a pre-activation network's BatchNorm, ReLU)
    block_type: str = "basic"
    stem_type: str = "seed"

    # -- derived views -------------------------------------------------------------
    def layer_specs(self) -> list[LayerSpec]:
        """Every layer spec, in execution order."""
        return [*self.stem, *(layer for b in self.blocks for layer in b.layers()), *self.head, self.avgpool, self.fc]

    def layer(self, name: str) -> LayerSpec:
        """The layer spec of canonical ``name``."""
        for layer in self.layer_specs():
            if layer.name == name:
                return layer
        raise KeyError(f"{self.name} has no layer {name!r}")

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
        """Conv biases whose every path leads into a BatchNorm through shape-keeping steps that carry a
        per-channel constant unchanged (adds, max and average pools).

        BN subtracts the batch mean, so in training mode their gradient is zero in exact arithmetic
        (float noise in practice): the next layer's BN in a post-activation block; in a pre-activation
        network also the last conv of a block and its projection, whose sum reaches only the next
        block's (or the head's) BatchNorm.  Parity tests compare them through the function they
        produce instead of element by element.
        """
        consumers = self.consumers()
        kinds = {layer.name: layer.kind for layer in self.layer_specs()}
        for layer in self.layer_specs():  # explicit zeros around a max-pool do not move with a constant
            if layer.kind == "maxpool" and layer.pad_with == "zero" and layer.padding not in (0, "valid"):
                kinds[layer.name] = "zero-padded maxpool"

        def only_batchnorms(name: str, seen: set) -> bool:
            nexts = consumers.get(name, [])
            if not nexts:
                return False  # the logits
            for n in nexts:
                if kinds[n] == "batchnorm":
                    continue
                if kinds[n] not in ("add", "maxpool", "avgpool") or n in seen or not only_batchnorms(n, seen | {n}):
                    return False
            return True

        return [
            f"{layer.name}.bias"
            for layer in self.layer_specs()
            if layer.kind == "conv2d" and layer.use_bias and only_batchnorms(layer.name, {layer.name})
        ]

    def consumers(self) -> dict[str, list[str]]:
        """{layer: the layers that read its output}: the network's graph, from the spec's sequences."""
        out: dict[str, list[str]] = {}

        def feed(src: str | None, dst: str) -> None:
            if src is not None:
                out.setdefault(src, []).append(dst)

        def chain(src, layers):
            for layer in layers:
                feed(src, layer.name)
                src = layer.name
            return src

        x = chain(None, self.stem)
        for b in self.blocks:
            y = chain(x, b.pre)
            residual = chain(y, b.residual)
            shortcut = chain(y if b.shortcut_from == "pre" else x, b.shortcut)
            feed(residual, b.add.name)
            feed(shortcut, b.add.name)
            x = chain(b.add.name, b.post)
        chain(x, (*self.head, self.avgpool, self.fc))
        return out

    def convolutions(self) -> list[ConvSpec]:
        """Every convolution, in execution order."""
        return [layer for layer in self.layer_specs() if layer.kind == "conv2d"]

    def batchnorms(self) -> list[BatchNormSpec]:
        return [layer for layer in self.layer_specs() if layer.kind == "batchnorm"]

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
    def run(layers, shape_in):
        for s in layers:
            out = s.output_shape(shape_in)
            flops = s.flops(out) if hasattr(s, "flops") else 0
            yield LayerInfo(s.name, s.kind, out, s.params(), flops)
            shape_in = out

    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input shape must be (height, width, channels) with positive sizes, got {shape}")
    for info in run(spec.stem, shape):
        yield info
        shape = info.output_shape
    for b in spec.blocks:
        block_in = shape
        for info in run(b.pre, shape):
            yield info
            shape = info.output_shape
        short = block_in if b.shortcut_from == "input" else shape
        for info in run(b.residual, shape):
            yield info
            shape = info.output_shape
        for info in run(b.shortcut, short):
            yield info
            short = info.output_shape
        if short != shape:
            raise ValueError(f"{b.name}: shortcut shape {short} does not match residual shape {shape}")
        for info in run((b.add, *b.post), shape):
            yield info
            shape = info.output_shape
    for info in run((*spec.head, spec.avgpool, spec.fc), shape):
        yield info
        shape = info.output_shape


# -- conventions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Conventions:
    """The numerical conventions a variant follows, as one named value.

    ``padding``: "tf" (a k x k layer pads TF 'same'; a 1x1 shortcut 'valid') or "torch"
    (PyTorch's symmetric ``padding=k // 2``); the BatchNorm constants (``bn_momentum`` in
    Keras' convention) and moving-variance update; whether convolutions carry a bias;
    the initialisers (:data:`INITIALISERS`).
    """

    name: str
    padding: str
    bn_epsilon: float
    bn_momentum: float
    bn_unbiased_variance: bool
    conv_bias: bool
    conv_init: str
    dense_init: str
    dense_bias_init: str

    def __post_init__(self):
        if self.padding not in ("tf", "torch"):
            raise ValueError(f"conventions {self.name}: padding must be 'tf' or 'torch', got {self.padding!r}")
        if not 0.0 < self.bn_momentum < 1.0 or self.bn_epsilon <= 0:
            raise ValueError(
                f"bn_momentum must be in (0, 1) and bn_epsilon > 0, got {self.bn_momentum}, {self.bn_epsilon}"
            )
        for init in (self.conv_init, self.dense_init, self.dense_bias_init):
            if init not in INITIALISERS:
                raise ValueError(f"unknown initialiser {init!r}; choose one of: {', '.join(INITIALISERS)}")

    def pad(self, kernel: int) -> str | int:
        """The padding of a k x k layer that keeps the size at stride 1."""
        if self.padding == "torch":
            return kernel // 2
        return "valid" if kernel == 1 else "same"


#: The seed's: Keras' defaults everywhere (TF 'same', BatchNorm 1e-3 / 0.99 with the biased
#: moving variance, a bias on every conv, Glorot-uniform kernels and zero biases).
KERAS = Conventions(
    "keras", "tf", KERAS_BN_EPSILON, KERAS_BN_MOMENTUM, False, True, "glorot_uniform", "glorot_uniform", "zeros"
)
#: The modern recipe's CIFAR ResNets in Keras: TF 'same' and Keras' BatchNorm, no conv biases
#: (every conv feeds a BatchNorm), torchvision's He-normal (fan-out) convolutions.
KERAS_CIFAR = Conventions(
    "keras-cifar",
    "tf",
    KERAS_BN_EPSILON,
    KERAS_BN_MOMENTUM,
    False,
    False,
    "he_normal_fan_out",
    "glorot_uniform",
    "zeros",
)
#: PyTorch's, as torchvision, timm and the published CIFAR repos define their ResNets:
#: symmetric ``padding=k // 2``, BatchNorm 1e-5 / 0.1 (0.9 in Keras' convention) with the
#: unbiased moving variance, no conv biases, He-normal (fan-out) convolutions, ``nn.Linear``'s head.
PYTORCH = Conventions(
    "pytorch",
    "torch",
    TORCH_BN_EPSILON,
    TORCH_BN_MOMENTUM,
    True,
    False,
    "he_normal_fan_out",
    "uniform_fan_in",
    "uniform_fan_in",
)


#: keras.applications' ResNet50/101/152 (V1 and V2): explicit symmetric zero padding (PyTorch's
#: rule), BatchNorm epsilon 1.001e-5 with Keras' momentum 0.99 and biased moving variance, a bias
#: on every conv (the V2 blocks leave it off two of theirs), Keras' Glorot-uniform initialisers.
KERAS_APPLICATIONS = Conventions(
    "keras-applications", "torch", 1.001e-5, KERAS_BN_MOMENTUM, False, True, "glorot_uniform", "glorot_uniform", "zeros"
)


class Layers:
    """Layer specs under one set of conventions: what block and stem builders call."""

    def __init__(self, conventions: Conventions):
        self.c = conventions

    def conv(
        self,
        name: str,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        padding: str | int | None = None,
        groups: int = 1,
        bias: bool | None = None,
    ) -> ConvSpec:
        """A convolution; ``bias`` None: as the conventions say (a block may fix it, as keras.applications' V2 does)."""
        c = self.c
        padding = c.pad(kernel) if padding is None else padding
        use_bias = c.conv_bias if bias is None else bias
        return ConvSpec(
            name, cin, cout, kernel, stride, padding, use_bias=use_bias, kernel_init=c.conv_init, groups=groups
        )

    def bn(self, name: str, channels: int) -> BatchNormSpec:
        c = self.c
        return BatchNormSpec(name, channels, c.bn_epsilon, c.bn_momentum, unbiased_variance=c.bn_unbiased_variance)

    def relu(self, name: str) -> ReluSpec:
        return ReluSpec(name)

    def add(self, name: str) -> AddSpec:
        return AddSpec(name)

    def maxpool(
        self, name: str, size: int, stride: int, padding: str | int | None = None, pad_with: str = "-inf"
    ) -> MaxPoolSpec:
        return MaxPoolSpec(name, size, stride, self.c.pad(size) if padding is None else padding, pad_with)

    def avgpool(
        self, name: str, size: int, stride: int, padding: str | int = 0, ceil_mode: bool = False
    ) -> AvgPoolSpec:
        return AvgPoolSpec(name, size, stride, padding, ceil_mode)

    def dense(self, name: str, cin: int, units: int) -> DenseSpec:
        return DenseSpec(name, cin, units, kernel_init=self.c.dense_init, bias_init=self.c.dense_bias_init)

    def projection(
        self,
        prefix: str,
        cin: int,
        cout: int,
        stride: int,
        kind: str = "conv",
        norm: bool = True,
        bias: bool | None = None,
    ) -> tuple[LayerSpec, ...]:
        """The projection shortcut: ``<prefix>.shortcut.conv`` (1x1, stride ``stride``) and its BatchNorm.

        ``kind="avgpool"``: ResNet-D's, which averages first (``shortcut.pool``: 2x2, stride ``stride``,
        ceil_mode, the pad left out of the count; none at stride 1) and projects at stride 1 (keras-hub's
        ResNet-vd pools with TF's 'same' instead: at a 2x2 window and stride 2 the same function, the pad after
        and left out of the count); ``norm=False``: no BatchNorm (pre-activation networks)."""
        if kind not in ("conv", "avgpool"):
            raise ValueError(f"{prefix}: a projection is 'conv' or 'avgpool', got {kind!r}")
        pool: tuple[LayerSpec, ...] = ()
        if kind == "avgpool" and stride > 1:
            pool = (self.avgpool(f"{prefix}.shortcut.pool", 2, stride, 0, ceil_mode=True),)
        conv_stride = 1 if pool or kind != "conv" else stride
        conv = self.conv(f"{prefix}.shortcut.conv", cin, cout, 1, conv_stride, bias=bias)
        return (*pool, conv, *((self.bn(f"{prefix}.shortcut.bn", cout),) if norm else ()))


# -- block and stem types ---------------------------------------------------------------------
# A block type is a function (layers, prefix, in_channels, width, stride, project) -> BlockSpec,
# ``project`` saying whether the network's projection rule asks for a projection shortcut.
# A stem type is a function (layers, in_channels, filters) -> tuple of layer specs.


def basic_block(
    f: Layers, prefix: str, cin: int, width: int, stride: int, project: bool, shortcut: str = "conv"
) -> BlockSpec:
    """The BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut, add, ReLU.

    ``shortcut``: the projection's kind (:meth:`Layers.projection`; "avgpool" for ResNet-D)."""
    return BlockSpec(
        prefix,
        residual=(
            f.conv(f"{prefix}.conv1", cin, width, 3, stride),
            f.bn(f"{prefix}.bn1", width),
            f.relu(f"{prefix}.relu1"),
            f.conv(f"{prefix}.conv2", width, width, 3),
            f.bn(f"{prefix}.bn2", width),
        ),
        add=f.add(f"{prefix}.add"),
        shortcut=f.projection(prefix, cin, width, stride, shortcut) if project else (),
        post=(f.relu(f"{prefix}.relu2"),),
    )


def bottleneck_width(width: int, groups: int = 1, width_per_group: int = 64) -> int:
    """The inner (3x3) width of a bottleneck: ``int(width * width_per_group / 64) * groups`` (torchvision's
    rule: ResNet50 64 -> 64, wide_resnet50_2 64 -> 128, resnext50_32x4d 64 -> 128)."""
    return int(width * (width_per_group / 64.0)) * groups


def bottleneck_block(
    f: Layers,
    prefix: str,
    cin: int,
    width: int,
    stride: int,
    project: bool,
    stride_on: str = "3x3",
    groups: int = 1,
    width_per_group: int = 64,
    expansion: int = 4,
    shortcut: str = "conv",
) -> BlockSpec:
    """The bottleneck: conv1x1-BN-ReLU, conv3x3-BN-ReLU (grouped for ResNeXt), conv1x1-BN (``width *
    expansion`` out), plus the shortcut, add, ReLU.

    ``stride_on``: "3x3" (ResNet v1.5: torchvision, timm, keras-hub) or "1x1" (the original v1:
    keras.applications); ``groups`` / ``width_per_group``: ResNeXt's cardinality and wide ResNets'
    inner width (:func:`bottleneck_width`); ``shortcut``: the projection's kind."""
    if stride_on not in ("3x3", "1x1"):
        raise ValueError(f"{prefix}: stride_on must be '3x3' or '1x1', got {stride_on!r}")
    inner, out = bottleneck_width(width, groups, width_per_group), width * expansion
    s1, s2 = (stride, 1) if stride_on == "1x1" else (1, stride)
    return BlockSpec(
        prefix,
        residual=(
            f.conv(f"{prefix}.conv1", cin, inner, 1, s1),
            f.bn(f"{prefix}.bn1", inner),
            f.relu(f"{prefix}.relu1"),
            f.conv(f"{prefix}.conv2", inner, inner, 3, s2, groups=groups),
            f.bn(f"{prefix}.bn2", inner),
            f.relu(f"{prefix}.relu2"),
            f.conv(f"{prefix}.conv3", inner, out, 1),
            f.bn(f"{prefix}.bn3", out),
        ),
        add=f.add(f"{prefix}.add"),
        shortcut=f.projection(prefix, cin, out, stride, shortcut) if project else (),
        post=(f.relu(f"{prefix}.relu3"),),
    )


def preact_basic_block(f: Layers, prefix: str, cin: int, width: int, stride: int, project: bool) -> BlockSpec:
    """The pre-activation BasicBlock (kuangliu's ``PreActBlock``): BN-ReLU first; a projection (1x1 conv,
    no BatchNorm) reads the pre-activated tensor, an identity the block's input; nothing after the add."""
    return BlockSpec(
        prefix,
        pre=(f.bn(f"{prefix}.bn0", cin), f.relu(f"{prefix}.relu0")),
        residual=(
            f.conv(f"{prefix}.conv1", cin, width, 3, stride),
            f.bn(f"{prefix}.bn1", width),
            f.relu(f"{prefix}.relu1"),
            f.conv(f"{prefix}.conv2", width, width, 3),
        ),
        add=f.add(f"{prefix}.add"),
        shortcut=f.projection(prefix, cin, width, stride, norm=False) if project else (),
        shortcut_from="pre" if project else "input",
    )


def preact_bottleneck_block(
    f: Layers,
    prefix: str,
    cin: int,
    width: int,
    stride: int,
    project: bool,
    expansion: int = 4,
    biases: str = "none",
) -> BlockSpec:
    """The pre-activation bottleneck (ResNet V2): BN-ReLU, then conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU,
    conv1x1, added to the shortcut; nothing after the add.

    A projection (1x1 conv of the block's stride, no BatchNorm) reads the pre-activated tensor; without
    one, a strided block's shortcut is keras.applications' ``MaxPooling2D(1, stride)`` of its input, an
    unstrided one the identity.  ``biases``: "none" (timm, keras-hub) or "keras-v2" (keras.applications:
    the projection and the last 1x1 carry biases, the first two convolutions none)."""
    if biases not in ("none", "keras-v2"):
        raise ValueError(f"{prefix}: biases must be 'none' or 'keras-v2', got {biases!r}")
    out = width * expansion
    outer = None if biases == "none" else True  # None: the conventions' (no bias in PyTorch's)
    if project:
        shortcut = f.projection(prefix, cin, out, stride, norm=False, bias=outer)
    elif stride > 1:
        shortcut = (f.maxpool(f"{prefix}.shortcut.pool", 1, stride, 0),)
    else:
        shortcut = ()
    return BlockSpec(
        prefix,
        pre=(f.bn(f"{prefix}.bn0", cin), f.relu(f"{prefix}.relu0")),
        residual=(
            f.conv(f"{prefix}.conv1", cin, width, 1, bias=False),
            f.bn(f"{prefix}.bn1", width),
            f.relu(f"{prefix}.relu1"),
            f.conv(f"{prefix}.conv2", width, width, 3, stride, bias=False),
            f.bn(f"{prefix}.bn2", width),
            f.relu(f"{prefix}.relu2"),
            f.conv(f"{prefix}.conv3", width, out, 1, bias=outer),
        ),
        add=f.add(f"{prefix}.add"),
        shortcut=shortcut,
        shortcut_from="pre" if project else "input",
    )


def seed_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """The post's: a 3x3 stride-1 'valid' conv, BN, ReLU, a 2x2 stride-1 'same' max-pool."""
    return (
        f.conv("stem.conv", cin, filters, 3, 1, "valid"),
        f.bn("stem.bn", filters),
        f.relu("stem.relu"),
        MaxPoolSpec("stem.pool", 2, 1, "same"),
    )


def cifar_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """CIFAR ResNets': a 3x3 stride-1 conv that keeps the size, BN, ReLU; no pool."""
    return (f.conv("stem.conv", cin, filters, 3), f.bn("stem.bn", filters), f.relu("stem.relu"))


def deep_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """ResNet-D's (timm's ``resnet*d``): three 3x3 convs (stride 2, then 1, 1; ``filters / 2``,
    ``filters / 2``, ``filters``), each with BN and ReLU, then the 3x3 stride-2 max-pool."""
    half = filters // 2
    return (
        f.conv("stem.conv1", cin, half, 3, 2),
        f.bn("stem.bn1", half),
        f.relu("stem.relu1"),
        f.conv("stem.conv2", half, half, 3),
        f.bn("stem.bn2", half),
        f.relu("stem.relu2"),
        f.conv("stem.conv3", half, filters, 3),
        f.bn("stem.bn3", filters),
        f.relu("stem.relu3"),
        f.maxpool("stem.pool", 3, 2),
    )


def preact_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """A pre-activation network's ImageNet stem (timm's ``resnetv2``): the 7x7 stride-2 conv and the 3x3
    stride-2 max-pool (padded with -inf: its input has no ReLU before it), no BatchNorm."""
    return (f.conv("stem.conv", cin, filters, 7, 2), f.maxpool("stem.pool", 3, 2))


def preact_keras_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """keras.applications' ResNet V2 stem: as :func:`preact_stem`, but the pool pads with zeros
    (``ZeroPadding2D(1)`` then a 'valid' pool), which differs where the conv's output is negative."""
    return (f.conv("stem.conv", cin, filters, 7, 2), f.maxpool("stem.pool", 3, 2, pad_with="zero"))


def preact_cifar_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """kuangliu's PreActResNet stem: one 3x3 stride-1 conv, nothing after it (the first block normalises)."""
    return (f.conv("stem.conv", cin, filters, 3),)


def imagenet_stem(f: Layers, cin: int, filters: int) -> tuple[LayerSpec, ...]:
    """torchvision's: a 7x7 stride-2 conv, BN, ReLU, a 3x3 stride-2 max-pool (after the ReLU, so a
    padded value never wins)."""
    return (
        f.conv("stem.conv", cin, filters, 7, 2),
        f.bn("stem.bn", filters),
        f.relu("stem.relu"),
        f.maxpool("stem.pool", 3, 2),
    )


#: block types by name: what ``ResNetConfig.block`` names
BLOCKS: dict = {
    "basic": basic_block,
    "bottleneck": bottleneck_block,
    "preact_basic": preact_basic_block,
    "preact_bottleneck": preact_bottleneck_block,
}
#: stem types by name: what ``ResNetConfig.stem`` names
STEMS: dict = {
    "seed": seed_stem,
    "cifar": cifar_stem,
    "imagenet": imagenet_stem,
    "deep": deep_stem,
    "preact": preact_stem,
    "preact-keras": preact_keras_stem,
    "preact-cifar": preact_cifar_stem,
}


def register_block(name: str, builder) -> None:
    """Make a block type available to :class:`ResNetConfig` (``block=name``)."""
    if name in BLOCKS and BLOCKS[name] is not builder:
        raise ValueError(f"block type {name!r} is already registered")
    BLOCKS[name] = builder


def register_stem(name: str, builder) -> None:
    if name in STEMS and STEMS[name] is not builder:
        raise ValueError(f"stem type {name!r} is already registered")
    STEMS[name] = builder


# -- building specs ------------------------------------------------------------------


PROJECTIONS = ("stride", "stride_or_width", "first")


@dataclass(frozen=True)
class ResNetConfig:
    """The few values that define a variant; :func:`build` expands them into a spec."""

    stage_blocks: tuple[int, ...]
    stage_filters: tuple[int, ...] = (64, 128, 256, 512)
    stage_strides: tuple[int, ...] = (1, 2, 2, 2)
    stem_filters: int = 64
    num_classes: int = 100
    input_shape: tuple[int, int, int] = (32, 32, 3)
    conventions: Conventions = KERAS
    # a name in STEMS: "seed" (the post's), "cifar" (3x3 stride 1, no pool), "imagenet" (torchvision's)
    stem: str = "seed"
    # a name in BLOCKS, and the keyword arguments its builder takes, as (name, value) pairs
    block: str = "basic"
    block_options: tuple[tuple[str, object], ...] = ()
    # when a block gets a projection shortcut: "stride" (the seed: stride != 1; a width change at
    # stride 1 is an error), "stride_or_width", or "first" (keras.applications' ResNet V2: every
    # stage's first block, whatever its stride; a strided block without one has its block type's
    # strided identity)
    projection: str = "stride"
    # which block of a stage carries its stride: "first" (everyone) or "last" (keras.applications' V2)
    stride_at: str = "first"
    # a pre-activation network's final BatchNorm and ReLU before the pool (``head.bn``, ``head.relu``)
    head_norm: bool = False

    def __post_init__(self):
        n = len(self.stage_blocks)
        if not (n == len(self.stage_filters) == len(self.stage_strides)) or n == 0:
            raise ValueError(
                "stage_blocks, stage_filters and stage_strides must have the same non-zero length, got "
                f"{self.stage_blocks}, {self.stage_filters}, {self.stage_strides}"
            )
        if min(self.stage_blocks) < 1 or min(self.stage_filters) < 1 or min(self.stage_strides) < 1:
            raise ValueError("every stage needs at least one block, one filter and a positive stride")
        if self.stem not in STEMS or self.block not in BLOCKS or self.projection not in PROJECTIONS:
            raise ValueError(
                f"stem must be one of {', '.join(STEMS)}, block one of {', '.join(BLOCKS)} and projection one of "
                f"{', '.join(PROJECTIONS)}, got {self.stem!r}, {self.block!r}, {self.projection!r}"
            )
        if self.stride_at not in ("first", "last"):
            raise ValueError(f"stride_at must be 'first' or 'last', got {self.stride_at!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")


def build(name: str, config: ResNetConfig) -> ResNetSpec:
    """Expand ``config`` into a spec: the stem, then each stage's blocks, pooling and the dense head."""
    f = Layers(config.conventions)
    stem = STEMS[config.stem](f, config.input_shape[-1], config.stem_filters)
    options = dict(config.block_options)

    def block_type(prefix, cin, width, stride, project):
        return BLOCKS[config.block](f, prefix, cin, width, stride, project, **options)

    blocks = []
    ch = config.stem_filters
    for stage, (n, width, stride) in enumerate(zip(config.stage_blocks, config.stage_filters, config.stage_strides), 1):
        for i in range(n):
            s = stride if i == (0 if config.stride_at == "first" else n - 1) else 1
            prefix = f"layer{stage}.{i}"
            project = i == 0 if config.projection == "first" else s != 1
            block = block_type(prefix, ch, width, s, project)
            if block.out_channels != ch and not block.has_projection:
                if config.projection == "stride":
                    raise ValueError(
                        f"{prefix}: the seed's block has an identity shortcut at stride 1, so the channel count cannot "
                        f"change there ({ch} -> {block.out_channels}); give that stage a stride other than 1 or equal filters"
                    )
                block = block_type(prefix, ch, width, s, True)
            blocks.append(block)
            ch = block.out_channels
    head = (f.bn("head.bn", ch), f.relu("head.relu")) if config.head_norm else ()
    return ResNetSpec(
        name=name,
        input_shape=tuple(config.input_shape),
        num_classes=config.num_classes,
        stem=stem,
        blocks=tuple(blocks),
        avgpool=GlobalAvgPoolSpec("avgpool"),
        fc=f.dense("fc", ch, config.num_classes),
        head=head,
        stage_blocks=tuple(config.stage_blocks),
        conventions=config.conventions,
        block_type=config.block,
        stem_type=config.stem,
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
#:   ``padding=1`` stem, no pool, PyTorch conventions (``resnet50-cifar-torch``: their ResNet50).
_R18, _R34 = (2, 2, 2, 2), (3, 4, 6, 3)
_TINY = dict(stage_blocks=(1, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=8)
_TINY_CIFAR = dict(stage_blocks=(2, 1, 1, 1), stage_filters=(8, 16, 16, 32), stem_filters=4)
SEED = dict(conventions=KERAS, stem="seed")
CIFAR = dict(conventions=KERAS_CIFAR, stem="cifar", projection="stride_or_width")
TORCH = dict(conventions=PYTORCH, stem="imagenet", projection="stride_or_width")
TORCH_CIFAR = dict(conventions=PYTORCH, stem="cifar", projection="stride_or_width")
_R50, _R101, _R152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
_BOTTLENECK_DEPTHS = {26: (2, 2, 2, 2), 50: _R50, 101: _R101, 152: _R152}
_TINY_BOTTLENECK = dict(stage_blocks=(2, 1, 1, 1), stage_filters=(4, 8, 8, 16), stem_filters=8)


def _bottleneck(base: dict, stem: str | None = None, **options) -> dict:
    """A config's keywords for bottleneck blocks under ``base``'s conventions, with block ``options``."""
    return {**base, **({"stem": stem} if stem else {}), "block": "bottleneck", "block_options": tuple(options.items())}


#: torchvision's and timm's ResNet26/50/101/152 (v1.5: the stride on the 3x3)
BOTTLENECK = _bottleneck(TORCH)
#: timm's ResNet-D of BasicBlocks: the deep stem, the average-pool shortcut
RESNET_D_BASIC = {**TORCH, "stem": "deep", "block_options": (("shortcut", "avgpool"),)}
#: timm's ResNet-D of bottlenecks (resnet26d/50d), which is also keras-hub's ResNet-vd of bottlenecks
#: (``bottleneck_block_vd``: its average pool pads 'same', the same function at a 2x2 window and stride 2)
RESNET_D_BOTTLENECK = _bottleneck(TORCH, stem="deep", shortcut="avgpool")
#: keras-hub's ResNet-vd of BasicBlocks (``basic_block_vd``, PaddleClas' ResNet18_vd/34_vd): timm's ResNet-D
#: but for a projection on every stage's first block, stage 1's too (64 -> 64 at stride 1)
RESNET_VD_BASIC = {**RESNET_D_BASIC, "projection": "first"}
#: timm's resnetv2 (pre-activation bottlenecks, the stride on a stage's first block, a final BN-ReLU), which is
#: keras-hub's ResNet V2 (``use_pre_activation=True``)
PREACT_TORCH = {**TORCH, "stem": "preact", "block": "preact_bottleneck", "head_norm": True}
#: the same of BasicBlocks: timm's resnetv2_18/34 (``PreActBasic``), keras-hub's pre-activation ``basic_block``
#: (stage 1's first block has no projection: its width and size do not change)
PREACT_BASIC_TORCH = {**PREACT_TORCH, "block": "preact_basic"}
#: kuangliu's PreActResNet (pre-activation BasicBlocks, a lone 3x3 stem conv, no final BatchNorm)
PREACT_CIFAR_TORCH = {**TORCH_CIFAR, "stem": "preact-cifar", "block": "preact_basic"}
#: keras.applications' ResNet50/101/152 (v1: the stride on the first 1x1, biases everywhere)
KERAS_V1 = {
    "conventions": KERAS_APPLICATIONS,
    "stem": "imagenet",
    "projection": "stride_or_width",
    "block": "bottleneck",
    "block_options": (("stride_on", "1x1"),),
}
#: keras.applications' ResNet50V2/101V2/152V2: pre-activation, the stride on a stage's last block
#: (stages 1-3) over a 1x1 max-pool shortcut, projections where the width changes, a final BN-ReLU
KERAS_V2 = {
    "conventions": KERAS_APPLICATIONS,
    "stem": "preact-keras",
    "block": "preact_bottleneck",
    "block_options": (("biases", "keras-v2"),),
    "projection": "first",
    "stride_at": "last",
    "stage_strides": (2, 2, 2, 1),
    "head_norm": True,
}
REGISTRY: dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig(stage_blocks=_R18, **SEED),
    "resnet34": ResNetConfig(stage_blocks=_R34, **SEED),
    "tiny": ResNetConfig(**_TINY, **SEED),
    "resnet18-cifar": ResNetConfig(stage_blocks=_R18, **CIFAR),
    "resnet34-cifar": ResNetConfig(stage_blocks=_R34, **CIFAR),
    "tiny-cifar": ResNetConfig(**_TINY_CIFAR, **CIFAR),
    "resnet18-torch": ResNetConfig(stage_blocks=_R18, **TORCH),
    "resnet34-torch": ResNetConfig(stage_blocks=_R34, **TORCH),
    "tiny-torch": ResNetConfig(**_TINY, **TORCH),
    "resnet18-cifar-torch": ResNetConfig(stage_blocks=_R18, **TORCH_CIFAR),
    "resnet34-cifar-torch": ResNetConfig(stage_blocks=_R34, **TORCH_CIFAR),
    "tiny-cifar-torch": ResNetConfig(**_TINY_CIFAR, **TORCH_CIFAR),
    # -- the wider family (issue: the ResNets people hold beyond 18/34) --
    **{f"resnet{d}-torch": ResNetConfig(stage_blocks=b, **BOTTLENECK) for d, b in _BOTTLENECK_DEPTHS.items()},
    "wide-resnet50-2-torch": ResNetConfig(stage_blocks=_R50, **_bottleneck(TORCH, width_per_group=128)),
    "wide-resnet101-2-torch": ResNetConfig(stage_blocks=_R101, **_bottleneck(TORCH, width_per_group=128)),
    "resnext50-32x4d-torch": ResNetConfig(stage_blocks=_R50, **_bottleneck(TORCH, groups=32, width_per_group=4)),
    "resnext101-32x8d-torch": ResNetConfig(stage_blocks=_R101, **_bottleneck(TORCH, groups=32, width_per_group=8)),
    "resnet18d-torch": ResNetConfig(stage_blocks=_R18, **RESNET_D_BASIC),
    "resnet34d-torch": ResNetConfig(stage_blocks=_R34, **RESNET_D_BASIC),
    "resnet50d-torch": ResNetConfig(stage_blocks=_R50, **RESNET_D_BOTTLENECK),
    "resnet18vd-torch": ResNetConfig(stage_blocks=_R18, **RESNET_VD_BASIC),
    "resnet34vd-torch": ResNetConfig(stage_blocks=_R34, **RESNET_VD_BASIC),
    "resnetv2-18-torch": ResNetConfig(stage_blocks=_R18, **PREACT_BASIC_TORCH),
    "resnetv2-34-torch": ResNetConfig(stage_blocks=_R34, **PREACT_BASIC_TORCH),
    **{f"resnetv2-{d}-torch": ResNetConfig(stage_blocks=_BOTTLENECK_DEPTHS[d], **PREACT_TORCH) for d in (50, 101, 152)},
    "preact-resnet18-cifar-torch": ResNetConfig(stage_blocks=_R18, **PREACT_CIFAR_TORCH),
    # kuangliu's ResNet50 and weiaicunzai's resnet50: the CIFAR stem, v1.5 bottlenecks
    "resnet50-cifar-torch": ResNetConfig(stage_blocks=_R50, **_bottleneck(TORCH_CIFAR)),
    **{f"resnet{d}-keras": ResNetConfig(stage_blocks=_BOTTLENECK_DEPTHS[d], **KERAS_V1) for d in (50, 101, 152)},
    **{f"resnet{d}v2-keras": ResNetConfig(stage_blocks=_BOTTLENECK_DEPTHS[d], **KERAS_V2) for d in (50, 101, 152)},
    # their tiny twins, for tests: every structural feature at toy widths (strided 1x1 shortcuts read >= 8 channels)
    "tiny-bottleneck-torch": ResNetConfig(**_TINY_BOTTLENECK, **BOTTLENECK),
    "tiny-bottleneck-cifar-torch": ResNetConfig(**_TINY_BOTTLENECK, **_bottleneck(TORCH_CIFAR)),
    "tiny-resnext-torch": ResNetConfig(**_TINY_BOTTLENECK, **_bottleneck(TORCH, groups=2, width_per_group=32)),
    "tiny-d-torch": ResNetConfig(**_TINY_BOTTLENECK, **RESNET_D_BOTTLENECK),
    "tiny-basic-d-torch": ResNetConfig(**_TINY, **RESNET_D_BASIC),
    "tiny-basic-vd-torch": ResNetConfig(**_TINY, **RESNET_VD_BASIC),
    "tiny-preact-torch": ResNetConfig(**_TINY_BOTTLENECK, **PREACT_TORCH),
    "tiny-preact-basic-torch": ResNetConfig(**_TINY, **PREACT_BASIC_TORCH),
    "tiny-preact-cifar-torch": ResNetConfig(**_TINY_CIFAR, **PREACT_CIFAR_TORCH),
    "tiny-bottleneck-keras": ResNetConfig(**_TINY_BOTTLENECK, **KERAS_V1),
    "tiny-preact-keras": ResNetConfig(**{**_TINY_BOTTLENECK, "stage_blocks": (2, 2, 2, 2)}, **KERAS_V2),
}


def register(name: str, config: ResNetConfig) -> None:
    """Register a variant under ``name`` (no '@': that suffix is the class count)."""
    if "@" in name or not name:
        raise ValueError(f"a variant's name must be non-empty and hold no '@', got {name!r}")
    if name in REGISTRY and REGISTRY[name] != config:
        raise ValueError(f"variant {name!r} is already registered with another configuration")
    REGISTRY[name] = config


#: Modules that register further variants (block types, stems, configs) when imported:
#: ``RESNET_PORT_PLUGINS=pkg.module[,other]``.  Every process of this project (the
#: framework workers too) imports them before it resolves a variant's name.
PLUGINS_VARIABLE = "RESNET_PORT_PLUGINS"
_plugins_loaded: set[str] = set()


def load_plugins() -> None:
    """Import the modules ``RESNET_PORT_PLUGINS`` names (each once)."""
    import importlib
    import os

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        if module in _plugins_loaded:
            continue
        _plugins_loaded.add(module)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(
                f"{PLUGINS_VARIABLE} names {module!r}, which cannot be imported ({e}); fix or unset it"
            ) from None


#: The input sizes every variant takes besides its spec's (the global average pool makes
#: them size-free): at least this many pixels high and wide.
MIN_INPUT_SIZE = 32
#: the size the ImageNet-stem variants are trained at (torchvision's, timm's, keras-hub's ResNets)
IMAGENET_SIZE = 224
#: the stem types made for ImageNet's 224x224 images
IMAGENET_STEMS = {"imagenet", "deep", "preact", "preact-keras"}


def native_size(spec: ResNetSpec) -> int:
    """The input size a variant is made for: 224 for the ImageNet stem, the spec's (32) otherwise."""
    return IMAGENET_SIZE if spec.stem_type in IMAGENET_STEMS else spec.input_shape[0]


def size_dependent_padding(spec: ResNetSpec) -> list[str]:
    """The layers whose padding depends on the input size: TF 'same' with a stride above 1 pads
    ``(total // 2, total - total // 2)`` with ``total`` depending on the size's remainder.  Without
    them every pad is a constant and a file of the network can take any size (H, W >= 32)."""
    return [
        layer.name for layer in spec.layer_specs() if getattr(layer, "padding", None) == "same" and layer.stride > 1
    ]


def keras_name(name: str) -> str:
    """A variant's name as a Keras model name (no '@': ``resnet18-torch@1000`` -> ``resnet18-torch_1000``)."""
    return name.replace("@", "_")


def available() -> list[str]:
    load_plugins()
    return sorted(REGISTRY)


def strided_bottlenecks(spec: "ResNetSpec") -> list[tuple[str, str, str]]:
    """(first 1x1 conv, 3x3 conv, which carries the stride: "1x1" or "3x3") of every bottleneck block
    (three convolutions in its residual branch) with a stride."""
    out = []
    for b in spec.blocks:
        convs = [l for l in b.residual if l.kind == "conv2d"]
        if len(convs) == 3 and b.stride > 1:
            out.append((convs[0].name, convs[1].name, "1x1" if convs[0].stride > 1 else "3x3"))
    return out


def bottleneck_stride(spec: "ResNetSpec") -> str | None:
    """Where the network's strided bottleneck blocks put the stride: "1x1" (v1: keras.applications),
    "3x3" (v1.5: torchvision, timm, keras-hub), or None (no strided bottleneck)."""
    found = strided_bottlenecks(spec)
    return found[0][2] if found else None


def shortcut_pools(spec: "ResNetSpec") -> bool:
    """Whether the variant's projections average-pool before their 1x1 (ResNet-D), at every stride: a
    library's module names count the pool even where it is an identity (timm's ``downsample.1`` at stride 1)."""
    config = REGISTRY.get(split_name(spec.name)[0])
    return config is not None and str(dict(config.block_options).get("shortcut", "conv")).startswith("avgpool")


def split_name(name: str) -> tuple[str, int | None]:
    """``'resnet18-torch@1000'`` -> ``('resnet18-torch', 1000)``; a plain name -> ``(name, None)``."""
    base, sep, classes = name.partition("@")
    if not sep:
        return name, None
    if not classes.isdigit() or int(classes) < 1:
        raise ValueError(
            f"architecture {name!r}: the part after '@' is the number of classes, a positive integer (e.g. {base}@1000)"
        )
    return base, int(classes)


def arch_name(base: str, num_classes: int) -> str:
    """The name of ``base`` with a ``num_classes`` head: the plain name at the registry's class count."""
    return base if REGISTRY[base].num_classes == num_classes else f"{base}@{num_classes}"


def get_spec(name: str, num_classes: int | None = None) -> ResNetSpec:
    """The spec of a registered variant, ``NAME`` or ``NAME@CLASSES``; unknown names get a ValueError listing the choices."""
    if isinstance(name, ResNetSpec):
        return name
    load_plugins()
    base, classes = split_name(name)
    try:
        config = REGISTRY[base]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of: {', '.join(available())} (NAME@CLASSES for another class count)"
        ) from None
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
