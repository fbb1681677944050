"""Cross-framework checks, each framework in its own process, exchanging neutral files.

TensorFlow and this CUDA build of PyTorch cannot share a process reliably (a
segfault when torch._dynamo starts after TF is loaded), so nothing here imports
either.  A *job* is a JSON list of operations run by ``python -m tf_impl.worker``
or ``python -m torch_impl.worker``; inputs and outputs are ``.npy``/``.npz`` and
neutral weights files.  Both workers implement the same operations:

``init``       ``{arch, seed, out}``: weights that look trained, exported to ``out``:
               the framework's own initialisation, random BatchNorm gamma/beta,
               moving statistics calibrated on a random batch, then perturbed
               (so inference parity is not trivially true).
``forward``    ``{arch, weights, inputs, training, out}``: every spec layer's
               output (NHWC) and ``logits`` into ``out`` (.npz); in training
               mode also ``weights_out`` with the updated moving statistics.
``roundtrip``  ``{arch, weights, out}``: load into the framework, export again.
``loss``       ``{arch, weights, images, labels, recipe?, l2_scope?, out}``:
               ``total``, ``ce``, ``l2`` and the gradient of every trainable
               tensor (``grad/<key>``, neutral layout), training mode.
``train``      ``{arch, weights, batches, recipe?, optimizer?, steps_per_epoch?,
               epochs?, batch_size?, out, probe, probe_out, momentum_out?,
               variant?}``: the recipe's optimiser steps with its schedule, one
               per batch; final weights, the probe batch's logits in both modes,
               and SGD's momentum buffers (``momentum_out``).
``augment``    ``{images, draws, out, augment?, normalization?}``: apply given
               augmentation draws (``augment``: an AugmentSpec as a dict,
               default the seed's; ``normalization``: ``{mean, std}``).
``schedule``   ``{steps, out, recipe?, steps_per_epoch?, epochs?, batch_size?}``:
               the learning rate at the given optimizer steps.

A worker that crashes or exits non-zero fails the caller with its stderr: a
crash is never mistaken for a skipped or passing check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import frameworks

FRAMEWORKS = tuple(f.key for f in frameworks.ALL)  # ("tf", "torch")


class WorkerError(RuntimeError):
    pass


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return env


def run_worker(
    framework: str, ops: list[dict], workdir: str | os.PathLike, timeout: float = 900, module: str | None = None
) -> None:
    """Run ``ops`` in a fresh ``framework`` process; raise WorkerError on any failure.

    ``module`` replaces the framework's worker module (tests use it to run a worker
    that crashes on purpose).
    """
    fw = frameworks.get(framework)
    if not fw.installed():
        raise WorkerError(f"the {framework} worker needs {fw.install_hint()}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    job = workdir / f"job_{framework}_{os.getpid()}_{len(list(workdir.glob('job_*')))}.json"
    job.write_text(json.dumps({"ops": ops}, indent=1))
    from . import forkserver

    # a fresh process, or one forked from a server that has the framework imported (RESNET_PORT_FORKSERVER,
    # the test suite's): the same job, the same isolation, without the import; a custom module runs fresh
    start = forkserver.run if module is None else subprocess.run
    try:
        proc = start(
            [sys.executable, "-m", module or fw.worker, str(job)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=worker_env(),
        )
    except subprocess.TimeoutExpired:
        raise WorkerError(f"the {framework} worker did not finish within {timeout:.0f} s (job {job})") from None
    if proc.returncode != 0:
        how = (
            f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with code {proc.returncode}"
        )
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise WorkerError(f"the {framework} worker {how} (job {job}):\n{tail}")


def recipe_of(op: dict):
    """The recipe an operation asks for: ``recipe`` (default the seed's), with its ``l2_scope``
    and ``optimizer`` fields changed where the operation says."""
    import dataclasses

    from .recipe import recipe

    r = recipe(op.get("recipe", "seed"))
    if "l2_scope" in op:
        r = dataclasses.replace(r, objective=dataclasses.replace(r.objective, l2_scope=op["l2_scope"]))
    if "optimizer" in op:
        r = dataclasses.replace(r, optimizer=dataclasses.replace(r.optimizer, **op["optimizer"]))
    return r


def objective_of(op: dict):
    """The objective an operation asks for (the recipe's; ``l2_scope`` may change it)."""
    return recipe_of(op).objective


def schedule_of(op: dict):
    """The learning-rate schedule of an operation's recipe, for its ``steps_per_epoch``, ``epochs`` and ``batch_size``."""
    r = recipe_of(op)
    return r.optimizer.schedule(
        op.get("steps_per_epoch", 1), op.get("epochs", r.epochs), op.get("batch_size", r.batch_size)
    )


def augmentation_of(op: dict):
    """(AugmentSpec, Normalization or None) an ``augment`` operation asks for."""
    from .augment import AugmentSpec, Normalization

    return AugmentSpec(**op.get("augment", {})), Normalization.from_dict(op.get("normalization"))


def worker_main(module: str, handlers: dict, argv=None) -> None:
    """The ``main`` of both workers: run the job file's operations in order."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit(f"usage: python -m {module} JOB.json")
    with open(argv[0]) as f:
        ops = json.load(f)["ops"]
    for op in ops:
        if op["op"] not in handlers:
            sys.exit(f"{module}: unknown operation {op['op']!r}; known: {sorted(handlers)}")
        handlers[op["op"]](op)


# -- comparing outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class LayerDiff:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    tol: float  # the bound max_abs was held to: atol * max(1, max |reference|)
    ok: bool


def diff_arrays(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and max relative difference (relative to |b|, floored at 1e-6 of max|b|)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = np.abs(a - b)
    floor = max(float(np.abs(b).max(initial=0.0)) * 1e-6, 1e-12)
    return float(d.max(initial=0.0)), float((d / np.maximum(np.abs(b), floor)).max(initial=0.0))


#: The tolerance of every parity verdict in this project (layers and logits, port --check, export,
#: diff, the parity tests): a difference passes within ``ATOL * max(1, max |reference|)``.
ATOL = 1e-4


def tolerance(reference, atol: float = ATOL) -> float:
    """The bound a difference from ``reference`` is held to: ``atol * max(1, max |reference|)``.

    float32 rounding grows with the magnitude of the values (deep layers of a network reach
    tens), so a fixed absolute bound would demand a fraction of an ulp there."""
    return atol * max(1.0, float(np.abs(np.asarray(reference)).max(initial=0.0)))


def compare_layers(a: dict, b: dict, order: list[str], atol: float = ATOL) -> list[LayerDiff]:
    """Per-layer differences of ``a`` from the reference ``b``, in execution order.

    A layer passes when its max abs difference is within :func:`tolerance` of ``b``.
    Logits are additionally held to ``atol`` absolutely by the tests.
    A missing or mis-shaped output is an error.
    """
    rows = []
    for name in order:
        if name not in a or name not in b:
            raise KeyError(f"layer {name!r} is missing from the {'first' if name not in a else 'second'} output")
        if a[name].shape != b[name].shape:
            raise ValueError(f"layer {name!r}: output shapes differ, {a[name].shape} vs {b[name].shape}")
        mabs, mrel = diff_arrays(a[name], b[name])
        tol = tolerance(b[name], atol)
        rows.append(LayerDiff(name, tuple(a[name].shape), mabs, mrel, tol, mabs <= tol))
    return rows


def first_divergence(rows: list[LayerDiff]) -> LayerDiff | None:
    return next((r for r in rows if not r.ok), None)


def format_table(rows: list[LayerDiff], atol: float) -> str:
    """A per-layer table, the first layer over tolerance marked with '<-- first'."""
    first = first_divergence(rows)
    width = max([len(r.name) for r in rows] + [5])
    # the scaled difference, max |diff| / max(1, max |reference|), is what the tolerance (atol) bounds; a
    # relative difference per element exceeds it on near-zero outputs of a correct port
    lines = [
        f"{'layer':<{width}}  {'output shape':<18} {'max abs diff':>13} {'scaled diff':>12} {'tolerance':>10}  status"
    ]
    for r in rows:
        status = "ok" if r.ok else ("OVER  <-- first" if r is first else "OVER")
        lines.append(
            f"{r.name:<{width}}  {str(r.shape):<18} {r.max_abs:>13.3e} {r.max_abs * atol / r.tol:>12.3e} {r.tol:>10.2e}  {status}"
        )
    lines.append(
        f"tolerance per layer: {atol:g} x max(1, max |reference output|); scaled diff = max abs diff / max(1, max |reference output|), within {atol:g} is ok"
    )
    return "\n".join(lines)


def divergence_message(rows: list[LayerDiff], atol: float) -> str:
    first = first_divergence(rows)
    if first is None:
        return f"all {len(rows)} layers within {atol:g}"
    return (
        f"first divergent layer: {first.name} (max abs diff {first.max_abs:.3e} > tolerance {first.tol:.2e}, output shape {first.shape})\n"
        + format_table(rows, atol)
    )


def randomize_batchnorm_affine(tensors: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Give every BatchNorm a non-trivial scale and offset (fresh ones are 1 and 0)."""
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for key, value in tensors.items():
        if key.endswith(".gamma"):
            out[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif key.endswith(".beta"):
            out[key] = rng.normal(0.0, 0.1, value.shape).astype(np.float32)
    return out


def perturb_moving_statistics(tensors: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Move calibrated moving statistics away from one batch's, as training leaves them.

    Variances are scaled by 0.7 to 1.4 and means shifted by 0.1 standard
    deviations, so inference mode differs from training mode while activations
    keep a trained network's scale.  Fresh statistics (mean 0, variance 1) would
    hide epsilon and moving-statistics mistakes in inference mode.
    """
    rng = np.random.default_rng(seed + 1)
    out = dict(tensors)
    for key, value in tensors.items():
        if key.endswith(".moving_variance"):
            out[key] = (value * rng.uniform(0.7, 1.4, value.shape)).astype(np.float32)
            mean_key = key[: -len("moving_variance")] + "moving_mean"
            out[mean_key] = (tensors[mean_key] + 0.1 * np.sqrt(value) * rng.standard_normal(value.shape)).astype(
                np.float32
            )
    return out


def calibration_batch(spec, seed: int, n: int = 16) -> np.ndarray:
    """Random images (NHWC, [0, 1]) to calibrate BatchNorm moving statistics on."""
    return np.random.default_rng(seed).random((n, *spec.input_shape), dtype=np.float32)
