"""resnet-port: one ResNet/CIFAR-100 recipe, written once, realized in Keras and PyTorch.

This package is the framework-neutral part: it imports neither TensorFlow nor
PyTorch.  ``tf_impl`` and ``torch_impl`` build on it; commands that need both
frameworks run each in its own process.
"""

__version__ = "0.1.0"
