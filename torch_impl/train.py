"""``python -m torch_impl.train --amp``: the recipe in PyTorch, on CUDA when there is one.

The run's life (flags, run directory, epochs, checkpoints, metrics, evaluation,
interruptions) is ``resnet_port.run``; this is PyTorch's backend for it.

The whole training set sits on the device as uint8 and is augmented there in
batches (``torch_impl.data``); the model is channels_last, optionally compiled;
``--amp`` uses autocast with float16 and a gradient scaler (or bfloat16) on CUDA.
On a CPU, ``--amp`` says so in one line and trains in float32 (bfloat16 autocast
was measured 10-20x slower on CPUs without bf16 units), unless ``--amp-dtype
bfloat16`` asks for it explicitly.

``torchrun --nproc_per_node=N -m torch_impl.train ...`` trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs): ``--batch-size`` is the
global batch, split into contiguous chunks, one per process; every process draws
the same shuffle and augmentation, so N processes see exactly what one would; the
schedule counts global steps; ``--sync-bn`` synchronises BatchNorm statistics;
only rank 0 writes.  Multi-node: torchrun's usual ``--nnodes``/``--rdzv-*`` flags.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
import torch

from resnet_port import cli, data, frameworks, rundir
from resnet_port import run as lifecycle
from resnet_port.recipe import Recipe

from . import checkpoint, weights
from .data import DeviceLoader
from .engine import predict, set_threads, train_step
from .model import build_model, enable_sync_batchnorm
from .objective import l2_parameters, loss_parts, make_optimizer


def resolve_precision(recipe: Recipe, device: torch.device, amp_dtype_given: bool):
    """(autocast dtype or None, whether to use a GradScaler, a notice or None)."""
    if not recipe.amp:
        return None, False, None
    if device.type == "cuda":
        dtype = torch.float16 if recipe.amp_dtype == "float16" else torch.bfloat16
        return dtype, dtype == torch.float16, None
    if amp_dtype_given and recipe.amp_dtype == "bfloat16":
        return (
            torch.bfloat16,
            False,
            "notice: bfloat16 autocast on a CPU, as asked (often much slower than float32 on CPUs without bf16 units)",
        )
    return (
        None,
        False,
        "notice: --amp needs a CUDA GPU; training in float32 on the CPU (add --amp-dtype bfloat16 to force bfloat16 autocast)",
    )


class Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.comm_device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.comm_device = device if device.type == "cuda" else torch.device("cpu")

    def sum(self, *values: float) -> list[float]:
        """Sums over all processes (values unchanged without torchrun)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (``flag`` itself without torchrun)."""
        if not self.enabled:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([int(bool(flag))], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _cpu_copy(obj):
    """A copy of a (nested) state dict with every tensor on the CPU: the training goes on meanwhile."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class TorchBackend(lifecycle.Backend):
    framework = frameworks.PYTORCH
    description = __doc__.splitlines()[0]

    @staticmethod
    def add_arguments(ap) -> None:
        ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
        ap.add_argument("--compile", action="store_true", help="torch.compile the model")
        ap.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
        ap.add_argument(
            "--sync-bn", action="store_true", help="under torchrun: BatchNorm statistics over the global batch"
        )

    def __init__(self, args, recipe: Recipe):
        super().__init__(args, recipe)
        self.dist = Dist()

        self.chief = self.dist.main
        if self.dist.enabled and recipe.batch_size < self.dist.world:
            raise ValueError(
                f"--batch-size {recipe.batch_size} is the global batch; it must be at least the number of processes ({self.dist.world})"
            )
        name = args.device or (
            f"cuda:{self.dist.local_rank}" if self.dist.enabled and torch.cuda.is_available() else None
        )
        if name:
            try:
                self.device = torch.device(name)
            except (RuntimeError, ValueError):
                raise ValueError(f"--device {name} is not a device PyTorch knows; use cpu, cuda or cuda:N") from None
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if self.device.type == "cpu":
                self.notice(f"notice: no CUDA GPU found; training on the CPU with {set_threads(args.threads)}")
        if name and self.device.type == "cpu":
            self.notice(f"notice: training on the CPU with {set_threads(args.threads)}")
        self.amp_dtype, self.use_scaler, precision_notice = resolve_precision(
            recipe, self.device, args.amp_dtype is not None
        )
        if precision_notice:
            self.notice(precision_notice)
        self.channels_last = not args.no_channels_last
        self.draw_state = None  # the augmentation RNG's state at an interruption, to resume its draws
        self._compiled, self._warmup = False, 0.0

    def start(self, ds) -> None:
        self.dist.init(self.device)

    def build(self, ds: data.Cifar100) -> None:
        self.dist.barrier()  # rank 0 has created the run directory
        recipe, device = self.recipe, self.device
        torch.manual_seed(recipe.seed)  # the same initial weights in every process
        self.dtype = torch.float64 if recipe.float64 else torch.float32
        self.model = build_model(recipe.arch).to(device, self.dtype)  # initialised in float32 in either precision
        # Under DDP the parameters stay contiguous: with channels_last parameters, DDP's
        # gradient buckets (rebuilt after the first step) gave gradients that were off from
        # step 3 on (measured: 1.6e-4 from a single process after 3 steps, 6e-6 without).
        self.channels_last_params = self.channels_last and not self.dist.enabled
        if self.channels_last_params:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.args.sync_bn and self.dist.enabled:
            enable_sync_batchnorm(self.model)
        net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = torch.compile(net) if self.args.compile else net
        # evaluation needs no collective: under DDP it runs the bare model in every process
        self.eval_net = self.model if self.dist.enabled else self.net
        self.normalization = ds.normalization
        self.train_loader = DeviceLoader(
            ds.train.images,
            ds.train.fine,
            recipe.batch_size,
            device,
            recipe.augment,
            shuffle=True,
            channels_last=self.channels_last,
            rank=self.dist.rank,
            world=self.dist.world,
            dtype=self.dtype,
            normalization=self.normalization,
        )
        self.optimizer = make_optimizer(
            self.model.parameters(), recipe.optimizer, recipe.schedule(len(self.train_loader))
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.use_scaler else None
        self.l2_params = l2_parameters(self.model, recipe.arch, recipe.objective)

    def runtime(self) -> dict:
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "amp_effective": str(self.amp_dtype).replace("torch.", "")
            if self.amp_dtype
            else ("float64" if self.recipe.float64 else "float32"),
            "grad_scaler": self.use_scaler,
            "compile": self.args.compile,
            "channels_last": self.channels_last,
            "channels_last_parameters": self.channels_last_params,
            "processes": self.dist.world,
            "sync_bn": bool(self.args.sync_bn and self.dist.enabled),
        }

    def device_label(self) -> str:
        return f" on {self.device}"

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    # -- checkpoints: one torch.save dict (model, optimiser, scaler, draw state, lifecycle state) --
    def snapshot(self, state: dict):
        st = _cpu_copy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "draw_state": self.draw_state,
            }
        )
        st.update(state)
        return lambda path: checkpoint.save(path, st)

    def load(self, path) -> dict:
        st = checkpoint.load(path)  # weights_only, digest and values checked: nothing in it runs, nothing bad trains
        try:
            self.model.load_state_dict(st["model"])
            self.optimizer.load_state_dict(st["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise rundir.RunDirError(
                f"checkpoint {path} does not fit this run's model and optimiser ({cli.reason(e, 300)})"
            ) from None
        if self.scaler and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.draw_state = st.get("draw_state")
        return st

    def export_weights(self, path) -> None:
        weights.export(self.model, path, normalization=self.normalization)

    # -- training ---------------------------------------------------------------------------
    def train_epoch(
        self, epoch: int, start_batch: int, start: lifecycle.EpochSums, on_step, report_every: int
    ) -> lifecycle.EpochSums:
        r, loader, dev = self.recipe, self.train_loader, self.device
        gen = torch.Generator(dev).manual_seed(epoch_seed(r.seed, epoch))
        # the sums continue the interrupted part's (rank 0 holds them under torchrun): one running
        # float64 sum in batch order, so a resumed epoch adds exactly as an uninterrupted one
        first = self.dist.main
        loss_sum = torch.full((), start.loss_sum if first else 0.0, device=dev, dtype=torch.float64)
        correct = torch.full((), int(start.correct) if first else 0, device=dev, dtype=torch.int64)
        window = torch.zeros((), device=dev, dtype=torch.float64)  # loss summed since the last report
        # divergence, tracked on the device (no sync per step): the first batch whose loss is not
        # finite; with a gradient scaler, the first batch ending a run of SCALER_PATIENCE of them
        # (the scaler skips such steps and lowers its scale: it gets its chance first)
        patience = lifecycle.SCALER_PATIENCE if self.scaler is not None else 1
        streak = torch.zeros((), device=dev, dtype=torch.int64)
        bad_at = torch.full((), -1, device=dev, dtype=torch.int64)
        bad_value = torch.zeros((), device=dev, dtype=torch.float64)
        step_no = torch.full((), start_batch, device=dev, dtype=torch.int64)
        window_seen = 0
        seen = start.seen if first else 0  # images of this process
        batch, last = start_batch, len(loader)
        self.net.train()

        def check_divergence() -> None:
            bad = int(bad_at) >= 0
            if self.dist.enabled:
                bad = self.dist.any(bad)
            if bad:
                raise lifecycle.Diverged(int(bad_at) if int(bad_at) >= 0 else batch, float(bad_value))

        for x, y in loader.batches(gen, start=start_batch, draw_state=self.draw_state):
            ce_scale = len(y) * loader.world / loader.global_count if loader.world > 1 else 1.0
            compiling = self.args.compile and not self._compiled
            if compiling:
                began = time.perf_counter()
            total, _, c = train_step(
                self.net, self.optimizer, x, y, self.l2_params, r.objective, self.amp_dtype, self.scaler, ce_scale
            )
            if compiling:  # torch.compile's first step (tracing, code generation): reported apart
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                self._warmup += time.perf_counter() - began
                self._compiled = True
            total = total.double()
            finite = torch.isfinite(total)
            step_no += 1
            streak = (streak + 1) * (~finite)
            hit = (bad_at < 0) & (streak >= patience)
            bad_at = torch.where(hit, step_no, bad_at)
            bad_value = torch.where(hit, total, bad_value)
            # a step the scaler skipped trained nothing: its (non-finite) loss is left out of the sums
            weighted = torch.where(finite, total, 0.0) * len(y)
            loss_sum += weighted
            window += weighted
            correct += c
            seen += len(y)
            window_seen += len(y)
            batch += 1
            if (
                batch % report_every == 0 or batch == last
            ):  # reading the loss synchronises with the device: not every step
                check_divergence()
                stop = on_step(batch, float(window) / window_seen)
                window.zero_()
                window_seen = 0
            else:
                stop = on_step(batch, None)
            if (
                self.dist.enabled
            ):  # every process stops after the same step (a collective per step, only under torchrun)
                stop = self.dist.any(stop)
            if stop and batch < last:
                check_divergence()
                self.draw_state = gen.get_state()  # exactly after this batch's draws: the next batch draws next
                raise lifecycle.Interrupted(self._summed(loss_sum, correct, seen), batch)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.draw_state = None
        return self._summed(loss_sum, correct, seen)

    def _summed(self, loss_sum, correct, seen) -> lifecycle.EpochSums:
        """This process's sums, summed over all processes."""
        loss_total, correct_total, seen_total = self.dist.sum(float(loss_sum), float(int(correct)), float(seen))
        return lifecycle.EpochSums(loss_total, correct_total, int(seen_total))

    def evaluate(self, split: data.Split):
        if len(split) == 0:
            return float("nan"), float("nan"), np.zeros(0, np.int64)
        loader = DeviceLoader(
            split.images,
            split.fine,
            self.recipe.eval_batch_size,
            self.device,
            None,
            shuffle=False,
            dtype=self.dtype,
            normalization=self.normalization,
        )
        logits = predict(self.eval_net, (x for x, _ in loader.batches()), self.amp_dtype)
        labels = torch.from_numpy(split.fine).to(self.device)
        with torch.no_grad():
            ce, l2 = loss_parts(logits.to(self.device), labels, self.l2_params, self.recipe.objective)
        pred = logits.argmax(1).numpy()
        return float(ce + l2), float((pred == split.fine).mean()), pred

    def learning_rate(self) -> float:
        return self.optimizer.current_lr()

    def take_warmup_seconds(self) -> float:
        warmup, self._warmup = self._warmup, 0.0
        return warmup

    def close(self) -> None:
        self.dist.close()


def main(argv=None) -> int:
    return lifecycle.main(TorchBackend, argv)


if __name__ == "__main__":
    sys.exit(main())
