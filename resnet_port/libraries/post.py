"""The post's files: its Keras 2 SavedModel, ``.h5`` weights and Keras 3 ``.keras`` (subclassed models).

The post's model is made of nested ``keras.Model`` subclasses; its files name layers by the
attributes that hold them (``layer2/layer-0/left/layer-3``), not by a flat vocabulary, so
they are read by their object structure (``tf_impl.port.read_savedmodel``,
``read_keras2_h5``, the Keras 3 reader) with the attribute names below, and ``--check``
runs them in the post's own classes (``tf_impl.seed_model``).
"""

from __future__ import annotations

import re

NAME = "post"
FRAMEWORK = "tf"
VOCABULARY = None

#: the post's names for the parts of its model (attribute names); matched, never listed per key
STEM_NAMES = ("pre", "stem")
STAGE_PATTERN = re.compile(r"^(?:layer|stage)(\d+)$")
LEFT_NAMES = ("left", "residual")
SHORTCUT_NAMES = ("downSample", "downsample", "shortcut")
HEAD_NAMES = ("fc", "dense", "classifier", "head")


def block_part(name: str) -> str | None:
    """'left' or 'shortcut' for a block attribute's name in the post's vocabulary, else None."""
    return "left" if name in LEFT_NAMES else "shortcut" if name in SHORTCUT_NAMES else None


def defines(spec) -> bool:
    """The post's classes build its ResNet18/34 (the seed variants)."""
    return spec.block_type == "basic" and spec.stem_type == "seed"


def model(spec, src=None):
    """The post's own model of ``spec`` (its classes, rebuilt in ``tf_impl.seed_model``)."""
    from tf_impl import seed_model

    return seed_model.build(spec)
