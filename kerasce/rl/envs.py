"""Any env (id, instance, factory, vector env) as a vector env; the space checks; where action masks come from."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from gymnasium.utils import env_checker

from kerasce.rl.spaces import (
    ACTION_MASK_KEY,
    action_distribution,
    flat_observation_size,
    flatten_observations,
    observation_entries,
)
from kerasce.rl.tabular import TabularVectorEnv, unsupported_reason

__all__ = [
    "FlattenObservations",
    "action_mask_source",
    "as_vector_env",
    "check_env_spaces",
    "flat_observation_env",
    "info_action_mask",
    "make_vector_env",
    "observation_action_mask",
    "one_hot_observations",
]


def one_hot_observations(env: gymnasium.vector.VectorEnv) -> gymnasium.vector.VectorEnv:
    """``env`` with ``Discrete(n)`` observations replaced by float32 one-hot vectors ``[N, n]`` (as
    Stable-Baselines3 encodes them); other envs are returned unchanged.

    State ``s`` of ``Discrete(n, start=k)`` becomes ``np.eye(n)[s - k]``: feed the exported policy the same.
    """
    space = env.single_observation_space
    if not isinstance(space, gymnasium.spaces.Discrete):
        return env
    n, start = int(space.n), int(space.start)
    eye = np.eye(n, dtype=np.float32)
    return gymnasium.wrappers.vector.TransformObservation(
        env,
        lambda obs: eye[np.asarray(obs, np.int64) - start],
        single_observation_space=gymnasium.spaces.Box(0.0, 1.0, (n,), np.float32),
    )


class FlattenObservations(gymnasium.vector.VectorWrapper):
    """A vector env with ``Dict`` / ``Tuple`` observations seen as flat float32 ``[N, F]`` vectors
    (:func:`kerasce.rl.spaces.flatten_observations`: ``Box`` entries flattened, ``Discrete`` ones one-hot, in
    key order). A top-level ``action_mask`` entry is not part of them: it is moved to ``info["action_mask"]``,
    where :func:`info_action_mask` reads it.

    Attributes:
      source_observation_space: the env's own single observation space.
    """

    def __init__(self, env: gymnasium.vector.VectorEnv):
        super().__init__(env)
        self.source_observation_space = env.single_observation_space
        size = flat_observation_size(self.source_observation_space)
        self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def flatten(self, observations: Any, infos: dict) -> tuple[np.ndarray, dict]:
        if isinstance(observations, dict) and ACTION_MASK_KEY in observations:
            infos = dict(infos, action_mask=np.asarray(observations[ACTION_MASK_KEY]))
        return flatten_observations(self.source_observation_space, observations), infos

    def reset(self, *, seed: Any = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return self.flatten(*self.env.reset(seed=seed, options=options))

    def step(self, actions: Any) -> tuple[Any, ...]:
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        observations, infos = self.flatten(observations, infos)
        return observations, rewards, terminated, truncated, infos


def flat_observation_env(env: gymnasium.vector.VectorEnv) -> gymnasium.vector.VectorEnv:
    """``env`` as the policy sees it: ``Discrete`` observations one-hot (:func:`one_hot_observations`),
    ``Dict`` / ``Tuple`` ones flat (:class:`FlattenObservations`), ``Box`` ones (any shape) unchanged."""
    space = env.single_observation_space
    if isinstance(space, (gymnasium.spaces.Dict, gymnasium.spaces.Tuple)):
        return FlattenObservations(env)
    return one_hot_observations(env)


def info_action_mask(observations: np.ndarray, infos: dict) -> np.ndarray:
    """gymnasium's action-mask convention: ``infos["action_mask"]`` ``[N, A]`` (Taxi-v4 provides it).

    Raises:
      ValueError: if the env's infos have no ``action_mask``.
    """
    if "action_mask" not in infos:
        raise ValueError(
            "The env's info must hold 'action_mask' [N, A] (gymnasium's convention). Received: info keys "
            f"{sorted(k for k in infos if not k.startswith('_'))}. Pass action_mask_fn=... for another source."
        )
    return np.asarray(infos["action_mask"]).astype(bool)


VECTOR_MODES = ("auto", "native", "sync", "async")


def make_vector_env(env_id: str, num_envs: int, mode: str = "auto", **kwargs: Any) -> gymnasium.vector.VectorEnv:
    """A gymnasium vector env of ``num_envs`` copies of ``env_id``.

    All modes autoreset on the step after an episode ends (gymnasium's NEXT_STEP mode), which
    :func:`kerasce.rl.rollout.collect_episodes` masks out. ``Discrete`` observations arrive one-hot
    (:func:`one_hot_observations`).

    Args:
      env_id: a registered gymnasium id, e.g. ``"CartPole-v1"``.
      num_envs: number of sub-environments ``N >= 1``.
      mode: ``"native"`` the env's own NumPy vector implementation (for the tabular envs Taxi, FrozenLake
        and CliffWalking: :class:`kerasce.rl.tabular.TabularVectorEnv`); ``"sync"`` sub-envs stepped in
        turn in this process (sub-env ``i`` reset with ``seed`` is the single env reset with
        ``seed + i``); ``"async"`` one process per sub-env; ``"auto"`` native when the env has one,
        else sync.
      **kwargs: passed to the env constructor (e.g. ``render_mode``).

    Raises:
      ValueError: for an unknown id or mode, ``num_envs < 1``, ``native`` for an env without one, or
        an env whose dependencies are missing (the message names the pip extra).
    """
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"`num_envs` must be an int >= 1. Received: num_envs={num_envs!r}")
    if mode not in VECTOR_MODES:
        raise ValueError(f"`mode` must be one of {VECTOR_MODES}. Received: unknown vector env mode={mode!r}")
    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as error:
        raise ValueError(
            f"`env_id` must be a registered gymnasium id such as 'CartPole-v1'. Received: unknown gymnasium env id "
            f"{env_id!r} ({error})"
        ) from None
    tabular = unsupported_reason(env_id, kwargs) is None
    if mode == "native" and spec.vector_entry_point is None and not tabular:
        raise ValueError(
            f"`mode` must be 'sync' or 'async' for {env_id!r}, which has no native vector implementation. "
            f"Received: mode={mode!r}"
        )
    try:
        if mode in ("auto", "native") and tabular:
            return one_hot_observations(TabularVectorEnv(env_id, int(num_envs), **kwargs))
        if mode in ("auto", "native") and spec.vector_entry_point is not None:
            return one_hot_observations(
                gymnasium.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs)
            )
        return one_hot_observations(
            gymnasium.make_vec(
                env_id,
                num_envs=int(num_envs),
                vectorization_mode="async" if mode == "async" else "sync",
                vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP},
                **kwargs,
            )
        )
    except gymnasium.error.DependencyNotInstalled as error:
        extra = "box2d" if "box2d" in str(error).lower() else None
        hint = f'pip install -e ".[{extra}]"' if extra else "install the package it names"
        detail = " ".join(str(error).split())  # one line
        raise ValueError(
            f"`env_id` must be an env whose packages are installed: {hint}. Received: env_id={env_id!r} ({detail})"
        ) from None


def observation_action_mask(observations: Any, infos: dict) -> np.ndarray:
    """The RLlib / PettingZoo convention: a ``Dict`` observation's ``action_mask`` entry ``[N, A]``.

    Same signature as :func:`info_action_mask` (``infos`` unused), for ``collect_episodes(action_mask=...)``.

    Raises:
      ValueError: if the observations are not a dict with an ``action_mask`` key.
    """
    if not isinstance(observations, dict) or ACTION_MASK_KEY not in observations:
        keys = sorted(observations) if isinstance(observations, dict) else type(observations).__name__
        raise ValueError(
            f"`observations` must be a dict with an {ACTION_MASK_KEY!r} entry [N, A]. Received: observations with "
            f"keys {keys}"
        )
    return np.asarray(observations[ACTION_MASK_KEY]).astype(bool)


def action_mask_source(env: gymnasium.vector.VectorEnv) -> Callable[[Any, dict], np.ndarray]:
    """Where ``env``'s action masks come from: :func:`observation_action_mask` for a ``Dict`` observation
    space with an ``action_mask`` key, else :func:`info_action_mask` (``info["action_mask"]``)."""
    space = env.single_observation_space
    if isinstance(space, gymnasium.spaces.Dict) and ACTION_MASK_KEY in space.spaces:
        return observation_action_mask
    return info_action_mask


def check_env_spaces(
    env: gymnasium.vector.VectorEnv,
    observation_space: gymnasium.Space | None = None,
    action_space: gymnasium.Space | None = None,
) -> tuple[gymnasium.Space, gymnasium.Space]:
    """Check that ``env``'s spaces are ones the agent supports, and (if given) those the policy was built for.

    Supported: actions ``Discrete``, ``MultiBinary``, ``MultiDiscrete``, ``Box``
    (:func:`kerasce.rl.spaces.action_distribution`); observations ``Box``, ``Discrete``, and ``Dict`` / ``Tuple``
    of them (:func:`kerasce.rl.spaces.observation_entries`).

    Returns:
      ``(single_observation_space, single_action_space)`` of the env.

    Raises:
      ValueError: naming an unsupported space and the supported ones, or the space that differs from the
        policy's.
    """
    if not isinstance(env, gymnasium.vector.VectorEnv):
        raise ValueError(f"`env` must be a gymnasium vector env (see as_vector_env). Received: env={env!r}")
    env_observations, env_actions = env.single_observation_space, env.single_action_space
    observation_entries(env_observations)
    action_distribution(env_actions)
    for name, want, got in [
        ("observation_space", observation_space, env_observations),
        ("action_space", action_space, env_actions),
    ]:
        if want is not None and want != got:
            raise ValueError(f"`{name}` of the env must be the policy's {want}. Received: {name}={got}")
    return env_observations, env_actions


def _check_custom_env(env: gymnasium.Env) -> None:
    """gymnasium's env checker on ``env`` (stepped: pass a copy), its finding as a ``ValueError``."""
    try:
        env_checker.check_env(env, skip_render_check=True, skip_close_check=True)
    except Exception as error:  # the checker raises AssertionError, TypeError, ...: each a finding
        finding = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(
            f"`env` must pass gymnasium.utils.env_checker.check_env. Received: env={type(env.unwrapped).__name__}, "
            f"which fails it: {finding}"
        ) from error


