"""PyTorch realization of the resnet-port spec, numerically equal to the Keras reference."""
