"""Network factories of the REINFORCE agent: the default observation encoder, policy and value networks.

Shapes: ``B`` batch, ``D...`` observation shape, ``A`` actions, ``F`` the encoded (flat) observation size,
``P`` the action distribution's ``param_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import keras
import numpy as np

from kerasce.rl.spaces import (
    ActionDistribution,
    DiagGaussian,
    flat_observation_size,
    observation_entries,
    space_from_config,
    space_to_config,
)

__all__ = [
    "AppendLogStd",
    "OneHot",
    "UnflattenObservations",
    "build_encoder",
    "build_mlp",
    "build_policy_network",
    "build_value_network",
    "flat_body",
    "on_flat_observations",
]


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


@keras.saving.register_keras_serializable(package="kerasce")
class OneHot(keras.layers.Layer):
    """``Discrete(n, start)`` states ``[B]`` (any integer or float dtype) -> float32 one-hot ``[B, n]``."""

    def __init__(self, n: int, start: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.n, self.start = int(n), int(start)

    def call(self, states: Any) -> Any:
        index = keras.ops.cast(keras.ops.reshape(states, (-1,)), "int32") - self.start
        return keras.ops.one_hot(index, self.n, dtype="float32")

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, int]:
        return (input_shape[0], self.n)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n": self.n, "start": self.start}


@keras.saving.register_keras_serializable(package="kerasce")
class AppendLogStd(keras.layers.Layer):
    """Gaussian means ``[B, D]`` -> ``[B, 2D]`` = ``[μ, log σ]``, ``log σ`` a trainable ``[D]`` vector (its
    weight ``log_std``) the same for every state: the state-independent head of
    :class:`kerasce.rl.spaces.DiagGaussian`."""

    def __init__(self, log_std_init: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.log_std_init = float(log_std_init)

    def build(self, input_shape: Sequence[int | None]) -> None:
        initializer = keras.initializers.Constant(self.log_std_init)
        self.log_std = self.add_weight(shape=(input_shape[-1],), initializer=initializer, name="log_std")

    def call(self, mean: Any) -> Any:
        log_std = keras.ops.broadcast_to(keras.ops.cast(self.log_std, mean.dtype), keras.ops.shape(mean))
        return keras.ops.concatenate([mean, log_std], axis=-1)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], 2 * input_shape[-1])  # type: ignore[operator]

    def numpy_function(self) -> Callable[[np.ndarray], np.ndarray]:
        """This layer's forward pass in NumPy with the current ``log_std`` (for
        :class:`kerasce.rl.rollout.NumpyPolicy`, the collection's sampler)."""
        log_std = keras.ops.convert_to_numpy(self.log_std).astype(np.float32)
        return lambda mean: np.concatenate([mean, np.broadcast_to(log_std, mean.shape)], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "log_std_init": self.log_std_init}


def build_encoder(observation_space: gymnasium.Space, name: str = "encoder") -> keras.Model:
    """The default observation encoder: named inputs -> ``[B, F]`` float32, what
    :func:`kerasce.rl.spaces.flatten_observations` computes in NumPy.

    One input per entry of :func:`kerasce.rl.spaces.observation_entries` (a ``Dict``'s keys, ``"observations"``
    for a plain space): ``Box`` float32 of its shape, flattened; ``Discrete`` int64 ``[B]``, one-hot. The
    entries are concatenated in that order. A ``Dict``/``Tuple`` space gives a model taking a dict keyed by
    input name; a plain space, a model taking one array. It has no weights.

    Raises:
      ValueError: for an unsupported observation space (see ``observation_entries``).
    """
    inputs: dict[str, Any] = {}
    parts = []
    for input_name, _, space in observation_entries(observation_space):
        if isinstance(space, gymnasium.spaces.Discrete):
            inputs[input_name] = keras.Input((), dtype="int64", name=input_name)
            parts.append(OneHot(int(space.n), int(space.start), name=f"one_hot_{input_name}")(inputs[input_name]))
        else:
            inputs[input_name] = keras.Input(tuple(space.shape or ()), dtype="float32", name=input_name)
            parts.append(keras.layers.Flatten(name=f"flatten_{input_name}")(inputs[input_name]))
    flat = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concatenate")(parts)
    plain = isinstance(observation_space, (gymnasium.spaces.Box, gymnasium.spaces.Discrete))
    return keras.Model(next(iter(inputs.values())) if plain else inputs, flat, name=name)


def _on_encoder(observation_space: gymnasium.Space, body: keras.Sequential, name: str) -> keras.Model:
    """``body`` applied to the encoded observations; ``body`` itself (renamed) for a 1-D ``Box`` space."""
    if isinstance(observation_space, gymnasium.spaces.Box) and len(observation_space.shape) == 1:
        body.name = name
        return body
    encoder = build_encoder(observation_space)
    return keras.Model(encoder.inputs, body(encoder.outputs[0]), name=name)


