"""The two frameworks, described once: package, names users know, pip extra, checkpoint file.

Everything that needs to talk about "the Keras side" or "the PyTorch side"
(parity workers, compare, bench, diff, the run directory, the training
lifecycle) reads it from here.  Nothing here imports a framework: versions come
from the installed distributions' metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Framework:
    key: str  # short key of worker jobs and bench results: "tf", "torch"
    package: str  # this project's realization: "tf_impl", "torch_impl"
    label: str  # what users call it: "Keras", "PyTorch"
    requires: str  # the module the realization imports
    extra: str  # the pip extra that installs it: pip install 'resnet-port[<extra>]'
    checkpoint: str  # checkpoint file name in a run directory
    versions: tuple[tuple[str, str], ...]  # (distribution names to try, shown as) for the display name

    @property
    def worker(self) -> str:
        return f"{self.package}.worker"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.requires) is not None

    def install_hint(self) -> str:
        return f"{self.requires}, which is not installed: pip install 'resnet-port[{self.extra}]'"

    def display_name(self, versions: dict[str, str] | None = None) -> str:
        """ "Keras 3.15.1 (TensorFlow 2.21.0)" / "PyTorch 2.14.1".

        ``versions`` (e.g. a run's recorded ``runtime``) wins over what is installed
        now, so a run is named after what trained it.
        """
        versions = versions or {}
        found = []
        for dists, shown in self.versions:
            v = versions.get(shown.lower()) or _installed_version(dists.split("|"))
            found.append(v)
        if self.key == "tf":
            keras, tf = found
            return f"Keras {keras or '?'} (TensorFlow {tf or '?'})"
        return f"PyTorch {found[0] or '?'}"


def _installed_version(dists: list[str]) -> str | None:
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


KERAS = Framework(
    key="tf",
    package="tf_impl",
    label="Keras",
    requires="tensorflow",
    extra="tf",
    checkpoint="checkpoint.npz",
    versions=(("keras", "Keras"), ("tensorflow|tensorflow-cpu", "TensorFlow")),
)
PYTORCH = Framework(
    key="torch",
    package="torch_impl",
    label="PyTorch",
    requires="torch",
    extra="torch",
    checkpoint="checkpoint.pt",
    versions=(("torch", "Torch"),),
)

ALL: tuple[Framework, ...] = (KERAS, PYTORCH)
_BY_NAME = {**{f.key: f for f in ALL}, **{f.package: f for f in ALL}}


def get(name: str) -> Framework:
    """The framework called ``name`` (its key "tf"/"torch" or package "tf_impl"/"torch_impl")."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; choose one of: {', '.join(f.key for f in ALL)}") from None


def other(fw: Framework | str) -> Framework:
    """The other one: where a weights file is cross-checked."""
    fw = get(fw) if isinstance(fw, str) else fw
    return PYTORCH if fw is KERAS else KERAS
