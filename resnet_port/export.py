"""``python -m resnet_port.export WEIGHTS_OR_RUN_DIR --format FORMAT --out DIR``.

(Several formats joined by commas: ``--format keras,onnx-torch``; ``all`` or no ``--format``: every
format the weights' architecture has.)

Writes the model in forms other tools open without this project, and proves
each one right after writing it:

==================  ==========================  ===================================================
format              files                       opened with
==================  ==========================  ===================================================
keras               ``model.keras``             ``keras.models.load_model``
torch               ``model.pt2``,              ``torch.export.load(...).module()``; the state_dict
                    ``state_dict.pt``           loads into ``torch_impl.model.build_model(arch)``
onnx-keras          ``model-keras.onnx``        onnxruntime; Keras' own exporter (tf2onnx), NHWC input
onnx-torch          ``model-torch.onnx``        onnxruntime; PyTorch's own exporter, NCHW input
pytorch-module      ``pytorch-module/``         plain PyTorch: ``model.py`` (imports torch only) and
                                                ``state_dict.pth``; ``model.resnet().load_state_dict(...)``
torchvision         ``torchvision.pth``         ``torchvision.models.resnet50(num_classes=N)
                                                .load_state_dict(sd, strict=True)`` (and the others)
timm                ``timm/`` (Hugging Face     ``timm.create_model("local-dir:timm/",
                    folder)                     pretrained=True)``; save_for_hf's files
keras-hub           ``keras-hub.keras``,        ``keras.saving.load_model`` and
                    ``keras-hub-preset/``       ``keras_hub.models.ImageClassifier.from_preset``
keras.applications  ``keras-applications        ``keras.applications.ResNet50(weights=None,
                    .weights.h5``               classes=N).load_weights(path)`` (101, 152 alike)
==================  ==========================  ===================================================

The last four are the libraries' own models, so only the variants a library
defines have its format (torchvision: ResNet18-152, wide, ResNeXt; timm: those,
ResNet26, ResNet-D and resnetv2_50; keras-hub: ResNet18-152 and its ResNet50 V2;
keras.applications: its ResNet50/101/152 and V2); asking for another is refused in one line that says why and
names the formats that hold the network.

Files take any image size (H, W >= 32) where the network's pads are constants:
always the Keras and library files, and the ``torch``/ONNX files of the
PyTorch-convention variants; the ``torch``/ONNX files of a network with TF
'same' padding at stride 2 (the post's) are fixed at its native size, as the
table and ``preprocessing.json`` say.  Every file is written into a staging
folder, loaded again in a fresh process where this project cannot be imported
(its packages are blocked), run on fixed batches at two batch sizes (the batch
dimension is dynamic in all of them) and at the native size (224 for the
ImageNet-stem ResNets) and a second size when the file takes any, and compared
with its source:
the weights file run by ``tf_impl`` (Keras formats) or ``torch_impl`` (PyTorch
formats).  The two ONNX files must also agree with each other, and TF's 'same'
padding must survive in both: the stride-2 convolutions that pad one row and
column *after* on even inputs are counted in each ONNX graph and held to the
spec's count.  The table is printed; the exit status is 1 over tolerance.  Only
when every file passes is the staging folder moved to ``--out``: a failed
export leaves nothing.

Inputs, for every format: float32 images, pixels / 255 (``preprocessing.json``
says so, with the per-channel normalisation when the weights carry one).

Each format is one module: this project's in :mod:`resnet_port.formats` (how the worker writes it, how
it reloads, its own verdicts), the libraries' in :mod:`resnet_port.libraries`; this module writes,
reloads and compares them all by the one tolerance rule (``parity.tolerance``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import cli, forkserver, frameworks, libraries, parity, rundir
from . import formats as format_modules
from . import weights as W
from .spec import MIN_INPUT_SIZE, ResNetSpec, get_spec, native_size, size_dependent_padding

#: this project's formats (resnet_port.formats), by name: for every variant
OWN = {fmt.NAME: fmt for fmt in format_modules.ALL}
#: the libraries ``export`` writes native files for (resnet_port.libraries), by format name
LIBRARIES = {lib.NAME: lib for lib in libraries.writers()}
#: the libraries' own formats: only for the variants they define (torchvision's ResNet18-152, ...)
NATIVE = tuple(name for name, lib in LIBRARIES.items() if not getattr(lib, "EVERY_VARIANT", False))
FORMATS = (*OWN, *(n for n in LIBRARIES if n not in NATIVE), *NATIVE)
#: every format's module, by name
MODULES = {**OWN, **LIBRARIES}
#: the framework that writes each format, and whose run of the weights file it is checked against
FRAMEWORK_OF = {name: frameworks.get(module.FRAMEWORK) for name, module in MODULES.items()}
#: the packages a format needs beyond its framework
NEEDS = {name: lib.PACKAGE for name, lib in LIBRARIES.items() if getattr(lib, "PACKAGE", None)}


def formats_for(spec: ResNetSpec) -> list[str]:
    return [f for f in FORMATS if f not in NATIVE or LIBRARIES[f].defines(spec)]


ATOL = parity.ATOL  # parity.tolerance, the rule of every check here
BATCHES = (8, 1)  # the export is run at both: the batch dimension must be dynamic


class ExportError(ValueError):
    pass


def resolve(target: str) -> Path:
    return rundir.weights_of(target)


def run_clean(fmt: str, path: Path, inputs: dict[int, Path], out: Path, meta: dict | None = None) -> dict:
    """Load and run one export in a fresh process where this project cannot be imported, on every
    ``{size: images .npy}`` of ``inputs`` at every batch size; ``{"SIZE/N": logits, ...}``."""
    files = json.dumps({str(k): str(v) for k, v in inputs.items()})
    args = [fmt, str(path), files, str(out), json.dumps(meta or {}), ",".join(map(str, BATCHES))]
    module = MODULES.get(fmt)
    proc = forkserver.run(  # a fresh process, or one forked from a server that imported the framework alone
        [sys.executable, "-m", "resnet_port.reload", *args],
        capture_output=True,
        text=True,
        env=parity.worker_env(),
        timeout=900,
        framework=getattr(module, "RELOADED_BY", getattr(module, "FRAMEWORK", None)),
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ExportError(f"{path.name} does not load and run on its own ({fmt}): {last}")
    with np.load(out) as z:
        return dict(z)


#: the formats whose files fix their input size when the network's pads depend on it (see
#: spec.size_dependent_padding); Keras, torchvision, timm and keras-hub files take any size
SIZED = tuple(name for name, fmt in OWN.items() if fmt.SIZED)
#: a second size for the check of files that take any size, when the native size is 32: odd, so
#: every stride-2 layer meets an odd input
ODD_SIZE = 45


def input_size(spec: ResNetSpec, fmt: str) -> int | None:
    """The input size ``fmt``'s file of ``spec`` is fixed at, or None: any height and width >= 32."""
    if getattr(LIBRARIES.get(fmt), "FIXED_SIZE", False):  # keras.applications' models take their native size only
        return native_size(spec)
    return native_size(spec) if fmt in SIZED and size_dependent_padding(spec) else None