def build_policy_network(
    observation_space: gymnasium.Space,
    distribution: ActionDistribution,
    hidden_units: Sequence[int] = (32, 32),
    activation: str = "tanh",
    seed: int | None = None,
    name: str = "policy",
) -> keras.Model:
    """The default policy: the encoder, a Dense stack, and the head of ``distribution`` (``[B, P]`` params).

    The stack (:func:`build_mlp`, a layer named ``"body"`` when there is an encoder) ends in ``P =
    distribution.param_size`` units, except for a state-independent ``DiagGaussian``: ``D`` means followed by
    :class:`AppendLogStd`. A state-dependent one has ``2D`` outputs, the log-std half's bias set to
    ``log_std_init``. For a 1-D ``Box`` observation space the model is that stack alone (one unnamed input).

    Raises:
      ValueError: for an unsupported observation space.
    """
    size = flat_observation_size(observation_space)
    if not isinstance(distribution, DiagGaussian):
        body = build_mlp((size,), distribution.param_size, hidden_units, activation, seed, "body")
    elif distribution.state_dependent_std:
        body = build_mlp((size,), distribution.param_size, hidden_units, activation, seed, "body")
        d = distribution.param_size // 2
        body.layers[-1].bias.assign(np.repeat([0.0, distribution.log_std_init], d).astype(np.float32))
    else:
        body = build_mlp((size,), distribution.param_size // 2, hidden_units, activation, seed, "body")
        body.add(AppendLogStd(distribution.log_std_init, name="log_std"))
    return _on_encoder(observation_space, body, name)


def build_value_network(
    observation_space: gymnasium.Space,
    hidden_units: Sequence[int] = (32, 32),
    activation: str = "tanh",
    seed: int | None = None,
    name: str = "value",
) -> keras.Model:
    """The default value network ``V(s)`` ``[B, 1]``: the encoder and a Dense stack (as the policy's)."""
    body = build_mlp((flat_observation_size(observation_space),), 1, hidden_units, activation, seed, "body")
    return _on_encoder(observation_space, body, name)


def flat_body(policy: keras.Model) -> keras.Model:
    """The part of a :func:`build_policy_network` / :func:`build_value_network` model that takes the flat
    ``[B, F]`` observations of :func:`kerasce.rl.spaces.flatten_observations`: its ``"body"`` layer when it
    has an encoder, else the model itself (1-D ``Box`` observations). Collection and training can run it on
    flattened NumPy observations; the whole model (named inputs) is what an export serves."""
    names = {layer.name for layer in policy.layers}
    return policy.get_layer("body") if "body" in names and len(policy.layers) > 1 else policy


@keras.saving.register_keras_serializable(package="kerasce")
class UnflattenObservations(keras.layers.Layer):
    """Flat observations ``[B, F]`` (:func:`kerasce.rl.spaces.flatten_observations`) -> a dict of named inputs,
    one per entry of a ``Dict`` / ``Tuple`` space: a ``Box`` entry float32 of its shape, a ``Discrete`` one its
    int64 state (``start`` included) -- what a model with named inputs (:func:`build_encoder`'s) takes.

    Args:
      observation_space: the ``Dict`` / ``Tuple`` space (or its :func:`kerasce.rl.spaces.space_to_config`).
    """

    def __init__(self, observation_space: Any, **kwargs: Any):
        super().__init__(**kwargs)
        space = space_from_config(observation_space)
        if space is None:
            raise ValueError(f"`observation_space` must be a Dict or Tuple space. Received: {observation_space}")
        self.observation_space = space
        self.entries = observation_entries(space)

    def call(self, flat: Any) -> dict[str, Any]:
        outputs, offset = {}, 0
        for name, _, space in self.entries:
            if isinstance(space, gymnasium.spaces.Discrete):
                width = int(space.n)
                one_hot = flat[:, offset : offset + width]
                # top_k, not keras.ops.argmax: TensorFlow's argmax bitcasts, which TFLite and ONNX do not convert
                state = keras.ops.top_k(one_hot, 1)[1][:, 0]
                outputs[name] = keras.ops.cast(state, "int64") + int(space.start)
            else:
                width = int(np.prod(space.shape or ()))
                outputs[name] = keras.ops.reshape(flat[:, offset : offset + width], (-1, *(space.shape or ())))
            offset += width
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "observation_space": space_to_config(self.observation_space)}


def on_flat_observations(model: keras.Model, observation_space: gymnasium.Space, name: str = "policy") -> keras.Model:
    """``model``, which takes named inputs (one per entry of a ``Dict`` / ``Tuple`` ``observation_space``), as a
    model of flat observations ``[B, F]``: what collection and training feed it."""
    flat = keras.Input((flat_observation_size(observation_space),), name="observations")
    return keras.Model(flat, model(UnflattenObservations(observation_space)(flat)), name=name)
