"""Load one exported file with nothing but its own library and numpy, and run it.

``python -m resnet_port.reload FORMAT PATH INPUTS OUT META BATCHES`` (``resnet_port.export``
runs it in a fresh process): this project's packages are dropped from the process and
blocked before the library is imported, so the file must load on its own, as it would on a
machine without resnet-port.  ``INPUTS`` is JSON ``{size: images.npy}``; the logits of every
size at every batch size in ``BATCHES`` (comma-separated) are written to ``OUT`` (.npz) under
``"SIZE/N"``, with what loaded the file (``classes``) and, for ONNX, the input's shape.  How each format is
loaded is its module's ``reload`` (:mod:`resnet_port.formats`, :mod:`resnet_port.libraries`).
"""

import importlib.abc
import json
import sys

PROJECT = ("resnet_port", "tf_impl", "torch_impl")


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PROJECT:
            raise ImportError(f"{name} is blocked: the export must load without resnet-port")


def _isolate() -> None:
    """Forget this project's modules (``python -m`` imported the package to find this one) and block them."""
    for name in [m for m in sys.modules if m.split(".")[0] in PROJECT and m != __name__]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Blocked())


def main(argv: list[str], library=None) -> None:
    """``library``: the format's module, of :mod:`resnet_port.formats` or :mod:`resnet_port.libraries` (imported
    before the project was blocked)."""
    import numpy as np

    fmt, path, inputs, out, meta, batches = argv
    meta = json.loads(meta)
    batches = [int(n) for n in batches.split(",")]
    xs = {size: np.load(f) for size, f in json.loads(inputs).items()}
    res = {}

    def each(run, prefix=""):
        for size, x in xs.items():
            for n in batches:
                res[f"{prefix}{size}/{n}"] = run(x[:n])

    def run_torch(module):
        import torch

        def run(x):
            with torch.no_grad():
                return module(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()

        each(run)
        res["classes"] = np.array(f"{type(module).__module__}.{type(module).__qualname__}")

    if getattr(library, "reload", None) is None:
        raise SystemExit(f"no format or library {fmt!r}")
    if hasattr(library, "SIZED"):  # one of this project's formats (resnet_port.formats): (run, facts)
        run, facts = library.reload(path, meta)
        each(run)
        res.update(facts)
    elif library.FRAMEWORK == "torch":
        run_torch(library.reload(path, meta))
    else:
        for prefix, model in library.reload(path, meta):
            each(lambda x, model=model: np.asarray(model(x, training=False)), prefix)
        res["classes"] = np.array(type(model).__module__.split(".")[0] + "." + type(model).__name__)
    np.savez(out, **res)


if __name__ == "__main__":
    from resnet_port import formats, libraries  # the format's module, then nothing more of this project

    try:
        _library = libraries.get(sys.argv[1])
    except KeyError:
        _library = formats.get(sys.argv[1])
    _isolate()
    main(sys.argv[1:], _library)