def check_sizes(spec: ResNetSpec, size: int | None) -> list[int]:
    """The image sizes a file is run at: its fixed size; or, taking any size, the native one and another."""
    if size is not None:
        return [size]
    native = native_size(spec)
    return [native, MIN_INPUT_SIZE if native != MIN_INPUT_SIZE else ODD_SIZE]


def describe_size(spec: ResNetSpec, size: int | None) -> str:
    if size is None:
        return f"any H, W >= {MIN_INPUT_SIZE}"
    return f"{size}x{size} only (TF 'same' padding of {', '.join(size_dependent_padding(spec))} depends on the size; Keras' .keras takes any)"


def preprocessing(spec: ResNetSpec, w: W.Weights, formats: list[str]) -> dict:
    """What every exported file takes and gives (written as preprocessing.json, and printed)."""
    norm = w.normalization
    note = w.metadata.get("input")  # a source's own input convention that no mean/std says (keras.applications')
    sizes = {fmt: describe_size(spec, input_size(spec, fmt)) for fmt in formats}
    layout = "NHWC for model.keras, keras-hub and model-keras.onnx, NCHW for model.pt2, model-torch.onnx, torchvision and timm"
    return {
        "arch": spec.name,
        "input": f"{note}; {layout}" if note else f"float32 images, RGB, in [0, 1] (uint8 pixels / 255); {layout}",
        "input_size": sizes,
        "native_size": native_size(spec),
        "normalization": norm.to_dict() if norm else None,
        "then": f"(x - mean) / std per channel, mean {list(norm.mean)}, std {list(norm.std)}"
        if norm
        else ("nothing more" if note else "nothing: the model takes pixels / 255"),
        "output": f"{spec.num_classes} logits (no softmax)",
    }


