"""Keras <-> neutral weights file.  The file's layout *is* Keras' layout, so no
tensor is transposed here: only names are mapped (``<layer>.<param>``)."""

from __future__ import annotations

import os

import numpy as np

from resnet_port import weights as neutral
from resnet_port.spec import ResNetSpec, get_spec


def variable(model, key: str):
    """The Keras variable of canonical key ``<layer>.<param>``: the layer of that name, its attribute."""
    layer, param = key.rsplit(".", 1)
    return getattr(model.get_layer(layer), param)


def _variables(model, spec: ResNetSpec):
    for key in spec.parameters():
        yield key, variable(model, key)


def to_numpy(model, arch: str | ResNetSpec, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every parameter and moving statistic of ``model``, keyed by canonical name.

    In float32 (the neutral file's type) unless ``dtype`` says otherwise; ``None``
    keeps each variable's own type (checkpoints of a ``--float64`` run).
    """
    spec = get_spec(arch)
    return {key: np.asarray(var.numpy(), dtype=dtype) for key, var in _variables(model, spec)}


def from_numpy(model, arch: str | ResNetSpec, tensors: dict[str, np.ndarray], source: str = "weights") -> None:
    """Assign ``tensors`` to ``model`` after the strict check (names and shapes)."""
    spec = get_spec(arch)
    neutral.check_tensors(tensors, spec, source)
    for key, var in _variables(model, spec):
        var.assign(np.asarray(tensors[key], dtype=np.dtype(str(var.dtype))))


def export(model, arch: str | ResNetSpec, path: str | os.PathLike, normalization=None, **extra):
    spec = get_spec(arch)
    return neutral.save(
        path, to_numpy(model, spec), spec.name, producer="tf_impl", extra=extra, normalization=normalization
    )


def load_into(model, arch: str | ResNetSpec, path: str | os.PathLike) -> neutral.Weights:
    spec = get_spec(arch)
    w = neutral.load(path, spec)
    from_numpy(model, spec, w.tensors, str(path))
    return w
