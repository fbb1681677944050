"""One training step and evaluation in PyTorch: the code the CLI and the parity checks share."""

from __future__ import annotations

import contextlib

import torch

from resnet_port.recipe import ObjectiveSpec

from .objective import loss_parts


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def train_step(
    model, optimizer, x, y, l2_params, objective: ObjectiveSpec, amp_dtype=None, scaler=None, ce_scale: float = 1.0
):
    """Forward (training mode), loss with L2, backward, optimiser step.

    ``ce_scale`` (DistributedDataParallel) makes DDP's average over processes of the
    per-process cross-entropy equal to the mean over the global batch:
    ``local_count * processes / global_count``.  Returns the detached (total,
    cross-entropy, number correct) of this process's batch; nothing here
    synchronises with the device.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp_dtype):
        logits = model(x)
    ce, l2 = loss_parts(logits, y, l2_params, objective)
    total = ce + l2
    objective_value = total if ce_scale == 1.0 else ce * ce_scale + l2
    if scaler is not None:
        scaler.scale(objective_value).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        objective_value.backward()
        optimizer.step()
    correct = (logits.detach().argmax(1) == y).sum()
    return total.detach(), ce.detach(), correct


@torch.no_grad()
def predict(model, batches, amp_dtype=None):
    """Logits (float32, on the CPU) for an iterable of image batches, inference mode."""
    model.eval()
    out = []
    for x in batches:
        with autocast(x.device, amp_dtype):
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def set_threads(requested: int | None) -> str:
    """Set PyTorch's CPU compute threads (``--threads``, else every core but one, unless the environment
    says); what was chosen, for the CLIs' notice."""
    from resnet_port import cli

    n, how = cli.cpu_threads(requested)
    if n is not None:
        torch.set_num_threads(n)
    got = torch.get_num_threads()
    return f"{got} thread{'s' if got != 1 else ''} ({how})"
