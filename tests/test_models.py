"""Each framework's model against the spec: per-layer output shapes and parameter counts.

The same checks run over the tiny variants (every block type, stem and convention) and the smallest
full-size member of each kind (timm-style); every registered variant is built in both frameworks
by test_conformance."""

import numpy as np
import pytest

from resnet_port.spec import available, get_spec

#: the tiny variants, and the smallest full-size member of each kind
VARIANTS = [a for a in available() if a.startswith("tiny")] + [
    "resnet18",
    "resnet18-cifar",
    "resnet18-torch",
    "resnet18-cifar-torch",
    "resnet18d-torch",
    "resnet26-torch",
    "resnext50-32x4d-torch",
    "resnetv2-18-torch",
    "resnetv2-50-torch",
    "preact-resnet18-cifar-torch",
    "resnet50-keras",
    "resnet50v2-keras",
]
KERAS_CLASS = {
    "conv2d": "Conv2D",
    "batchnorm": "BatchNormalization",
    "relu": "ReLU",
    "maxpool": "MaxPooling2D",
    "avgpool": "AveragePooling2D",
    "add": "Add",
    "global_avg_pool": "GlobalAveragePooling2D",
    "dense": "Dense",
}


@pytest.mark.parametrize("arch", VARIANTS)
def test_keras_shapes_and_counts(arch):
    from tf_impl.model import build_model, intermediate_model

    spec = get_spec(arch)
    model = build_model(spec)
    outputs = intermediate_model(model, spec)(np.zeros((2, *spec.input_shape), np.float32), training=False)
    for layer in spec.layers():
        assert tuple(outputs[layer.name].shape) == (2, *layer.output_shape), layer.name
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    non_trainable = sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)
    c = spec.count_parameters()
    assert (trainable, non_trainable) == (c.trainable, c.non_trainable)
    assert model.count_params() == c.total
    # every spec layer with parameters is one Keras layer with that name and shapes
    for layer in spec.parameter_layers():
        k = model.get_layer(layer.name)
        for p, shape in layer.params.items():
            assert tuple(getattr(k, p).shape) == shape, f"{layer.name}.{p}"
    # and nothing else: every Keras layer is a spec layer (the input aside), of the spec's kind, or
    # the ZeroPadding2D in front of a layer with PyTorch's padding=p (where TF 'same' differs; a
    # NegInfPadding2D before a max-pool that no ReLU precedes)
    kinds = {layer.name: layer.kind for layer in spec.layers()}
    keras_layers = {k.name: type(k).__name__ for k in model.layers if type(k).__name__ != "InputLayer"}
    pads = {name for name, cls in keras_layers.items() if cls in ("ZeroPadding2D", "NegInfPadding2D")}
    assert set(keras_layers) - pads == set(kinds) and all(p.endswith(".pad") and p[:-4] in kinds for p in pads)
    unbiased = spec.conventions.bn_unbiased_variance  # PyTorch's moving-variance update
    expected = {**KERAS_CLASS, "batchnorm": "UnbiasedBatchNormalization" if unbiased else "BatchNormalization"}
    assert all(keras_layers[name] == expected[kind] for name, kind in kinds.items())
    # a pad exactly where PyTorch's symmetric padding is not TF 'same': strided (or 'valid'-like) layers
    wanted = {
        l.name
        for l in spec.layer_specs()
        if l.kind in ("conv2d", "maxpool")
        if isinstance(l.padding, int) and l.padding and not (getattr(l, "kernel_size", 0) == 3 and l.stride == 1)
    }
    assert {p[:-4] for p in pads} == wanted


@pytest.mark.parametrize("arch", VARIANTS)
def test_torch_shapes_and_counts(arch):
    import torch

    from torch_impl.model import LayerRecorder, build_model

    spec = get_spec(arch)
    model = build_model(spec).eval()
    h, w, c = spec.input_shape
    with torch.no_grad(), LayerRecorder(model) as rec:
        logits = model(torch.zeros(2, c, h, w))
    assert tuple(logits.shape) == (2, spec.num_classes)
    for layer in spec.layers():
        assert rec.outputs[layer.name].shape == (2, *layer.output_shape), layer.name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    non_trainable = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    cnt = spec.count_parameters()
    assert (trainable, non_trainable) == (cnt.trainable, cnt.non_trainable)


