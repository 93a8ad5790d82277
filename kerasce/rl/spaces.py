"""One action distribution per gymnasium action space, and the observation layout of the policy network.

Shapes: ``B`` batch (``N`` envs during collection), ``P`` the policy head's width (``param_size``), ``A``
actions of a ``Discrete`` space, ``K`` dimensions of a ``MultiDiscrete`` / ``MultiBinary`` space, ``D`` the
size of a ``Box`` action, ``F`` the flat observation size.

The policy network outputs ``params`` ``[B, P]``; a distribution reads them. Each −log π(a|s) is a loss of
`kerasce.losses`, so the REINFORCE loss is that loss weighted by the return:

=================  ====================  ==========================  =================================================
action space       distribution          ``params``                  −log π(a | s)
=================  ====================  ==========================  =================================================
``Discrete(A)``    `Categorical`         ``[B, A]`` logits           ``softmax_cross_entropy(a, z)``
``MultiBinary(K)`` `Bernoulli`           ``[B, K]`` logits           ``K · sigmoid_cross_entropy(a, z)`` (sum over bits)
``MultiDiscrete``  `MultiCategorical`    ``[B, Σ nvec]`` logits      ``Σ_k softmax_cross_entropy(a_k, z_k)``
``Box(D)``         `DiagGaussian`        ``[B, 2D]`` mean, log σ     ``gaussian_nll(u, μ, log σ)`` (+ the tanh term)
=================  ====================  ==========================  =================================================

Each distribution has the training-graph methods (``keras.ops``: `neg_log_prob`, `log_prob`, `entropy`,
`mode`, `sample`, `policy_gradient_loss`) and the NumPy twins the collection sampler calls on the output of
a NumPy copy of the network (`np_sample`, `np_mode`). ``sample`` returns the *raw* action, the one
``log_prob`` takes and a rollout stores (for ``Box``: the Gaussian draw ``u`` before clipping or ``tanh``);
`to_env` / `np_to_env` turn raw actions into what ``env.step`` takes (``start`` offsets added, ``Box``
bounds applied, the space's dtype). ``mode`` returns env actions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from kerasce.losses import gaussian_entropy, gaussian_nll, sigmoid_cross_entropy, softmax_cross_entropy, softmax_entropy
from kerasce.rl.rollout import mask_logits, sample_actions

__all__ = [
    "ACTION_MASK_KEY",
    "SUPPORTED_ACTION_SPACES",
    "SUPPORTED_OBSERVATION_SPACES",
    "ActionDistribution",
    "Bernoulli",
    "Categorical",
    "DiagGaussian",
    "MultiCategorical",
    "action_distribution",
    "flat_observation_size",
    "flatten_observations",
    "observation_entries",
    "space_from_config",
    "space_to_config",
]

SUPPORTED_ACTION_SPACES = ("Discrete", "MultiBinary", "MultiDiscrete", "Box")
SUPPORTED_OBSERVATION_SPACES = ("Box", "Discrete", "Dict", "Tuple")
ACTION_MASK_KEY = "action_mask"
_LOG_2 = math.log(2.0)


class ActionDistribution:
    """The interface every distribution implements (see the module docstring for the layout)."""

    param_size: int
    action_shape: tuple[int, ...]  # the raw action's shape, per example
    action_dtype: Any  # the raw action's NumPy dtype
    supports_mask = False

    def neg_log_prob(self, params: Any, actions: Any) -> Any:
        """``[B, P]``, raw actions -> ``[B]`` ``−log π(a | s)``: the kerasce loss of the taken action."""
        raise NotImplementedError

    def log_prob(self, params: Any, actions: Any) -> Any:
        """``[B]`` ``log π(a | s)`` of raw actions (``-neg_log_prob``)."""
        return -self.neg_log_prob(params, actions)

    def entropy(self, params: Any) -> Any:
        """``[B]`` entropy in nats (the entropy bonus)."""
        raise NotImplementedError

    def mode(self, params: Any) -> Any:
        """The greedy action, in the env's format."""
        return self.to_env(self.raw_mode(params))

    def raw_mode(self, params: Any) -> Any:
        raise NotImplementedError

    def sample(self, params: Any, seed: Any = None) -> Any:
        """One raw action per row. ``seed``: an int or a ``keras.random.SeedGenerator`` (``keras.random``), or
        None: TensorFlow's stateful random ops, a new draw at every call of a traced function (what an export's
        ``sample`` signature needs: TFLite and tf2onnx convert them, not ``keras.random``'s stateless ops)."""
        raise NotImplementedError

    def to_env(self, actions: Any) -> Any:
        """Raw actions -> the env's format (``keras.ops``)."""
        return actions

    def np_to_env(self, actions: np.ndarray) -> np.ndarray:
        """Raw actions -> the env's format (NumPy)."""
        return actions

    def np_sample(self, params: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None) -> np.ndarray:
        """NumPy: one raw action per row of ``params`` ``[N, P]``."""
        raise NotImplementedError

    def np_mode(self, params: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """NumPy: the greedy env action per row of ``params`` ``[N, P]``."""
        raise NotImplementedError

    def mask_params(self, params: Any, mask: Any) -> Any:
        """``params`` with invalid actions (``mask`` 0/False, ``[B, P]``) given probability 0."""
        self.refuse_mask(mask)
        return params

    def refuse_mask(self, mask: Any) -> None:
        """Raise unless ``mask`` is None or the distribution has masks (`supports_mask`)."""
        if mask is None or self.supports_mask:
            return
        raise ValueError(
            f"`action_mask` must be None for a {type(self).__name__} distribution (masks exist for Categorical "
            f"and MultiCategorical). Received: action_mask of shape {np.shape(mask)}"
        )

    def policy_gradient_loss(self, params: Any, actions: Any, returns: Any) -> Any:
        """``[B]`` REINFORCE loss ``G · (−log π(a | s))``, ``G`` a constant weight (``stop_gradient``).

        Raises:
          ValueError: if ``returns`` is not one value per step (``[B]``).
        """
        nll = self.neg_log_prob(params, actions)
        returns = keras.ops.convert_to_tensor(returns)
        if len(returns.shape) != 1:
            raise ValueError(f"`returns` must have shape [B] (one per step). Received: returns.shape={returns.shape}")
        return keras.ops.stop_gradient(keras.ops.cast(returns, nll.dtype)) * nll


def _argmax(x: Any) -> Any:
    """int64 argmax over the last axis, as ``top_k``: TensorFlow's ``keras.ops.argmax`` bitcasts (``BitwiseAnd``),
    which neither TFLite nor ONNX converts."""
    return keras.ops.cast(keras.ops.top_k(x, 1)[1][..., 0], "int64")


def _categorical(logits: Any, seed: Any) -> Any:
    """One class id ``[B]`` int64 per row of ``logits`` ``[B, A]`` (see `ActionDistribution.sample` for ``seed``)."""
    logits = keras.ops.cast(logits, "float32")
    if seed is None:
        return tf.random.categorical(logits, 1, dtype=tf.int64)[:, 0]
    return keras.random.categorical(logits, 1, dtype="int64", seed=seed)[:, 0]


def _uniform(shape: Any, seed: Any) -> Any:
    return tf.random.uniform(shape) if seed is None else keras.random.uniform(shape, seed=seed)


def _normal(shape: Any, seed: Any) -> Any:
    return tf.random.normal(shape) if seed is None else keras.random.normal(shape, seed=seed)


def _masked(logits: Any, mask: Any) -> Any:
    """float32 ``logits`` with ``-inf`` where ``mask`` is 0/False."""
    logits = keras.ops.cast(logits, "float32")
    return keras.ops.where(keras.ops.cast(mask, "bool"), logits, keras.ops.full_like(logits, -np.inf))


class Categorical(ActionDistribution):
    """``Discrete(A, start)``: a softmax over ``A`` logits; raw actions are ``0..A-1``, env actions add ``start``."""

    supports_mask = True
    action_dtype = np.int64
    action_shape = ()

    def __init__(self, n: int, start: int = 0):
        self.param_size, self.start = int(n), int(start)

    def neg_log_prob(self, params, actions):
        return softmax_cross_entropy(keras.ops.cast(actions, "int64"), params)

    def entropy(self, params):
        return softmax_entropy(params)

    def raw_mode(self, params):
        return _argmax(params)

    def sample(self, params, seed=None):
        return _categorical(params, seed)

    def to_env(self, actions):
        return actions + self.start

    def np_to_env(self, actions):
        return actions + self.start

    def mask_params(self, params, mask):
        return _masked(params, mask)

    def np_sample(self, params, rng, mask=None):
        return sample_actions(params, rng, mask)

    def np_mode(self, params, mask=None):
        return np.argmax(mask_logits(params, mask), axis=-1) + self.start


class Bernoulli(ActionDistribution):
    """``MultiBinary(K)``: ``K`` independent bits, bit ``k`` is 1 with probability ``sigmoid(z_k)``."""

    action_dtype = np.int64

    def __init__(self, n: int):
        self.param_size = int(n)
        self.action_shape = (self.param_size,)

    def neg_log_prob(self, params, actions):
        # sigmoid_cross_entropy averages over the K bits; log π sums them.
        return sigmoid_cross_entropy(keras.ops.cast(actions, "float32"), params) * float(self.param_size)

    def entropy(self, params):
        # H(σ(z)) = softplus(z) - z σ(z) per bit (from log σ = -softplus(-z), log(1 - σ) = -softplus(z)).
        z = keras.ops.cast(params, "float32")
        return keras.ops.sum(keras.ops.softplus(z) - z * keras.ops.sigmoid(z), axis=-1)

    def raw_mode(self, params):
        return keras.ops.cast(params > 0, "int64")

    def sample(self, params, seed=None):
        u = _uniform(keras.ops.shape(params), seed)
        return keras.ops.cast(u < keras.ops.sigmoid(keras.ops.cast(params, "float32")), "int64")

    def to_env(self, actions):
        return keras.ops.cast(actions, "int8")

    def np_to_env(self, actions):
        return actions.astype(np.int8)

    def np_sample(self, params, rng, mask=None):
        self.refuse_mask(mask)
        p = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(params, np.float64)))  # sigmoid, stable for large |z|
        return (rng.random(p.shape) < p).astype(np.int64)

    def np_mode(self, params, mask=None):
        self.refuse_mask(mask)
        return (np.asarray(params) > 0).astype(np.int8)


