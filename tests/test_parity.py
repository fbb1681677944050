"""Cross-framework parity of the models: same weights, same batch, same outputs.

Each framework runs in its own worker process (resnet_port.parity); a worker crash
fails the test with the worker's stderr.  For each architecture, three processes:
torch makes weights, TF makes weights and runs every forward on both files,
torch runs every forward (and the deliberately naive ports) on both files.
"""

import shutil

import numpy as np
import pytest

from resnet_port import diff, parity
from resnet_port import weights as W
from resnet_port.spec import available, bottleneck_stride, get_spec, same_padding

ATOL = 1e-4  # on logits and every intermediate output, float32
BATCH = 8
MODES = ("eval", "train")


def naive_variants():
    from torch_impl.naive import VARIANTS

    return list(VARIANTS)


def expected_first_divergence(spec, variant: str) -> str:
    """Where each naive port must first differ, derived from the spec (not written down per arch)."""
    if variant in ("torch-bn-epsilon", "keras-bn-epsilon"):
        return next(layer.name for layer in spec.layers() if layer.kind == "batchnorm")
    assert variant in ("symmetric-padding", "same-padding"), variant
    shapes = {}
    shape = spec.input_shape
    for layer in spec.layers():
        shapes[layer.name] = shape
        shape = layer.output_shape
    for conv in spec.convolutions():
        h = shapes[conv.name][0]
        tf_same = same_padding(h, conv.kernel_size, conv.stride)
        if variant == "symmetric-padding" and conv.padding == "same" and len(set(tf_same)) > 1:
            return conv.name
        if variant == "same-padding" and isinstance(conv.padding, int) and tf_same != (conv.padding, conv.padding):
            return conv.name
    raise AssertionError(f"{spec.name} has no convolution where {variant} pads otherwise")


def test_naive_variants_cover_both_conventions():
    from torch_impl.naive import applicable

    assert {v: c for v, c in diff.NAIVE_CONVENTIONS.items()} == {
        v: ("keras" if v in applicable("tiny") else "pytorch")
        for v in diff.NAIVE_VARIANTS
        if v not in diff.NAIVE_STRIDE
    }
    assert applicable("tiny") == ["symmetric-padding", "torch-bn-epsilon"]
    assert applicable("tiny-cifar-torch") == applicable("resnet18-torch@1000") == ["same-padding", "keras-bn-epsilon"]
    # a bottleneck network's version (the stride on the 3x3: v1.5, on the first 1x1: v1), the same weights either way
    assert applicable("resnet50-torch")[-1] == "stride-on-1x1" and applicable("resnet50-keras")[-1] == "stride-on-3x3"
    for arch in available():
        assert applicable(arch) == diff.naive_applicable(get_spec(arch)), arch


def test_naive_variants_named_alike_everywhere():
    assert tuple(naive_variants()) == diff.NAIVE_VARIANTS


def _forward(arch, weights, inputs, training, out, **extra):
    return {
        "op": "forward",
        "arch": arch,
        "weights": str(weights),
        "inputs": str(inputs),
        "training": training,
        "out": str(out),
        **extra,
    }


#: the tiny variants (every block type, stem and convention at toy widths) and the post's and the
#: modern recipe's full-size networks; the other full-size ones (torchvision's, timm's, the CIFAR
#: repos', keras.applications') are held to their libraries' own models layer by layer instead
#: (test_zoo*.py), a stronger check of the same code, and built in both frameworks by test_conformance
PARITY_ARCHS = [
    a for a in available() if a.startswith("tiny") or a in ("resnet18", "resnet34", "resnet18-cifar", "resnet34-cifar")
]


