"""The seed's pictures: accuracy and loss curves (matplotlib) and the prediction mosaic (OpenCV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROW = 32  # pixels per mosaic row: one CIFAR image
TOP = 18  # the first row starts here, as the seed placed it
LEFT = 250  # room for the class names
MAX_COLUMNS = 192  # the seed's 6400-pixel canvas held 192 images per row


def plot_curves(history: list[dict], out_dir: str | Path, title: str = "Model") -> tuple[Path, Path]:
    """``accuracy.png`` and ``loss.png``: train vs validation per epoch, as the seed drew them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    epochs = [h["epoch"] for h in history]
    paths = []
    for metric, ylabel, loc in (("accuracy", "Accuracy", "lower right"), ("loss", "Loss", "upper right")):
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
        # markers, so that a one-epoch run still shows its points
        ax.plot(epochs, [h[metric] for h in history], "r-o", ms=3, label=metric[:3] if metric == "accuracy" else "loss")
        ax.plot(
            epochs,
            [h[f"val_{metric}"] for h in history],
            "b-o",
            ms=3,
            label="val_acc" if metric == "accuracy" else "val_loss",
        )
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} - {ylabel}")
        ax.legend(loc=loc)
        path = out_dir / f"{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths[0], paths[1]


def mosaic_size(predictions: np.ndarray, num_classes: int) -> tuple[int, int]:
    """(height, width) of the mosaic: one row per class, as many columns as the fullest row needs (capped)."""
    counts = np.bincount(predictions, minlength=num_classes) if len(predictions) else np.zeros(num_classes, int)
    columns = int(min(max(counts.max(initial=0), 1), MAX_COLUMNS))
    return TOP + num_classes * ROW + 2 * ROW, LEFT + columns * ROW + 10


def prediction_mosaic(
    images: np.ndarray,
    predictions: np.ndarray,
    class_names: list[str],
    path: str | Path,
    labels: np.ndarray | None = None,
) -> Path:
    """The seed's ``test_visualisation.png``: each test image in the row of its predicted class.

    ``images`` are uint8 RGB (N, 32, 32, 3).  Rows are labelled with the class name
    at the left; images fill a row left to right in test-set order.  A row holding
    more than 192 predictions shows the first 192 (the seed's canvas held 192).  With
    ``labels``, only the classes that occur among the labels or the predictions get a row
    (all 100 on CIFAR-100; a 10-class run gets 10 rows, not 90 empty ones).
    """
    import cv2

    predictions = np.asarray(predictions, dtype=np.int64)
    shown = (
        np.arange(len(class_names))
        if labels is None
        else np.unique(np.concatenate([np.asarray(labels, np.int64), predictions]))
    )
    row_of = {int(c): i for i, c in enumerate(shown)}
    rows = np.array([row_of[int(c)] for c in predictions], dtype=np.int64)
    height, width = mosaic_size(rows, len(shown))
    canvas = np.zeros((height, width, 3), np.uint8)
    for i, c in enumerate(shown):
        cv2.putText(
            canvas,
            class_names[int(c)],
            (10, TOP + i * ROW + 25),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.7,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    position = np.zeros(len(shown), dtype=np.int64)
    for image, cls in zip(images, rows):
        if position[cls] < MAX_COLUMNS:
            y0, x0 = TOP + cls * ROW, LEFT + position[cls] * ROW
            canvas[y0 : y0 + ROW, x0 : x0 + ROW] = image[:, :, ::-1]  # RGB -> BGR for OpenCV
        position[cls] += 1
    path = Path(path)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"could not write {path}")
    return path
