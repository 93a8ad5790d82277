"""Network factories of the REINFORCE agent: the default policy and value networks.

Shapes: ``B`` batch, ``D...`` observation shape, ``A`` actions.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

__all__ = ["build_mlp"]


def build_mlp(
    input_shape: Sequence[int],
    outputs: int,
    hidden_units: Sequence[int] = (32, 32),
    activation: str = "tanh",
    seed: int | None = None,
    name: str = "policy",
) -> keras.Sequential:
    """A plain Dense stack ``[B, D...] -> [B, outputs]`` (flattened input, float32 output layer).

    Args:
      input_shape: observation shape ``D...``.
      outputs: size of the linear output layer (``A`` logits, or 1 for a value head).
      hidden_units: widths of the hidden layers.
      activation: activation of the hidden layers.
      seed: seeds the Glorot initialisers (layer ``i`` uses ``seed + i``) for a reproducible network.
      name: model name.

    Returns:
      An uncompiled ``keras.Sequential``.
    """

    def init(i):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)

    layers: list[keras.layers.Layer] = [keras.Input(tuple(input_shape))]
    if len(input_shape) != 1:
        layers.append(keras.layers.Flatten())
    for i, units in enumerate(hidden_units):
        layers.append(keras.layers.Dense(units, activation=activation, kernel_initializer=init(i)))
    layers.append(keras.layers.Dense(outputs, kernel_initializer=init(len(hidden_units)), dtype="float32"))
    return keras.Sequential(layers, name=name)
