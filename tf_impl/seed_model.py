"""The post's own subclassed Keras model, re-expressed for Keras 3, to run a user's saved weights as they were.

The post defined ``ResNet(keras.Model)`` with attributes ``pre`` (a Sequential:
conv, BN, ReLU, max-pool), ``layer1``..``layer4`` (Sequentials of ``BasicBlock``
layers, each with a Sequential ``left`` and, at stride 2, a Sequential
``downSample``), ``average_pooling`` and ``fc``.  Keras files of such a model
(a Keras 3 ``.keras`` or ``.weights.h5``, or a Keras 2 ``.h5`` from
``save_weights``) locate each variable by that structure, so Keras itself can
load them into this class: the attribute names, the class names and the order in
which layers are created are the post's, on purpose.

``resnet_port.port --check`` runs a source file through this class, loaded by
Keras' own loader, independently of the structural mapping that writes the
neutral weights file; it is never used to train.  :func:`layer_outputs` walks
the same structure to give every layer's output under the spec's names, which
is also how a restored Keras 2 SavedModel (its sub-objects keep the same
attribute names) is run layer by layer.
"""

from __future__ import annotations

import keras
from keras import layers


class BasicBlock(layers.Layer):
    def __init__(self, filter_num, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.filter_num, self.stride = filter_num, stride
        self.left = keras.Sequential(
            [
                layers.Conv2D(filter_num, (3, 3), strides=stride, padding="same"),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.Conv2D(filter_num, (3, 3), strides=1, padding="same"),
                layers.BatchNormalization(),
            ]
        )
        if stride != 1:
            self.downSample = keras.Sequential(
                [layers.Conv2D(filter_num, (1, 1), strides=stride), layers.BatchNormalization()]
            )
        else:
            self.downSample = lambda x, training=None: x

    def call(self, inputs, training=None):
        identity = self.downSample(inputs, training=training)
        out = self.left(inputs, training=training)
        return keras.ops.relu(layers.add([out, identity]))

    def get_config(self):
        return {**super().get_config(), "filter_num": self.filter_num, "stride": self.stride}


def make_res_block(filter_num, blocks, stride=1):
    stage = keras.Sequential()
    stage.add(BasicBlock(filter_num, stride))
    for _ in range(1, blocks):
        stage.add(BasicBlock(filter_num, stride=1))
    return stage


class ResNet(keras.Model):
    """The post's model; ``widths`` and ``stem`` (the post's: 64, 128, 256, 512 and 64) shrink it for tests."""

    def __init__(self, layer_dims, num_class=100, widths=(64, 128, 256, 512), stem=64, **kwargs):
        super().__init__(**kwargs)
        self.layer_dims, self.num_class, self.widths, self.stem = list(layer_dims), num_class, list(widths), stem
        self.pre = keras.Sequential(
            [
                layers.Conv2D(stem, (3, 3), strides=(1, 1)),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
            ]
        )
        self.layer1 = make_res_block(widths[0], layer_dims[0])
        self.layer2 = make_res_block(widths[1], layer_dims[1], stride=2)
        self.layer3 = make_res_block(widths[2], layer_dims[2], stride=2)
        self.layer4 = make_res_block(widths[3], layer_dims[3], stride=2)
        self.average_pooling = layers.GlobalAveragePooling2D()
        self.fc = layers.Dense(num_class)

    def call(self, inputs, training=None):
        x = self.pre(inputs, training=training)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x, training=training)
        return self.fc(self.average_pooling(x))

    def get_config(self):
        return {
            **super().get_config(),
            "layer_dims": self.layer_dims,
            "num_class": self.num_class,
            "widths": self.widths,
            "stem": self.stem,
        }


def build(spec) -> ResNet:
    """The post's model with the blocks and widths of ``spec`` (a seed-family spec), variables created."""
    import numpy as np

    widths = [spec.blocks[sum(spec.stage_blocks[:i])].out_channels for i in range(len(spec.stage_blocks))]
    model = ResNet(spec.stage_blocks, spec.num_classes, widths, spec.layer("stem.conv").filters)
    model(np.zeros((1, *spec.input_shape), np.float32), training=False)
    return model


def sequential_layers(seq) -> list:
    """The layers of a Sequential: a Keras one, or one restored from a SavedModel (``layer-0``, ``layer-1``, ...)."""
    if hasattr(seq, "layers") and isinstance(seq.layers, list):
        return [layer for layer in seq.layers if not isinstance(layer, layers.InputLayer)]
    out, i = [], 0
    while hasattr(seq, f"layer-{i}"):
        out.append(getattr(seq, f"layer-{i}"))
        i += 1
    return out


def _call(layer, x, training):
    try:
        return layer(x, training=training)
    except (TypeError, ValueError):  # a restored function traced without a training argument (conv, pooling)
        return layer(x)


def layer_outputs(model, x, training: bool, stages: int = 4) -> dict:
    """Every layer's output of the post's model under the spec's canonical names (``add`` aside).

    ``model`` is this module's :class:`ResNet` or a Keras 2 SavedModel of the
    post's model restored with ``tf.saved_model.load``: both have the same
    attributes.  Each sub-layer is called on its own, in the post's order.
    """
    out = {}
    names = ["stem.conv", "stem.bn", "stem.relu", "stem.pool"]
    for name, layer in zip(names, sequential_layers(model.pre)):
        x = _call(layer, x, training)
        out[name] = x
    for s in range(1, stages + 1):
        for b, block in enumerate(sequential_layers(getattr(model, f"layer{s}"))):
            prefix = f"layer{s}.{b}"
            y = x
            for name, layer in zip(("conv1", "bn1", "relu1", "conv2", "bn2"), sequential_layers(block.left)):
                y = _call(layer, y, training)
                out[f"{prefix}.{name}"] = y
            if hasattr(block, "downSample") and sequential_layers(block.downSample):
                z = x
                for name, layer in zip(("shortcut.conv", "shortcut.bn"), sequential_layers(block.downSample)):
                    z = _call(layer, z, training)
                    out[f"{prefix}.{name}"] = z
            x = _call(block, x, training)
            out[f"{prefix}.relu2"] = x
    x = _call(model.average_pooling, x, training)
    out["avgpool"] = x
    out["fc"] = _call(model.fc, x, training)
    return out
