"""The seed's recipe, pinned: every default against the post's values, and the CLIs with no flags.

Nothing else holds the recipe as a whole: a default changed by mistake (say the
batch size) would leave every other test green.  The values here are read off
the post, not off the code.
"""

import numpy as np
import pytest

from resnet_port import cli
from resnet_port import run as lifecycle
from resnet_port.augment import AugmentSpec
from resnet_port.recipe import AdamSpec, ObjectiveSpec, Recipe
from resnet_port.spec import get_spec

SEED_TRAIN_IMAGES = 45_000


def test_recipe_defaults_are_the_seeds():
    r = Recipe()
    assert (r.arch, r.epochs, r.batch_size, r.val_size, r.eval_batch_size) == ("resnet18", 150, 64, 5000, 50)
    assert r.steps_per_epoch(SEED_TRAIN_IMAGES) == 704  # ceil(45000 / 64)
    # Adam(learning_rate=0.001, decay=0.004), Keras' other defaults, decayed per step
    assert r.optimizer == AdamSpec(learning_rate=1e-3, decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    schedule = r.schedule(704)
    for t in (0, 1, 704, 704 * 150 - 1):
        assert schedule.lr(t) == np.float32(np.float32(1e-3) / (np.float32(1) + np.float32(0.004) * np.float32(t)))
    # L2 1e-4 * sum(v**2)/2 over EVERY trainable variable: the seed's filter is always true
    spec = get_spec(r.arch)
    assert r.objective == ObjectiveSpec(l2=1e-4, l2_scope="all")
    assert r.objective.l2_keys(spec) == list(spec.trainable_parameters())
    assert any(k.endswith(".gamma") for k in r.objective.l2_keys(spec)) and any(
        k.endswith(".bias") for k in r.objective.l2_keys(spec)
    )
    # BatchNorm: Keras' momentum 0.99 and epsilon 1e-3, in every layer
    bns = [l for l in spec.layers() if l.kind == "batchnorm"]
    assert bns and all((b.momentum, b.epsilon) == (0.99, 1e-3) for b in spec.batchnorms())
    # ImageDataGenerator(width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True, fill_mode='nearest')
    assert r.augment == AugmentSpec(
        height_shift=0.2,
        width_shift=0.2,
        horizontal_flip=True,
        interpolation="bilinear",
        fill_mode="nearest",
        crop_padding=0,
        cutout=0,
    )
    assert (r.amp, r.float64) == (False, False)


def test_modern_recipe_is_the_published_one():
    """Every constant of the modern recipe against the published PyTorch CIFAR-100 recipes
    (kuangliu/pytorch-cifar, weiaicunzai/pytorch-cifar100), read off them, not off the code."""
    from resnet_port.recipe import SGDSpec, recipe

    r = recipe("modern")
    assert (r.arch, r.epochs, r.batch_size, r.val_size, r.normalize) == ("resnet18-cifar-torch", 200, 128, 5000, True)
    # SGD(lr=0.1, momentum=0.9, nesterov=True) at batch 128, weight decay 5e-4 (coupled, on the kernels),
    # a 5-epoch linear warm-up from 0, cosine to 0
    assert r.optimizer == SGDSpec(learning_rate=0.1, base_batch=128, momentum=0.9, nesterov=True, warmup_epochs=5.0)
    assert r.objective == ObjectiveSpec(l2=5e-4, l2_scope="kernels", label_smoothing=0.1)
    schedule = r.schedule(352)
    assert schedule.lr(0) == 0 and schedule.lr(5 * 352) == np.float32(0.1) and schedule.total == 200 * 352
    # RandomCrop(32, padding=4) from the zero-padded image, RandomHorizontalFlip, Cutout 8x8, no shifts
    assert r.augment == AugmentSpec(
        height_shift=0.0, width_shift=0.0, horizontal_flip=True, fill_mode="constant", crop_padding=4, cutout=8
    )
    # the network: torchvision's BasicBlock at CIFAR scale, as the repos define it
    spec = get_spec(r.arch)
    assert spec.count_parameters().trainable == 11_220_132  # kuangliu's ResNet18 at 100 classes
    stem = spec.layer("stem.conv")
    assert (stem.kernel_size, stem.stride, stem.padding) == (3, 1, 1) and "maxpool" not in [l.kind for l in spec.stem]
    convs = spec.convolutions()
    assert all(c.padding == (1 if c.kernel_size == 3 else 0) and not c.use_bias for c in convs)
    bns = spec.batchnorms()
    assert all((b.epsilon, b.torch_momentum, b.unbiased_variance) == (1e-5, pytest.approx(0.1), True) for b in bns)
    assert [b.has_projection for b in spec.blocks] == [False, False, True, False, True, False, True, False]


@pytest.mark.parametrize("framework", ["tf_impl", "torch_impl"])
def test_cli_without_flags_trains_the_seeds_recipe(framework):
    """``python -m tf_impl.train`` (and torch_impl.train) with no flags resolve to exactly Recipe()."""
    import importlib

    backend = {"tf_impl": "KerasBackend", "torch_impl": "TorchBackend"}[framework]
    cls = getattr(importlib.import_module(f"{framework}.train"), backend)
    args = lifecycle.parser(cls).parse_args([])
    assert cli.recipe_from_args(args) == Recipe()
    assert (
        args.out is None and str(cli.default_out(framework, "resnet18")) == f"runs/{framework.split('_')[0]}-resnet18"
    )
