"""Writes the files a reader of the post has: its subclassed ResNet, trained a step, saved the post's way.

Run as a script, in its own process:

    TF_USE_LEGACY_KERAS=1 python tests/post_model.py OUT --blocks 2,2,2,2    # Keras 2: SavedModel + .h5
    python tests/post_model.py OUT --blocks 2,2,2,2                          # Keras 3: .keras + .weights.h5

This is the user's code, not the project's: the model is the post's (``pre``,
``layer1``..``layer4`` of ``BasicBlock`` layers with ``left`` and ``downSample``,
``average_pooling``, ``fc``), compiled with its custom loss and Adam with
``decay`` (Keras 2's legacy optimizer, which keeps optimizer slots in the
SavedModel), trained on one random batch so that every moving statistic has
moved.  ``--widths``/``--stem`` shrink it for fast tests (the post's are
64,128,256,512 and 64).  Besides the files, it writes ``x.npy`` (a batch) and
the model's own logits on it, ``logits_eval.npy`` and ``logits_train.npy``,
computed by the model object itself: what a port must reproduce.
"""

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402  (Keras 2 under TF_USE_LEGACY_KERAS=1, else Keras 3)
from tensorflow.keras import layers  # noqa: E402

LEGACY = os.environ.get("TF_USE_LEGACY_KERAS") == "1"  # tensorflow.keras is then tf_keras (Keras 2)


class BasicBlock(layers.Layer):
    def __init__(self, filter_num, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.filter_num, self.stride = filter_num, stride
        self.left = keras.Sequential(
            [
                layers.Conv2D(filters=filter_num, kernel_size=(3, 3), strides=stride, padding="same"),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.Conv2D(filters=filter_num, kernel_size=(3, 3), strides=1, padding="same"),
                layers.BatchNormalization(),
            ]
        )
        if stride != 1:
            self.downSample = keras.Sequential(
                [layers.Conv2D(filters=filter_num, kernel_size=(1, 1), strides=stride), layers.BatchNormalization()]
            )
        else:
            self.downSample = lambda x: x

    def call(self, inputs, training=None):
        identity = self.downSample(inputs)
        out = self.left(inputs)
        return tf.nn.relu(layers.add([out, identity]))

    def get_config(self):
        return {**super().get_config(), "filter_num": self.filter_num, "stride": self.stride}


def make_res_block(filter_num, blocks, stride=1):
    res_block = keras.Sequential()
    res_block.add(BasicBlock(filter_num, stride))
    for _ in range(1, blocks):
        res_block.add(BasicBlock(filter_num, stride=1))
    return res_block


class ResNet(keras.Model):
    def __init__(self, layer_dims, num_class=100, widths=(64, 128, 256, 512), stem=64, **kwargs):
        super().__init__(**kwargs)
        self.layer_dims, self.num_class, self.widths, self.stem = list(layer_dims), num_class, list(widths), stem
        self.pre = keras.Sequential(
            [
                layers.Conv2D(filters=stem, kernel_size=(3, 3), strides=(1, 1)),
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
        x = self.layer1(x, training=training)
        x = self.layer2(x, training=training)
        x = self.layer3(x, training=training)
        x = self.layer4(x, training=training)
        x = self.average_pooling(x)
        return self.fc(x)

    def get_config(self):  # what a Keras 3 user adds to save a .keras file of this model
        return {
            **super().get_config(),
            "layer_dims": self.layer_dims,
            "num_class": self.num_class,
            "widths": self.widths,
            "stem": self.stem,
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--blocks", default="2,2,2,2")
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--stem", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--epochs", type=int, default=2, help="epochs of one batch of 16 (hundreds let the moving statistics settle)"
    )
    args = ap.parse_args()
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    model = ResNet(
        [int(b) for b in args.blocks.split(",")], widths=[int(w) for w in args.widths.split(",")], stem=args.stem
    )

    def l2_loss(m, weight=1e-4):
        return tf.add_n([tf.nn.l2_loss(v) for v in m.trainable_variables]) * weight

    def myLoss(y_true, y_pred):
        sce = tf.reduce_mean(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y_true, y_pred))
        return sce + l2_loss(model)

    opt = (
        keras.optimizers.legacy.Adam(learning_rate=0.01, decay=0.004)
        if LEGACY
        else keras.optimizers.Adam(learning_rate=0.01)
    )
    model.compile(optimizer=opt, loss=myLoss, metrics=["sparse_categorical_accuracy"])
    x = rng.random((16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 100, (16, 1)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=args.epochs, verbose=0)  # moving statistics and the optimizer's slots move
    if LEGACY:
        model.save(os.path.join(args.out, "saved_model", "my_model"))
        model.save_weights(os.path.join(args.out, "weights.h5"))
    else:
        model.save(os.path.join(args.out, "model.keras"))
        model.save_weights(os.path.join(args.out, "model.weights.h5"))
    # after saving: a training-mode call moves the moving statistics (its own output does not depend on them)
    probe = rng.random((8, 32, 32, 3)).astype("float32")
    np.save(os.path.join(args.out, "x.npy"), probe)
    np.save(os.path.join(args.out, "logits_eval.npy"), model(probe, training=False).numpy())
    np.save(os.path.join(args.out, "logits_train.npy"), model(probe, training=True).numpy())
    print(f"{'Keras 2' if LEGACY else 'Keras 3'} wrote {sorted(os.listdir(args.out))}")


if __name__ == "__main__":
    sys.exit(main())