class MultiCategorical(ActionDistribution):
    """``MultiDiscrete(nvec, start)``: one independent softmax per dimension over ``nvec[k]`` logits.

    ``params`` ``[B, Σ nvec]`` are the ``K`` logit blocks side by side (the order of ``nvec``); a mask has the
    same layout. A dimension with ``nvec[k] = 1`` has one choice: log-probability 0, entropy 0.
    """

    supports_mask = True
    action_dtype = np.int64

    def __init__(self, nvec: Sequence[int], start: Sequence[int] | None = None):
        self.nvec = [int(n) for n in nvec]
        self.start = np.zeros(len(self.nvec), np.int64) if start is None else np.asarray(start, np.int64)
        self.param_size = int(sum(self.nvec))
        self.action_shape = (len(self.nvec),)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)]).astype(int)

    def _blocks(self, params):
        return [(k, params[:, self.offsets[k] : self.offsets[k + 1]]) for k in range(len(self.nvec))]

    def neg_log_prob(self, params, actions):
        actions = keras.ops.cast(actions, "int64")
        terms = [softmax_cross_entropy(actions[:, k], z) for k, z in self._blocks(params) if self.nvec[k] > 1]
        return sum(terms[1:], terms[0]) if terms else keras.ops.zeros_like(params[:, 0])

    def entropy(self, params):
        return sum((softmax_entropy(z) for _, z in self._blocks(params)), keras.ops.zeros_like(params[:, 0]))

    def raw_mode(self, params):
        return keras.ops.stack([_argmax(z) for _, z in self._blocks(params)], axis=-1)

    def sample(self, params, seed=None):
        # an int seed gives each dimension its own stream; a SeedGenerator (or TF's state) advances per draw
        draws = [_categorical(z, seed + k if isinstance(seed, int) else seed) for k, z in self._blocks(params)]
        return keras.ops.stack(draws, axis=-1)

    def to_env(self, actions):
        return actions + keras.ops.convert_to_tensor(self.start)

    def np_to_env(self, actions):
        return actions + self.start

    def mask_params(self, params, mask):
        return _masked(params, mask)

    def np_sample(self, params, rng, mask=None):
        masks = [None] * len(self.nvec) if mask is None else [m for _, m in self._blocks(np.asarray(mask))]
        return np.stack([sample_actions(z, rng, m) for (_, z), m in zip(self._blocks(params), masks)], axis=-1)

    def np_mode(self, params, mask=None):
        params = params if mask is None else mask_logits(params, mask)
        return np.stack([np.argmax(z, axis=-1) for _, z in self._blocks(params)], axis=-1) + self.start


