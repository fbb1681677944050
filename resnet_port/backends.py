"""One contract for every realization of the spec, and the registry of them.

A backend is what a framework package (``tf_impl``, ``torch_impl``) offers the rest of
the project: each operation below, with one signature, in neutral terms (numpy arrays in
the neutral layout, images NHWC, the spec's canonical names).  The parity workers, the
conformance test and the tools call these and nothing framework-specific, so a third
framework is one more package with a ``backend`` module (plus a line in
``resnet_port.frameworks``), not edits spread over the project.

``get(key)`` imports ``<package>.backend`` and returns its ``BACKEND``; nothing here
imports a framework.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

from . import frameworks
from .spec import ResNetSpec

Model = Any  # the framework's own model object
Optimizer = Any


@runtime_checkable
class Backend(Protocol):
    """What every realization offers.  ``model`` is the framework's model of ``spec``."""

    framework: frameworks.Framework

    @property
    def key(self) -> str: ...

    # -- models and weights ------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Seed the framework's random draws (initialisers)."""

    def build(self, spec: ResNetSpec, dtype: str = "float32", naive: str | None = None) -> Model:
        """The model of ``spec`` in ``dtype``, taking any input size; ``naive``: a deliberately wrong port."""

    def to_numpy(self, model: Model, spec: ResNetSpec) -> dict[str, np.ndarray]:
        """Every parameter and moving statistic, canonical keys, neutral layout, float32."""

    def from_numpy(
        self, model: Model, spec: ResNetSpec, tensors: dict[str, np.ndarray], source: str = "weights"
    ) -> None:
        """Assign tensors (checked strictly against the spec first)."""

    def save_weights(self, model: Model, spec: ResNetSpec, path: str | Path, normalization=None, **extra) -> Path:
        """Write the neutral weights file."""

    def load_weights(self, model: Model, spec: ResNetSpec, path: str | Path):
        """Read a neutral weights file into ``model``; returns the ``resnet_port.weights.Weights``."""

    # -- running ---------------------------------------------------------------------------------
    def layer_outputs(
        self, model: Model, spec: ResNetSpec, images: np.ndarray, training: bool
    ) -> dict[str, np.ndarray]:
        """Every spec layer's output (NHWC) and ``logits`` for NHWC ``images``, without updating state
        beyond what the mode does (training mode moves the BatchNorm statistics)."""

    def calibrate_batchnorm(self, model: Model, spec: ResNetSpec, images: np.ndarray) -> None:
        """One training-mode pass whose batch statistics replace the moving ones."""

    def loss_and_gradients(
        self, model: Model, spec: ResNetSpec, images: np.ndarray, labels: np.ndarray, objective
    ) -> dict[str, np.ndarray]:
        """``total``, ``ce``, ``l2`` and ``grad/<key>`` of every trainable parameter, in training mode."""

    def train_steps(
        self,
        model: Model,
        spec: ResNetSpec,
        recipe,
        schedule,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        naive: str | None = None,
        eager: bool = False,
    ) -> Optimizer:
        """The recipe's optimiser steps through the training CLI's own step; returns the optimiser.

        ``eager``: run that step without compiling it into a graph, where a framework does (Keras traces
        its train step first: ~4 s for a tiny ResNet on a CPU against ~1 s for one eager step), for a
        step or two; the same operations, not necessarily the same rounding."""

    def momentum_buffers(self, optimizer: Optimizer, model: Model, spec: ResNetSpec) -> dict[str, np.ndarray]:
        """SGD's momentum buffers in PyTorch's convention, canonical keys."""

    def learning_rates(self, optimizer_spec, schedule, steps: list[int]) -> np.ndarray:
        """The optimiser's learning rate at each step, as the framework's optimiser computes it."""

    def augment(self, images: np.ndarray, draws, spec, normalization) -> np.ndarray:
        """The recipe's augmentation of NHWC uint8 ``images`` with the given random draws."""

    # -- training runs and files -------------------------------------------------------------------
    @property
    def trainer(self) -> type:
        """The training CLI's backend (a ``resnet_port.run.Backend``)."""

    def write_checkpoint(self, path: str | Path, tensors: dict[str, Any], state: dict) -> None:
        """Write a checkpoint atomically: the old file or the whole new one, never a part."""

    def read_checkpoint(self, path: str | Path) -> tuple[dict[str, Any], dict]:
        """(tensors, state) of a checkpoint, verified (digest, finite values); nothing in it runs."""

    def bench(self, op: dict) -> dict:
        """Time the training step, inference and augmentation (``resnet_port.bench``'s job)."""

    def native_operations(self) -> dict:
        """Worker operations that read, run and write the framework's native files (``resnet_port.port``/``export``)."""


#: the operations a backend must offer, checked by the conformance test
OPERATIONS = tuple(
    name
    for name in vars(Backend)
    if not name.startswith("_") and callable(getattr(Backend, name, None)) or name in ("key", "trainer")
)


def signature_differences(backend) -> list[str]:
    """The operations whose parameters (names, order, defaults) are not the contract's."""
    import inspect

    out = []
    for name in OPERATIONS:
        want, got = getattr(Backend, name, None), getattr(backend, name, None)
        if not (inspect.isfunction(want) and callable(got)):
            continue
        w = [(p.name, p.default) for p in list(inspect.signature(want).parameters.values())[1:]]
        g = [(p.name, p.default) for p in inspect.signature(got).parameters.values()]
        if w != g:
            show = lambda ps: ", ".join(n if d is inspect.Parameter.empty else f"{n}={d!r}" for n, d in ps)  # noqa: E731
            out.append(f"{name}({show(g)}), the contract says {name}({show(w)})")
    return out


def get(name: str | frameworks.Framework) -> Backend:
    """The backend of a framework (its key, package or Framework)."""
    fw = frameworks.get(name) if isinstance(name, str) else name
    module = importlib.import_module(f"{fw.package}.backend")
    backend = module.BACKEND
    missing = [op for op in OPERATIONS if not hasattr(backend, op)]
    if missing:
        raise TypeError(
            f"{fw.package}.backend.BACKEND does not offer {', '.join(missing)} (resnet_port.backends.Backend)"
        )
    return backend


def all_keys() -> list[str]:
    return [f.key for f in frameworks.ALL]
