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
ResNet26 and ResNet-D; keras-hub: ResNet18/34; keras.applications: its v1
ResNet50/101/152); asking for another is refused in one line that says why and
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
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import cli, frameworks, libraries, parity, rundir
from . import weights as W
from .spec import MIN_INPUT_SIZE, ResNetSpec, get_spec, native_size, same_padding, size_dependent_padding

#: the libraries ``export`` writes native files for (resnet_port.libraries), by format name
LIBRARIES = {lib.NAME: lib for lib in libraries.writers()}
#: the libraries' own formats: only for the variants they define (torchvision's ResNet18-152, ...)
NATIVE = tuple(name for name, lib in LIBRARIES.items() if not getattr(lib, "EVERY_VARIANT", False))
FORMATS = ("keras", "torch", "onnx-keras", "onnx-torch", *(n for n in LIBRARIES if n not in NATIVE), *NATIVE)
#: the framework that writes each format, and whose run of the weights file it is checked against
FRAMEWORK_OF = {
    "keras": frameworks.KERAS,
    "torch": frameworks.PYTORCH,
    "onnx-keras": frameworks.KERAS,
    "onnx-torch": frameworks.PYTORCH,
    **{name: frameworks.get(lib.FRAMEWORK) for name, lib in LIBRARIES.items()},
}
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
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_port.reload", *args],
        capture_output=True,
        text=True,
        env=parity.worker_env(),
        timeout=900,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ExportError(f"{path.name} does not load and run on its own ({fmt}): {last}")
    with np.load(out) as z:
        return dict(z)


def asymmetric_same_convs(spec: ResNetSpec) -> list[str]:
    """The spec's convolutions whose TF 'same' padding is uneven at the spec's input size (one more after)."""
    shape, inputs = spec.input_shape, {}
    for layer in spec.layers():
        inputs[layer.name] = shape
        shape = layer.output_shape
    return [
        c.name
        for c in spec.convolutions()
        if c.padding == "same" and len(set(same_padding(inputs[c.name][0], c.kernel_size, c.stride))) > 1
    ]


