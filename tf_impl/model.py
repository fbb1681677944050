"""The Keras 3 (TensorFlow) realization of the spec: the reference implementation.

A functional graph built by plain functions, one Keras layer per spec layer and
named after it (the parameter-free ones too), so ``model.get_layer('layer2.0.conv1')``
is the spec's ``layer2.0.conv1``.  Keras' own semantics are the reference: 'same'
padding as TF defines it, BatchNorm epsilon and momentum passed in Keras'
convention as the spec holds them.  Initialisers are the ones the spec names
(the seed's: Keras' defaults, Glorot-uniform kernels and zero biases).

PyTorch's conventions, for the variants that follow them, each in one place here:

* symmetric ``padding=p``: ``ZeroPadding2D(p)`` then a 'valid' conv, as keras-hub
  builds torchvision's ResNets; at stride 1 with ``p = k // 2`` that is TF 'same'
  exactly, which is used instead (one layer, no copy).  A max-pool after a ReLU pads
  zeros too (its inputs are >= 0, so a padded zero never wins where PyTorch's -inf
  would not); where no ReLU precedes one (timm's pre-activation stem) it pads -inf:
  :class:`NegInfPadding2D`, or Keras' own layers in a plain build (``_lowest_padding``);
* the unbiased moving variance: :class:`UnbiasedBatchNormalization` (Keras'
  layer, plus PyTorch's ``n / (n - 1)`` in the moving update; equal in inference).
  It is registered with Keras, so a ``.keras`` file of such a model reloads where
  ``tf_impl`` is imported; ``plain_batchnorm=True`` builds the model with Keras'
  own layer instead, for files that must reload anywhere (``resnet_port.export``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from resnet_port.spec import (
    BatchNormSpec,
    BlockSpec,
    ConvSpec,
    DenseSpec,
    ResNetSpec,
    get_spec,
    keras_name,
    symmetric_as_same,
)


def initializer(name: str, fan_in: int = 0) -> keras.initializers.Initializer:
    """Keras' function for an initialiser the spec names (``resnet_port.spec.INITIALISERS``).

    ``fan_in`` is the layer's (a bias cannot tell it from its own shape).
    """
    return {
        "glorot_uniform": lambda: keras.initializers.GlorotUniform(),
        "he_normal_fan_out": lambda: keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        "uniform_fan_in": lambda: keras.initializers.RandomUniform(-1.0 / fan_in**0.5, 1.0 / fan_in**0.5),
        "zeros": lambda: keras.initializers.Zeros(),
        "ones": lambda: keras.initializers.Ones(),
    }[name]()


@keras.saving.register_keras_serializable(package="resnet_port")
class UnbiasedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization with PyTorch's moving-variance update (the unbiased batch variance).

    Keras moves towards the biased variance ``v``; PyTorch towards ``v n / (n - 1)``, ``n``
    the values per channel (over every replica's batch when synchronised).  Keras'
    update is kept and its variance term scaled: ``new + (new - m old) / (n - 1)``.
    Inference, the forward pass and the gradients are Keras' own.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        old = tf.identity(self.moving_variance.value)
        outputs = super().call(inputs, training=training)
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], self.moving_variance.dtype)
        context = tf.distribute.get_replica_context()
        if self.synchronized and context is not None:
            n = n * context.num_replicas_in_sync
        new = tf.identity(self.moving_variance.value)
        self.moving_variance.assign(new + (new - self.momentum * old) / (n - 1.0))
        return outputs


@keras.saving.register_keras_serializable(package="resnet_port")
class NegInfPadding2D(layers.Layer):
    """Symmetric padding with -inf, in front of a 'valid' max-pool whose input may be negative (PyTorch's
    ``MaxPool2d(padding=p)`` where no ReLU precedes it: timm's pre-activation stem).  After a ReLU,
    ``ZeroPadding2D`` is equal and used instead."""

    def __init__(self, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        p = self.padding
        return keras.ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=float("-inf"))

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.padding  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def _pad(s, x, padding):
    """PyTorch's symmetric padding in front of a 'valid' layer; the padding Keras is given."""
    if isinstance(padding, str):
        return x, padding
    if symmetric_as_same(s.kernel_size, s.stride, padding) and not getattr(s, "ceil_mode", False):
        return x, "same"
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{s.name}.pad")(x)
    return x, "valid"


def _conv(s: ConvSpec, x):
    x, padding = _pad(s, x, s.padding)
    fan_in = s.fan_in
    return layers.Conv2D(
        s.filters,
        s.kernel_size,
        strides=s.stride,
        padding=padding,
        use_bias=s.use_bias,
        groups=s.groups,
        kernel_initializer=initializer(s.kernel_init, fan_in),
        bias_initializer=initializer(s.bias_init, fan_in),
        name=s.name,
    )(x)


def _bn(s: BatchNormSpec, x, synchronized: bool = False, plain: bool = False):
    cls = UnbiasedBatchNormalization if s.unbiased_variance and not plain else layers.BatchNormalization
    return cls(
        epsilon=s.epsilon,
        momentum=s.momentum,
        synchronized=synchronized,
        gamma_initializer=initializer(s.gamma_init),
        beta_initializer=initializer(s.beta_init),
        name=s.name,
    )(x)


def _dense(s: DenseSpec) -> layers.Dense:
    return layers.Dense(
        s.units,
        kernel_initializer=initializer(s.kernel_init, s.in_features),
        bias_initializer=initializer(s.bias_init, s.in_features),
        name=s.name,
    )


def _lowest_padding(s, x):
    """Symmetric padding with the lowest float32 in Keras' own layers (for files that must load without
    ``tf_impl``): the input zero-padded, plus ones zero-padded and mapped to 0 inside and to the lowest float32
    outside.  In front of a 'valid' max-pool it equals -inf padding for any finite input: ``x + 0`` is ``x``,
    and a padded value wins no window, since every window holding one holds an input value too."""
    low = float(np.finfo(np.float32).max)
    ones = layers.Rescaling(0.0, offset=1.0, name=f"{s.name}.pad_ones")(x)
    fill = layers.Rescaling(low, offset=-low, name=f"{s.name}.pad_fill")(
        layers.ZeroPadding2D(s.padding, name=f"{s.name}.pad_mask")(ones)
    )
    return layers.Add(name=f"{s.name}.pad_add")([layers.ZeroPadding2D(s.padding, name=f"{s.name}.pad")(x), fill])


def _pool(s, x, after_relu: bool = False, plain: bool = False):
    if s.kind == "maxpool":
        if not isinstance(s.padding, str) and s.padding and (s.pad_with == "zero" or not after_relu):
            if s.pad_with == "zero":  # keras.applications' explicit zeros
                x = layers.ZeroPadding2D(s.padding, name=f"{s.name}.pad")(x)
            elif plain:  # -inf, where a padded zero could win (no ReLU before), in Keras' own layers
                x = _lowest_padding(s, x)
            else:  # -inf, where a padded zero could win (no ReLU before)
                x = NegInfPadding2D(s.padding, name=f"{s.name}.pad")(x)
            return layers.MaxPooling2D(s.pool_size, strides=s.stride, padding="valid", name=s.name)(x)
        x, padding = _pad(s, x, s.padding)
        return layers.MaxPooling2D(s.pool_size, strides=s.stride, padding=padding, name=s.name)(x)
    # an average over the pixels inside the input only; TF's 'same' pads after and leaves the pad out of
    # the count, which for a 2x2 stride-2 window is PyTorch's ceil_mode=True without padding (ResNet-D's
    # shortcut pool): a last, partial window on an odd size
    if s.padding == "same" or (s.ceil_mode and s.padding in (0, "valid") and s.pool_size == s.stride == 2):
        padding = "same"
    elif s.padding in (0, "valid") and not s.ceil_mode:
        padding = "valid"
    else:
        raise ValueError(
            f"{s.name}: an average pool with PyTorch's padding={s.padding!r} / ceil_mode={s.ceil_mode} (count_include_pad=False) "
            "has no Keras layer; Keras builds 'same', 'valid' and 2x2 stride-2 ceil_mode pools"
        )
    return layers.AveragePooling2D(s.pool_size, strides=s.stride, padding=padding, name=s.name)(x)


#: Keras' layer for each layer kind the spec names (resnet_port.spec.LAYER_KINDS): a function
#: (spec, input tensor, options) -> output tensor
LAYERS = {
    "conv2d": lambda s, x, o: _conv(s, x),
    "batchnorm": lambda s, x, o: _bn(s, x, o["synchronized"], o["plain_batchnorm"]),
    "maxpool": lambda s, x, o: _pool(s, x, o.get("after_relu", False), o["plain_batchnorm"]),
    "avgpool": lambda s, x, o: _pool(s, x),
    "relu": lambda s, x, o: layers.ReLU(name=s.name)(x),
    "global_avg_pool": lambda s, x, o: layers.GlobalAveragePooling2D(name=s.name)(x),
    "dense": lambda s, x, o: _dense(s)(x),
}


def apply_layers(x, specs, **options):
    for s in specs:
        x = LAYERS[s.kind](s, x, options)
        options["after_relu"] = s.kind == "relu"
    return x


def apply_block(x, b: BlockSpec, **options):
    """Any residual block of the spec, built by walking it: ``post(add(residual(pre(x)), shortcut(...)))``."""
    y = apply_layers(x, b.pre, **options)
    residual = apply_layers(y, b.residual, **options)  # first: Keras draws initial values in the order layers are made
    shortcut = apply_layers(y if b.shortcut_from == "pre" else x, b.shortcut, **options)
    y = layers.Add(name=b.add.name)([residual, shortcut])
    return apply_layers(y, b.post, **options)


def build_model(
    arch: str | ResNetSpec,
    input_shape: tuple[int, int, int] | None = None,
    synchronized: bool = False,
    plain_batchnorm: bool = False,
) -> keras.Model:
    """The Keras model of ``arch`` producing logits (no softmax), as the seed did.

    ``input_shape`` defaults to the spec's; ``(None, None, 3)`` builds a model that
    accepts any image size.  ``synchronized`` makes BatchNorm use the statistics of
    the global batch under a tf.distribute strategy.  ``plain_batchnorm`` builds
    Keras' own layers only, for files that must reload without ``tf_impl``: Keras'
    BatchNormalization even where the spec asks for PyTorch's moving update (equal
    in inference), and a max-pool's -inf padding from standard layers (``_lowest_padding``).
    """
    spec = get_spec(arch)
    options = dict(synchronized=synchronized, plain_batchnorm=plain_batchnorm)
    inputs = keras.Input(shape=tuple(input_shape or spec.input_shape), name="images")
    x = apply_layers(inputs, spec.stem, **options)
    for b in spec.blocks:
        x = apply_block(x, b, **options)
    logits = apply_layers(x, (*spec.head, spec.avgpool, spec.fc), **options)
    return keras.Model(inputs, logits, name=keras_name(spec.name))


def intermediate_model(model: keras.Model, spec: ResNetSpec) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are every spec layer's output."""
    names = [layer.name for layer in spec.layers()]
    return keras.Model(model.input, {n: model.get_layer(n).output for n in names})
