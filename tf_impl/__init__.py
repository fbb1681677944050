"""Keras 3 (TensorFlow) realization of the resnet-port spec: the reference implementation."""

import os as _os

# Before TensorFlow is first imported: quiet its C++ start-up banner and enable
# oneDNN, which it leaves off on some AMD CPUs (~45% faster Keras measured there).
# A user's own setting wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