def onnx_asymmetric_convs(path: Path) -> int:
    """How many Conv nodes of an ONNX graph pad unevenly: by their own ``pads``, by SAME_UPPER on an
    input that needs an odd total, or through a Pad node right before them."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.value_info, *g.input]}
    count = 0
    for n in g.node:
        if n.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1] * max(len(kernel), 2)))
        pads = list(attrs.get("pads", []))
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        uneven = bool(pads) and pads[: len(pads) // 2] != pads[len(pads) // 2 :]
        if auto in ("SAME_UPPER", "SAME_LOWER") and kernel:
            dims = shapes.get(n.input[0], [])[2:]
            uneven |= any(d and max((-(-d // s) - 1) * s + k - d, 0) % 2 for d, s, k in zip(dims, strides, kernel))
        src = producers.get(n.input[0])
        if src is not None and src.op_type == "Pad" and len(src.input) > 1 and src.input[1] in consts:
            p = [int(v) for v in consts[src.input[1]].ravel()]
            uneven |= p[: len(p) // 2] != p[len(p) // 2 :]
        count += uneven
    return count


def runtime_pads(path: Path) -> list[str]:
    """The Pad nodes whose amounts are computed at run time (Shape/Gather/Slice chains, not constants):
    with the input size fixed they are constants, and converters such as onnx2tf fail on the computed ones."""
    import onnx

    g = onnx.load(str(path)).graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name or n.output[0] for n in g.node if n.op_type == "Pad" and len(n.input) > 1 and n.input[1] not in consts
    ]


def same_padding_check(path: Path, spec: ResNetSpec) -> tuple[str, bool]:
    """(what the ONNX graph's uneven 'same' pads are, whether there are exactly as many as the spec has
    and every pad is a constant): an exporter that made TF's one-sided pads symmetric computes another
    network; one that computes pads at run time is one converters cannot read."""
    expected = len(asymmetric_same_convs(spec))
    found = onnx_asymmetric_convs(path)
    computed = runtime_pads(path)
    text = f"{found} of {expected} uneven 'same' convs" + (f", {len(computed)} run-time pads" if computed else "")
    return text, found == expected and not computed


#: the formats whose files fix their input size when the network's pads depend on it (see
#: spec.size_dependent_padding); Keras, torchvision, timm and keras-hub files take any size
SIZED = ("torch", "onnx-keras", "onnx-torch")
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
        files = {
            "keras": "model.keras",
            "torch": "model.pt2",
            "onnx-keras": "model-keras.onnx",
            "onnx-torch": "model-torch.onnx",
            **{name: lib.FILE for name, lib in LIBRARIES.items()},
        }
        names = {fmt: getattr(LIBRARIES.get(fmt), "SHOWN", files[fmt]) for fmt in formats}

        def write_op(fmt: str) -> dict:
            path = out / files[fmt]
            op = {
                "keras": {"op": "export_keras", "out": str(path)},
                "torch": {"op": "export_torch", "program": str(path), "state_dict": str(out / "state_dict.pt")},
                "onnx-keras": {"op": "export_onnx", "out": str(path)},
                "onnx-torch": {"op": "export_onnx", "out": str(path)},
            }.get(fmt) or {"op": "export_native", "library": fmt, "out": str(path)}
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
            if fmt.startswith("onnx"):
                row["same_padding"], padding_ok = same_padding_check(path, spec)
                row["ok"] &= padding_ok
                shape = [str(d) for d in res["input_shape"]]
                dynamic = [i for i, d in enumerate(shape) if not d.isdigit()]
                hw = (1, 2) if fmt == "onnx-keras" else (2, 3)
                row["ok"] &= 0 in dynamic and (
                    size is not None or set(hw) <= set(dynamic)
                )  # named (dynamic) dimensions
                row["batch_dim"] = shape[0]
            if fmt == "keras":
                row["ok"] &= list(res["classes"]) == ["keras"]  # standard Keras layers only
            rows.append(row)
        if "torch" in formats:
            rows.append(
                state_dict_row(
                    out / "state_dict.pt", spec, inputs[sizes[0]], tmp, reference[frameworks.PYTORCH.key][sizes[0]]
                )
            )
        if "onnx-keras" in formats and "onnx-torch" in formats:
            common = {k: v for k, v in outputs["onnx-keras"].items() if k in outputs["onnx-torch"] and "/" in k}
            rows.append(
                compare(
                    "onnx",
                    "model-keras.onnx vs model-torch.onnx",
                    "each other",
                    common,
                    {n: None for n in sizes},
                    other=outputs["onnx-torch"],
                )
            )
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


def state_dict_row(path: Path, spec: ResNetSpec, inputs: Path, tmp: Path, ref: np.ndarray) -> dict:
    """The state_dict, loaded with load_state_dict(strict=True) into torch_impl's model."""
    code = (
        "import sys, numpy as np, torch\n"
        "from torch_impl.model import build_model\n"
        "m = build_model(sys.argv[1]); m.load_state_dict(torch.load(sys.argv[2], weights_only=True), strict=True); m.eval()\n"
        "x = torch.from_numpy(np.load(sys.argv[3])).permute(0, 3, 1, 2)\n"
        "with torch.no_grad(): np.save(sys.argv[4], m(x).numpy())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, spec.name, str(path), str(inputs), str(tmp / "sd.npy")],
        capture_output=True,
        text=True,
        env=parity.worker_env(),
    )
    if proc.returncode != 0:
        raise ExportError(
            f"{path.name} does not load into torch_impl.model.build_model({spec.name!r}): {(proc.stderr.strip().splitlines() or ['(no message)'])[-1]}"
        )
    size = int(np.load(inputs, mmap_mode="r").shape[1])
    row = compare(
        "torch",
        path.name + " (torch_impl.model)",
        "its source, the weights in PyTorch",
        {f"{size}/{max(BATCHES)}": np.load(tmp / "sd.npy")},
        {size: ref},
    )
    row["size"] = "any"
    return row


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
