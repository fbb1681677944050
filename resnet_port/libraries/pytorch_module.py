"""Plain PyTorch: a self-contained module file and its state_dict, for any network of the spec.

Export writes ``pytorch-module/model.py`` (``torch_impl/standalone.py``, which imports nothing but
torch, followed by the network's description as data) and ``pytorch-module/state_dict.pth`` (the
weights under the spec's layer names, as ``torch_impl``'s model holds them).  It is the PyTorch form
of networks no PyTorch library defines (keras.applications' ResNet50/101/152, the post's ResNets)
and of every other one.  Reloaded by importing ``model.py`` from the folder, in a process where this
project cannot be imported, and loading the state_dict strictly.  ``port`` reads the state_dict back
as this project's own (its names are the spec's).
"""

from __future__ import annotations

from pathlib import Path

NAME = "pytorch-module"
FRAMEWORK = "torch"
FILE = "pytorch-module"  # a folder
SHOWN = "pytorch-module/"
VOCABULARY = None  # the spec's own layer names
MODELS: dict = {}
EVERY_VARIANT = True  # not a library's own network: written for every variant


def defines(spec) -> bool:
    return True


def _layer(s) -> list:
    """``[name, kind, settings]`` of a spec layer, in the terms of standalone.py's layer classes."""
    if s.kind == "conv2d":
        settings = dict(
            cin=s.in_channels,
            cout=s.filters,
            kernel=s.kernel_size,
            stride=s.stride,
            padding=s.padding,
            bias=s.use_bias,
            groups=s.groups,
        )
        return [s.name, "conv", settings]
    if s.kind == "batchnorm":
        settings = dict(channels=s.channels, eps=s.epsilon, momentum=s.torch_momentum)
        return [s.name, "bn", settings | ({} if s.unbiased_variance else {"biased_update": True})]
    if s.kind in ("maxpool", "avgpool"):
        settings = dict(kind=s.kind[:3], size=s.pool_size, stride=s.stride, padding=s.padding)
        if s.kind == "maxpool" and s.pad_with == "zero":
            settings["zero_pad"] = True
        if s.kind == "avgpool" and s.ceil_mode:
            settings["ceil_mode"] = True
        return [s.name, "pool", settings]
    if s.kind == "dense":
        return [s.name, "fc", dict(in_features=s.in_features, out_features=s.units)]
    return [s.name, {"relu": "relu", "add": "add", "global_avg_pool": "gap"}[s.kind], {}]


def architecture(spec) -> dict:
    """The network as standalone.py's ``ResNet`` takes it."""
    return {
        "stem": [_layer(s) for s in spec.stem],
        "blocks": [
            {
                "pre": [_layer(s) for s in b.pre],
                "residual": [_layer(s) for s in b.residual],
                "shortcut": [_layer(s) for s in b.shortcut],
                "shortcut_from": b.shortcut_from,
                "add": _layer(b.add),
                "post": [_layer(s) for s in b.post],
            }
            for b in spec.blocks
        ],
        "head": [_layer(s) for s in (*spec.head, spec.avgpool, spec.fc)],
    }


def _literal(arch: dict) -> str:
    """``arch`` as a Python literal a reader can follow: one layer per line, one block after another."""

    def layers(items, indent):
        if not items:
            return "[]"
        pad = " " * indent
        return "[\n" + "".join(f"{pad}    {item!r},\n" for item in items) + pad + "]"

    lines = ["{", f'    "stem": {layers(arch["stem"], 4)},', '    "blocks": [']
    for block in arch["blocks"]:
        lines.append("        {")
        for part in ("pre", "residual", "shortcut"):
            lines.append(f'            "{part}": {layers(block[part], 12)},')
        lines.append(f'            "shortcut_from": {block["shortcut_from"]!r},')
        lines.append(f'            "add": {block["add"]!r},')
        lines.append(f'            "post": {layers(block["post"], 12)},')
        lines.append("        },")
    lines += ["    ],", f'    "head": {layers(arch["head"], 4)},', "}"]
    return "\n".join(lines)


def source(spec, weights_path: str) -> str:
    """model.py: the standalone module's text, then ``ARCHITECTURE`` and ``resnet()``."""
    import torch_impl.standalone as standalone

    text = Path(standalone.__file__).read_text()
    described = _literal(architecture(spec))
    return (
        f"# {spec.name}, written by resnet-port's export from {Path(weights_path).name}: plain PyTorch, no import of resnet-port.\n"
        + text
        + f"\n\n#: {spec.name}\nARCHITECTURE = {described}\n\n\n"
        + f'def resnet() -> ResNet:\n    """{spec.name}: load ``state_dict.pth`` into it (``strict=True``)."""\n'
        + "    return ResNet(ARCHITECTURE)\n"
    )


def write(state: dict, spec, out: str, weights_path: str) -> None:
    import torch

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(source(spec, weights_path))
    torch.save(state, folder / "state_dict.pth")
    for f in folder.iterdir():
        f.chmod(0o644)


def reload(path: str, meta: dict):
    """``model.py`` imported from the folder (nothing else of this project), the state_dict loaded strictly."""
    import importlib.util

    import torch

    found = importlib.util.spec_from_file_location("model", Path(path) / "model.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    net = module.resnet()
    net.load_state_dict(torch.load(Path(path) / "state_dict.pth", map_location="cpu", weights_only=True), strict=True)
    return net.eval()
