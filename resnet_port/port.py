"""``python -m resnet_port.port SRC --out WEIGHTS.safetensors [--arch auto|NAME] [--check]``: a model you have, in the neutral file.

Reads (each in its own framework's process, see ``resnet_port.porting``):

* a Keras 2 SavedModel folder of the post's model, as ``model.save('saved_model/my_model')``
  wrote it (its checkpoint, by object path; no user classes, no tf-keras);
* a Keras 3 ``.keras`` model or ``.weights.h5`` of the post's model or of ``tf_impl``'s;
* the Keras 2 ``.h5`` weights of the post's model (``model.save_weights('x.h5')``);
* keras-hub's ``ResNetBackbone`` / ``ResNetImageClassifier`` ResNet18/34 (``.keras``,
  ``.weights.h5``, a preset folder);
* a PyTorch ``state_dict`` (``.pt``/``.pth``/``.bin``/``.safetensors``) of
  torchvision's or timm's ``resnet18``/``resnet34``, of the CIFAR repos' ResNet18/34
  (kuangliu/pytorch-cifar, also its ``{"net": ...}`` checkpoints;
  weiaicunzai/pytorch-cifar100), or of ``torch_impl``'s model; a Hugging Face folder
  (``config.json`` + ``model.safetensors``, as timm writes it and the hub cache holds it);
* a run directory of either framework (its checkpoint).

A library's model keeps the conventions of the library that defined it: a
torchvision, timm, CIFAR-repo or keras-hub ResNet is one of the ``-torch``
variants (symmetric padding, PyTorch's BatchNorm), with the class count its head has.

``--check`` proves the port.  It runs the *source* as it is, in its own
library and process (a SavedModel through its saved serving signature, a Keras
file through Keras' own loader, keras-hub's files through keras-hub, a state_dict
through ``load_state_dict(strict=True)`` into torchvision's or timm's class, or
into your own class for a repo's model, ``--source-class FILE.py:NAME``), and
the port in the *other* framework, on the same batch (``--check-images``, else
CIFAR-100 test images when found, else fixed random images), in inference and in
training mode.  It prints max |logit difference|, argmax agreement and the first
layer over tolerance, and exits 1 when over the parity tolerance.  Exit 2: bad
input, with one line saying what was wrong; nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import augment, cli, data, frameworks, parity, porting, rundir
from . import weights as W
from .porting import PortError
from .spec import IMAGENET_SIZE, IMAGENET_STEMS, MIN_INPUT_SIZE, REGISTRY, ResNetSpec, arch_type, split_name

ATOL = parity.ATOL  # on every layer and the logits: parity.tolerance, the rule of every check here
CHECK_BATCH = 16


def read(source: porting.Source, workdir: Path) -> tuple[dict, dict]:
    """(canonical tensors with their native paths, facts) of a source."""
    run_arch = {"arch": rundir.read_config(source.path).get("recipe", {}).get("arch")} if source.kind == "run" else {}
    if source.kind == "run" and source.framework is frameworks.KERAS:
        arrays, _ = rundir.read_npz_checkpoint(source.path / source.framework.checkpoint)
        found = {
            k[6:]: (a.astype(np.float32), f"{source.framework.checkpoint}:{k}")
            for k, a in arrays.items()
            if k.startswith("model/")
        }
        return found, {"kind": "run", "structure": "own", **run_arch}
    out = workdir / "found"
    parity.run_worker(
        source.framework.key,
        [{"op": "read_source", "src": str(source.path), "kind": source.kind, "out": str(out)}],
        workdir,
    )
    layers, facts = porting.read_found(out)
    try:
        tensors = porting.canonical_tensors(layers)
    except PortError as e:
        raise PortError(f"{source.path}: {e}") from None
    return tensors, {**facts, **{k: v for k, v in run_arch.items() if v}}


def batches_tracked(tensors: dict, counts: dict[str, int]) -> dict[str, int]:
    """{canonical BatchNorm: its num_batches_tracked} from the source's {native module: count}: a PyTorch
    BatchNorm's step counter, which no output depends on (momentum is set), kept in the neutral file's
    metadata so that the exported state_dicts give it back."""
    out = {}
    for key, (_, native) in tensors.items():
        if key.endswith(".moving_mean"):
            module = native.rsplit("/", 1)[0].rsplit(":", 1)[-1]
            if module in counts:
                out[key.rsplit(".", 1)[0]] = int(counts[module])
    return out


def native_layers(tensors: dict, library: str, spec=None) -> dict[str, str]:
    """{canonical layer: the source's own name for it}, and each block's output (in the library's vocabulary):
    the block's last layer in ``spec`` (a BasicBlock's ``relu2``, a bottleneck's ``relu3``)."""
    vocab = porting.vocabulary(library)
    outputs = {b.name: b.layers()[-1].name for b in spec.blocks} if spec is not None else {}
    # where the library's BatchNorm applies its ReLU too, its output is the spec's ReLU after that BatchNorm
    order = [layer.name for layer in spec.layer_specs()] if spec is not None else []
    after = {a: b for a, b in zip(order, order[1:])}
    out = {}
    for key, (_, native) in tensors.items():
        layer, path = key.rsplit(".", 1)[0], native.rsplit("/", 1)[0].rsplit(":", 1)[-1]
        if vocab.fused_norm_act and spec is not None and spec.layer(layer).kind == "batchnorm":
            layer = after[layer]
        out[layer] = path
        m = re.match(r"^layer(\d+)\.(\d+)\.conv1$", layer)
        if m:  # the block's own output: its path in the library's names
            block = layer.rsplit(".", 1)[0]
            out[outputs.get(block, f"{block}.relu2")] = (
                vocab.block_path(int(m.group(1)), int(m.group(2))) + vocab.block_output
            )
    return out


#: torchvision's ImageNet normalisation (its weights' transforms: Normalize(mean, std) after ToTensor), and
#: timm's default for its ResNets (IMAGENET_DEFAULT_MEAN / _STD)
IMAGENET_NORMALIZATION = augment.Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: timm's default for its ResNetV2 (IMAGENET_INCEPTION_MEAN / _STD), and keras.applications' ResNet V2 inputs
#: (``preprocess_input``'s 'tf' mode: pixels / 127.5 - 1, which is (pixels / 255 - 0.5) / 0.5)
INCEPTION_NORMALIZATION = augment.Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: each library's default, where its files carry none of their own
LIBRARY_NORMALIZATION = {
    "torchvision/timm": IMAGENET_NORMALIZATION,
    "timm/resnetv2": INCEPTION_NORMALIZATION,
}


def normalization_of(
    source: porting.Source, facts: dict | None = None, spec: ResNetSpec | None = None
) -> augment.Normalization | None:
    """The input normalisation the source's model expects after pixels / 255, where its library defines one:
    a run directory's (its recipe's), a timm Hugging Face folder's config (``pretrained_cfg`` mean/std, read
    as JSON), torchvision's and timm's ResNets' ImageNet mean/std.  None: the model takes pixels / 255."""
    if source.kind == "run":
        return augment.Normalization.from_dict(rundir.read_config(source.path).get("data", {}).get("normalization"))
    library = (facts or {}).get("library")
    if library == "keras.applications" and spec is not None and spec.blocks[0].pre:  # V2: 'tf' mode
        return INCEPTION_NORMALIZATION
    if library not in LIBRARY_NORMALIZATION:
        return None
    if source.kind == "hf-folder":
        try:
            cfg = json.loads((source.path / "config.json").read_text())
            pre = cfg.get("pretrained_cfg", cfg)
            if pre.get("mean") and pre.get("std"):
                return augment.Normalization(tuple(map(float, pre["mean"])), tuple(map(float, pre["std"])))
        except (OSError, ValueError, TypeError):
            pass
    return LIBRARY_NORMALIZATION[library]


#: what keras.applications' ResNet50/101/152 take (``keras.applications.resnet.preprocess_input``)
CAFFE_INPUT = (
    "float32 images as keras.applications.resnet.preprocess_input makes them ('caffe': RGB pixels 0-255 turned "
    "to BGR, the ImageNet mean (103.939, 116.779, 123.68) subtracted per channel, not scaled)"
)


def describe_input(norm: augment.Normalization | None) -> str:
    if norm is None:
        return "RGB pixels / 255, nothing else"
    return f"RGB pixels / 255, then (x - mean) / std with mean {tuple(round(m, 4) for m in norm.mean)}, std {tuple(round(v, 4) for v in norm.std)}"


def check_images(path: str | None, spec: ResNetSpec, normalization) -> tuple[np.ndarray, str]:
    """The check batch (NHWC float32, as the model takes it) and what it is."""
    if path:
        try:
            x = np.load(path)
        except (OSError, ValueError) as e:
            raise PortError(f"--check-images {path}: cannot read it as a .npy array ({e})") from None
        if x.ndim != 4 or x.shape[-1] != spec.input_shape[-1] or min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise PortError(
                f"--check-images {path}: expected (N, H, W, {spec.input_shape[-1]}) images with H, W >= {MIN_INPUT_SIZE} (e.g. {', '.join(map(str, spec.input_shape))}), got shape {x.shape}"
            )
        what = f"{len(x)} images from {path}"
    else:
        found = data.find()
        x = None
        if found is not None:
            try:
                x = data.read(found, verify=False, val_size=0).test.images[:CHECK_BATCH]
                what = f"{len(x)} CIFAR-100 test images ({found})"
            except data.DataError:
                x = None
        if x is None:
            x = (np.random.default_rng(0).random((CHECK_BATCH, *spec.input_shape)) * 255).round().astype(np.uint8)
            what = f"{CHECK_BATCH} fixed random images (no CIFAR-100 found; --check-images to use yours)"
    x = x.astype(np.float32) / np.float32(augment.PIXEL_SCALE) if x.dtype == np.uint8 else x.astype(np.float32)
    if normalization is not None:
        x = (x - np.float32(normalization.mean)) / np.float32(normalization.std)
    return x.astype(np.float32), what


def judge(port: dict, ref: dict, names: list[str], atol: float = ATOL):
    """The contract of ``--check``: the port's outputs against the source's, one mode.

    Every layer both hold, in execution order, and the logits must be within
    ``atol * max(1, max |source output|)``.  Returns (within tolerance, max |logit
    difference|, the logits' tolerance, the per-layer rows, the first layer over
    tolerance or None).
    """
    logit_diff, _ = parity.diff_arrays(port["logits"], ref["logits"])
    tol = parity.tolerance(ref["logits"], atol)
    rows = parity.compare_layers(port, ref, [n for n in names if n in ref and n in port], atol)
    first = parity.first_divergence(rows)
    return first is None and logit_diff <= tol, logit_diff, tol, rows, first


IMAGENET_BATCH = 4


def check_batches(
    images: str | None, spec: ResNetSpec, normalization, fixed_224: bool = False
) -> list[tuple[np.ndarray, str]]:
    """The batches ``--check`` runs: ``--check-images`` (or the default batch), and for an ImageNet-stem
    variant without ``--check-images`` fixed random images at 224x224 too (only those, ``fixed_224``,
    for a source built for 224x224 alone: keras.applications' models)."""
    batches = [] if fixed_224 and images is None else [check_images(images, spec, normalization)]
    if images is None and REGISTRY[split_name(spec.name)[0]].stem in IMAGENET_STEMS:
        x = np.random.default_rng(1).random(
            (IMAGENET_BATCH, IMAGENET_SIZE, IMAGENET_SIZE, spec.input_shape[-1]), dtype=np.float32
        )
        if normalization is not None:
            x = (x - np.float32(normalization.mean)) / np.float32(normalization.std)
        batches.append(
            (x.astype(np.float32), f"{IMAGENET_BATCH} fixed random images at {IMAGENET_SIZE}x{IMAGENET_SIZE}")
        )
    return batches


def check(
    source: porting.Source,
    facts: dict,
    weights: Path,
    spec: ResNetSpec,
    images: str | None,
    workdir: Path,
    tensors: dict | None = None,
    source_class: str | None = None,
    progress=None,
) -> bool:
    """Run the source as it is and the port in the other framework; print the table; whether within tolerance.

    Both run in float32 and, where the source can (``porting.runs_in_float64``), in float64 too.  The float64
    comparison decides: there a correct port agrees to ~1e-10 whatever the CPU or thread count, while
    float32 rounding alone reaches ~1e-3 on a deep ResNet in training mode (one thread against two); a
    wrong port is off by far more than the tolerance in either.  The float32 figures are printed beside.
    """
    progress = progress or (lambda message: None)
    other = frameworks.other(source.framework)
    batches = check_batches(
        images, spec, W.load(weights).normalization, fixed_224=facts.get("library") == "keras.applications"
    )
    precisions = (
        ["float32", "float64"]
        if porting.runs_in_float64(source.framework.key, facts["kind"], facts.get("structure"), facts.get("library"))
        else ["float32"]
    )
    src_ops, port_ops = [], []
    for i, (x, _) in enumerate(batches):
        np.save(workdir / f"inputs{i}.npy", x)
        for dtype in precisions:
            op = {
                "op": "run_source",
                "src": str(source.path),
                "kind": facts["kind"],
                "structure": facts.get("structure", "own"),
                "arch": spec.name,
                "inputs": str(workdir / f"inputs{i}.npy"),
                "out": str(workdir / f"source{i}_{dtype}.npz"),
                "dtype": dtype,
            }
            if facts.get("structure") == "library":
                op.update(
                    library=facts.get("library"),
                    layers=native_layers(tensors or {}, facts["library"], spec),
                    source_class=source_class,
                )
            src_ops.append(op)
            port_ops += [
                {
                    "op": "forward",
                    "arch": spec.name,
                    "weights": str(weights),
                    "inputs": str(workdir / f"inputs{i}.npy"),
                    "training": mode == "train",
                    "dtype": dtype,
                    "out": str(workdir / f"port{i}_{dtype}_{mode}.npz"),
                }
                for mode in ("eval", "train")
            ]
    sizes = ", ".join(sorted({f"{x.shape[1]}x{x.shape[2]}" for x, _ in batches}))
    progress(f"running the source in {source.framework.label} ({' and '.join(precisions)}, {sizes})")
    parity.run_worker(source.framework.key, src_ops, workdir)
    if (workdir / "source0_float32.json").is_file():
        raise PortError(json.loads((workdir / "source0_float32.json").read_text())["error"])
    progress(f"running the port in {other.label} ({' and '.join(precisions)}, {sizes})")
    parity.run_worker(other.key, port_ops, workdir)
    how = {"savedmodel": "through its saved serving signature", "run": "from its checkpoint"}.get(
        facts["kind"], "loaded by its framework's own loader"
    )
    with np.load(workdir / "source0_float32.npz") as z:
        if "library_class" in z.files:
            how = f"as {z['library_class']} ({facts.get('library')})"
    decides = precisions[-1]
    print(f"check: {source.path} ({porting.KINDS[facts['kind']][0]}, run in {source.framework.display_name()} {how})")
    print(f"   vs: the port, {weights.name}, in {other.display_name()}; " + "; ".join(what for _, what in batches))
    if decides == "float64":
        print(
            "   in float64 (the verdict: rounding ~1e-12, so only a wrong port can differ) and float32 (for information: rounding alone moves deep layers by up to ~1e-3)"
        )
    else:
        print(
            f"   in float32 only: {porting.KINDS[facts['kind']][0]}s {'of keras-hub ' if facts.get('structure') == 'library' else ''}run in float32 as saved"
        )
    print(
        f"{'mode':<10} {'input':>9} {'dtype':>8} {'max |logit diff|':>17} {'tolerance':>10} {'argmax agrees':>14} {'layers':>7}  first divergent layer"
    )
    ok = True
    names = [layer.name for layer in spec.layers()]
    for i, (x, _) in enumerate(batches):
        for dtype in precisions:
            with np.load(workdir / f"source{i}_{dtype}.npz") as z:
                src = dict(z)
            for mode in ("eval", "train"):
                with np.load(workdir / f"port{i}_{dtype}_{mode}.npz") as z:
                    port = dict(z)
                ref = {k.split("/", 1)[1]: v for k, v in src.items() if k.startswith(f"{mode}/")}
                good, logit_diff, tol, rows, first = judge(port, ref, names)
                agree = int((port["logits"].argmax(1) == ref["logits"].argmax(1)).sum())
                if dtype == decides:
                    ok &= good
                where = first.name if first else ("logits" if not good else "-")
                label = "inference" if mode == "eval" else "training"
                size = f"{x.shape[1]}x{x.shape[2]}"
                verdict = (
                    ("ok" if good else "OVER TOLERANCE")
                    if dtype == decides
                    else ("(ok)" if good else "(over tolerance: float32 rounding, not the verdict)")
                )
                print(
                    f"{label:<10} {size:>9} {dtype:>8} {logit_diff:>17.3e} {tol:>10.2e} {f'{agree}/{len(x)}':>14} {len(rows):>7}  {where}  {verdict}"
                )
                if first and dtype == decides:
                    print(
                        f"  {first.name}: max abs diff {first.max_abs:.3e} > {first.tol:.2e} (layers compared: {len(rows)})"
                    )
    print(
        f"parity: {'PASS' if ok else 'FAIL'} (in {decides}; tolerance {ATOL:g} x max(1, max |source output|) per layer and on the logits)"
    )
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m resnet_port.port", description=cli.description(__doc__))
    ap.add_argument(
        "src",
        help="a Keras 2 SavedModel folder; a .keras, .weights.h5 or Keras 2 .h5 file (the post's, tf_impl's, keras-hub's); "
        "a keras-hub preset folder; a PyTorch state_dict (.pt, .pth, .bin, .safetensors: torchvision, timm, the CIFAR repos, torch_impl); "
        "a Hugging Face folder as timm writes it (config.json + model.safetensors); or a run directory of either framework",
    )
    ap.add_argument("--out", help="the neutral weights file to write (.safetensors); not needed with --verify")
    ap.add_argument(
        "--arch",
        default="auto",
        type=lambda v: v if v == "auto" else arch_type(v),
        help="the architecture, NAME or NAME@CLASSES (default: recognised from the variables and the library's conventions)",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="run the source as it is and the port in the other framework; exit 1 over tolerance (--out is written only when the check passes)",
    )
    ap.add_argument(
        "--verify", metavar="WEIGHTS", help="check an existing neutral weights file against SRC instead of writing one"
    )
    ap.add_argument(
        "--check-images",
        help="a .npy batch (N, H, W, 3), H and W >= 32 (e.g. 224 for an ImageNet ResNet), uint8 or float in [0, 1], for --check",
    )
    ap.add_argument(
        "--source-class",
        metavar="FILE.py:NAME",
        help="for --check of a repo's checkpoint that no package defines (kuangliu, weiaicunzai): your model class or function, run to load the source as it is",
    )
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    progress = cli.Progress("port", args.quiet)
    try:
        if not args.out and not args.verify:
            raise PortError(
                "give --out WEIGHTS.safetensors to write the port, or --verify WEIGHTS to check an existing one"
            )
        out = Path(args.out) if args.out else None
        if out is not None:
            check_out_file(out, args.force)
        source = porting.detect(args.src)
        with tempfile.TemporaryDirectory(prefix="resnet-port-port-") as tmp:
            progress(f"reading {source.path} in {source.framework.label}")
            tensors, facts = read(source, Path(tmp))
            W.check_values(
                {k: a for k, (a, _) in tensors.items()},
                str(source.path),
                labels={k: f"{native_key(source, native)} ({k})" for k, (_, native) in tensors.items()},
            )
            spec = porting.resolve_arch(tensors, args.arch, str(source.path), facts)
            check_keras_config(source, facts, spec)
            if args.verify:
                target = Path(args.verify)
                W.load(target, spec)
                return (
                    0
                    if check(
                        source, facts, target, spec, args.check_images, Path(tmp), tensors, args.source_class, progress
                    )
                    else 1
                )
            # written beside the workdir first: --out appears only once everything it promises holds
            library = f" ({facts['library']})" if facts.get("library") else ""
            producer = f"resnet_port.port from {porting.KINDS[facts['kind']][0]}{library}"
            extra = {"source": str(source.path)}
            if facts.get("num_batches_tracked"):
                extra["num_batches_tracked"] = json.dumps(batches_tracked(tensors, facts["num_batches_tracked"]))
            norm = normalization_of(source, facts, spec)
            if facts.get("library") == "keras.applications" and norm is None:  # v1's caffe mode: a channel flip
                extra["input"] = CAFFE_INPUT
            staged = W.save(
                Path(tmp) / "port.safetensors",
                {k: a for k, (a, _) in tensors.items()},
                spec.name,
                producer=producer,
                extra=extra,
                normalization=norm,
            )
            n = sum(a.size for a, _ in tensors.values())
            if args.check and not check(
                source, facts, staged, spec, args.check_images, Path(tmp), tensors, args.source_class, progress
            ):
                print(f"not written: {out} (the port failed its check)", file=sys.stderr)
                return 1
            W.atomic_write_bytes(out, staged.read_bytes())
            print(
                f"ported {source.path} ({porting.KINDS[facts['kind']][0]}{library}): {spec.name}, {len(tensors)} tensors, {n:,} values -> {out}"
            )
            if "input" in extra:
                print(f"input: {extra['input']} (kept in {out.name}; export writes it into every file's preprocessing)")
            else:
                print(
                    f"input: {describe_input(norm)} (kept in {out.name}; export writes it into every file's preprocessing)"
                )
    except (PortError, W.WeightsError, rundir.RunDirError, W.WriteError) as e:
        return cli.fail(str(e))
    except parity.WorkerError as e:
        return cli.fail(str(e).splitlines()[-1])
    return 0


def check_keras_config(source: porting.Source, facts: dict, spec: ResNetSpec) -> None:
    """A .keras file of tf_impl's model: its config, read as JSON (never deserialized), must compute
    exactly ``spec``; a layer or setting the weights cannot show (a Lambda, a custom class, a ReLU's
    slope) is refused, naming the layer, with or without --check."""
    import zipfile

    if facts.get("kind") != "keras" or facts.get("structure") != "own":
        return
    try:
        with zipfile.ZipFile(source.path) as z:
            config = json.loads(z.read("config.json"))
    except KeyError:
        raise PortError(
            f"{source.path}: the .keras archive has no config.json, so what its model computes is unknown"
        ) from None
    except (ValueError, zipfile.BadZipFile, OSError) as e:
        raise PortError(f"{source.path}: its config.json cannot be read ({e})") from None
    problems = porting.keras_config_problems(config, spec)
    if problems:
        more = (
            f" (and {len(problems) - 1} more difference{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        )
        raise PortError(
            f"{source.path}: its model is not {spec.name}, whose weights it holds: {problems[0]}{more}; nothing was written"
        )


def native_key(source: porting.Source, native: str) -> str:
    """A tensor's name as the source's file spells it: ``layer1.0.bn1.running_var`` in a state_dict."""
    if source.framework is frameworks.PYTORCH and "/" in native:
        module, param = native.rsplit("/", 1)
        return f"{module}.{W.TORCH_NAMES.get(param, param)}"
    return native


def check_out_file(out: Path, force: bool) -> None:
    """--out names a file to write: not a folder, not an existing file (without --force), in a writable folder."""
    if out.is_dir():
        raise PortError(f"--out {out} is a folder; give the path of a .safetensors file to write")
    if out.exists() and not force:
        raise PortError(f"--out {out} exists; pass --force to overwrite it, or choose another path")
    rundir.check_writable(out.parent, "--out")


if __name__ == "__main__":
    sys.exit(main())