def _plan(arch: str, d) -> tuple[list, list, list]:
    """Three stages per architecture: PyTorch makes weights; Keras makes weights, runs every forward on
    both files and round-trips PyTorch's; PyTorch runs every forward (and the naive ports) and
    round-trips Keras' file and the Keras round trip of its own.  (their ops, files in ``d``)"""
    x = np.random.default_rng(7).random((BATCH, *get_spec(arch).input_shape), dtype=np.float32)
    np.save(d / "x.npy", x)
    origins = ("tf", "torch")
    init = [{"op": "init", "arch": arch, "seed": 11, "out": str(d / "w_torch.safetensors")}]
    tf_ops = [{"op": "init", "arch": arch, "seed": 5, "out": str(d / "w_tf.safetensors")}]
    torch_ops = []
    for origin in origins:
        w = d / f"w_{origin}.safetensors"
        for mode in MODES:
            train = mode == "train"
            tf_ops.append(
                _forward(
                    arch,
                    w,
                    d / "x.npy",
                    train,
                    d / f"tf_{origin}_{mode}.npz",
                    weights_out=str(d / f"tfw_{origin}_{mode}.safetensors"),
                )
            )
            torch_ops.append(
                _forward(
                    arch,
                    w,
                    d / "x.npy",
                    train,
                    d / f"torch_{origin}_{mode}.npz",
                    weights_out=str(d / f"torchw_{origin}_{mode}.safetensors"),
                )
            )
    from torch_impl.naive import applicable

    for name in applicable(arch):
        for mode in MODES:
            torch_ops.append(
                _forward(
                    arch,
                    d / "w_tf.safetensors",
                    d / "x.npy",
                    mode == "train",
                    d / f"naive_{name}_{mode}.npz",
                    variant=name,
                )
            )
    # round trips: Keras -> file -> PyTorch -> file, and PyTorch -> file -> Keras -> file -> PyTorch -> file
    tf_ops.append(
        {
            "op": "roundtrip",
            "arch": arch,
            "weights": str(d / "w_torch.safetensors"),
            "out": str(d / "rt_keras.safetensors"),
        }
    )
    torch_ops.append(
        {
            "op": "roundtrip",
            "arch": arch,
            "weights": str(d / "w_tf.safetensors"),
            "out": str(d / "rt_torch.safetensors"),
        }
    )
    torch_ops.append(
        {
            "op": "roundtrip",
            "arch": arch,
            "weights": str(d / "rt_keras.safetensors"),
            "out": str(d / "rt_keras_torch.safetensors"),
        }
    )
    return init, tf_ops, torch_ops


def _run_group(archs: list[str], tmp_path_factory) -> dict:
    """The archs' three stages, each one process for them all: the tiny variants together (a process
    start and Keras' tracing cost more than a tiny variant's checks), a full-size one alone (its layer
    outputs take GBs of disk)."""
    folders = {arch: tmp_path_factory.mktemp(f"parity_{arch}") for arch in archs}
    stages = [[], [], []]
    for arch, d in folders.items():
        for stage, ops in zip(stages, _plan(arch, d)):
            stage += ops
    root = next(iter(folders.values()))
    for framework, ops in zip(("torch", "tf", "torch"), stages):
        parity.run_worker(framework, ops, root)
    return folders


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    done: dict = {}

    def get(arch: str):
        if arch not in done:
            group = [a for a in PARITY_ARCHS if a.startswith("tiny")] if arch.startswith("tiny") else [arch]
            done.update(_run_group(group, tmp_path_factory))
        return arch, done[arch]

    return get


@pytest.fixture(scope="module", params=PARITY_ARCHS)
def run(request, runs):
    """Module-scoped, so the tests run architecture by architecture: a full-size one's GBs of layer
    outputs are removed before the next is computed."""
    arch, d = runs(request.param)
    yield arch, d
    if not arch.startswith("tiny"):
        shutil.rmtree(d, ignore_errors=True)


def _load(path):
    with np.load(path) as z:
        return dict(z)


@pytest.mark.parametrize("origin", parity.FRAMEWORKS)
@pytest.mark.parametrize("mode", MODES)
def test_every_layer_and_logits_agree(run, origin, mode):
    arch, d = run
    spec = get_spec(arch)
    tf_out, torch_out = _load(d / f"tf_{origin}_{mode}.npz"), _load(d / f"torch_{origin}_{mode}.npz")
    rows = parity.compare_layers(torch_out, tf_out, [l.name for l in spec.layers()], ATOL)
    assert parity.first_divergence(rows) is None, parity.divergence_message(rows, ATOL)
    logit_diff, _ = parity.diff_arrays(torch_out["logits"], tf_out["logits"])
    assert logit_diff <= ATOL
    # not trivially equal: the logits are far from zero and differ between images
    assert np.abs(tf_out["logits"]).max() > 0.1 and np.ptp(tf_out["logits"], axis=0).max() > 1e-3
    # argmax agrees on every image
    assert (tf_out["logits"].argmax(1) == torch_out["logits"].argmax(1)).all()


