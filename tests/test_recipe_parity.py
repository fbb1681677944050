"""Cross-framework parity of the recipe: augmentation, loss, gradients, Adam, schedule.

Precision plan (measured, see README "What parity means"):
* tiny, float32: loss, every gradient and three Adam steps at the stated tolerances;
* resnet18, float64: loss, every gradient and one Adam step.  In float32,
  resnet18's gradients are not determined to 1e-4 by the weights and inputs at
  all: perturbing the input by 1e-7 moves even float64 gradients by ~1% (ReLU
  kinks), so float32 rounding alone does the same; float64 removes that and
  leaves only the port's formulas to compare;
* resnet18, float32: loss.
"""

import numpy as np
import pytest

from resnet_port import parity
from resnet_port import weights as W
from resnet_port.augment import AugmentSpec, Draws, apply_reference, draw
from resnet_port.recipe import AdamSpec
from resnet_port.spec import get_spec

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4  # per tensor: max |a - b| <= GRAD_RTOL * max |b|
BN_BIAS_GRAD_ATOL = 1e-5  # conv biases before BN: zero in exact arithmetic, float noise ~5e-7 (fp32)
WEIGHT_ATOL = 1e-4
SCHEDULE_STEPS = [0, 1, 2, 10, 1000, 7031, 100000]

CONFIGS = {
    "tiny-float32": ("tiny", "float32", 3),
    "resnet18-float64": ("resnet18", "float64", 1),
    "resnet18-float32": ("resnet18", "float32", 0),
}


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    arch, dtype, steps = CONFIGS[request.param]
    d = tmp_path_factory.mktemp(request.param)
    rng = np.random.default_rng(21)
    np.save(d / "x.npy", rng.random((16, 32, 32, 3), dtype=np.float32))
    np.save(d / "y.npy", rng.integers(0, 100, 16))
    np.savez(d / "batches.npz", images=rng.random((max(steps, 1), 16, 32, 32, 3), dtype=np.float32), labels=rng.integers(0, 100, (max(steps, 1), 16)))
    w = str(d / "w.safetensors")

    def ops(fw):
        out = [{"op": "loss", "arch": arch, "dtype": dtype, "weights": w, "images": str(d / "x.npy"), "labels": str(d / "y.npy"), "out": str(d / f"loss_{fw}.npz")}]
        if steps:
            out.append({"op": "train", "arch": arch, "dtype": dtype, "weights": w, "batches": str(d / "batches.npz"), "out": str(d / f"after_{fw}.safetensors"), "probe": str(d / "x.npy"), "probe_out": str(d / f"probe_{fw}.npz")})
        return out

    parity.run_worker("tf", [{"op": "init", "arch": arch, "seed": 4, "out": w}] + ops("tf"), d)
    parity.run_worker("torch", ops("torch"), d)
    if steps:
        # Inference logits after the steps with the Keras values of the BatchNorm-fed
        # biases (whose Adam updates are float noise, see test_optimizer_parity).
        spec = get_spec(arch)
        mine = W.load(d / "after_torch.safetensors").tensors
        ref = W.load(d / "after_tf.safetensors").tensors
        for k in spec.batchnorm_fed_biases():
            mine[k] = ref[k]
        W.save(d / "after_torch_keras_biases.safetensors", mine, arch)
        parity.run_worker("torch", [{"op": "forward", "arch": arch, "dtype": dtype, "weights": str(d / "after_torch_keras_biases.safetensors"), "inputs": str(d / "x.npy"), "training": False, "out": str(d / "probe_swapped.npz")}], d)
    return arch, dtype, steps, d


def _npz(p):
    with np.load(p) as z:
        return dict(z)


@pytest.mark.parametrize("run", list(CONFIGS), indirect=True)
def test_loss_parity(run):
    arch, dtype, _, d = run
    a, b = _npz(d / "loss_torch.npz"), _npz(d / "loss_tf.npz")
    for part in ("total", "ce", "l2"):
        rel = abs(float(a[part]) - float(b[part])) / abs(float(b[part]))
        assert rel <= LOSS_RTOL, f"{arch}/{dtype} {part}: PyTorch {float(a[part])!r} vs Keras {float(b[part])!r} (relative {rel:.2e})"
    assert float(b["l2"]) > 0 and float(b["ce"]) > 0


