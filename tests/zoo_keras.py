"""keras-hub's ResNet18/34, written by keras-hub itself for the tests (random weights that look trained).

``python tests/zoo_keras.py DEPTH OUT_STEM [--classes N] [--preactivation]`` builds
``ResNetImageClassifier(ResNetBackbone(...), num_classes=N)`` configured as keras-hub's timm
converter configures torchvision's resnet18/34 (measured against each library), gives every BatchNorm
statistics and affine parameters away from their initial values, and saves
``OUT_STEM.keras``, ``OUT_STEM.weights.h5`` and the preset folder ``OUT_STEM-preset/``, plus
its logits on a probe batch (``OUT_STEM-probe.npz``: ``x``, ``logits``).  Runs in a process of its
own (TensorFlow only).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def build(depth: int, classes: int, preactivation: bool = False):
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks={18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        use_pre_activation=preactivation,
    )
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=classes)


def look_trained(model, seed: int = 1) -> None:
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [0.5 + rng.random(c), 0.2 * rng.standard_normal(c), 0.2 * rng.standard_normal(c), 0.5 + rng.random(c)]
            )
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, 0.1 * rng.standard_normal(bias.shape)])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("depth", type=int, choices=(18, 34))
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--preactivation", action="store_true")
    args = ap.parse_args(argv)
    import keras

    keras.utils.set_random_seed(args.depth)
    model = build(args.depth, args.classes, args.preactivation)
    look_trained(model, args.depth)
    model.save(f"{args.out}.keras")
    model.save_weights(f"{args.out}.weights.h5")
    model.save_to_preset(f"{args.out}-preset")
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    np.savez(f"{args.out}-probe.npz", x=x, logits=np.asarray(model(x, training=False)))


if __name__ == "__main__":
    main()
