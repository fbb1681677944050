"""PyTorch <-> neutral weights file: the one place where layouts are converted.

=================  ===========================  ===============================
file key suffix    PyTorch tensor               conversion
=================  ===========================  ===============================
conv ``kernel``    ``weight`` (out, in, kh, kw) file (kh, kw, in, out): permute
dense ``kernel``   ``weight`` (out, in)         transpose
``bias``           ``bias``                     none
``gamma``          BN ``weight``                none
``beta``           BN ``bias``                  none
``moving_mean``    BN ``running_mean``          none
``moving_variance``  BN ``running_var``         none (both biased, see model.py)
=================  ===========================  ===============================

``num_batches_tracked`` is PyTorch bookkeeping that nothing here reads (the
momentum is fixed); it is not part of the file.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from resnet_port import weights as neutral
from resnet_port.spec import ResNetSpec, get_spec, is_moving_statistic


def state_key(key: str) -> str:
    """The ``state_dict`` key of canonical key ``<layer>.<param>`` (module names are the spec's)."""
    layer, param = key.rsplit(".", 1)
    return f"{layer}.{neutral.TORCH_NAMES[param]}"


def tensor(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer of ``model`` that canonical key ``key`` names."""
    return model.get_buffer(state_key(key)) if is_moving_statistic(key) else model.get_parameter(state_key(key))


def _mapping(spec: ResNetSpec):
    """(file key, state_dict key, layer kind) for every tensor of the spec."""
    for layer in spec.parameter_layers():
        for p in layer.params:
            key = f"{layer.name}.{p}"
            yield key, state_key(key), layer.kind


def _to_file_layout(t: np.ndarray, kind: str, key: str) -> np.ndarray:
    if key.endswith(".kernel"):
        return t.transpose(2, 3, 1, 0) if kind == "conv2d" else t.T
    return t


def _to_torch_layout(a: np.ndarray, kind: str, key: str) -> np.ndarray:
    if key.endswith(".kernel"):
        return a.transpose(3, 2, 0, 1) if kind == "conv2d" else a.T
    return a


def _check_model_keys(model: torch.nn.Module, spec: ResNetSpec) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    mapped = {sd for _, sd, _ in _mapping(spec)}
    extra, missing = sorted(set(state) - mapped), sorted(mapped - set(state))
    if extra or missing:
        raise neutral.WeightsError(
            f"the PyTorch model does not match spec {spec.name!r}: missing {missing}, unexpected {extra}"
        )
    return state


def to_numpy(model: torch.nn.Module, arch: str | ResNetSpec | None = None) -> dict[str, np.ndarray]:
    spec = get_spec(arch or model.spec)
    state = _check_model_keys(model, spec)
    out = {}
    for key, sd_key, kind in _mapping(spec):
        t = state[sd_key].detach().to("cpu", torch.float32).numpy()
        out[key] = np.ascontiguousarray(_to_file_layout(t, kind, key))
    return out


def per_parameter_to_numpy(model: torch.nn.Module, of, what: str = "gradient") -> dict[str, np.ndarray]:
    """``of(parameter)`` (its ``.grad``, an optimiser buffer) for every trainable tensor, keyed and laid
    out as in the file, in its own dtype."""
    params = dict(model.named_parameters())
    out = {}
    for key, sd_key, kind in _mapping(model.spec):
        if sd_key in params:
            t = of(params[sd_key])
            if t is None:
                raise ValueError(f"{key} has no {what}")
            out[key] = np.ascontiguousarray(_to_file_layout(t.detach().cpu().numpy(), kind, key))
    return out


def gradients_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The ``.grad`` of every trainable tensor, keyed and laid out as in the file, in its own dtype."""
    return per_parameter_to_numpy(model, lambda p: p.grad, "gradient; run backward() first")


def from_numpy(
    model: torch.nn.Module,
    tensors: dict[str, np.ndarray],
    arch: str | ResNetSpec | None = None,
    source: str = "weights",
) -> None:
    spec = get_spec(arch or model.spec)
    neutral.check_tensors(tensors, spec, source)
    state = _check_model_keys(model, spec)
    with torch.no_grad():
        for key, sd_key, kind in _mapping(spec):
            a = np.ascontiguousarray(_to_torch_layout(np.asarray(tensors[key], dtype=np.float32), kind, key))
            state[sd_key].copy_(torch.from_numpy(a))


def export(model: torch.nn.Module, path: str | os.PathLike, normalization=None, **extra):
    spec = model.spec
    return neutral.save(
        path, to_numpy(model, spec), spec.name, producer="torch_impl", extra=extra, normalization=normalization
    )


def load_into(model: torch.nn.Module, path: str | os.PathLike) -> neutral.Weights:
    w = neutral.load(path, model.spec)
    from_numpy(model, w.tensors, model.spec, str(path))
    return w
