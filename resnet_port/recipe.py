"""The training recipe, written once: objective, optimiser, schedule, and the run config.

Both ``tf_impl`` and ``torch_impl`` read these dataclasses; the defaults are the
seed's.  Units are in the comments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .augment import AugmentSpec
from .spec import ResNetSpec, get_spec

L2_SCOPES = ("all", "kernels")


@dataclass(frozen=True)
class ObjectiveSpec:
    """Cross-entropy on logits (batch mean) + ``l2 * sum(v**2) / 2`` over a set of variables.

    ``l2_scope='all'`` is the seed: its filter ``if 'kernel' or 'bias' in v.name``
    is always true, so every trainable variable is decayed: conv and dense kernels
    and biases, and BatchNorm gamma and beta (never the moving statistics).
    ``'kernels'`` decays conv and dense kernels only, the common practice.
    """

    l2: float = 1e-4  # weight of TF's l2_loss (= sum of squares / 2)
    l2_scope: str = "all"

    def __post_init__(self):
        if self.l2_scope not in L2_SCOPES:
            raise ValueError(f"l2_scope must be one of {L2_SCOPES}, got {self.l2_scope!r}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")

    def l2_keys(self, spec: ResNetSpec) -> list[str]:
        """The canonical names of the decayed tensors, in execution order."""
        keys = spec.trainable_parameters()
        if self.l2_scope == "all":
            return list(keys)
        return [k for k in keys if k.endswith(".kernel")]


@dataclass(frozen=True)
class AdamSpec:
    """Adam as Keras defines it (epsilon outside the bias correction), with per-step inverse-time decay.

    The seed's ``Adam(learning_rate=0.001, decay=0.004)`` (Keras 2) decayed the
    rate every optimiser step: ``lr(t) = 0.001 / (1 + 0.004 t)``, t = 0, 1, 2, ...
    Keras 3 silently ignores ``decay``, so both realizations use an explicit
    schedule computing exactly this, in float32.
    """

    learning_rate: float = 1e-3
    decay: float = 4e-3  # per optimiser step (batch), not per epoch
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7  # Keras' default; PyTorch's is 1e-8 and is placed differently

    def schedule(self, steps_per_epoch: int, epochs: int, batch_size: int) -> "InverseTimeDecay":
        return InverseTimeDecay(self.learning_rate, self.decay)

    def lr(self, step: int) -> np.float32:
        return InverseTimeDecay(self.learning_rate, self.decay).lr(step)


@dataclass(frozen=True)
class InverseTimeDecay:
    """``lr(t) = initial / (1 + decay * t)`` per optimiser step t = 0, 1, ..., in float32 as Keras computes it."""

    initial: float
    decay: float

    def lr(self, step: int) -> np.float32:
        f = np.float32
        return f(self.initial) / (f(1.0) + f(self.decay) * (f(step) / f(1.0)))


@dataclass(frozen=True)
class Recipe:
    """Everything a training run is defined by.  Defaults reproduce the seed."""

    arch: str = "resnet18"
    epochs: int = 150
    batch_size: int = 64
    eval_batch_size: int = 50  # the seed evaluated the test set in batches of 50
    val_size: int = 5000  # the last images of the training file
    seed: int = 0
    limit_train: int | None = None  # train on the first N training images only (quick runs)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    optimizer: AdamSpec = field(default_factory=AdamSpec)
    amp: bool = False
    amp_dtype: str = "float16"  # on CUDA: float16 with a gradient scaler, or bfloat16
    # float64 end to end (slow), from the same initial weights as float32: for exact
    # comparisons of runs (e.g. a distributed run against one device), where float32
    # rounding decides ReLU and max-pool ties and Adam's first steps amplify it
    float64: bool = False

    def __post_init__(self):
        get_spec(self.arch)  # a clear error for unknown names
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.val_size < 0:
            raise ValueError(f"--val-size must be >= 0, got {self.val_size}")
        if self.limit_train is not None and self.limit_train < 1:
            raise ValueError(f"--limit-train must be a positive integer, got {self.limit_train}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"--amp-dtype must be float16 or bfloat16, got {self.amp_dtype!r}")
        if self.float64 and self.amp:
            raise ValueError("--float64 and --amp/--amp-dtype exclude each other: choose one precision")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        d = dict(d)
        d["augment"] = AugmentSpec(**d.get("augment", {}))
        d["objective"] = ObjectiveSpec(**d.get("objective", {}))
        d["optimizer"] = AdamSpec(**d.get("optimizer", {}))
        return cls(**d)

    def steps_per_epoch(self, n_train: int) -> int:
        return -(-n_train // self.batch_size)

    def schedule(self, steps_per_epoch: int):
        """The learning-rate schedule of this run (``.lr(step)``, float32), per optimiser step."""
        return self.optimizer.schedule(steps_per_epoch, self.epochs, self.batch_size)