def _registered(env: gymnasium.Env) -> bool:
    spec = env.spec
    return spec is not None and spec.id in gymnasium.registry


def as_vector_env(
    env: str | gymnasium.Env | gymnasium.vector.VectorEnv | Callable[[], gymnasium.Env],
    num_envs: int | None = None,
    mode: str = "auto",
    **kwargs: Any,
) -> gymnasium.vector.VectorEnv:
    """Any env as a gymnasium vector env (next-step autoreset; ``Discrete`` observations one-hot).

    Args:
      env: one of
        * an env id: :func:`make_vector_env` (``mode`` and ``kwargs`` apply);
        * a vector env: returned as it is (``num_envs`` must be None or its ``num_envs``);
        * a ``gymnasium.Env`` instance: ``num_envs`` deep copies of it in a ``SyncVectorEnv`` (the instance
          itself is never stepped; its wrappers and settings come along). An env that cannot be deep-copied
          (one holding a process or a window): pass a factory instead;
        * a zero-argument factory returning a ``gymnasium.Env``: called ``num_envs`` times, in a
          ``SyncVectorEnv`` (``mode="async"``: an ``AsyncVectorEnv``, one process per env).
        An instance or factory whose env is not registered with gymnasium (``env.spec`` is None or its id
        unknown) goes through ``gymnasium.utils.env_checker.check_env`` first, on a copy.
      num_envs: sub-envs ``N >= 1`` (default 1, or the vector env's).
      mode: for an id, see :func:`make_vector_env`; for a factory, ``"async"`` or sync (any other).
      **kwargs: env constructor arguments, for an id only.

    Raises:
      ValueError: the env checker's finding (first sentence names it), a bad ``num_envs``, or ``kwargs``
        with something other than an id.
    """
    if isinstance(env, gymnasium.vector.VectorEnv):
        if num_envs is not None and num_envs != env.num_envs:
            raise ValueError(
                f"`num_envs` must be None or the vector env's {env.num_envs}. Received: num_envs={num_envs}"
            )
        return env
    n = 1 if num_envs is None else num_envs
    if isinstance(env, str):
        return make_vector_env(env, n, mode, **kwargs)
    if kwargs:
        raise ValueError(f"`kwargs` must be empty unless `env` is an id. Received: kwargs={sorted(kwargs)}")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`num_envs` must be an int >= 1. Received: num_envs={num_envs!r}")
    if isinstance(env, gymnasium.Env):
        factories: list[Callable[[], gymnasium.Env]] = [functools.partial(copy.deepcopy, env)] * int(n)
        probe = copy.deepcopy(env)
    elif callable(env):
        factories, probe = [env] * int(n), env()
    else:
        raise ValueError(f"`env` must be an env id, a gymnasium.Env, a vector env or a factory. Received: env={env!r}")
    if not _registered(probe):
        _check_custom_env(probe)
    probe.close()
    if mode == "async" and not isinstance(env, gymnasium.Env):
        return one_hot_observations(gymnasium.vector.AsyncVectorEnv(factories))
    return one_hot_observations(gymnasium.vector.SyncVectorEnv(factories))
