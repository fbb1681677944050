"""What the parity suite would otherwise not see: each framework's own training draws, and the tolerance itself.

The augmentation parity tests hand both frameworks the *same* draws, so they
prove the application.  Here each framework's own training-time draw function
(``torch_impl.data.random_draws``, called by its loader; ``tf_impl.data.random_draws``,
called by its tf.data pipeline) is checked against the neutral formula on the
uniforms it drew, and its draws over many images against the recipe's
distribution, for every recipe.  Then ``port --check``'s tolerance is pinned:
the contract is ``1e-4 x max(1, max |source output|)``, and an error just over it
fails while one just under it passes, on the logits and on an inner layer.
"""

import numpy as np
import pytest

from resnet_port import augment, port
from resnet_port.recipe import RECIPES
from resnet_port.spec import get_spec

N = 36_000  # images per draw check: each crop offset ~4,000 times, each Cutout row ~1,100
H = W = 32
RECIPE_SPECS = {name: r.augment for name, r in RECIPES.items()}


def torch_draws(spec, n, seed):
    """PyTorch's training-time draws, and the uniforms its generator gave for them (the same generator state)."""
    import torch

    from torch_impl.data import random_draws

    draws = random_draws(spec, n, H, W, "cpu", torch.Generator().manual_seed(seed))
    u = torch.rand(spec.uniforms_per_image, n, generator=torch.Generator().manual_seed(seed))
    return [None if d is None else d.numpy() for d in draws], u.numpy()


def keras_draws(spec, n, seed):
    """TensorFlow's training-time draws (stateless, seeded per batch as the pipeline seeds them) and its uniforms."""
    import tensorflow as tf

    from tf_impl.data import random_draws

    pair = tf.constant([seed, 1_000_003], tf.int64)
    draws = random_draws(spec, n, H, W, seed=pair)
    u = tf.random.stateless_uniform(tf.stack([spec.uniforms_per_image, n]), seed=pair, dtype=tf.float32)
    return [None if d is None else d.numpy() for d in draws], u.numpy()


DRAWERS = {"torch": torch_draws, "keras": keras_draws}


@pytest.fixture(scope="module", params=sorted(RECIPE_SPECS))
def recipe_draws(request):
    """Each framework's draws for one recipe."""
    spec = RECIPE_SPECS[request.param]
    return request.param, spec, {fw: f(spec, N, seed=11) for fw, f in DRAWERS.items()}


@pytest.mark.parametrize("fw", sorted(DRAWERS))
def test_each_frameworks_own_draws_are_the_neutral_formula_of_its_uniforms(recipe_draws, fw):
    name, spec, by_fw = recipe_draws
    draws, u = by_fw[fw]
    expected = augment.draws_from_uniform(u, spec, H, W)
    for label, got, want in zip(("dy", "dx", "flip", "cut_y", "cut_x"), draws, expected):
        assert (got is None) == (want is None), (name, fw, label)
        if got is not None:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"{name}/{fw}/{label}")


def _frequencies(values, support):
    values = np.asarray(values)
    assert set(np.unique(values)) <= set(support), (
        f"values outside {support}: {sorted(set(np.unique(values)) - set(support))[:5]}"
    )
    return np.array([(values == v).mean() for v in support])


@pytest.mark.parametrize("fw", sorted(DRAWERS))
def test_each_frameworks_own_draws_follow_the_recipes_distribution(recipe_draws, fw):
    """Over N images: the recipe's range, with the recipe's frequencies (5 standard errors)."""
    name, spec, by_fw = recipe_draws
    (dy, dx, flip, cut_y, cut_x), _ = by_fw[fw]

    def near(freq, p, what):
        se = np.sqrt(p * (1 - p) / N)
        assert np.all(np.abs(freq - p) < 5 * se), f"{name}/{fw}/{what}: frequencies {np.round(freq, 4)} vs {p:.4f}"

    flip = np.asarray(flip)
    if spec.horizontal_flip:
        near(np.array([flip.mean()]), augment.FLIP_PROBABILITY, "flip")
    else:
        assert not flip.any()
    if spec.crop_padding:  # integer offsets -p..p, each 1/(2p+1)
        p = spec.crop_padding
        for what, d in (("crop dy", dy), ("crop dx", dx)):
            near(_frequencies(d, range(-p, p + 1)), 1 / (2 * p + 1), what)
    else:  # sub-pixel shifts, uniform on [-s*size, s*size]
        for what, d, limit in (("dy", dy, spec.height_shift * H), ("dx", dx, spec.width_shift * W)):
            d = np.asarray(d, np.float64)
            assert d.min() >= -limit and d.max() <= limit and d.min() < -0.99 * limit and d.max() > 0.99 * limit, (
                what,
                d.min(),
                d.max(),
            )
            hist, _ = np.histogram(d, bins=10, range=(-limit, limit))
            near(hist / N, 0.1, f"{what} deciles")
    if spec.cutout:  # the centre uniform over the image's rows and columns
        for what, c, size in (("cutout row", cut_y, H), ("cutout column", cut_x, W)):
            near(_frequencies(c, range(size)), 1 / size, what)
    else:
        assert cut_y is None and cut_x is None


# -- the tolerance of port --check -------------------------------------------------------------------


CONTRACT = 1e-4  # the README's and the closing notes' tolerance of port --check


def test_the_check_tolerance_is_pinned():
    """The project's contract: a tenfold looser (or tighter) tolerance is a different tool."""
    assert port.ATOL == CONTRACT


def _outputs(rng, names):
    return {n: rng.standard_normal((4, 8)).astype(np.float64) * (20.0 if n == "logits" else 3.0) for n in names}


@pytest.mark.parametrize("where", ["logits", "layer3.0.conv1"])
def test_the_check_fails_just_over_its_tolerance_and_passes_just_under(where):
    """An error of 1.2x the tolerance fails (naming the layer), 0.8x passes: so does the same on the logits."""
    spec = get_spec("tiny")
    names = [layer.name for layer in spec.layers()]
    rng = np.random.default_rng(0)
    ref = _outputs(rng, [*names, "logits"])
    scale = max(1.0, float(np.abs(ref[where]).max()))
    assert scale > 1  # the tolerance scales with the output: 1e-4 of its largest magnitude
    for factor, passes in ((0.8, True), (1.2, False)):
        got = {k: v.copy() for k, v in ref.items()}
        got[where][1, 3] += (
            factor * CONTRACT * scale
        )  # the contract's number, not the code's: a looser code fails here too
        ok, logit_diff, tol, rows, first = port.judge(got, ref, names)
        assert ok is passes, (where, factor, logit_diff, tol, first)
        if where != "logits":
            assert (first is None) is passes and (passes or first.name == where)
        else:
            assert first is None and (logit_diff <= tol) is passes