class DiagGaussian(ActionDistribution):
    r"""``Box(low, high, (D,))``: a diagonal Gaussian over a raw action ``u``; ``params = [μ, log σ]`` ``[B, 2D]``.

    ``bounds`` says how ``u`` becomes the env action ``a``:

    * ``"clip"`` (default): ``a = clip(u, low, high)``; ``log π`` is the Gaussian log-density of ``u``,
      ``-gaussian_nll(u, μ, log σ)``, exactly (Stable-Baselines3's A2C/PPO default). The loss is the kerasce
      loss unmodified, the entropy has its closed form, and the mean may sit beyond a bound to keep the
      action there. Also for unbounded spaces.
    * ``"tanh"``: ``a = low + (tanh(u) + 1)(high - low) / 2``, the density of the squashed action::

          log π(a) = log N(u; μ, σ) - Σ_d log(1 - tanh²(u_d)) - Σ_d log((high_d - low_d) / 2)

      with ``log(1 - tanh² u) = 2 (log 2 - u - softplus(-2u))`` (finite for any ``u``). Needs finite bounds.
      `entropy` is then the entropy of the Gaussian of ``u`` (the squashed one has no closed form).

    The greedy action is ``a`` at ``u = μ``. `state_dependent_std` and `log_std_init` tell the network
    builder how to produce ``log σ``: a trainable ``[D]`` vector (default) or a second head on the features.
    """

    action_dtype = np.float32

    def __init__(
        self,
        low: Any,
        high: Any,
        bounds: str = "clip",
        state_dependent_std: bool = False,
        log_std_init: float = 0.0,
    ):
        self.low, self.high = np.asarray(low, np.float32).reshape(-1), np.asarray(high, np.float32).reshape(-1)
        self.env_shape = np.shape(low)
        if bounds not in ("clip", "tanh"):
            raise ValueError(f"`bounds` must be one of ('clip', 'tanh'). Received: bounds={bounds!r}")
        if bounds == "tanh" and not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError(
                f"`bounds` must be 'clip' for a Box with infinite bounds. Received: bounds='tanh' with "
                f"low={self.low}, high={self.high}"
            )
        self.bounds = bounds
        self.state_dependent_std, self.log_std_init = bool(state_dependent_std), float(log_std_init)
        self.action_shape = (self.low.size,)
        self.param_size = 2 * self.low.size
        half_range = (self.high.astype(np.float64) - self.low) / 2.0
        self.log_half_range = float(np.sum(np.log(half_range))) if bounds == "tanh" else 0.0

    def split(self, params):
        """``[B, 2D]`` -> ``(μ [B, D], log σ [B, D])``."""
        d = self.action_shape[0]
        return params[:, :d], params[:, d:]

    def neg_log_prob(self, params, actions):
        mean, log_std = self.split(keras.ops.cast(params, "float32"))
        nll = gaussian_nll(actions, mean, log_std)
        if self.bounds == "tanh":
            u = keras.ops.cast(actions, "float32")
            log_1m_tanh2 = 2.0 * (_LOG_2 - u - keras.ops.softplus(-2.0 * u))
            nll = nll + keras.ops.sum(log_1m_tanh2, axis=-1) + self.log_half_range
        return nll

    def entropy(self, params):
        return gaussian_entropy(self.split(keras.ops.cast(params, "float32"))[1])

    def raw_mode(self, params):
        return self.split(keras.ops.cast(params, "float32"))[0]

    def sample(self, params, seed=None):
        mean, log_std = self.split(keras.ops.cast(params, "float32"))
        return mean + keras.ops.exp(log_std) * _normal(keras.ops.shape(mean), seed)

    def to_env(self, actions):
        low, high = keras.ops.convert_to_tensor(self.low), keras.ops.convert_to_tensor(self.high)
        if self.bounds == "tanh":
            a = low + (keras.ops.tanh(actions) + 1.0) * (high - low) / 2.0
        else:
            a = keras.ops.clip(actions, low, high)
        return keras.ops.reshape(a, (-1, *self.env_shape))

    def np_to_env(self, actions):
        if self.bounds == "tanh":
            a = self.low + (np.tanh(actions) + 1.0) * (self.high - self.low) / 2.0
        else:
            a = np.clip(actions, self.low, self.high)
        return a.astype(np.float32).reshape((-1, *self.env_shape))

    def np_sample(self, params, rng, mask=None):
        self.refuse_mask(mask)
        d = self.action_shape[0]
        noise = rng.standard_normal((params.shape[0], d), dtype=np.float32)
        return params[:, :d] + np.exp(params[:, d:]) * noise

    def np_mode(self, params, mask=None):
        self.refuse_mask(mask)
        return self.np_to_env(params[:, : self.action_shape[0]])


