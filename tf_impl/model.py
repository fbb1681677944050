"""The Keras 3 (TensorFlow) realization of the spec: the reference implementation.

A functional graph built by plain functions, one Keras layer per spec layer and
named after it, so ``model.get_layer('layer2.0.conv1')`` is the spec's
``layer2.0.conv1``.  Keras' own semantics are the reference: 'same' padding as TF
defines it, BatchNorm epsilon and momentum passed in Keras' convention as the
spec holds them.  Initialisers are Keras' defaults (Glorot-uniform kernels, zero
biases), as in the seed.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_port.spec import BatchNormSpec, BlockSpec, ConvSpec, ResNetSpec, get_spec


def _conv(s: ConvSpec) -> layers.Conv2D:
    return layers.Conv2D(s.filters, s.kernel_size, strides=s.stride, padding=s.padding, use_bias=s.use_bias, name=s.name)


def _bn(s: BatchNormSpec, synchronized: bool = False) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=s.epsilon, momentum=s.momentum, synchronized=synchronized, name=s.name)


def apply_block(x, b: BlockSpec, synchronized: bool = False):
    shortcut = x
    y = _conv(b.conv1)(x)
    y = _bn(b.bn1, synchronized)(y)
    y = layers.ReLU(name=f"{b.name}.relu1")(y)
    y = _conv(b.conv2)(y)
    y = _bn(b.bn2, synchronized)(y)
    if b.has_projection:
        shortcut = _conv(b.shortcut_conv)(x)
        shortcut = _bn(b.shortcut_bn, synchronized)(shortcut)
    y = layers.Add(name=f"{b.name}.add")([y, shortcut])
    return layers.ReLU(name=f"{b.name}.relu2")(y)


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
    x = layers.ReLU(name="stem.relu")(x)
    p = spec.stem_pool
    x = layers.MaxPooling2D(p.pool_size, strides=p.stride, padding=p.padding, name=p.name)(x)
    for b in spec.blocks:
        x = apply_block(x, b, synchronized)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = layers.Dense(spec.fc.units, name=spec.fc.name)(x)
    return keras.Model(inputs, logits, name=spec.name)


def intermediate_model(model: keras.Model, spec: ResNetSpec) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are every spec layer's output."""
    names = [layer.name for layer in spec.layers()]
    return keras.Model(model.input, {n: model.get_layer(n).output for n in names})
