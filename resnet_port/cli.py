"""The flags both training CLIs share, derived from one ``Recipe``, and their error handling."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from . import augment
from .recipe import L2_SCOPES, RECIPES, AdamSpec, Recipe
from .spec import available

EXIT_BAD_INPUT = 2


def _int_at_least(minimum: int):
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {v}")
        return v

    return parse


_positive_int = positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def train_parser(framework: str, description: str) -> argparse.ArgumentParser:
    """The flags both training CLIs share.  Every recipe setting defaults to the chosen recipe's."""
    seed, modern = RECIPES["seed"], RECIPES["modern"]

    def both(get, fmt="{}"):
        return f"seed: {fmt.format(get(seed))}, modern: {fmt.format(get(modern))}"

    ap = argparse.ArgumentParser(prog=f"python -m {framework}.train", description=plain(description))
    ap.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="seed",
        help="the recipe: 'seed', the post's (default), or 'modern' (CIFAR ResNet18, SGD, Cutout; README)",
    )
    ap.add_argument("--arch", choices=available(), default=None, help=f"architecture ({both(lambda r: r.arch)})")
    ap.add_argument("--epochs", type=_positive_int, default=None, help=f"epochs ({both(lambda r: r.epochs)})")
    ap.add_argument(
        "--batch-size", type=_positive_int, default=None, help=f"training batch size ({both(lambda r: r.batch_size)})"
    )
    ap.add_argument(
        "--eval-batch-size",
        type=_positive_int,
        default=None,
        help=f"validation/test batch size ({both(lambda r: r.eval_batch_size)})",
    )
    ap.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"learning rate: Adam's initial rate, or SGD's peak rate at {modern.optimizer.base_batch} images per step ({both(lambda r: r.optimizer.learning_rate)})",
    )
    ap.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        help=f"seed recipe: inverse-time decay per step, lr/(1 + decay*t) (default {seed.optimizer.decay})",
    )
    ap.add_argument(
        "--l2",
        type=float,
        default=None,
        help=f"weight of sum(v**2)/2 in the objective ({both(lambda r: r.objective.l2)})",
    )
    ap.add_argument(
        "--l2-scope",
        choices=L2_SCOPES,
        default=None,
        help=f"'all' trainable variables or conv/dense 'kernels' only ({both(lambda r: r.objective.l2_scope)})",
    )
    ap.add_argument("--no-augment", action="store_true", help="train without the recipe's random augmentation")
    ap.add_argument(
        "--data-dir", help="folder holding cifar-100-python/ or the .tar.gz (default: search, then download)"
    )
    ap.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the md5 checks, to train on your own files in the CIFAR-100 format",
    )
    ap.add_argument(
        "--val-size",
        type=_nonneg_int,
        default=None,
        help=f"validate on the last N training images (default {seed.val_size})",
    )
    ap.add_argument(
        "--limit-train", type=_positive_int, default=None, help="train on the first N training images only (quick runs)"
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of initialisation, shuffling and augmentation (default {seed.seed})",
    )
    ap.add_argument("--out", default=None, help=f"run directory (default runs/{framework.split('_')[0]}-ARCH)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    ap.add_argument("--force", action="store_true", help="overwrite the run in --out")
    ap.add_argument("--amp", action="store_true", help="mixed precision (float16 on a GPU; see --amp-dtype)")
    ap.add_argument(
        "--amp-dtype",
        choices=["float16", "bfloat16"],
        default=None,
        help="AMP compute type (default float16; giving it forces AMP, also on a CPU)",
    )
    ap.add_argument(
        "--float64",
        action="store_true",
        help="train in float64 from the float32 initial weights (slow; for exact comparisons of runs)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads(ap)
    return ap


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def add_threads(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU compute threads (default: every core but one, unless OMP_NUM_THREADS or TF_NUM_INTRAOP_THREADS says; "
        "with every core, a second busy process on the machine slows PyTorch ~8x)",
    )


def cpu_threads(requested: int | None) -> tuple[int | None, str]:
    """(the compute threads to set, or None to leave the environment's choice; how they were chosen).

    The default leaves one core to the rest of the machine: with a thread on every core, one other
    busy process makes PyTorch's (and oneDNN's) threads wait for the core it holds at every step
    (measured on 2 cores: 20.7 img/s against 373 with one thread; see BENCHMARKS.md)."""
    import os

    if requested:
        return requested, "--threads"
    for var in THREAD_VARIABLES:
        if os.environ.get(var):
            return None, f"{var}={os.environ[var]}"
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1), f"every core but one, of {cores}; --threads to change"


def recipe_from_args(args) -> Recipe:
    """The chosen recipe with the settings the flags give; a flag the recipe has no use for is an error."""
    base = RECIPES[args.recipe]
    changes = {
        k: getattr(args, k)
        for k in ("arch", "epochs", "batch_size", "eval_batch_size", "val_size", "seed", "limit_train")
        if getattr(args, k) is not None
    }
    objective = {k: v for k, v in (("l2", args.l2), ("l2_scope", args.l2_scope)) if v is not None}
    optimizer = {} if args.lr is None else {"learning_rate": args.lr}
    if args.lr_decay is not None:
        if not isinstance(base.optimizer, AdamSpec):
            raise ValueError(
                f"--lr-decay is the seed recipe's Adam decay; the {args.recipe} recipe's SGD follows a warm-up and cosine schedule"
            )
        optimizer["decay"] = args.lr_decay
    return dataclasses.replace(
        base,
        **changes,
        objective=dataclasses.replace(base.objective, **objective),
        optimizer=dataclasses.replace(base.optimizer, **optimizer),
        augment=augment.NONE if args.no_augment else base.augment,
        amp=bool(args.amp or args.amp_dtype),
        amp_dtype=args.amp_dtype or "float16",
        float64=args.float64,
    )


def load_data(recipe: Recipe, args):
    """CIFAR-100 as the recipe and flags ask, with ``--limit-train`` applied and, when the
    recipe normalises, the training split's per-channel statistics."""
    from . import data

    ds = data.load(args.data_dir, verify=not args.no_verify, val_size=recipe.val_size, quiet=args.quiet)
    if recipe.limit_train:
        n, t = recipe.limit_train, ds.train
        ds.train = data.Split(t.images[:n], t.fine[:n], t.coarse[:n])
    if recipe.normalize:
        ds.normalization = augment.channel_stats(ds.train.images)
    return ds


def default_out(framework: str, arch: str) -> Path:
    return Path("runs") / f"{framework.split('_')[0]}-{arch}"


def reason(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (or the type alone): an exception in one short line."""
    text = str(e).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def plain(text: str) -> str:
    """Docstring text for a terminal: reST ``literals`` and `roles` without their backticks."""
    return re.sub(r"`+([^`]+)`+", r"\1", text)


def description(doc: str) -> str:
    """A CLI's help description: its module docstring's first line, as plain text."""
    return plain(doc.strip().splitlines()[0])


class Progress:
    """What a long command is doing, on stderr with the time since it started:
    ``[export 12 s] writing model.keras (Keras)``.  Shown when stderr is a terminal (or
    RESNET_PORT_PROGRESS=1), as tqdm's bars are; nothing with ``quiet``, so logs and pipes
    get the results and one-line errors only."""

    def __init__(self, prog: str, quiet: bool = False):
        import os
        import time

        shown = sys.stderr.isatty() or os.environ.get("RESNET_PORT_PROGRESS") == "1"
        self.prog, self.quiet, self.start, self.clock = prog, quiet or not shown, time.monotonic(), time.monotonic

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.prog} {self.clock() - self.start:4.0f} s] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_cli(main, known_errors: tuple[type[BaseException], ...]) -> int:
    """Run ``main()``; known input errors become one clear line and exit code 2."""
    from .weights import WriteError

    try:
        return main() or 0
    except (*known_errors, WriteError) as e:
        return fail(str(e))


def interrupted(epochs_done: int | None, batch: int, out, finishing: bool = False, abandoned: bool = False) -> int:
    """Ctrl-C: say where the checkpoint on disk stands and how to continue; the exit status.

    ``epochs_done`` is the checkpoint's count of completed epochs (None: no checkpoint
    yet), ``batch`` how far into the next epoch it is; ``abandoned``: a second Ctrl-C
    cut the stop short (the step under way or the checkpoint being written is lost)."""
    lost = "Ctrl-C again: the checkpoint being written was abandoned; " if abandoned else ""
    if epochs_done is None:
        where = f"before the first checkpoint; nothing in {out} to resume from, --resume starts the run again"
    elif finishing:
        where = f"every epoch ({epochs_done}) is trained and checkpointed in {out}, but the evaluation and artefacts are not written; --resume writes them"
    elif batch:
        where = f"checkpoint written at epoch {epochs_done + 1}, batch {batch} in {out}; continue with the same command and --resume"
    else:
        where = f"checkpoint written at the end of epoch {epochs_done} in {out}; continue with the same command and --resume"
    if abandoned and epochs_done is not None and not finishing:
        where = where.replace("checkpoint written at", "the checkpoint on disk is at")
    print(f"\ninterrupted: {lost}{where}", file=sys.stderr)
    return 130


def summary(lines: dict[str, object]) -> str:
    w = max(len(k) for k in lines)
    return "\n".join(["=" * 60] + [f"{k:<{w}}  {v}" for k, v in lines.items()] + ["=" * 60])
