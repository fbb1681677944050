"""Deliberately wrong Keras ports of the spec: what trusting Keras' defaults gives.

Only to prove that the parity checks catch them (the tests); nothing trains
with them, and ``tf_impl.objective`` knows nothing about them.
"""

from __future__ import annotations

import dataclasses

import keras

from resnet_port.recipe import Recipe, SGDSpec

from .objective import make_schedule

#: name -> what it gets wrong
VARIANTS = {
    "keras-sgd": "Keras' built-in SGD (the rate inside the velocity: v = m v - lr g) and its decoupled weight_decay, "
    "for the spec's PyTorch-form SGD with the decay coupled into the gradient",
}


def optimizer(variant: str, recipe: Recipe, schedule):
    """(optimizer, objective) of a naive variant: what ``tf_impl.objective.make_optimizer`` and the recipe's objective would be."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown naive variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    spec = recipe.optimizer
    if not isinstance(spec, SGDSpec):
        raise ValueError(f"{variant} is a port of the SGD recipe, not of {recipe.name!r}")
    sgd = keras.optimizers.SGD(
        learning_rate=make_schedule(schedule),
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=recipe.objective.l2,
    )
    return sgd, dataclasses.replace(recipe.objective, l2=0.0)  # the decay moved into the optimizer
