"""keras-hub's ResNets, written by keras-hub itself for the tests (random weights that look trained).

``python tests/zoo_keras.py NET OUT_STEM [--classes N] [--preactivation]`` builds
``ResNetImageClassifier(ResNetBackbone(...), num_classes=N)`` configured as keras-hub's timm
converter configures torchvision's resnet18/34/50 (NET 18, 34, 50) and timm's resnet26 (26), or as its
ResNet50 V2 preset (50v2: pre-activation bottlenecks; ``--preactivation`` makes 18 its ResNet18 V2), its ResNet_vd 18
and 50 (18vd, 50vd), or three stacks of one BasicBlock (3stacks, a network no variant is), gives every BatchNorm
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

#: NET: (stem filters, stack filters, blocks per stack, block type, pre-activation)
NETS = {
    "18": ([64], [64, 128, 256, 512], [2, 2, 2, 2], "basic_block", False),
    "34": ([64], [64, 128, 256, 512], [3, 4, 6, 3], "basic_block", False),
    "50": ([64], [64, 128, 256, 512], [3, 4, 6, 3], "bottleneck_block", False),
    "26": ([64], [64, 128, 256, 512], [2, 2, 2, 2], "bottleneck_block", False),
    "50v2": ([64], [64, 128, 256, 512], [3, 4, 6, 3], "bottleneck_block", True),
    "18vd": ([32, 32, 64], [64, 128, 256, 512], [2, 2, 2, 2], "basic_block_vd", False),  # its ResNet-vd
    "50vd": ([32, 32, 64], [64, 128, 256, 512], [3, 4, 6, 3], "bottleneck_block_vd", False),
    # three stacks of one BasicBlock: a ResNetBackbone no registered variant is (for the refusal)
    "3stacks": ([64], [64, 128, 256], [1, 1, 1], "basic_block", False),
}


def build(net: str, classes: int, preactivation: bool = False):
    import keras_hub

    stem, filters, blocks, block_type, preact = NETS[net]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=stem,
        input_conv_kernel_sizes=[7] if len(stem) == 1 else [3] * len(stem),
        stackwise_num_filters=filters,
        stackwise_num_blocks=blocks,
        stackwise_num_strides=[1] + [2] * (len(filters) - 1),
        block_type=block_type,
        use_pre_activation=preact or preactivation,
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
    ap.add_argument("net", choices=list(NETS))
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--preactivation", action="store_true")
    args = ap.parse_args(argv)
    import keras

    seed = 7 + list(NETS).index(args.net)
    keras.utils.set_random_seed(seed)
    model = build(args.net, args.classes, args.preactivation)
    look_trained(model, seed)
    model.save(f"{args.out}.keras")
    model.save_weights(f"{args.out}.weights.h5")
    model.save_to_preset(f"{args.out}-preset")
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    np.savez(f"{args.out}-probe.npz", x=x, logits=np.asarray(model(x, training=False)))


if __name__ == "__main__":
    main()
