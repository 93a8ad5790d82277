"""Greedy (or sampled) evaluation of a policy over whole episodes on a separate env.

Each evaluation episode ``i`` is ``gymnasium.make(env_id)`` reset with ``seed + i`` and played to its
end: exactly what a user gets by playing the exported SavedModel on those seeds, so an evaluation can
be reproduced without kerasce (``tests/rl/test_evaluation.py`` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from kerasce.rl.envs import as_vector_env, flat_observation_env
from kerasce.rl.returns import first_episode_mask
from kerasce.rl.rollout import collect_episodes, completed_episodes, mask_logits
from kerasce.rl.spaces import ActionDistribution, Categorical

__all__ = ["Evaluation", "evaluate_policy", "greedy_actions"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The outcome of :func:`evaluate_policy`.

    Attributes:
      returns: ``[E]`` undiscounted episode returns, episode ``i`` reset with ``seed + i``.
      lengths: ``[E]`` episode lengths.
      seed: the reset seed of episode 0.
    """

    returns: np.ndarray
    lengths: np.ndarray
    seed: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def episodes(self) -> int:
        return int(self.returns.size)


def greedy_actions(logits: np.ndarray) -> np.ndarray:
    """``argmax`` over the last axis (ties: the lowest index, as ``tf.argmax`` in the export)."""
    return np.argmax(logits, axis=-1)


def _greedy(
    action_space: Any, logits: Callable[[np.ndarray], np.ndarray], distribution: ActionDistribution | None
) -> Callable[..., np.ndarray]:
    """``act(observations, mask=None)`` -> the greedy env actions."""
    if distribution is None or isinstance(distribution, Categorical):
        offset = int(action_space.start)  # the env's own start, as in training

        def act(obs, mask=None):
            return greedy_actions(mask_logits(logits(obs), mask)) + offset

        return act
    return lambda obs, mask=None: distribution.np_mode(logits(obs), mask)


def evaluate_policy(
    logits: Callable[[np.ndarray], np.ndarray],
    env: Any,
    episodes: int,
    seed: int,
    max_steps: int | None = None,
    action_mask: Callable[[np.ndarray, dict], np.ndarray] | None = None,
    distribution: ActionDistribution | None = None,
) -> Evaluation:
    """Play ``episodes`` whole episodes, one per sub-env of a ``sync`` vector env, and return them.

    A ``sync`` vector env (not the env's native vector implementation) is used on purpose: its sub-env
    ``i`` reset with ``seed`` is ``gymnasium.make(env_id)`` reset with ``seed + i``, so the episodes can be
    replayed one by one elsewhere.

    Args:
      logits: ``[E, D...]`` (flat) observations -> ``[E, P]`` the policy's logits / distribution parameters;
        the greedy action (``argmax``, the distribution's mode) is played.
      env: an env id, a ``gymnasium.Env`` instance or a zero-argument factory (a sync vector env of
        ``episodes`` sub-envs is made and closed here, :func:`kerasce.rl.envs.as_vector_env`), or a vector
        env with ``episodes`` sub-envs. ``Dict`` / ``Tuple`` observations are flattened as in training.
      episodes: number ``E`` of episodes, one per sub-env.
      seed: reset seed of episode 0.
      max_steps: the most steps an episode may take (default: the env's time limit + 1, else 100,000).
      action_mask: optional ``(observations, infos) -> [E, A]`` valid actions; the greedy action is the
        best valid one.
      distribution: the policy's action distribution (:mod:`kerasce.rl.spaces`); None: a softmax over
        ``Discrete`` actions.

    Returns:
      An :class:`Evaluation`.

    Raises:
      ValueError: if ``episodes < 1`` or an episode does not end within ``max_steps``.
    """
    if int(episodes) < 1:
        raise ValueError(f"`episodes` must be >= 1. Received: episodes={episodes}")
    own = not isinstance(env, gymnasium.vector.VectorEnv)
    vec_env = flat_observation_env(as_vector_env(env, int(episodes), mode="sync") if own else env)
    try:
        if vec_env.num_envs != episodes:
            raise ValueError(
                f"`env` must be a vector env with `episodes`={episodes} sub-envs. Received: {vec_env.num_envs} sub-envs"
            )
        if max_steps is None:
            limit = getattr(vec_env.spec, "max_episode_steps", None) if vec_env.spec is not None else None
            max_steps = limit + 1 if limit else 100_000
        observations, infos = vec_env.reset(seed=int(seed))
        act = _greedy(vec_env.single_action_space, logits, distribution)

        rollout, _ = collect_episodes(
            vec_env, act, observations, int(max_steps), action_mask=action_mask, infos=infos, first_episodes_only=True
        )
    finally:
        if own:
            vec_env.close()
    first = first_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
    rollout = dataclasses.replace(rollout, valid=first)
    done = ((rollout.terminated | rollout.truncated) & first).any(axis=0)
    if not done.all():
        raise ValueError(
            f"Evaluation episodes {np.flatnonzero(~done).tolist()} did not end within max_steps={max_steps}."
        )
    returns, lengths = completed_episodes(rollout)
    # completed_episodes orders by end step; re-order by env index = by seed.
    end_step = np.argmax((rollout.terminated | rollout.truncated) & first, axis=0)
    order = np.lexsort((np.arange(episodes), end_step))
    by_env = np.empty(episodes, np.int64)
    by_env[order] = np.arange(episodes)
    return Evaluation(returns=returns[by_env], lengths=lengths[by_env], seed=int(seed))