def test_torch_channels_last_and_grads():
    """channels_last gives the same logits, and every parameter receives a gradient."""
    import torch

    from torch_impl.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    x = torch.rand(4, 3, 32, 32)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)
    out.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.isfinite(out).all()


def test_torch_layer_outputs_keep_the_models_precision():
    """The float64 checks (``port --check``'s verdict, the zoo) compare at ~1e-12: the recorded outputs of a
    float64 model stay float64 (they were once cast to float32, which held every Keras source's float64
    check at ~1e-7), a float32 model's float32."""
    import torch

    from torch_impl.backend import TorchBackend

    b = TorchBackend()
    spec = get_spec("tiny-torch")
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    for dtype, want in (("float64", np.float64), ("float32", np.float32)):
        model = b.build(spec, dtype=dtype)
        outputs = b.layer_outputs(model, spec, x, training=False)
        assert {k: v.dtype for k, v in outputs.items()} == {k: np.dtype(want) for k in outputs}, dtype
    model = b.build(spec, dtype="float64")
    got = b.layer_outputs(model, spec, x, training=False)["stem.conv"]
    conv = torch.nn.functional.conv2d(
        torch.from_numpy(x).double().permute(0, 3, 1, 2), model.stem.conv.weight, stride=2, padding=3
    )
    assert np.abs(got - conv.detach().permute(0, 2, 3, 1).numpy()).max() < 1e-14


def test_torch_batchnorm_moving_variance_is_keras_biased():
    """The measured case: Keras' update uses the biased batch variance."""
    import torch

    from resnet_port.spec import BatchNormSpec
    from torch_impl.model import KerasBatchNorm2d

    x = torch.randn(8, 3, 1, 1) * 2 + 1
    bn = KerasBatchNorm2d(BatchNormSpec("bn", 3)).train()
    bn(x)
    biased = x.var(dim=(0, 2, 3), unbiased=False)
    expected = 0.99 * 1.0 + 0.01 * biased
    assert torch.allclose(bn.running_var, expected, rtol=1e-6, atol=0)
    naive = torch.nn.BatchNorm2d(3, momentum=0.01).train()
    naive(x)
    assert not torch.allclose(naive.running_var, expected, rtol=1e-6, atol=0)  # the default is different


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_initialisers_are_the_specs(framework):
    """Both frameworks draw the initialisers the spec names: resnet18's Glorot-uniform kernels
    (bound sqrt(6/(fan_in+fan_out))), zero biases and betas, unit gammas, as Keras does."""
    spec = get_spec("resnet18")
    conv = spec.blocks[2].get("conv1")  # layer2.0.conv1: 64 -> 128, 3x3
    assert (conv.name, conv.kernel_init, conv.bias_init) == ("layer2.0.conv1", "glorot_uniform", "zeros")
    if framework == "tf":
        from tf_impl import weights
        from tf_impl.model import build_model

        t = weights.to_numpy(build_model(spec), spec)
    else:
        from torch_impl import weights
        from torch_impl.model import build_model

        t = weights.to_numpy(build_model(spec))
    w = t["layer2.0.conv1.kernel"]
    bound = (6 / (64 * 9 + 128 * 9)) ** 0.5
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / 3**0.5) < 0.02 * bound  # uniform on [-a, a]: std a / sqrt(3)
    assert not t["layer2.0.conv1.bias"].any() and not t["fc.bias"].any() and not t["stem.bn.beta"].any()
    assert (t["stem.bn.gamma"] == 1).all() and (t["stem.bn.moving_variance"] == 1).all()


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_cifar_convolutions_are_he_normal_fan_out(framework):
    """The modern recipe's ResNet: N(0, 2 / fan_out) convolutions (torchvision's), no biases."""
    spec = get_spec("resnet18-cifar")
    if framework == "tf":
        from tf_impl import weights
        from tf_impl.model import build_model

        t = weights.to_numpy(build_model(spec), spec)
    else:
        from torch_impl import weights
        from torch_impl.model import build_model

        t = weights.to_numpy(build_model(spec))
    w = t["layer3.0.conv2.kernel"]  # 3x3, 256 -> 256
    assert abs(w.std() / (2 / (9 * 256)) ** 0.5 - 1) < 0.02 and abs(w.mean()) < 1e-3
    assert np.abs(w).max() > 3 * w.std()  # a normal's tails, not a uniform's (max sqrt(3) std)
    assert not any(k.endswith(".bias") and k != "fc.bias" for k in t)