def export(weights: Path, w: W.Weights, formats: list[str], out: Path, progress=None) -> tuple[list[dict], bool]:
    """Write, reload and compare every format of ``weights`` (loaded: ``w``) into the folder ``out``
    (the caller's staging folder); the table rows and whether all are within tolerance."""
    progress = progress or (lambda message: None)
    spec = get_spec(w.arch)
    out.mkdir(parents=True, exist_ok=True)
    norm = w.normalization
    (out / "preprocessing.json").write_text(json.dumps(preprocessing(spec, w, formats), indent=2) + "\n")
    sizes = sorted({n for fmt in formats for n in check_sizes(spec, input_size(spec, fmt))})
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="resnet-port-export-") as tmp:
        tmp = Path(tmp)
        inputs = {}
        for size in sizes:
            x = np.random.default_rng(size).random((max(BATCHES), size, size, spec.input_shape[-1]), dtype=np.float32)
            if norm is not None:
                x = ((x - np.float32(norm.mean)) / np.float32(norm.std)).astype(np.float32)
            inputs[size] = tmp / f"x{size}.npy"
            np.save(inputs[size], x)
        files = {name: module.FILE for name, module in MODULES.items()}
        names = {fmt: getattr(LIBRARIES.get(fmt), "SHOWN", files[fmt]) for fmt in formats}

        def write_op(fmt: str) -> dict:
            path = out / files[fmt]
            op = (
                OWN[fmt].write_op(path, out)
                if fmt in OWN
                else {"op": "export_native", "library": fmt, "out": str(path)}
            )
            return {**op, "weights": str(weights), "size": input_size(spec, fmt)}

        # one process per framework: the reference outputs, then every file that framework writes
        reference = {}
        for fw in [fw for fw in frameworks.ALL if fw in map(FRAMEWORK_OF.get, formats)]:  # only those the formats need
            mine = [fmt for fmt in formats if FRAMEWORK_OF[fmt] is fw]
            progress(
                f"running the weights in {fw.label} at {', '.join(f'{n}x{n}' for n in sizes)} (the reference), "
                f"writing {', '.join(names[fmt] for fmt in mine)}"
            )
            ref_ops = [
                {
                    "op": "forward",
                    "arch": spec.name,
                    "weights": str(weights),
                    "inputs": str(inputs[n]),
                    "training": False,
                    "out": str(tmp / f"ref_{fw.key}_{n}.npz"),
                }
                for n in sizes
            ]
            parity.run_worker(fw.key, ref_ops + [write_op(fmt) for fmt in mine], tmp)
            reference[fw.key] = {}
            for n in sizes:
                with np.load(tmp / f"ref_{fw.key}_{n}.npz") as z:
                    reference[fw.key][n] = z["logits"]
        meta = {"depth": libraries.get("torchvision").depth(spec), "classes": spec.num_classes, "arch": spec.name}
        outputs = {}
        for fmt in formats:
            fw, path, size, name = FRAMEWORK_OF[fmt], out / files[fmt], input_size(spec, fmt), names[fmt]
            run_at = {n: inputs[n] for n in check_sizes(spec, size)}
            progress(f"reloading {name} without resnet-port and running it at {', '.join(f'{n}x{n}' for n in run_at)}")
            res = run_clean(fmt, path, run_at, tmp / f"{fmt}.npz", meta)
            ref = reference[fw.key]
            outputs[fmt] = res
            row = compare(fmt, name, f"its source, the weights in {fw.label}", res, ref)
            row["size"] = "any" if size is None else f"{size} only"
            if fmt in LIBRARIES:
                row["loaded_as"] = str(res["classes"])
            if fmt == "keras-hub":  # the preset folder, loaded by from_preset, too
                preset = compare(
                    fmt,
                    "keras-hub-preset/",
                    f"its source, the weights in {fw.label}",
                    {k[len("preset/") :]: v for k, v in res.items() if k.startswith("preset/")},
                    ref,
                )
                preset.update(loaded_as=row["loaded_as"], size=row["size"])
                rows.append(row)
                row = preset
            if hasattr(OWN.get(fmt), "check"):  # the format's own verdicts (ONNX: its pads, dynamic dimensions)
                OWN[fmt].check(row, res, path, spec, size)
            rows.append(row)
        ctx = _Context(out, spec, inputs, sizes, tmp, reference, outputs)
        for module in format_modules.ALL:  # further checks once every file ran (torch: its state_dict)
            if module.NAME in formats and hasattr(module, "extra_rows"):
                rows += module.extra_rows(ctx)
    ok = all(r["ok"] for r in rows)
    return rows, ok