@pytest.mark.parametrize("run", ["tiny-float32", "resnet18-float64"], indirect=True)
def test_gradient_parity(run):
    arch, dtype, _, d = run
    spec = get_spec(arch)
    a, b = _npz(d / "loss_torch.npz"), _npz(d / "loss_tf.npz")
    bn_biases = set(spec.batchnorm_fed_biases())
    worst, worst_key, checked = 0.0, None, 0
    for key in spec.trainable_parameters():
        ga, gb = a[f"grad/{key}"], b[f"grad/{key}"]
        assert ga.shape == gb.shape, key
        if key in bn_biases:
            assert np.abs(ga - gb).max() <= BN_BIAS_GRAD_ATOL, f"{key}: {np.abs(ga - gb).max():.2e}"
            continue
        rel = float(np.abs(ga - gb).max() / np.abs(gb).max())
        checked += 1
        if rel > worst:
            worst, worst_key = rel, key
    assert checked == len(spec.trainable_parameters()) - len(bn_biases)
    assert worst <= GRAD_RTOL, f"worst parameter: {worst_key}, max |dPyTorch - dKeras| / max |dKeras| = {worst:.2e} > {GRAD_RTOL}"


@pytest.mark.parametrize("run", ["tiny-float32", "resnet18-float64"], indirect=True)
def test_optimizer_parity(run):
    """After the same Adam steps from the same weights: every tensor within 1e-4.

    The exception is the conv biases that feed a BatchNorm: their gradient is float
    noise, which Adam divides by its own magnitude, so each framework moves them by
    up to the learning rate in its own direction.  BN cancels them in training mode
    and, in inference mode, they act only with the moving mean; they are compared
    through the logits they produce.
    """
    arch, dtype, steps, d = run
    spec = get_spec(arch)
    a = W.load(d / "after_torch.safetensors", arch).tensors
    b = W.load(d / "after_tf.safetensors", arch).tensors
    before = W.load(d / "w.safetensors", arch).tensors
    bn_biases = set(spec.batchnorm_fed_biases())
    worst = max(((float(np.abs(a[k] - b[k]).max()), k) for k in b if k not in bn_biases))
    assert worst[0] <= WEIGHT_ATOL, f"worst tensor after {steps} steps: {worst[1]} differs by {worst[0]:.2e}"
    moved = [k for k in b if not np.array_equal(b[k], before[k])]
    assert len(moved) == len(b)  # every tensor, moving statistics included, was updated
    probe_a, probe_b = _npz(d / "probe_torch.npz"), _npz(d / "probe_tf.npz")
    assert np.abs(probe_a["train"] - probe_b["train"]).max() <= WEIGHT_ATOL
    swapped = _npz(d / "probe_swapped.npz")["logits"]
    assert np.abs(swapped - probe_b["eval"]).max() <= WEIGHT_ATOL * max(1.0, np.abs(probe_b["eval"]).max())


def test_schedule_identical(tmp_path):
    for fw in parity.FRAMEWORKS:
        parity.run_worker(fw, [{"op": "schedule", "steps": SCHEDULE_STEPS, "out": str(tmp_path / f"{fw}.npy")}], tmp_path)
    tf_lr, torch_lr = np.load(tmp_path / "tf.npy"), np.load(tmp_path / "torch.npy")
    assert tf_lr.dtype == torch_lr.dtype == np.float32
    assert np.array_equal(tf_lr, torch_lr), (tf_lr, torch_lr)
    spec = AdamSpec()
    assert np.array_equal(tf_lr, np.array([spec.lr(s) for s in SCHEDULE_STEPS], np.float32))
    np.testing.assert_allclose(tf_lr[[0, 1, 4, 6]], [1e-3, 1e-3 / 1.004, 1e-3 / 5, 1e-3 / 401], rtol=1e-6)


def test_augmentation_parity(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    draws = draw(AugmentSpec(), 64, (32, 32), rng)
    draws.dy[:2] = [6.4, -6.4]  # the extremes
    np.save(tmp_path / "images.npy", images)
    draws.save(tmp_path / "draws.npz")
    for fw in parity.FRAMEWORKS:
        parity.run_worker(fw, [{"op": "augment", "images": str(tmp_path / "images.npy"), "draws": str(tmp_path / "draws.npz"), "out": str(tmp_path / f"{fw}.npy")}], tmp_path)
    tf_out, torch_out = np.load(tmp_path / "tf.npy"), np.load(tmp_path / "torch.npy")
    ref = apply_reference(images, Draws.load(tmp_path / "draws.npz"))
    assert np.abs(tf_out - torch_out).max() <= 1e-5
    assert np.abs(tf_out - ref).max() <= 1e-5 and np.abs(torch_out - ref).max() <= 1e-5
    assert np.abs(tf_out - images / 255.0).max() > 0.1  # it did something
