"""The formats ``export`` writes for every variant: one module each (the libraries' own formats are in
:mod:`resnet_port.libraries`).

A format module holds what this project knows about one kind of file, importing its framework or
runtime only inside the functions that need them (so this package stays neutral):

``NAME``, ``FRAMEWORK``, ``FILE``
    ``--format NAME``; the key of the framework that writes it, whose run of the weights is the file's
    reference; the file or folder written.
``SIZED``
    whether the file fixes its input size when the network's pads depend on it (TF 'same' padding at
    stride 2: ``spec.size_dependent_padding``).
``write_op(path, out)``
    the framework worker's operation that writes ``path`` (``out``: the export folder).
``reload(path, meta)``
    the file loaded with nothing but its own library (``python -m resnet_port.reload``, where this
    project's packages are blocked): ``(run, facts)``, ``run(x NHWC) -> logits`` and what loaded it.
``check(row, res, path, spec, size)`` (optional)
    the format's own verdicts added to its row (ONNX: the 'same' pads survived, dynamic dimensions).
``extra_rows(ctx)`` (optional)
    rows of further checks once every file is reloaded (``torch``: the state_dict in torch_impl's model;
    ``onnx-torch``: the two ONNX files against each other).

Adding a format is adding a module here and its name to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = ("keras", "torch_program", "onnx_keras", "onnx_torch")
ALL: tuple[ModuleType, ...] = tuple(importlib.import_module(f"{__name__}.{m}") for m in MODULES)


def get(name: str) -> ModuleType:
    """The format module of ``--format name``."""
    for fmt in ALL:
        if fmt.NAME == name:
            return fmt
    raise KeyError(f"no format {name!r}; known: {', '.join(f.NAME for f in ALL)}")


__all__ = ["ALL", "MODULES", "get"]