def compare(fmt: str, name: str, against: str, res: dict, ref: dict, other: dict | None = None) -> dict:
    """Max |difference| of ``res`` (``{"SIZE/N": logits}``) against ``ref`` (``{size: logits}``, or, with
    ``other``, the same keys of ``other``) at every size and batch size run; argmax agreement at the
    largest batch of each size."""
    diffs, agree, total, tol, sizes = [], 0, 0, 0.0, []
    for key, got in res.items():
        if key.count("/") != 1:  # "SIZE/N" only (not the preset's "preset/SIZE/N", nor the facts)
            continue
        size, n = (int(v) for v in key.split("/"))
        want = other[key] if other is not None else ref[size][:n]
        tol = max(tol, parity.tolerance(want, ATOL))
        diffs.append(float(np.abs(got - want).max()))
        if n == max(BATCHES):
            agree += int((got.argmax(1) == want.argmax(1)).sum())
            total += len(want)
            sizes.append(size)
    if not diffs:
        raise ExportError(f"{name}: nothing was run")
    finite = all(np.isfinite(d) for d in diffs)
    return {
        "format": fmt,
        "file": name,
        "against": against,
        "max_abs_diff": max(diffs) if finite else float("nan"),
        "tolerance": tol,
        "argmax": f"{agree}/{total}",
        "sizes": ",".join(str(n) for n in sorted(set(sizes), reverse=True)),
        "batches": ",".join(str(n) for n in BATCHES),
        "ok": finite and max(diffs) <= tol and agree == total,
    }


@dataclasses.dataclass
class _Context:
    """What a format's ``extra_rows`` gets: the export folder, the spec, the images run (``{size: .npy}``) and
    sizes, a scratch folder, the reference logits (``{framework key: {size: logits}}``) and every reloaded
    file's outputs (``{format: {"SIZE/N": logits}}``)."""

    out: Path
    spec: ResNetSpec
    inputs: dict
    sizes: list
    tmp: Path
    reference: dict
    outputs: dict
    largest_batch: int = max(BATCHES)
    error = ExportError
    compare = staticmethod(compare)


def table(rows: list[dict]) -> str:
    lines = [
        f"{'format':<18} {'file':<40} {'input':>8} {'checked at':>10} {'max |diff|':>11} {'tolerance':>10} {'argmax':>7} {'batches':>7}  {'same padding':<28} status"
    ]
    for r in rows:
        loaded = f" (loaded as {r['loaded_as']})" if r.get("loaded_as") else ""
        lines.append(
            f"{r['format']:<18} {r['file']:<40} {r.get('size', '-'):>8} {r['sizes']:>10} {r['max_abs_diff']:>11.2e} {r['tolerance']:>10.2e} {r['argmax']:>7} {r['batches']:>7}  {r.get('same_padding', '-'):<28} {'ok' if r['ok'] else 'FAILED'}{loaded}"
        )
    return "\n".join(lines)


