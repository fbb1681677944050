"""``python -m torch_impl.train --amp``: the recipe in PyTorch, on CUDA when there is one.

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

Everything is written to the run directory (``resnet_port.rundir``); a run
interrupted by Ctrl-C writes a checkpoint at the batch it reached, a run killed
outright resumes from its last completed epoch, both with ``--resume``.
"""

from __future__ import annotations

import io
import os
import platform
import sys
import time

import numpy as np
import torch

from resnet_port import cli, data, rundir
from resnet_port.progress import ProgressBar
from resnet_port.recipe import Recipe
from resnet_port.weights import WeightsError, atomic_write_bytes

from . import weights
from .data import DeviceLoader
from .engine import predict, train_step
from .model import build_model, enable_sync_batchnorm
from .objective import KerasAdam, l2_parameters, loss_parts

FRAMEWORK = "torch_impl"


def resolve_precision(recipe: Recipe, device: torch.device, amp_dtype_given: bool):
    """(autocast dtype or None, whether to use a GradScaler, a notice or None)."""
    if not recipe.amp:
        return None, False, None
    if device.type == "cuda":
        dtype = torch.float16 if recipe.amp_dtype == "float16" else torch.bfloat16
        return dtype, dtype == torch.float16, None
    if amp_dtype_given and recipe.amp_dtype == "bfloat16":
        return torch.bfloat16, False, "notice: bfloat16 autocast on a CPU, as asked (often much slower than float32 on CPUs without bf16 units)"
    return None, False, "notice: --amp needs a CUDA GPU; training in float32 on the CPU (add --amp-dtype bfloat16 to force bfloat16 autocast)"


class Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

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

    def sum(self, *values: float) -> list[float]:
        """Sums over all processes (values unchanged without torchrun)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


class Trainer:
    def __init__(self, recipe: Recipe, ds: data.Cifar100, device: torch.device, amp_dtype, use_scaler: bool, compile_model: bool, channels_last: bool, dist: "Dist | None" = None, sync_bn: bool = False):
        self.recipe, self.ds, self.device = recipe, ds, device
        self.amp_dtype = amp_dtype
        self.dist = dist or Dist()
        torch.manual_seed(recipe.seed)  # the same initial weights in every process
        self.dtype = torch.float64 if recipe.float64 else torch.float32
        self.model = build_model(recipe.arch).to(device, self.dtype)  # initialised in float32 in either precision
        # Under DDP the parameters stay contiguous: with channels_last parameters, DDP's
        # gradient buckets (rebuilt after the first step) gave gradients that were off from
        # step 3 on (measured: 1.6e-4 from a single process after 3 steps, 6e-6 without).
        self.channels_last_params = channels_last and not self.dist.enabled
        if self.channels_last_params:
            self.model = self.model.to(memory_format=torch.channels_last)
        if sync_bn and self.dist.enabled:
            enable_sync_batchnorm(self.model)
        net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = torch.compile(net) if compile_model else net
        # evaluation needs no collective: under DDP it runs the bare model in every process
        self.eval_net = self.model if self.dist.enabled else self.net
        self.optimizer = KerasAdam(self.model.parameters(), recipe.optimizer)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.l2_params = l2_parameters(self.model, recipe.arch, recipe.objective)
        train = ds.train
        self.train_loader = DeviceLoader(
            train.images, train.fine, recipe.batch_size, device, recipe.augment, shuffle=True, channels_last=channels_last, rank=self.dist.rank, world=self.dist.world, dtype=self.dtype
        )
        self.history: list[dict] = []
        self.epoch, self.batch = 0, 0
        self.partial = rundir.empty_partial()
        self.draw_state = None

    # -- checkpoints --------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": self.partial,
            "draw_state": self.draw_state,
            "history": self.history,
            "recipe": self.recipe.to_dict(),
        }

    def save(self, path) -> None:
        if not self.dist.main:
            return
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        atomic_write_bytes(path, buf.getvalue())

    def load(self, path) -> None:
        try:
            st = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as e:  # a damaged file: say which, never train on garbage
            raise rundir.RunDirError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete it to restart the run") from None
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scaler and st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.batch = st["epoch"], st["batch"]
        self.partial, self.history = st["partial"], st["history"]
        self.draw_state = st["draw_state"]

    # -- one epoch ------------------------------------------------------------------------
    def train_epoch(self, quiet: bool, run: rundir.RunDir) -> dict:
        r = self.recipe
        gen = torch.Generator(self.device).manual_seed(epoch_seed(r.seed, self.epoch))
        steps = len(self.train_loader)
        bar = ProgressBar(steps, f"epoch {self.epoch + 1}/{r.epochs}", unit="step", disable=quiet)
        bar.update(self.batch)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0  # images of this process since the epoch (re)started
        start_time = time.perf_counter()
        self.net.train()
        batches = self.train_loader.batches(gen, start=self.batch, draw_state=self.draw_state)
        try:
            loader = self.train_loader
            for x, y in batches:
                ce_scale = len(y) * loader.world / loader.global_count if loader.world > 1 else 1.0
                total, _, c = train_step(self.net, self.optimizer, x, y, self.l2_params, r.objective, self.amp_dtype, self.scaler, ce_scale)
                loss_sum += total.double() * len(y)
                correct += c
                seen += len(y)
                self.batch += 1
                if quiet:
                    continue
                if self.batch % 20 == 0:  # reading the loss synchronises with the device: not every step
                    bar.update(1, loss=(float(loss_sum) + self.partial["loss_sum"]) / max(seen + self.partial["seen"], 1))
                else:
                    bar.update(1)
        except KeyboardInterrupt:
            self.partial = {
                "loss_sum": self.partial["loss_sum"] + float(loss_sum),
                "correct": self.partial["correct"] + int(correct),
                "seen": self.partial["seen"] + seen,
                "seconds": self.partial["seconds"] + time.perf_counter() - start_time,
            }
            self.draw_state = gen.get_state()
            self.save(run.checkpoint)
            raise
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = self.partial["seconds"] + time.perf_counter() - start_time
        bar.close()
        # this process's part of the epoch plus the part before an interruption, over all processes
        loss_total, correct_total, seen_total = self.dist.sum(float(loss_sum), float(int(correct)), float(seen))
        seen = seen_total + self.partial["seen"]
        loss = (loss_total + self.partial["loss_sum"]) / max(seen, 1)
        acc = (correct_total + self.partial["correct"]) / max(seen, 1)
        return {"loss": loss, "accuracy": acc, "seconds": seconds, "images_per_sec": seen / max(seconds, 1e-9)}

    def evaluate(self, split: data.Split) -> tuple[float, float, np.ndarray]:
        """(loss incl. L2 as Keras reports val_loss, accuracy, predictions) in inference mode."""
        if len(split) == 0:
            return float("nan"), float("nan"), np.zeros(0, np.int64)
        loader = DeviceLoader(split.images, split.fine, self.recipe.eval_batch_size, self.device, None, shuffle=False, dtype=self.dtype)
        logits = predict(self.eval_net, (x for x, _ in loader.batches()), self.amp_dtype)
        labels = torch.from_numpy(split.fine).to(self.device)
        with torch.no_grad():
            ce, l2 = loss_parts(logits.to(self.device), labels, self.l2_params, self.recipe.objective)
        pred = logits.argmax(1).numpy()
        return float(ce + l2), float((pred == split.fine).mean()), pred

    def fit(self, run: rundir.RunDir, quiet: bool) -> None:
        r = self.recipe
        while self.epoch < r.epochs:
            m = self.train_epoch(quiet, run)
            val_loss, val_acc, _ = self.evaluate(self.ds.val)
            self.history.append({"epoch": self.epoch + 1, **m, "val_loss": val_loss, "val_accuracy": val_acc, "lr": self.optimizer.current_lr()})
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = rundir.empty_partial()
            self.draw_state = None
            self.save(run.checkpoint)  # the checkpoint first: metrics.jsonl is derived from it
            if self.dist.main:
                run.write_metrics(self.history)
            if not quiet and self.dist.main:
                h = self.history[-1]
                print(
                    f"epoch {h['epoch']}/{r.epochs}: loss {h['loss']:.4f} acc {h['accuracy']:.4f} "
                    f"val_loss {val_loss:.4f} val_acc {val_acc:.4f} lr {h['lr']:.3g} ({h['images_per_sec']:.0f} img/s)",
                    file=sys.stderr,
                )


def main(argv=None) -> int:
    ap = cli.train_parser(FRAMEWORK, __doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    ap.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm statistics over the global batch")
    args = ap.parse_args(argv)

    def run_main():
        started = time.perf_counter()
        recipe = cli.recipe_from_args(args)
        dist = Dist()
        if dist.enabled and recipe.batch_size < dist.world:
            raise ValueError(f"--batch-size {recipe.batch_size} is the global batch; it must be at least the number of processes ({dist.world})")
        if dist.enabled and torch.cuda.is_available() and not args.device:
            args.device = f"cuda:{dist.local_rank}"
        if args.device:
            device = torch.device(args.device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if device.type == "cpu" and dist.main:
                print("notice: no CUDA GPU found; training on the CPU", file=sys.stderr)
        amp_dtype, use_scaler, notice = resolve_precision(recipe, device, args.amp_dtype is not None)
        if notice and dist.main:
            print(notice, file=sys.stderr)
        out = args.out or cli.default_out(FRAMEWORK, recipe.arch)
        run = rundir.RunDir(out, FRAMEWORK, recipe, resume=args.resume, force=args.force)
        ds = cli.load_data(recipe, args)
        dist.init(device)
        if dist.main:
            run.create()
        dist.barrier()
        trainer = Trainer(recipe, ds, device, amp_dtype, use_scaler, args.compile, not args.no_channels_last, dist, args.sync_bn)
        if run.resuming:
            trainer.load(run.checkpoint)
            if dist.main:
                print(f"resuming {run.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}", file=sys.stderr)
                run.write_metrics(trainer.history)
        if not dist.main:
            try:
                trainer.fit(run, True)
            except KeyboardInterrupt:
                return 130
            finally:
                dist.close()
            return 0
        run.write_config(
            recipe,
            runtime={
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "amp_effective": str(amp_dtype).replace("torch.", "") if amp_dtype else ("float64" if recipe.float64 else "float32"),
                "grad_scaler": use_scaler,
                "compile": args.compile,
                "channels_last": not args.no_channels_last,
                "channels_last_parameters": trainer.channels_last_params,
                "processes": dist.world,
                "sync_bn": bool(args.sync_bn and dist.enabled),
            },
            data={"source": ds.source, "verified": ds.verified, "train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
        )
        try:
            trainer.fit(run, args.quiet)
        except KeyboardInterrupt:
            dist.close()
            return cli.interrupted(trainer.epoch + 1, trainer.batch, run.path)
        dist.close()
        results = rundir.finish(run, recipe, trainer.ds, trainer.history, lambda path: weights.export(trainer.model, path), trainer.evaluate, f"{recipe.arch} (PyTorch)", started)
        print(cli.summary(rundir.summary_lines(f"PyTorch {torch.__version__} on {device} ({results['epochs']} epochs, {recipe.arch})", results, run)))
        return 0

    return cli.run_cli(run_main, (ValueError, data.DataError, rundir.RunDirError, WeightsError))


if __name__ == "__main__":
    sys.exit(main())
