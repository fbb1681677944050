"""This project's own files: ``tf_impl``'s ``.keras`` / ``.weights.h5``, ``torch_impl``'s state_dicts,
run directories' checkpoints and the neutral ``.safetensors``.

Their layers carry the spec's canonical names already, so no vocabulary places them; a
reader knows one by its stem (``stem.conv``), and ``--check`` runs it in the realization
that wrote it (``tf_impl.model.build_model`` / ``torch_impl.model.build_model``).
"""

from __future__ import annotations

NAME = "resnet-port"
FRAMEWORK = None  # either: the file's own
VOCABULARY = None


def holds_own_names(natives) -> bool:
    """Whether layer names (``natives``) are this project's canonical ones: a ``stem.`` and ``layer1.0.``
    (timm's resnetv2 has a ``stem.conv`` too, but ``stages.0.blocks.0``; torchvision ``layer1.0`` but
    ``conv1``)."""
    natives = list(natives)
    return any(n.startswith("stem.") for n in natives) and any(n.startswith("layer1.0.") for n in natives)


def defines(spec) -> bool:  # every registered variant is this project's
    return True
