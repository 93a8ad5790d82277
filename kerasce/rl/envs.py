"""Vector env construction and the space checks of the REINFORCE agent."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

__all__ = ["check_spaces", "make_vector_env"]


def make_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gymnasium.vector.VectorEnv:
    """A gymnasium vector env: the env's native vector implementation when it has one, else "sync".

    Both autoreset on the step after an episode ends (gymnasium's NEXT_STEP mode), which
    :func:`kerasce.rl.rollout.collect_episodes` masks out.

    Args:
      env_id: a registered gymnasium id, e.g. ``"CartPole-v1"``.
      num_envs: number of sub-environments ``N >= 1``.
      **kwargs: passed to the env constructor (e.g. ``render_mode``).

    Raises:
      ValueError: for an unknown id or ``num_envs < 1``.
    """
    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"Expected `num_envs` to be an int >= 1, got {num_envs!r}.")
    try:
        spec = gymnasium.spec(env_id)
    except gymnasium.error.Error as error:
        raise ValueError(
            f"Unknown gymnasium env id {env_id!r}; expected a registered id such as 'CartPole-v1' "
            f"({error})."
        ) from None
    if spec.vector_entry_point is not None:
        return gymnasium.make_vec(
            env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs
        )
    return gymnasium.make_vec(
        env_id,
        num_envs=int(num_envs),
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP},
        **kwargs,
    )


def check_spaces(
    env: gymnasium.vector.VectorEnv,
    observation_shape: tuple[int, ...] | None = None,
    num_actions: int | None = None,
) -> tuple[tuple[int, ...], int]:
    """Check that ``env`` has a ``Discrete`` action space and ``Box`` observations.

    Args:
      env: a gymnasium vector env.
      observation_shape: if given, the observation shape the policy expects.
      num_actions: if given, the number of actions the policy outputs.

    Returns:
      ``(observation_shape, num_actions)`` of the env.

    Raises:
      ValueError: naming the unsupported space, or the mismatch with the policy.
    """
    if not isinstance(env, gymnasium.vector.VectorEnv):
        raise ValueError(
            f"Expected a gymnasium vector env (gymnasium.make_vec) or an env id, got {type(env).__name__}."
        )
    action_space = env.single_action_space
    observation_space = env.single_observation_space
    if not isinstance(action_space, gymnasium.spaces.Discrete):
        raise ValueError(
            f"ReinforceAgent supports Discrete action spaces, got {action_space} "
            f"({type(action_space).__name__})."
        )
    if not isinstance(observation_space, gymnasium.spaces.Box):
        raise ValueError(
            f"ReinforceAgent supports Box observation spaces, got {observation_space} "
            f"({type(observation_space).__name__})."
        )
    env_shape, env_actions = tuple(observation_space.shape), int(action_space.n)
    if observation_shape is not None and tuple(observation_shape) != env_shape:
        raise ValueError(
            f"The policy expects observations of shape {tuple(observation_shape)}, the env gives {env_shape}."
        )
    if num_actions is not None and num_actions != env_actions:
        raise ValueError(
            f"The policy outputs {num_actions} action logits, the env has {env_actions} actions."
        )
    return env_shape, env_actions
