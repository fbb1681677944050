"""The neutral augmentation: its draws, its reference, and Keras' ImageDataGenerator."""

import numpy as np
import pytest
from scipy import stats

from resnet_port import augment as A

SPEC = A.AugmentSpec()


def test_draws_have_the_recipes_distribution():
    n = 20_000
    d = A.draw(SPEC, n, (32, 32), np.random.default_rng(0))
    # uniform shifts in [-0.2, 0.2] x 32 pixels, sub-pixel (not rounded)
    for s in (d.dy, d.dx):
        assert s.min() >= -6.4 and s.max() <= 6.4
        assert stats.kstest(s, stats.uniform(loc=-6.4, scale=12.8).cdf).pvalue > 0.01
        assert np.mean(s != np.round(s)) > 0.99
    assert stats.binomtest(int(d.flip.sum()), n, 0.5).pvalue > 0.01
    # independent of each other
    assert abs(stats.pearsonr(d.dy, d.dx)[0]) < 0.03 and abs(stats.pearsonr(d.dy, d.flip)[0]) < 0.03


def test_draws_match_keras_random_transform_distribution():
    """Keras' own draws (get_random_transform) have the same distribution as ours."""
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    g = ImageDataGenerator(width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True, fill_mode="nearest")
    np.random.seed(0)
    k = [g.get_random_transform((32, 32, 3)) for _ in range(4000)]
    ours = A.draw(SPEC, 4000, (32, 32), np.random.default_rng(1))
    assert stats.ks_2samp([t["tx"] for t in k], ours.dy).pvalue > 0.01
    assert stats.ks_2samp([t["ty"] for t in k], ours.dx).pvalue > 0.01
    assert abs(np.mean([t["flip_horizontal"] for t in k]) - 0.5) < 0.03


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_reference_equals_keras_apply_transform(shape):
    """Same shift and flip as ImageDataGenerator.apply_transform, within 1e-5 on [0, 1].

    The only difference is the order of float32 operations (Keras/scipy interpolate
    in float64 per channel): measured ~1.5e-6.  Keras' ``tx`` moves columns and its
    ``ty`` rows (see resnet_port.augment).
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    g = ImageDataGenerator(width_shift_range=0.2, height_shift_range=0.3, horizontal_flip=True, fill_mode="nearest")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (24, *shape, 3)).astype(np.uint8)
    d = A.draw(A.AugmentSpec(height_shift=0.3), 24, shape, rng)
    d.dy[:3] = [0.0, 10.5, -7.25]  # include exact zero and large shifts that reach the edges
    ref = A.apply_reference(x, d)
    keras_out = np.stack(
        [
            g.apply_transform(
                x[i].astype(np.float32) / 255.0,
                {"tx": float(d.dx[i]), "ty": float(d.dy[i]), "flip_horizontal": bool(d.flip[i])},
            )
            for i in range(len(x))
        ]
    )
    assert np.abs(keras_out - ref).max() < 1e-5


def test_reference_special_cases():
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8, 3)).astype(np.float32)
    zero = A.Draws(np.zeros(2, np.float32), np.zeros(2, np.float32), np.array([False, True]))
    out = A.apply_reference(x, zero)
    assert np.array_equal(out[0], x[0]) and np.array_equal(out[1], x[1, :, ::-1])
    # a whole-pixel shift is a translation with the edge pixel repeated
    two = A.Draws(np.array([2.0, -1.0], np.float32), np.zeros(2, np.float32), np.zeros(2, bool))
    out = A.apply_reference(x, two)
    assert (
        np.array_equal(out[0, :6], x[0, 2:])
        and np.array_equal(out[0, 6], x[0, 7])
        and np.array_equal(out[0, 7], x[0, 7])
    )
    assert np.array_equal(out[1, 1:], x[1, :7]) and np.array_equal(out[1, 0], x[1, 0])
    # half a pixel is the mean of neighbours
    half = A.Draws(np.zeros(2, np.float32), np.array([0.5, 0.5], np.float32), np.zeros(2, bool))
    out = A.apply_reference(x, half)
    np.testing.assert_allclose(out[0, :, 0], (x[0, :, 0] + x[0, :, 1]) / 2, rtol=1e-6)


def test_draws_round_trip(tmp_path):
    d = A.draw(SPEC, 5, (32, 32), np.random.default_rng(0))
    d.save(tmp_path / "d.npz")
    e = A.Draws.load(tmp_path / "d.npz")
    assert np.array_equal(d.dy, e.dy) and np.array_equal(d.flip, e.flip)


def test_bad_spec():
    with pytest.raises(ValueError, match="fractions"):
        A.AugmentSpec(height_shift=1.5)
    with pytest.raises(ValueError, match="interpolation must be 'bilinear' and fill_mode one of"):
        A.AugmentSpec(fill_mode="reflect")


def test_torch_pipeline_draws_and_loader():
    """The device loader yields every image once per epoch, augmented, in [0, 1]."""
    import torch

    from torch_impl.data import DeviceLoader, random_draws

    g = torch.Generator().manual_seed(0)
    dy, dx, flip, cut_y, cut_x = random_draws(SPEC, 20_000, 32, 32, "cpu", g)
    assert cut_y is None and cut_x is None  # no Cutout in the seed's recipe
    assert stats.kstest(dy.numpy(), stats.uniform(loc=-6.4, scale=12.8).cdf).pvalue > 0.01
    assert stats.binomtest(int(flip.sum()), 20_000, 0.5).pvalue > 0.01
    images = np.arange(10)[:, None, None, None].repeat(32, 1).repeat(32, 2).repeat(3, 3).astype(np.uint8) * 20
    loader = DeviceLoader(images, np.arange(10), 4, "cpu", SPEC)
    seen = []
    for x, y in loader.batches(g):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        # constant images stay constant under shift and flip: the label is recoverable
        assert torch.allclose(x[:, 0, 0, 0] * 255 / 20, y.float(), atol=1e-4)
        seen += y.tolist()
    assert sorted(seen) == list(range(10)) and len(loader) == 3


def test_tf_pipeline_draws():
    import tensorflow as tf

    from tf_impl.data import random_draws, train_dataset

    dy, dx, flip, _, _ = random_draws(SPEC, 20_000, 32, 32, seed=tf.constant([1, 2], tf.int64))
    assert stats.kstest(dx.numpy(), stats.uniform(loc=-6.4, scale=12.8).cdf).pvalue > 0.01
    assert stats.binomtest(int(flip.numpy().sum()), 20_000, 0.5).pvalue > 0.01
    images = np.zeros((10, 32, 32, 3), np.uint8)
    ds = list(train_dataset(images, np.arange(10), 4, SPEC, seed=0))
    assert [len(y) for _, y in ds] == [4, 4, 2]
    assert sorted(np.concatenate([y.numpy() for _, y in ds]).tolist()) == list(range(10))
