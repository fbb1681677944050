"""``python -m resnet_port.synthetic FOLDER``: small, learnable CIFAR-100-shaped data, to try the tool without CIFAR-100.

(Also used by the tests, smoke runs and benchmarks.)

Each class gets a colour and a stripe orientation; images are that pattern plus
noise, so a network can learn the classes in a few hundred steps, unlike random
labels.  ``write`` stores the result in the original ``cifar-100-python`` format
so it goes through the real loader (with ``verify=False``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .data import NUM_FINE, Split, write_cifar100


def fine_to_coarse() -> np.ndarray:
    """A fixed scrambled fine -> coarse map with exactly 5 fine classes per coarse class."""
    perm = np.random.default_rng(2024).permutation(NUM_FINE)
    m = np.empty(NUM_FINE, dtype=np.int64)
    m[perm] = np.arange(NUM_FINE) // 5
    return m


def make_split(n: int, num_classes: int, rng: np.random.Generator, noise: float = 0.35) -> Split:
    """``n`` images of ``num_classes`` classes (labels 0..num_classes-1, balanced)."""
    if not 1 <= num_classes <= NUM_FINE:
        raise ValueError(f"num_classes must be 1..{NUM_FINE}, got {num_classes}")
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    crng = np.random.default_rng(99)  # the class patterns are the same in every split
    colours = crng.uniform(0.15, 0.85, (NUM_FINE, 3))
    freq = crng.uniform(0.3, 1.2, NUM_FINE)
    angle = crng.uniform(0, np.pi, NUM_FINE)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    phase = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    patterns = 0.5 + 0.5 * np.sin(freq[:, None, None] * phase)  # (classes, 32, 32)
    img = colours[labels][:, None, None, :] * (0.55 + 0.45 * patterns[labels][..., None])
    img = img + noise * rng.standard_normal(img.shape) * 0.5
    images = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return Split(images, labels.astype(np.int64), fine_to_coarse()[labels])


def write(
    folder, n_train: int = 600, n_test: int = 200, num_classes: int = 10, seed: int = 0, archive: bool = False
) -> Path:
    rng = np.random.default_rng(seed)
    return write_cifar100(
        folder, make_split(n_train, num_classes, rng), make_split(n_test, num_classes, rng), archive=archive
    )


def main(argv=None) -> int:
    from . import cli

    ap = argparse.ArgumentParser(
        prog="python -m resnet_port.synthetic",
        description=cli.description(__doc__),
        epilog="Then, for example: python -m tf_impl.train --data-dir FOLDER --no-verify --arch tiny --epochs 2 --out runs/try-tf "
        "(--no-verify: these are not the original files, whose md5 sums the loader checks).",
    )
    ap.add_argument("folder", help="where to write cifar-100-python/ (train, test, meta)")
    ap.add_argument("--train", type=cli.positive_int, default=600, help="training images (default 600)")
    ap.add_argument("--test", type=cli.positive_int, default=200, help="test images (default 200)")
    ap.add_argument(
        "--classes",
        type=cli.positive_int,
        default=10,
        help="classes used, 1 to 100 (default 10; the label space stays CIFAR-100's)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise and the order (default 0)")
    ap.add_argument("--archive", action="store_true", help="write cifar-100-python.tar.gz instead of the folder")
    ap.add_argument("--force", action="store_true", help="overwrite data already in FOLDER")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    if not 1 <= args.classes <= NUM_FINE:
        return cli.fail(f"--classes {args.classes}: choose 1 to {NUM_FINE}")
    if folder.exists() and not folder.is_dir():
        return cli.fail(f"{folder} is a file; give a folder to write the data into")
    existing = [p for p in (folder / "cifar-100-python", folder / "cifar-100-python.tar.gz") if p.exists()]
    if existing and not args.force:
        return cli.fail(f"{existing[0]} exists; pass --force to overwrite it, or choose another folder")
    try:
        path = write(folder, args.train, args.test, args.classes, args.seed, archive=args.archive)
    except OSError as e:
        return cli.fail(f"cannot write to {folder}: {e.strerror or e}")
    print(
        f"wrote {path}: {args.train} training and {args.test} test images, {args.classes} classes (synthetic: not CIFAR-100)"
    )
    print(f"train on it with: python -m tf_impl.train --data-dir {folder} --no-verify --arch tiny --epochs 2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
