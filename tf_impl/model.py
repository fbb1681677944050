"""The Keras 3 (TensorFlow) realization of the spec: the reference implementation.

A functional graph built by plain functions, one Keras layer per spec layer and
named after it (the parameter-free ones too), so ``model.get_layer('layer2.0.conv1')``
is the spec's ``layer2.0.conv1``.  Keras' own semantics are the reference: 'same'
padding as TF defines it, BatchNorm epsilon and momentum passed in Keras'
convention as the spec holds them.  Initialisers are the ones the spec names
(the seed's: Keras' defaults, Glorot-uniform kernels and zero biases).
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_port.spec import BatchNormSpec, BlockSpec, ConvSpec, DenseSpec, ResNetSpec, get_spec


def initializer(name: str) -> keras.initializers.Initializer:
    """Keras' function for an initialiser the spec names (``resnet_port.spec.INITIALISERS``)."""
    return {
        "glorot_uniform": lambda: keras.initializers.GlorotUniform(),
        "he_normal_fan_out": lambda: keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        "zeros": lambda: keras.initializers.Zeros(),
        "ones": lambda: keras.initializers.Ones(),
    }[name]()


def _conv(s: ConvSpec) -> layers.Conv2D:
    return layers.Conv2D(
        s.filters, s.kernel_size, strides=s.stride, padding=s.padding, use_bias=s.use_bias,
        kernel_initializer=initializer(s.kernel_init), bias_initializer=initializer(s.bias_init), name=s.name,
    )


def _bn(s: BatchNormSpec, synchronized: bool = False) -> layers.BatchNormalization:
    return layers.BatchNormalization(
        epsilon=s.epsilon, momentum=s.momentum, synchronized=synchronized,
        gamma_initializer=initializer(s.gamma_init), beta_initializer=initializer(s.beta_init), name=s.name,
    )


def _dense(s: DenseSpec) -> layers.Dense:
    return layers.Dense(s.units, kernel_initializer=initializer(s.kernel_init), bias_initializer=initializer(s.bias_init), name=s.name)


def apply_block(x, b: BlockSpec, synchronized: bool = False):
    shortcut = x
    y = _conv(b.conv1)(x)
    y = _bn(b.bn1, synchronized)(y)
    y = layers.ReLU(name=b.relu1.name)(y)
    y = _conv(b.conv2)(y)
    y = _bn(b.bn2, synchronized)(y)
    if b.has_projection:
        shortcut = _conv(b.shortcut_conv)(x)
        shortcut = _bn(b.shortcut_bn, synchronized)(shortcut)
    y = layers.Add(name=b.add.name)([y, shortcut])
    return layers.ReLU(name=b.relu2.name)(y)


def build_model(arch: str | ResNetSpec, input_shape: tuple[int, int, int] | None = None, synchronized: bool = False) -> keras.Model:
    """The Keras model of ``arch`` producing logits (no softmax), as the seed did.

    ``input_shape`` defaults to the spec's; ``(None, None, 3)`` builds a model that
    accepts any image size.  ``synchronized`` makes BatchNorm use the statistics of
    the global batch under a tf.distribute strategy.
    """
    spec = get_spec(arch)
    inputs = keras.Input(shape=tuple(input_shape or spec.input_shape), name="images")
    x = _conv(spec.stem_conv)(inputs)
    x = _bn(spec.stem_bn, synchronized)(x)
    x = layers.ReLU(name=spec.stem_relu.name)(x)
    if p := spec.stem_pool:
        x = layers.MaxPooling2D(p.pool_size, strides=p.stride, padding=p.padding, name=p.name)(x)
    for b in spec.blocks:
        x = apply_block(x, b, synchronized)
    x = layers.GlobalAveragePooling2D(name=spec.avgpool.name)(x)
    logits = _dense(spec.fc)(x)
    return keras.Model(inputs, logits, name=spec.name)


def intermediate_model(model: keras.Model, spec: ResNetSpec) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are every spec layer's output."""
    names = [layer.name for layer in spec.layers()]
    return keras.Model(model.input, {n: model.get_layer(n).output for n in names})
