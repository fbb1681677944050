"""The libraries whose ResNets ``port`` reads and ``export`` writes: one module each.

A library module holds everything this project knows about one library, and imports its
framework only inside the functions that need it (so this package stays neutral):

``NAME``
    how the CLI names the library (``--format NAME`` for those ``export`` writes).
``FRAMEWORK``
    the key of the framework it runs in (``resnet_port.frameworks``).
``VOCABULARY``
    how it names a ResNet's parts (:class:`~resnet_port.libraries.base.Vocabulary`), the data of
    the one placing rule; ``None`` where its files carry the spec's names (this project's own) or
    are read by their object structure (the post's).
``model(spec, src)``
    the library's own model for ``spec``, for ``port --check`` (runs in the framework's worker).
``defines(spec)``
    whether the library has that network, so that ``export`` can write it in its format.
``write(...)`` / ``reload(path, meta)``
    its native files: writing them (framework worker) and loading them with nothing but the
    library (``python -m resnet_port.reload``, where this project's packages are blocked).

Adding a library is adding a module here and its name to :data:`MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .base import PortError, Vocabulary

#: in the order the placing rule tries their vocabularies (the first that places every layer wins)
MODULES = (
    "own",
    "post",
    "torchvision",
    "timm",
    "timm_resnetv2",
    "kuangliu",
    "weiaicunzai",
    "keras_hub",
    "keras_applications",
    "pytorch_module",
)

ALL: tuple[ModuleType, ...] = tuple(importlib.import_module(f"{__name__}.{m}") for m in MODULES)


def get(name: str) -> ModuleType:
    """The library module called ``name`` (``torchvision``, ``keras-hub``, ...)."""
    for lib in ALL:
        if lib.NAME == name:
            return lib
    raise KeyError(f"no library {name!r}; known: {', '.join(lib.NAME for lib in ALL)}")


def vocabularies() -> tuple[Vocabulary, ...]:
    """Every library's vocabulary, once each (torchvision's ResNet is timm's too), in :data:`MODULES` order."""
    out: list[Vocabulary] = []
    for lib in ALL:
        if lib.VOCABULARY is not None and lib.VOCABULARY not in out:
            out.append(lib.VOCABULARY)
    return tuple(out)


def vocabulary(label: str) -> Vocabulary:
    """The vocabulary a reader reported by its label (``torchvision/timm``, ``keras-hub``, ...)."""
    return next(v for v in vocabularies() if v.library == label)


def writers() -> tuple[ModuleType, ...]:
    """The libraries ``export`` writes native files for."""
    return tuple(lib for lib in ALL if getattr(lib, "write", None))


__all__ = ["ALL", "MODULES", "PortError", "Vocabulary", "get", "vocabularies", "vocabulary", "writers"]
