"""The recipes' objectives and optimisers in PyTorch, equal to the Keras ones.

* L2 is added to the loss as ``l2 * sum(v**2) / 2`` (TF's ``l2_loss``): Adam's
  ``weight_decay`` would decay inside the update, which is not the same thing.
* ``KerasAdam`` is Adam as Keras computes it: ``alpha = lr * sqrt(1 - b2^t) /
  (1 - b1^t)`` and ``v -= alpha * m / (sqrt(v) + eps)``.  ``torch.optim.Adam``
  adds epsilon to the bias-corrected ``sqrt(v_hat)``, an effective epsilon
  ``sqrt(1 - b2^t)`` times smaller, and its default epsilon is 1e-8, not 1e-7.
  The learning rate of step t (t counted from 0, before the update) is the
  recipe's float32 ``AdamSpec.lr(t)``, as Keras' InverseTimeDecay gives it.
* The modern recipe: ``F.cross_entropy(..., label_smoothing=s)`` (Keras'
  formula, written out in ``tf_impl.objective``), weight decay as the same L2
  term (coupled), and ``torch.optim.SGD`` (PyTorch's form is the spec's) with
  the recipe's float32 rate set before every step (:class:`ScheduledSGD`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from resnet_port.recipe import AdamSpec, ObjectiveSpec, SGDSpec
from resnet_port.spec import ResNetSpec, get_spec

from .weights import tensor


def l2_parameters(model: torch.nn.Module, arch: str | ResNetSpec, objective: ObjectiveSpec) -> list[torch.Tensor]:
    return [tensor(model, key) for key in objective.l2_keys(get_spec(arch))]


def _full(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 (autocast) is computed in float32; float32/64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def loss_parts(logits: torch.Tensor, labels: torch.Tensor, l2_params: list[torch.Tensor], objective: ObjectiveSpec):
    """(cross-entropy, L2 term), scalars in the logits' precision (float32 at least)."""
    logits = _full(logits)
    ce = F.cross_entropy(logits, labels, label_smoothing=objective.label_smoothing)
    if not l2_params or objective.l2 == 0:
        return ce, torch.zeros((), device=logits.device, dtype=ce.dtype)
    sq = torch.stack([_full(p).square().sum() for p in l2_params]).sum()
    return ce, objective.l2 * 0.5 * sq.to(ce.dtype)


def make_optimizer(params, opt: AdamSpec | SGDSpec, schedule=None) -> torch.optim.Optimizer:
    """The recipe's optimiser with its per-step schedule (default: the spec's own, for one epoch of one step)."""
    schedule = schedule or opt.schedule(1, 1, 1)
    if isinstance(opt, SGDSpec):
        return ScheduledSGD(params, opt, schedule)
    return KerasAdam(params, opt, schedule)


class _Scheduled:
    """The optimiser step count (kept in the parameter groups, so in ``state_dict``) and its rate."""

    @property
    def iterations(self) -> int:
        return self.param_groups[0]["iterations"]

    def current_lr(self) -> float:
        return float(self.schedule.lr(self.iterations))


class ScheduledSGD(_Scheduled, torch.optim.SGD):
    """``torch.optim.SGD`` with the recipe's learning rate for each optimiser step.

    The step count lives in the parameter groups (so it is in ``state_dict`` and a
    resumed run continues the schedule), and only a step actually taken counts:
    a step the gradient scaler skips (inf/nan under float16) leaves it as it is.
    """

    def __init__(self, params, spec: SGDSpec, schedule):
        super().__init__(params, lr=float(schedule.lr(0)), momentum=spec.momentum, nesterov=spec.nesterov)
        self.schedule = schedule
        for group in self.param_groups:
            group["iterations"] = 0

    @torch.no_grad()
    def step(self, closure=None):
        t = self.iterations
        for group in self.param_groups:
            group["lr"] = float(self.schedule.lr(t))
        loss = super().step(closure)
        for group in self.param_groups:
            group["iterations"] = t + 1
        return loss


class KerasAdam(_Scheduled, torch.optim.Optimizer):
    """Adam with Keras' update rule and the recipe's per-step schedule (see module docstring)."""

    def __init__(self, params, spec: AdamSpec, schedule=None):
        defaults = dict(beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon, iterations=0)
        super().__init__(params, defaults)
        self.spec = spec
        self.schedule = schedule or spec.schedule(1, 1, 1)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            t = group["iterations"]
            b1, b2, eps = group["beta_1"], group["beta_2"], group["epsilon"]
            lr = float(self.schedule.lr(t))
            alpha = lr * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))
            params, grads, ms, vs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                ms.append(state["m"])
                vs.append(state["v"])
            if params:
                torch._foreach_lerp_(ms, grads, 1 - b1)
                torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - b2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_(params, ms, denom, value=-alpha)
            group["iterations"] = t + 1
        return loss
