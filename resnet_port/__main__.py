"""``resnet-port COMMAND ...`` (or ``python -m resnet_port COMMAND ...``): one entry point for the neutral tools.

Each command is also its own module, ``python -m resnet_port.COMMAND``, with the same flags.
"""

from __future__ import annotations

import importlib
import sys

#: command: (module, what it does)
COMMANDS = {
    "port": (
        "port",
        "a model you have (Keras, torchvision, timm, keras-hub, the CIFAR repos, a run) -> a neutral weights file, --check proves it",
    ),
    "export": (
        "export",
        "a neutral weights file -> .keras, torch.export, ONNX, torchvision, timm, keras-hub files, each reloaded and checked",
    ),
    "compare": (
        "compare",
        "runs of both frameworks side by side: table, plots, each run's weights in the other framework",
    ),
    "diff": ("diff", "one weights file run in both frameworks, layer by layer"),
    "bench": ("bench", "training-step throughput of both frameworks, interleaved"),
    "summary": ("summary", "the architecture: layers, shapes, parameter counts"),
    "data": ("synthetic", "write small learnable data in the CIFAR-100 format, to try the tool without CIFAR-100"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: resnet-port COMMAND [ARGS...]   (COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += [
        "",
        "training and evaluation are each framework's: python -m tf_impl.train, python -m torch_impl.train --amp,",
        "python -m tf_impl.evaluate, python -m torch_impl.evaluate",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)} (resnet-port --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"resnet_port.{COMMANDS[name][0]}")
    sys.argv = [f"resnet-port {name}", *rest]
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
