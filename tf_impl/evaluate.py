"""``python -m tf_impl.evaluate WEIGHTS_OR_RUN_DIR``: test accuracy in Keras."""

from __future__ import annotations

import sys

import numpy as np

from resnet_port import evaluation


def predict_logits(weights_path, arch: str, images: np.ndarray, batch_size: int) -> np.ndarray:
    from . import weights
    from .data import eval_dataset
    from .model import build_model

    model = build_model(arch)
    w = weights.load_into(model, arch, weights_path)
    ds = eval_dataset(images, np.zeros(len(images), np.int64), batch_size, w.normalization)
    return np.concatenate([np.asarray(model(x, training=False), dtype=np.float32) for x, _ in ds])


def main(argv=None) -> int:
    from .train import set_threads

    return evaluation.main("tf_impl", predict_logits, argv, set_threads)


if __name__ == "__main__":
    sys.exit(main())