def action_distribution(space: gymnasium.Space, **gaussian_options: Any) -> ActionDistribution:
    """The distribution of a gymnasium action space.

    Args:
      space: ``Discrete``, ``MultiBinary`` (1-D), ``MultiDiscrete`` (1-D ``nvec``) or ``Box`` (float).
      **gaussian_options: for ``Box``: `DiagGaussian`'s ``bounds``, ``state_dependent_std``, ``log_std_init``.

    Raises:
      ValueError: for another space (the message names it and the supported ones), or options for a
        space other than ``Box``.
    """
    if gaussian_options and not isinstance(space, gymnasium.spaces.Box):
        raise ValueError(
            f"`gaussian_options` must be empty for a {type(space).__name__} action space. "
            f"Received: {sorted(gaussian_options)}"
        )
    if isinstance(space, gymnasium.spaces.Discrete):
        return Categorical(int(space.n), int(space.start))
    if isinstance(space, gymnasium.spaces.MultiBinary) and np.ndim(space.n) == 0:
        return Bernoulli(int(space.n))  # type: ignore[arg-type]  # a 0-d n is an int
    if isinstance(space, gymnasium.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        return MultiCategorical(space.nvec.tolist(), space.start.tolist())
    if isinstance(space, gymnasium.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return DiagGaussian(space.low, space.high, **gaussian_options)
    raise ValueError(
        f"`action_space` must be one of {SUPPORTED_ACTION_SPACES} (MultiBinary and MultiDiscrete 1-D, Box of "
        f"floats). Received: action_space={space} ({type(space).__name__})"
    )


# --------------------------------------------------------------------------------------------------
# Observations: a flat float32 vector per step, entry by entry
# --------------------------------------------------------------------------------------------------


def observation_entries(
    space: gymnasium.Space, path: tuple[Any, ...] = ()
) -> list[tuple[str, tuple[Any, ...], gymnasium.Space]]:
    """The leaves of an observation space, in a fixed order: ``(input name, path, space)``.

    ``Box`` / ``Discrete`` -> ``[("observations", (), space)]``; ``Dict`` -> one entry per key (in the
    space's order: gymnasium sorts the keys) named by the key, ``Tuple`` -> ``"0"``, ``"1"``, ...; nested
    names join with ``"."``. ``path`` indexes the observation: ``obs[path[0]][path[1]]...``. A top-level
    ``Dict`` key ``action_mask`` (`ACTION_MASK_KEY`) is the action mask, not a network input: left out.

    Raises:
      ValueError: for a space that is not ``Box`` / ``Discrete`` or a ``Dict`` / ``Tuple`` of them.
    """
    if isinstance(space, (gymnasium.spaces.Box, gymnasium.spaces.Discrete)):
        return [(".".join(map(str, path)) or "observations", path, space)]
    if isinstance(space, (gymnasium.spaces.Dict, gymnasium.spaces.Tuple)):
        items = space.spaces.items() if isinstance(space, gymnasium.spaces.Dict) else enumerate(space.spaces)
        entries: list[tuple[str, tuple[Any, ...], gymnasium.Space]] = []
        for key, sub in items:
            if not path and key == ACTION_MASK_KEY:
                continue
            entries += observation_entries(sub, (*path, key))
        return entries
    where = f" at {'.'.join(map(str, path))!r}" if path else ""
    raise ValueError(
        f"`observation_space` must be one of {SUPPORTED_OBSERVATION_SPACES} (Dict and Tuple of Box and Discrete). "
        f"Received: observation_space={space} ({type(space).__name__}){where}"
    )


def flat_observation_size(space: gymnasium.Space) -> int:
    """``F``: the width of `flatten_observations` (a ``Discrete(n)`` entry counts ``n``, one-hot)."""
    return sum(
        int(sub.n) if isinstance(sub, gymnasium.spaces.Discrete) else math.prod(sub.shape or ())
        for _, _, sub in observation_entries(space)
    )


def flatten_observations(space: gymnasium.Space, observations: Any) -> np.ndarray:
    """NumPy: a batch of observations of ``space`` -> ``[N, F]`` float32, what the default encoder computes.

    Each entry of `observation_entries` in turn: a ``Box`` flattened, a ``Discrete(n, start)`` one-hot of
    ``s - start``; concatenated. ``observations`` is a vector env's batch (arrays with a leading ``N``, a dict
    of them for ``Dict``, a tuple for ``Tuple``).
    """
    parts = []
    for _, path, sub in observation_entries(space):
        x = observations
        for key in path:
            x = x[key]
        x = np.asarray(x)
        if isinstance(sub, gymnasium.spaces.Discrete):
            parts.append(np.eye(int(sub.n), dtype=np.float32)[x.reshape(-1).astype(np.int64) - int(sub.start)])
        else:
            parts.append(x.reshape(x.shape[0], -1).astype(np.float32))
    return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------------------------------
# Spaces in a model's config: plain JSON values
# --------------------------------------------------------------------------------------------------


def space_to_config(space: gymnasium.Space | None) -> dict[str, Any] | None:
    """A supported space as JSON values (for ``get_config``); None stays None.

    Raises:
      ValueError: for a space that is none of Discrete, MultiBinary, MultiDiscrete, Box, Dict, Tuple.
    """
    if space is None:
        return None
    if isinstance(space, gymnasium.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gymnasium.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, gymnasium.spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, gymnasium.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_config(v) for k, v in space.spaces.items()}}
    if isinstance(space, gymnasium.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_config(v) for v in space.spaces]}
    raise ValueError(
        "`space` must be one of Discrete, MultiBinary, MultiDiscrete, Box, Dict, Tuple. "
        f"Received: space={space} ({type(space).__name__})"
    )


def space_from_config(config: dict[str, Any] | gymnasium.Space | None) -> gymnasium.Space | None:
    """The space `space_to_config` describes (a space or None is returned as it is)."""
    if config is None or isinstance(config, gymnasium.Space):
        return config
    kind = config["type"]
    if kind == "Discrete":
        return gymnasium.spaces.Discrete(config["n"], start=config["start"])
    if kind == "MultiBinary":
        return gymnasium.spaces.MultiBinary(config["n"])
    if kind == "MultiDiscrete":
        return gymnasium.spaces.MultiDiscrete(config["nvec"], start=config["start"])
    if kind == "Box":
        dtype = np.dtype(config["dtype"])
        return gymnasium.spaces.Box(np.asarray(config["low"], dtype), np.asarray(config["high"], dtype), dtype=dtype)
    if kind == "Dict":
        return gymnasium.spaces.Dict({k: _space(v) for k, v in config["spaces"].items()})
    return gymnasium.spaces.Tuple([_space(v) for v in config["spaces"]])


def _space(config: dict[str, Any]) -> gymnasium.Space:
    space = space_from_config(config)
    if space is None:
        raise ValueError(f"`config` must describe a space. Received: config={config!r}")
    return space
