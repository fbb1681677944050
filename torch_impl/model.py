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

from resnet_port.spec import (
    AvgPoolSpec,
    BatchNormSpec,
    BlockSpec,
    ConvSpec,
    DenseSpec,
    ResNetSpec,
    get_spec,
    same_padding,
)

from . import standalone


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
        super().__init__(
            s.in_channels,
            s.filters,
            s.kernel_size,
            stride=s.stride,
            padding=symmetric,
            bias=s.use_bias,
            groups=s.groups,
        )
        self.same = s.padding == "same"
        fan_in = s.fan_in
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
            return F.conv2d(x, self.weight, self.bias, s, top, 1, self.groups)
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)


class SameMaxPool2d(nn.Module):
    """TF's 'same' max-pool (-inf after), or PyTorch's symmetric ``padding=p`` (-inf), or ``p`` zeros first
    (``pad_with="zero"``: keras.applications' ``ZeroPadding2D`` then a 'valid' pool)."""

    def __init__(self, pool_size: int, stride: int, padding: str | int = "same", pad_with: str = "-inf"):
        super().__init__()
        self.pool_size, self.stride, self.padding, self.zeros = pool_size, stride, padding, pad_with == "zero"

    def forward(self, x):
        if self.padding != "same" and self.zeros and self.padding not in (0, "valid"):
            p = self.padding
            return F.max_pool2d(F.pad(x, (p, p, p, p)), self.pool_size, self.stride)
        if self.padding != "same":
            return F.max_pool2d(x, self.pool_size, self.stride, 0 if self.padding == "valid" else self.padding)
        top, bottom = same_padding(x.shape[-2], self.pool_size, self.stride)
        left, right = same_padding(x.shape[-1], self.pool_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.pool_size, self.stride)


class KerasBatchNorm2d(standalone.BatchNorm):
    """BatchNorm2d with Keras' numerics: epsilon, momentum and moving-variance update.

    PyTorch's fused kernel updates the running variance with the unbiased batch
    variance ``u = v * n / (n - 1)``; Keras uses the biased ``v``.  The kernel is
    given a copy of the running variance, which it turns into
    ``new = (1 - m) old + m u``; subtracting ``(new - (1 - m) old) / n`` leaves
    ``(1 - m) old + m v``, Keras' value, which is written to the buffer.  The fused
    kernel is kept (an O(channels) correction, no extra pass over the
    activations), and the buffer autograd saved is never modified in place.  That
    correction is ``torch_impl.standalone.BatchNorm``'s, the class export's plain
    PyTorch module file carries: the file runs the code the parity suite holds to Keras.
    """

    def __init__(self, s: BatchNormSpec):
        # unbiased_variance: PyTorch's own update, nothing to correct
        super().__init__(s.channels, eps=s.epsilon, momentum=s.torch_momentum, biased_update=not s.unbiased_variance)
        initialize(self.weight, s.gamma_init)
        initialize(self.bias, s.beta_init)
        self.synchronized = False  # set by enable_sync_batchnorm under DistributedDataParallel

    @property
    def unbiased(self) -> bool:
        return not self.biased_update

    def forward(self, x):
        if self.training and self.synchronized:
            return self._sync_forward(x)
        return super().forward(x)

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


class AvgPool(nn.Module):
    """An average pool over the pixels inside the input only (PyTorch's ``count_include_pad=False``);
    TF 'same' pads after, as a max-pool does; ``ceil_mode`` is PyTorch's."""

    def __init__(self, s: AvgPoolSpec):
        super().__init__()
        self.pool_size, self.stride, self.padding, self.ceil_mode = s.pool_size, s.stride, s.padding, s.ceil_mode

    def forward(self, x):
        if self.padding != "same":
            p = 0 if self.padding == "valid" else self.padding
            return F.avg_pool2d(x, self.pool_size, self.stride, p, ceil_mode=self.ceil_mode, count_include_pad=False)
        top, bottom = same_padding(x.shape[-2], self.pool_size, self.stride)
        left, right = same_padding(x.shape[-1], self.pool_size, self.stride)
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), self.pool_size, self.stride)
        inside = F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), self.pool_size, self.stride)
        return total / inside


def _dense(s: DenseSpec) -> nn.Linear:
    fc = nn.Linear(s.in_features, s.units)
    initialize(fc.weight, s.kernel_init, s.in_features)
    initialize(fc.bias, s.bias_init, s.in_features)
    return fc


#: the PyTorch module of each layer kind the spec names (resnet_port.spec.LAYER_KINDS)
MODULES = {
    "conv2d": SameConv2d,
    "batchnorm": KerasBatchNorm2d,
    "maxpool": lambda s: SameMaxPool2d(s.pool_size, s.stride, s.padding, s.pad_with),
    "avgpool": AvgPool,
    "relu": lambda s: nn.ReLU(),
    "add": lambda s: standalone.Add(),
    "global_avg_pool": lambda s: standalone.GlobalAvgPool(),  # (N, C, H, W) -> (N, C), as Keras' GlobalAveragePooling2D
    "dense": _dense,
}


def _sequence(root: nn.Module, layers) -> list[nn.Module]:
    out = []
    for s in layers:
        module = MODULES[s.kind](s)
        standalone.place(root, s.name, module)
        out.append(module)
    return out


def _run(modules, x):
    for m in modules:
        x = m(x)
    return x


class Block:
    """Any residual block of the spec, built by walking it: ``post(add(residual(pre(x)), shortcut(...)))``.

    Not a module: its layers are registered in the network under their canonical names."""

    def __init__(self, b: BlockSpec, root: nn.Module):
        self.pre = _sequence(root, b.pre)
        self.residual = _sequence(root, b.residual)
        self.shortcut = _sequence(root, b.shortcut)
        self.add = _sequence(root, (b.add,))[0]
        self.post = _sequence(root, b.post)
        self.from_pre = b.shortcut_from == "pre"

    def __call__(self, x):
        y = _run(self.pre, x)
        s = _run(self.shortcut, y if self.from_pre else x)
        return _run(self.post, self.add(_run(self.residual, y), s))


class ResNet(nn.Module):
    """The spec's network; ``forward`` takes NCHW float images, returns logits.

    Every layer is a module registered under its canonical name; blocks are walked, not
    classes of their own (the layer lists are plain attributes, so each module is
    registered once, where its name says)."""

    def __init__(self, arch: str | ResNetSpec):
        super().__init__()
        spec = get_spec(arch)
        self.spec = spec
        self.stem_layers = _sequence(self, spec.stem)
        self.block_runners = [Block(b, self) for b in spec.blocks]
        self.head_layers = _sequence(self, (*spec.head, spec.avgpool, spec.fc))

    def forward(self, x):
        x = _run(self.stem_layers, x)
        for block in self.block_runners:
            x = block(x)
        return _run(self.head_layers, x)


def build_model(arch: str | ResNetSpec, **kwargs) -> ResNet:
    return ResNet(arch, **kwargs)


def as_numpy_dtype(t):
    """``t`` in a precision numpy holds: half precisions lifted to float32, float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class LayerRecorder:
    """Records every spec layer's output (as NHWC numpy) through forward hooks, in the model's precision
    (float16 / bfloat16 as float32; float64 kept: the float64 checks compare at ~1e-12).

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
            t = as_numpy_dtype(out.detach())
            if t.dim() == 4:
                t = t.permute(0, 2, 3, 1)
            self.outputs[name] = t.cpu().numpy().copy()

        return hook

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
