"""What every library module is made of: a :class:`Vocabulary` (how the library names a ResNet's parts)
and :class:`PortError` (a source that cannot be ported; the message says what was found and what to do).

Nothing here imports a framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class PortError(ValueError):
    """A source that cannot be ported as asked; the message says what was found and what to do."""


@dataclass(frozen=True)
class Vocabulary:
    """How one library names the parts of its ResNet: the data of the one reading rule (``porting.place``).

    A layer's native name is split at ``separator`` into segments.  A first segment
    that ``stage`` matches starts a block path: its number plus ``stage_offset`` is
    the spec's stage, the next segment (matched by ``block``) the block; then a
    segment in ``shortcut`` marks the projection branch, one in ``left`` the residual
    branch (or, when ``left`` is empty, the layer sits in the block itself, one
    segment).  A first segment in ``head`` (alone) is the classifier; one in ``stem``,
    the stem.  Within a part, layers of one kind take the spec's names in natural order
    of the rest of their path (``conv1`` < ``conv2``, ``0`` < ``3``, ``1_conv`` <
    ``2_conv``), so the order a file stores them in does not matter; in the stem and in a
    ``left`` branch, the order of ``stem``'s / ``left``'s entries comes first (timm's deep
    stem: ``conv1.1``, ``conv1.4``, then ``bn1``; keras.applications V2: ``preact_bn``
    before ``1_bn``).  A name in ``head_norm`` is the final BatchNorm of a pre-activation
    network.
    """

    library: str  # who defines the model, as the CLI says it
    separator: str
    stage: str  # regex with the stage's number as group 1
    block: str  # regex with the block's number as group 1
    shortcut: tuple[str, ...]
    head: tuple[str, ...]
    stem: tuple[str, ...]
    left: tuple[str, ...] = ()
    stage_offset: int = 0
    block_offset: int = 0  # added to the block's number (keras.applications counts blocks from 1)
    conventions: str = "pytorch"  # the padding and BatchNorm conventions its layers follow
    block_output: str = ""  # appended to a block's path: the layer whose output is the block's (a module's own, or keras-hub's ``_out``)
    head_norm: tuple[str, ...] = ()  # the name of a pre-activation network's last BatchNorm, before the pooling
    # (regex, replacement) applied to a native name before it is split: a library whose block path is not
    # two segments (timm's resnetv2: ``stages.0.blocks.1.conv1`` read as ``stages0.1.conv1``)
    rewrite: tuple[tuple[str, str], ...] = ()
    # its BatchNorm modules apply their ReLU too (timm's BatchNormAct2d): a hooked output is the ReLU's
    fused_norm_act: bool = False
    # how the library names each canonical part, for writing its own files (``native_name``): the
    # block's path ({stage} and {block} in the library's numbering), then per-layer names
    names: tuple[tuple[str, str], ...] = ()
    # the names a shortcut's layers take where the shortcut pools first (ResNet-D: ``downsample.1`` and
    # ``.2`` after timm's parameter-free ``downsample.0`` AvgPool2d); none where the library has no such shortcut
    pooled_names: tuple[tuple[str, str], ...] = ()

    def placed_name(self, native: str) -> str:
        """``native`` as the placing rule reads it (after :attr:`rewrite`)."""
        for pattern, replacement in self.rewrite:
            native = re.sub(pattern, replacement, native)
        return native

    def block_path(self, stage: int, block: int) -> str:
        """The library's name of block ``block`` of stage ``stage`` (the spec's numbering)."""
        return dict(self.names)["block"].format(stage=stage - self.stage_offset, block=block - self.block_offset)

    def native_name(self, layer: str, pooled: bool = False) -> str:
        """The library's name for the canonical ``layer`` (``layer2.0.shortcut.conv`` -> ``layer2.0.downsample.0``);
        ``pooled``: the block's shortcut pools before its convolution (ResNet-D)."""
        names = dict(self.names)
        if pooled:
            if not self.pooled_names:
                raise PortError(f"{self.library} has no block whose shortcut pools before its convolution")
            names.update(self.pooled_names)
        if layer in names:
            return names[layer]
        m = re.match(r"^layer(\d+)\.(\d+)\.(.+)$", layer)
        if not m or m.group(3) not in names:
            raise PortError(f"{self.library} has no name for {layer}")
        return f"{self.block_path(int(m.group(1)), int(m.group(2)))}{self.separator}{names[m.group(3)]}"


def no_package_defines(library: str, spec, src) -> PortError:
    """The error for a repo's checkpoint whose class no installed package provides (``--check`` needs it)."""
    return PortError(
        f"no installed package defines the class of {src} ({library}'s {spec.name}): give your own model class, "
        "--source-class FILE.py:NAME (a class or function that builds it; it is your code, run at your request)"
    )


def keras_weighted_layers(layers, label: str) -> list[tuple[str, str, dict]]:
    """(layer name, kind, params) of every Keras layer with weights: conv, BatchNorm, dense; any other
    layer holding weights is no ResNet's."""
    import numpy as np
    from keras import layers as L

    out = []
    for layer in layers:
        if isinstance(layer, L.Conv2D):
            kind, names = "conv2d", ("kernel", "bias")
        elif isinstance(layer, L.BatchNormalization):
            kind, names = "batchnorm", ("gamma", "beta", "moving_mean", "moving_variance")
        elif isinstance(layer, L.Dense):
            kind, names = "dense", ("kernel", "bias")
        elif layer.weights:
            raise PortError(
                f"{label}: layer {layer.name} ({type(layer).__name__}) holds weights but is no conv, BatchNorm or dense layer of a ResNet"
            )
        else:
            continue
        params = {n: np.asarray(getattr(layer, n)) for n in names if getattr(layer, n, None) is not None}
        out.append((layer.name, kind, params))
    return out


def h5_layout(path) -> dict[str, tuple]:
    """{HDF5 dataset path: shape} of a Keras weights file (``.weights.h5``)."""
    import h5py

    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda n, item: out.__setitem__(n, item.shape) if isinstance(item, h5py.Dataset) else None)
    return out


def weights_layout(net, workdir) -> dict[str, tuple]:
    """{HDF5 dataset path: shape} of what ``net.save_weights`` writes: the layout a ``.weights.h5`` of ``net``
    has (Keras 3 names its layers by class there, in the model's order, so the layout is the network's)."""
    from pathlib import Path

    target = Path(workdir) / f"layout_{id(net)}.weights.h5"
    net.save_weights(target)
    try:
        return h5_layout(target)
    finally:
        target.unlink()
