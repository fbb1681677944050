"""The training recipes, written once: objective, optimiser, schedule, and the run config.

Both ``tf_impl`` and ``torch_impl`` read these dataclasses.  Two recipes are
registered (:data:`RECIPES`):

* ``seed`` (the default): the post's, reproduced exactly: Adam 1e-3 with the
  legacy per-step decay, L2 1e-4 on every trainable variable, shifts and flips,
  150 epochs of batch 64, the seed's ResNet18;
* ``modern``: a CIFAR ResNet18 (3x3 stem, no max-pool, no conv biases) with
  per-channel normalisation, random crop, flip and Cutout, label smoothing 0.1,
  weight decay 5e-4 on kernels, SGD with Nesterov momentum, 5 epochs of linear
  warm-up then cosine to 0, 200 epochs of batch 128: the published recipes that
  reach 75.6-79.5% on CIFAR-100.

Learning rates are computed once, here, as float32 values per optimiser step
(``schedule(...).lr(step)``); both frameworks use exactly these values.  Units
are in the comments.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .augment import NONE as NO_AUGMENT
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
    # cross-entropy against (1 - s) one-hot + s / classes: (1 - s) * CE + s * mean over classes of -log p
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.l2_scope not in L2_SCOPES:
            raise ValueError(f"l2_scope must be one of {L2_SCOPES}, got {self.l2_scope!r}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

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
    kind: str = "adam"

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
class SGDSpec:
    """SGD with momentum in PyTorch's form, the one the published CIFAR recipes were trained with.

    Per step t, with the learning rate lr_t of the schedule and the gradient g of
    the objective (its weight decay already in g, the coupled way: ``g += wd * w``)::

        b = momentum * b + g            (b = g at the first step)
        w -= lr_t * (g + momentum * b)  (Nesterov; plain: w -= lr_t * b)

    Keras' own SGD keeps ``v = momentum * v - lr * g`` and steps ``w += momentum * v
    - lr * g``: the learning rate sits inside the velocity, so under a changing
    rate the two differ (and its ``weight_decay`` is decoupled).  ``tf_impl``
    implements this form instead.
    """

    learning_rate: float = 0.1  # at base_batch images per step; scaled linearly with the batch size
    base_batch: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    warmup_epochs: float = 5.0  # linear from 0, then cosine to 0 at the last step
    kind: str = "sgd"

    def __post_init__(self):
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1 or self.base_batch < 1 or self.warmup_epochs < 0:
            raise ValueError(
                f"SGD needs a positive learning rate and base batch, momentum in [0, 1) and warm-up >= 0, got {self}"
            )

    def peak(self, batch_size: int) -> float:
        return self.learning_rate * batch_size / self.base_batch

    def schedule(self, steps_per_epoch: int, epochs: int, batch_size: int) -> "WarmupCosine":
        return WarmupCosine(
            self.peak(batch_size), round(self.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch
        )


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from 0 over ``warmup`` steps, then cosine from ``peak`` to 0 at ``total`` steps.

    ``lr(t) = peak * t / warmup`` for t < warmup, else ``peak * (1 + cos(pi * (t -
    warmup) / (total - warmup))) / 2``, in float64, rounded once to float32.
    """

    peak: float
    warmup: int
    total: int

    def lr(self, step: int) -> np.float32:
        if step < self.warmup:
            return np.float32(self.peak * step / self.warmup)
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return np.float32(self.peak * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def table(self, steps: int | None = None) -> np.ndarray:
        """``lr`` at steps 0 .. steps - 1 (default: the whole run), float32."""
        return np.array([self.lr(t) for t in range(self.total if steps is None else steps)], dtype=np.float32)


OPTIMIZERS = {"adam": AdamSpec, "sgd": SGDSpec}


@dataclass(frozen=True)
class Recipe:
    """Everything a training run is defined by.  Defaults reproduce the seed (see :data:`RECIPES`)."""

    name: str = "seed"
    arch: str = "resnet18"
    epochs: int = 150
    batch_size: int = 64
    eval_batch_size: int = 50  # the seed evaluated the test set in batches of 50
    val_size: int = 5000  # the last images of the training file
    seed: int = 0
    limit_train: int | None = None  # train on the first N training images only (quick runs)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    optimizer: AdamSpec | SGDSpec = field(default_factory=AdamSpec)
    normalize: bool = False  # per-channel (x - mean) / std with the training split's statistics
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
        """A recipe from its dict, also one written before a field existed (it had its default)."""
        d = dict(d)
        d["augment"] = AugmentSpec(**d.get("augment", {}))
        d["objective"] = ObjectiveSpec(**d.get("objective", {}))
        opt = dict(d.get("optimizer", {}))
        d["optimizer"] = OPTIMIZERS[opt.pop("kind", "adam")](**opt)
        return cls(**d)

    def steps_per_epoch(self, n_train: int) -> int:
        return -(-n_train // self.batch_size)

    def schedule(self, steps_per_epoch: int):
        """The learning-rate schedule of this run (``.lr(step)``, float32), per optimiser step."""
        return self.optimizer.schedule(steps_per_epoch, self.epochs, self.batch_size)


#: Cutout 8x8 after a random crop from the image zero-padded by 4, and the flip
MODERN_AUGMENT = AugmentSpec(
    height_shift=0.0, width_shift=0.0, horizontal_flip=True, fill_mode="constant", crop_padding=4, cutout=8
)

RECIPES: dict[str, Recipe] = {
    "seed": Recipe(),
    # the CIFAR-100 ResNet18 recipe of the published PyTorch repos (kuangliu/pytorch-cifar,
    # weiaicunzai/pytorch-cifar100: SGD 0.1 Nesterov momentum 0.9, weight decay 5e-4, batch 128,
    # 200 epochs, crop 4 + flip, per-channel normalisation), with a 5-epoch warm-up, cosine decay,
    # label smoothing 0.1 and Cutout 8; on their network, in PyTorch's conventions
    # (resnet18-cifar-torch), so a checkpoint of theirs is the same model
    "modern": Recipe(
        name="modern",
        arch="resnet18-cifar-torch",
        epochs=200,
        batch_size=128,
        eval_batch_size=500,
        augment=MODERN_AUGMENT,
        objective=ObjectiveSpec(l2=5e-4, l2_scope="kernels", label_smoothing=0.1),
        optimizer=SGDSpec(),
        normalize=True,
    ),
}


def recipe(name: str, **changes) -> Recipe:
    """A registered recipe, with some fields changed (``--epochs`` and the like)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[name], **changes)


__all__ = [
    "AdamSpec",
    "SGDSpec",
    "ObjectiveSpec",
    "Recipe",
    "RECIPES",
    "recipe",
    "NO_AUGMENT",
    "MODERN_AUGMENT",
    "InverseTimeDecay",
    "WarmupCosine",
]
