"""``python -m torch_impl.evaluate WEIGHTS_OR_RUN_DIR``: test accuracy in PyTorch."""

from __future__ import annotations

import sys

import numpy as np
import torch

from resnet_port import evaluation

from . import weights
from .data import DeviceLoader
from .engine import predict, set_threads
from .model import build_model


def predict_logits(weights_path, arch: str, images: np.ndarray, batch_size: int) -> np.ndarray:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(arch)
    w = weights.load_into(model, weights_path)
    model = model.to(device, memory_format=torch.channels_last)
    loader = DeviceLoader(
        images, np.zeros(len(images), np.int64), batch_size, device, None, shuffle=False, normalization=w.normalization
    )
    return predict(model, (x for x, _ in loader.batches())).numpy()


def main(argv=None) -> int:
    return evaluation.main("torch_impl", predict_logits, argv, set_threads)


if __name__ == "__main__":
    sys.exit(main())