@pytest.mark.parametrize("origin", parity.FRAMEWORKS)
def test_training_forward_updates_moving_statistics_alike(run, origin):
    """One training-mode forward: Keras and PyTorch leave the same moving mean and variance."""
    arch, d = run
    a = W.load(d / f"tfw_{origin}_train.safetensors", arch).tensors
    b = W.load(d / f"torchw_{origin}_train.safetensors", arch).tensors
    before = W.load(d / f"w_{origin}.safetensors", arch).tensors
    moved = 0
    for k in a:
        if k.endswith("moving_mean") or k.endswith("moving_variance"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
            moved += not np.array_equal(a[k], before[k])
        else:  # a forward pass changes nothing else
            assert np.array_equal(a[k], before[k]) and np.array_equal(b[k], before[k]), k
    assert moved == 2 * len([l for l in get_spec(arch).layers() if l.kind == "batchnorm"])


@pytest.mark.parametrize("mode", MODES)
def test_parity_check_is_sensitive(run, mode):
    """Every naive port of the variant is caught, and located: for the seed's conventions PyTorch's
    symmetric padding or BN epsilon, for PyTorch's TF 'same' padding or Keras' BN epsilon."""
    from torch_impl.naive import applicable

    arch, d = run
    spec = get_spec(arch)
    tf_out = _load(d / f"tf_tf_{mode}.npz")
    assert len(applicable(arch)) == 2 + (bottleneck_stride(spec) is not None)
    for naive in applicable(arch):
        bad = _load(d / f"naive_{naive}_{mode}.npz")
        if naive.startswith("stride-on"):  # the first strided block's moved conv outputs another size: named
            first_block = next(
                b for b in spec.blocks if b.stride > 1 and f"{b.name}.conv3" in {l.name for l in b.residual}
            )
            with pytest.raises(ValueError, match=f"layer '{first_block.name}.conv1': output shapes differ"):
                parity.compare_layers(bad, tf_out, [l.name for l in spec.layers()], ATOL)
            continue
        logit_diff, _ = parity.diff_arrays(bad["logits"], tf_out["logits"])
        assert logit_diff > 10 * ATOL, f"{naive} changed the logits by only {logit_diff:.2e}"
        rows = parity.compare_layers(bad, tf_out, [l.name for l in spec.layers()], ATOL)
        first = parity.first_divergence(rows)
        expected = expected_first_divergence(spec, naive)
        assert first is not None and first.name == expected, f"{naive}: " + parity.format_table(rows, ATOL)
        assert f"first divergent layer: {expected}" in parity.divergence_message(rows, ATOL)


def test_round_trips_are_bit_exact(run):
    """Keras -> file -> PyTorch -> file, and PyTorch -> file -> Keras -> file -> PyTorch -> file: every bit back."""
    arch, d = run
    keras_made, torch_made = (
        W.load(d / "w_tf.safetensors", arch).tensors,
        W.load(d / "w_torch.safetensors", arch).tensors,
    )
    via_torch = W.load(d / "rt_torch.safetensors", arch)
    via_keras = W.load(d / "rt_keras.safetensors", arch)
    back = W.load(d / "rt_keras_torch.safetensors", arch)
    assert (via_torch.metadata["producer"], via_keras.metadata["producer"], back.metadata["producer"]) == (
        "torch_impl",
        "tf_impl",
        "torch_impl",
    )
    for k in keras_made:
        assert np.array_equal(via_torch.tensors[k], keras_made[k]), k
        assert np.array_equal(via_keras.tensors[k], torch_made[k]) and np.array_equal(back.tensors[k], torch_made[k]), k


def test_worker_failure_is_loud(tmp_path):
    with pytest.raises(parity.WorkerError, match="exited with code 1(.|\n)*weights file not found"):
        parity.run_worker(
            "torch",
            [_forward("tiny", tmp_path / "none.safetensors", tmp_path / "x.npy", False, tmp_path / "o.npz")],
            tmp_path,
        )


def test_worker_crash_is_loud(tmp_path, monkeypatch):
    """A worker killed by a signal (as the TF+torch segfault would) fails, naming the signal."""
    (tmp_path / "crashing_worker.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(parity.WorkerError, match="killed by signal 11"):
        parity.run_worker("torch", [], tmp_path, module="crashing_worker")


def test_layer_table_marks_first_divergence():
    a = {"x": np.zeros((2, 3)), "y": np.ones((2, 3)), "z": np.ones(2)}
    b = {"x": np.zeros((2, 3)), "y": np.ones((2, 3)) + 1e-3, "z": np.ones(2) + 1.0}
    rows = parity.compare_layers(a, b, ["x", "y", "z"], 1e-4)
    assert [r.ok for r in rows] == [True, False, False]
    table = parity.format_table(rows, 1e-4)
    assert (
        "y" in table.splitlines()[2]
        and "<-- first" in table.splitlines()[2]
        and "<-- first" not in table.splitlines()[3]
    )
    with pytest.raises(ValueError, match="shapes differ"):
        parity.compare_layers({"x": np.zeros(2)}, {"x": np.zeros(3)}, ["x"], 1e-4)


def test_worker_of_a_missing_framework_names_the_extra(monkeypatch, tmp_path):
    """Without one framework installed, the check says what to install (no worker traceback)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(
        parity.WorkerError, match=r"needs tensorflow, which is not installed: pip install 'resnet-port\[tf\]'"
    ):
        parity.run_worker("tf", [], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
