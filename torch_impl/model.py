"""The PyTorch realization of the spec, numerically equal to the Keras reference.

What it takes to match Keras, each done in exactly one place here:

* ``SameConv2d``: TensorFlow's 'same' padding, computed from the input size at
  run time (``resnet_port.spec.same_padding``).  Symmetric cases use the conv's
  own padding; the odd ones (stride 2 on an even input) pad one extra row and
  column after, which ``padding=1`` would put on both sides.
  An int padding (the PyTorch-convention variants) is ``nn.Conv2d``'s own.
* ``SameMaxPool2d``: the stem's 2x2/stride-1 'same' max-pool pads after with -inf
  (an int padding is ``F.max_pool2d``'s own).
* ``KerasBatchNorm2d``: epsilon from the spec (Keras 1e-3, not PyTorch's 1e-5),
  momentum converted to PyTorch's convention, and the moving variance updated
  with the *biased* batch variance as Keras does (PyTorch uses n/(n-1)); a
  spec that asks for the unbiased update (PyTorch's variants) gets PyTorch's own.
* The initialisers the spec names (the seed's: Keras' defaults, Glorot-uniform
  kernels and zero biases, not PyTorch's Kaiming-uniform and uniform biases).

Module names mirror the spec's canonical names (the parameter-free layers'
too), so ``state_dict`` keys are ``<spec name>.weight`` and so on;
``torch_impl.weights`` maps them to the file.  The model works in
``channels_last`` memory format.  Deliberately wrong ports, which the parity
checks must catch, are in ``torch_impl.naive``, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnet_port.spec import BatchNormSpec, BlockSpec, ConvSpec, DenseSpec, ResNetSpec, get_spec, same_padding


def initialize(tensor: torch.Tensor, name: str, fan_in: int = 0) -> None:
    """PyTorch's function for an initialiser the spec names (``resnet_port.spec.INITIALISERS``).

    ``fan_in`` is the layer's (a bias cannot tell it from its own shape).
    """
    {
        "glorot_uniform": nn.init.xavier_uniform_,
        "he_normal_fan_out": lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
        "uniform_fan_in": lambda t: nn.init.uniform_(t, -1.0 / fan_in**0.5, 1.0 / fan_in**0.5),
        "zeros": nn.init.zeros_,
        "ones": nn.init.ones_,
    }[name](tensor)


class SameConv2d(nn.Conv2d):
    """A Conv2d with TensorFlow's 'same' or 'valid' padding, or PyTorch's symmetric ``padding=p``."""

    def __init__(self, s: ConvSpec):
        symmetric = 0 if isinstance(s.padding, str) else s.padding
        super().__init__(s.in_channels, s.filters, s.kernel_size, stride=s.stride, padding=symmetric, bias=s.use_bias)
        self.same = s.padding == "same"
        fan_in = s.in_channels * s.kernel_size**2
        initialize(self.weight, s.kernel_init, fan_in)
        if self.bias is not None:
            initialize(self.bias, s.bias_init, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            return self._conv_forward(x, self.weight, self.bias)
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(x.shape[-2], k, s)
        left, right = same_padding(x.shape[-1], k, s)
        if top == bottom == left == right:
            return F.conv2d(x, self.weight, self.bias, s, top)
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)


class SameMaxPool2d(nn.Module):
    """TF's 'same' max-pool (-inf after), or PyTorch's symmetric ``padding=p``."""

    def __init__(self, pool_size: int, stride: int, padding: str | int = "same"):
        super().__init__()
        self.pool_size, self.stride, self.padding = pool_size, stride, padding

    def forward(self, x):
        if self.padding != "same":
            return F.max_pool2d(x, self.pool_size, self.stride, 0 if self.padding == "valid" else self.padding)
        top, bottom = same_padding(x.shape[-2], self.pool_size, self.stride)
        left, right = same_padding(x.shape[-1], self.pool_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.pool_size, self.stride)


class KerasBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with Keras' numerics: epsilon, momentum and moving-variance update.

    PyTorch's fused kernel updates the running variance with the unbiased batch
    variance ``u = v * n / (n - 1)``; Keras uses the biased ``v``.  The kernel is
    given a copy of the running variance, which it turns into
    ``new = (1 - m) old + m u``; subtracting ``(new - (1 - m) old) / n`` leaves
    ``(1 - m) old + m v``, Keras' value, which is written to the buffer.  The fused
    kernel is kept (an O(channels) correction, no extra pass over the
    activations), and the buffer autograd saved is never modified in place.
    """

    def __init__(self, s: BatchNormSpec):
        super().__init__(s.channels, eps=s.epsilon, momentum=s.torch_momentum)
        initialize(self.weight, s.gamma_init)
        initialize(self.bias, s.beta_init)
        self.unbiased = s.unbiased_variance  # PyTorch's own update: nothing to correct
        self.synchronized = False  # set by enable_sync_batchnorm under DistributedDataParallel

    def forward(self, x):
        if self.training and self.synchronized:
            return self._sync_forward(x)
        if not self.training or self.unbiased:
            return super().forward(x)
        n = x.numel() // x.shape[1]
        new_var = self.running_var.clone()
        y = F.batch_norm(x, self.running_mean, new_var, self.weight, self.bias, True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_var.copy_(new_var - (new_var - (1.0 - self.momentum) * self.running_var) / n)
            self.num_batches_tracked.add_(1)
        return y

    def _sync_forward(self, x):
        """Batch statistics over every process's batch (synchronised BatchNorm).

        PyTorch's SyncBatchNorm refuses CPU tensors, so this is written out: a
        two-pass mean and *biased* variance through autograd-aware all-reduces, so
        the moving variance gets Keras' value directly.  The gradient flows through
        the global statistics to every process's inputs.
        """
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 at least
        count = torch.tensor([x.numel() // c], dtype=xs.dtype, device=x.device)
        dist.all_reduce(count)
        mean = all_reduce(xs.sum(dim=(0, 2, 3))) / count
        var = all_reduce((xs - mean[None, :, None, None]).square().sum(dim=(0, 2, 3))) / count
        with torch.no_grad():
            m = self.momentum
            moving_var = var.detach() * (count / (count - 1)) if self.unbiased else var.detach()
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(moving_var, alpha=m)
            self.num_batches_tracked.add_(1)
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = (xs - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def enable_sync_batchnorm(model: nn.Module) -> int:
    """Synchronise every KerasBatchNorm2d's training statistics across processes; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, KerasBatchNorm2d):
            m.synchronized = True
            n += 1
    return n


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C), as Keras' GlobalAveragePooling2D."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _local(name: str) -> str:
    """The attribute a spec layer is stored under: the last part of its canonical name."""
    return name.rsplit(".", 1)[-1]


def _dense(s: DenseSpec) -> nn.Linear:
    fc = nn.Linear(s.in_features, s.units)
    initialize(fc.weight, s.kernel_init, s.in_features)
    initialize(fc.bias, s.bias_init, s.in_features)
    return fc


class BasicBlock(nn.Module):
    def __init__(self, b: BlockSpec):
        super().__init__()
        self.conv1 = SameConv2d(b.conv1)
        self.bn1 = KerasBatchNorm2d(b.bn1)
        self.relu1 = nn.ReLU()
        self.conv2 = SameConv2d(b.conv2)
        self.bn2 = KerasBatchNorm2d(b.bn2)
        if b.has_projection:
            self.shortcut = nn.Module()
            self.shortcut.conv = SameConv2d(b.shortcut_conv)
            self.shortcut.bn = KerasBatchNorm2d(b.shortcut_bn)
        else:
            self.shortcut = None
        self.add = Add()
        self.relu2 = nn.ReLU()
        for layer, attr in ((b.relu1, "relu1"), (b.add, "add"), (b.relu2, "relu2")):
            assert _local(layer.name) == attr, f"{layer.name}: the module attribute must be the name's last part"

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        s = x if self.shortcut is None else self.shortcut.bn(self.shortcut.conv(x))
        return self.relu2(self.add(y, s))


class ResNet(nn.Module):
    """The seed's CIFAR ResNet; ``forward`` takes NCHW float images in [0, 1], returns logits."""

    def __init__(self, arch: str | ResNetSpec):
        super().__init__()
        spec = get_spec(arch)
        self.spec = spec
        self.stem = nn.Module()
        self.stem.conv = SameConv2d(spec.stem_conv)
        self.stem.bn = KerasBatchNorm2d(spec.stem_bn)
        self.stem.add_module(_local(spec.stem_relu.name), nn.ReLU())
        p = spec.stem_pool
        self.stem.add_module(_local(p.name) if p else "pool", SameMaxPool2d(p.pool_size, p.stride, p.padding) if p else nn.Identity())
        stages: dict[str, list[BasicBlock]] = {}
        for b in spec.blocks:
            stages.setdefault(b.name.split(".")[0], []).append(BasicBlock(b))
        for stage, blocks in stages.items():
            self.add_module(stage, nn.Sequential(*blocks))
        self.stage_names = list(stages)
        self.add_module(spec.avgpool.name, GlobalAvgPool())
        self.add_module(spec.fc.name, _dense(spec.fc))

    def forward(self, x):
        x = self.stem.pool(self.stem.relu(self.stem.bn(self.stem.conv(x))))
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return self.fc(self.avgpool(x))


def build_model(arch: str | ResNetSpec, **kwargs) -> ResNet:
    return ResNet(arch, **kwargs)


class LayerRecorder:
    """Records every spec layer's output (as NHWC numpy) through forward hooks.

    Usage: ``with LayerRecorder(model) as rec: model(x)``; then ``rec.outputs``.
    """

    def __init__(self, model: ResNet):
        self.model = model
        self.outputs: dict[str, "object"] = {}
        self._handles = []

    def __enter__(self):
        modules = dict(self.model.named_modules())
        for layer in self.model.spec.layers():
            if layer.name not in modules:
                raise KeyError(f"the PyTorch model has no module named {layer.name!r}, which the spec lists")
            self._handles.append(modules[layer.name].register_forward_hook(self._hook(layer.name)))
        return self

    def _hook(self, name):
        def hook(module, args, out):
            t = out.detach().float()
            if t.dim() == 4:
                t = t.permute(0, 2, 3, 1)
            self.outputs[name] = t.cpu().numpy().copy()

        return hook

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
