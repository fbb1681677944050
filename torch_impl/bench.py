"""PyTorch side of ``python -m resnet_port.bench``: timed windows of the real training step."""

from __future__ import annotations

import resource
import statistics
import time

import torch

from resnet_port import parity
from resnet_port.augment import AugmentSpec, channel_stats

from .data import augment, random_draws, scale
from .engine import autocast, train_step
from .model import build_model
from .objective import l2_parameters, make_optimizer

PRECISIONS = {"fp32": None, "amp-fp16": torch.float16, "amp-bf16": torch.bfloat16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _windows(fn, n_items: int, warmup: int, windows: int, steps: int, device) -> float:
    """Median items/s over ``windows`` windows of ``steps`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    rates = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        rates.append(n_items * steps / (time.perf_counter() - t))
    return statistics.median(rates)


def matmul_gflops(device, n: int = 2048, dtype=torch.float32, seconds: float = 0.5, windows: int = 3) -> float:
    """The best of ``windows`` timed windows of n x n matrix products: the machine's ceiling."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    best = 0.0
    for _ in range(windows):
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ b
            reps += 1
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def run(op: dict) -> dict:
    device = torch.device(op.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = op.get("precision", "fp32")
    amp = PRECISIONS[precision]
    b, warmup, windows, steps = op["batch_size"], op["warmup"], op["windows"], op["steps"]
    channels_last = op.get("channels_last", True)
    torch.manual_seed(0)
    model = build_model(op["arch"]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if op.get("compile") else model
    recipe = parity.recipe_of(op)  # the recipe's objective, optimiser (schedule of a 100-step epoch), augmentation
    objective, spec = recipe.objective, (AugmentSpec() if recipe.augment.is_identity else recipe.augment)
    opt = make_optimizer(model.parameters(), recipe.optimizer, recipe.schedule(100))
    scaler = torch.amp.GradScaler("cuda") if (amp == torch.float16 and device.type == "cuda") else None
    l2p = l2_parameters(model, op["arch"], objective)
    h, w, c = model.spec.input_shape
    raw = torch.randint(0, 256, (b, h, w, c), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
    if not channels_last:
        raw = raw.contiguous()
    y = torch.randint(0, model.spec.num_classes, (b,), device=device)
    gen = torch.Generator(device).manual_seed(0)
    norm = channel_stats(raw.permute(0, 2, 3, 1).cpu().numpy()) if recipe.normalize else None
    x_plain = scale(raw, norm)

    def aug():
        return augment(raw, *random_draws(spec, b, h, w, device, gen), spec=spec, normalization=norm)

    net.train()
    out = {
        "framework": "torch_impl",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    rows = op.get("rows") or ["train_aug", "train", "inference", "augment", "matmul_gflops"]
    out["train_aug"] = _windows(
        lambda: train_step(net, opt, aug(), y, l2p, objective, amp, scaler), b, warmup, windows, steps, device
    )
    if "train" in rows:
        out["train"] = _windows(
            lambda: train_step(net, opt, x_plain, y, l2p, objective, amp, scaler), b, warmup, windows, steps, device
        )
    net.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            net(x_plain)

    if "inference" in rows:
        out["inference"] = _windows(infer, b, warmup, windows, steps, device)
    big = 50 * b  # the augmentation alone, on bigger batches so that timing is not noise
    raw_big = raw.repeat(50, 1, 1, 1)

    def aug_only():
        augment(raw_big, *random_draws(spec, big, h, w, device, gen), spec=spec, normalization=norm)

    if "augment" in rows:
        out["augment"] = _windows(aug_only, big, warmup, windows, steps, device)
    if "matmul_gflops" in rows:
        out["matmul_gflops"] = matmul_gflops(device, dtype=torch.float32 if amp is None else amp)
    out["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**20
    out["threads"] = torch.get_num_threads()
    return out
