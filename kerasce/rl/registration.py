"""Gymnasium ids that kerasce registers: envs of other packages, made ready for the agent.

``kerasce/MiniGrid-Empty-Random-5x5-v0`` is minigrid's ``MiniGrid-Empty-Random-5x5-v0`` (reach the green
square of a 5x5 room from a random start cell and heading; reward ``1 - 0.9 * steps / 100`` on reaching
it, 0 after 100 steps) without its ``mission`` entry: a ``Text`` space, the same sentence in every
episode, which no network input encodes. What is left is a ``Dict`` of ``image`` (``Box(0, 255,
(7, 7, 3), uint8)``, the agent's 7x7 view: object, colour and state ids) and ``direction``
(``Discrete(4)``), left out by gymnasium's own ``FilterObservation`` wrapper. Its ``reward_threshold``
(:data:`MINIGRID_THRESHOLDS`) is kerasce's documented greedy target, as minigrid registers none.

Importing :mod:`kerasce.rl` registers these ids; minigrid itself is imported only when such an env is made
(``pip install minigrid``).
"""

from __future__ import annotations

from typing import Any

import gymnasium

__all__ = ["MINIGRID_THRESHOLDS", "NAMESPACE", "register_envs", "without_mission"]

NAMESPACE = "kerasce"
# Greedy targets: the mean over 20 episodes of 1 - 0.9 * steps / 100. The shortest path from a random start
# takes 1-7 steps (turns included), so a policy that always takes it scores 0.94-0.99; 0.9 leaves about four
# wasted steps per episode.
MINIGRID_THRESHOLDS: dict[str, float] = {"MiniGrid-Empty-Random-5x5-v0": 0.9}


def without_mission(env_id: str, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id, **kwargs)`` of a minigrid env, its ``Dict`` observation without ``mission``.

    Raises:
      gymnasium.error.DependencyNotInstalled: when minigrid is not installed.
      ValueError: for an env whose observations are not a ``Dict``.
    """
    try:
        import minigrid  # noqa: F401  (registers minigrid's ids)
    except ImportError as error:
        raise gymnasium.error.DependencyNotInstalled(
            f"{env_id} needs the minigrid package: pip install minigrid ({error})"
        ) from None
    env = gymnasium.make(env_id, **kwargs)
    space = env.observation_space
    if not isinstance(space, gymnasium.spaces.Dict):
        raise ValueError(f"`env_id` must be a minigrid env with Dict observations. Received: env_id={env_id!r}")
    keys = [key for key in space.spaces if key != "mission"]
    return gymnasium.wrappers.FilterObservation(env, filter_keys=keys)


def register_envs() -> None:
    """Registers ``kerasce/<minigrid id>`` for each id of :data:`MINIGRID_THRESHOLDS` (once)."""
    for env_id, threshold in MINIGRID_THRESHOLDS.items():
        name = f"{NAMESPACE}/{env_id}"
        if name not in gymnasium.registry:
            gymnasium.register(
                name,
                entry_point=f"{__name__}:without_mission",
                kwargs={"env_id": env_id},
                reward_threshold=threshold,
            )


register_envs()