def publish(staged: Path, out: Path) -> None:
    """Move every file of the staging folder into ``out`` (a new folder appears whole, by one rename)."""
    import shutil

    if not out.exists():
        staged.rename(out)
        return
    for item in staged.iterdir():
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        item.rename(target)
    staged.rmdir()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.export", description=cli.description(__doc__))
    ap.add_argument("target", help="a neutral weights file (.safetensors) or a finished run directory")
    ap.add_argument(
        "--format",
        default="all",
        help=f"what to write: {', '.join(FORMATS)}, several joined by commas, or all (default: every format the architecture has)",
    )
    ap.add_argument(
        "--out", required=True, help="folder for the exported files (written only when every file passes its check)"
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="write into --out even if it holds files (files of the same names are replaced)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    progress = cli.Progress("export", args.quiet)
    staged = None
    try:
        weights = resolve(args.target)
        w = W.load(weights)  # strict check before any framework starts
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ExportError(f"--out {out} is a file; give a folder for the exported files")
        rundir.check_writable(out, "--out")
        if out.exists() and any(out.iterdir()) and not args.force:
            raise ExportError(
                f"--out {out} exists and is not empty; pass --force to write into it, or choose another folder"
            )
        spec = get_spec(w.arch)
        formats = (
            formats_for(spec) if args.format == "all" else [f.strip() for f in args.format.split(",") if f.strip()]
        )
        unknown = [f for f in formats if f not in FORMATS]
        if unknown or not formats:
            raise ExportError(
                f"--format {args.format!r}: choose from {', '.join(FORMATS)} (several joined by commas) or all"
            )
        for fmt in formats:
            fw = FRAMEWORK_OF[fmt]
            if not fw.installed():
                raise ExportError(f"--format {fmt} needs {fw.install_hint()}")
            if fmt in NATIVE and not LIBRARIES[fmt].defines(spec):
                holds = ", ".join(f"{n} ({m})" for n, m in LIBRARIES[fmt].MODELS.items())
                why = getattr(LIBRARIES[fmt], "why_not", lambda spec: "")(spec)
                raise ExportError(
                    f"--format {fmt}: {fmt} has no network that is {spec.name}{why} (it defines {holds}); the formats that hold "
                    f"{spec.name}: {', '.join(formats_for(spec))}"
                )
            if fmt in NEEDS and importlib.util.find_spec(NEEDS[fmt]) is None:
                raise ExportError(f"--format {fmt} needs {fmt}: pip install {fmt}")
        # everything is written into a staging folder beside --out and moved there only when every
        # file has passed its check: a failed export leaves nothing
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staged.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become --out's mode
        rows, ok = export(weights, w, formats, staged, progress)
        if ok:
            publish(staged, out)
            staged = None
    except (ExportError, W.WeightsError, rundir.RunDirError, W.WriteError) as e:
        return cli.fail(str(e))
    except parity.WorkerError as e:
        return cli.fail(f"exporting failed: {worker_reason(e)}")
    except OSError as e:
        return cli.fail(f"exporting to {args.out} failed: {e}")
    finally:
        if staged is not None:
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
    print(
        f"exported {weights} ({w.arch}) to {out}; every file reloaded without resnet-port and run at batch sizes {', '.join(map(str, BATCHES))}"
        if ok
        else f"not written: {out} (a file failed its check; nothing was kept)"
    )
    print(table(rows))
    prep = preprocessing(spec, w, formats)
    print(
        f"input: {prep['input'].split(';')[0]}; then {prep['then']}; native size {prep['native_size']}x{prep['native_size']}"
    )
    print(f"export: {'PASS' if ok else 'FAIL'} (tolerance {ATOL:g} x max(1, max |reference logit|))")
    return 0 if ok else 1


def worker_reason(e: Exception) -> str:
    """A worker's failure in one line: which worker, and the last line of what it printed."""
    lines = str(e).strip().splitlines()
    head, last = lines[0].split(" (job ")[0], lines[-1] if len(lines) > 1 else ""
    return f"{head}: {last}" if last else head


if __name__ == "__main__":
    sys.exit(main())
