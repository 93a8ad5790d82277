"""A NumPy vector env for gymnasium's tabular envs (Taxi, FrozenLake, CliffWalking): a vector step is a
table lookup.

gymnasium steps these envs one sub-env at a time in Python (``sync``): about 4 ms per vector step of 64
Taxi envs here, most of it per-sub-env wrapper calls and info stacking, while the policy's forward pass
takes a few microseconds. Their dynamics are a table, ``env.unwrapped.P[s][a] = [(prob, s', r,
terminated), ...]``, and an initial-state distribution; :class:`TabularVectorEnv` reads both once and
steps every sub-env with array indexing, as gymnasium's own native vector envs (CartPole) do.

It is the same MDP, not the same random stream: episode for episode it does not replay gymnasium's env
for a seed (gymnasium's sub-env ``i`` draws from its own generator; here one generator serves all
sub-envs). Evaluation uses gymnasium's envs (``kerasce.rl.evaluation``), so evaluated episodes can be
replayed without kerasce. ``tests/rl/test_tabular.py`` checks the tables and the stepping against
gymnasium's env, transition by transition.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

__all__ = ["TABULAR_ENV_IDS", "TabularVectorEnv", "unsupported_reason"]

# Registered ids whose dynamics are exactly their `P` table (Taxi's rainy / fickle options are refused below).
TABULAR_ENV_IDS = ("Taxi-v4", "FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v1", "CliffWalkingSlippery-v1")


def unsupported_reason(env_id: str, kwargs: dict[str, Any]) -> str | None:
    """Why :class:`TabularVectorEnv` cannot stand in for ``gymnasium.make(env_id, **kwargs)``; None if it can."""
    if env_id not in TABULAR_ENV_IDS:
        return f"`env_id` must be one of {TABULAR_ENV_IDS} (TabularVectorEnv supports those). Received: {env_id!r}"
    if kwargs.get("render_mode") is not None:
        return (
            "`render_mode` must be None: TabularVectorEnv does not render; use make_vector_env(..., mode='sync') "
            f"to render. Received: render_mode={kwargs['render_mode']!r}"
        )
    if kwargs.get("fickle_passenger"):
        return (
            "`fickle_passenger` must be False: Taxi's fickle_passenger changes the destination outside its "
            "table; use mode='sync'. Received: fickle_passenger=True"
        )
    return None


class TabularVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` copies of a tabular gymnasium env, stepped together with NumPy.

    Observations are the ``[N]`` int64 states, rewards float64, and the env's time limit truncates as
    gymnasium's ``TimeLimit`` does. Sub-envs autoreset on the step after their episode ends (gymnasium's
    ``NEXT_STEP`` mode: that step ignores the action and returns the reset state, reward 0). Infos hold
    ``prob`` and, for envs that define ``action_mask(state)`` (Taxi), ``action_mask`` ``[N, A]`` with
    gymnasium's ``_key`` flags.

    Args:
      env_id: one of :data:`TABULAR_ENV_IDS`.
      num_envs: ``N >= 1``.
      **kwargs: passed to ``gymnasium.make`` (e.g. ``map_name``, ``is_slippery``); not ``render_mode``.

    Raises:
      ValueError: for another id, ``render_mode``, Taxi's ``fickle_passenger`` (its dynamics are not in
        the table), or ``num_envs < 1``.
    """

    def __init__(self, env_id: str, num_envs: int, **kwargs: Any):
        reason = unsupported_reason(env_id, kwargs)
        if reason is not None:
            raise ValueError(reason)
        if int(num_envs) < 1:
            raise ValueError(f"`num_envs` must be >= 1. Received: num_envs={num_envs}")
        env = gymnasium.make(env_id, **kwargs)
        base: Any = env.unwrapped
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self.spec = env.spec
        self.num_envs = int(num_envs)
        self.single_observation_space = base.observation_space
        self.single_action_space = base.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.max_episode_steps: int | None = env.spec.max_episode_steps if env.spec is not None else None
        states, actions = int(base.observation_space.n), int(base.action_space.n)
        outcomes = max(len(base.P[s][a]) for s in range(states) for a in range(actions))
        self._cdf = np.ones((states, actions, outcomes))  # padding outcomes are never drawn (cdf already 1)
        self._next = np.zeros((states, actions, outcomes), np.int64)
        self._reward = np.zeros((states, actions, outcomes))
        self._terminal = np.zeros((states, actions, outcomes), bool)
        self._prob = np.ones((states, actions, outcomes))
        for s in range(states):
            for a in range(actions):
                transitions = base.P[s][a]
                cdf = np.cumsum([t[0] for t in transitions])
                self._cdf[s, a, : len(transitions)] = cdf / cdf[-1]
                for k, (prob, s_next, reward, terminal) in enumerate(transitions):
                    self._prob[s, a, k] = prob
                    self._next[s, a, k] = s_next
                    self._reward[s, a, k] = reward
                    self._terminal[s, a, k] = terminal
        initial = np.cumsum(np.asarray(base.initial_state_distrib, np.float64))
        self._initial_cdf = initial / initial[-1]
        self._masks = (
            np.stack([np.asarray(base.action_mask(s), bool) for s in range(states)])
            if hasattr(base, "action_mask")
            else None
        )
        env.close()
        self._rng = np.random.default_rng()
        self._states = np.zeros(self.num_envs, np.int64)
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._ended = np.zeros(self.num_envs, bool)

    def _initial_states(self, count: int) -> np.ndarray:
        return np.searchsorted(self._initial_cdf, self._rng.random(count), side="right").astype(np.int64)

    def _infos(self, prob: np.ndarray) -> dict[str, np.ndarray]:
        flags = np.ones(self.num_envs, bool)
        infos = {"prob": prob, "_prob": flags}
        if self._masks is not None:
            infos.update(action_mask=self._masks[self._states], _action_mask=flags)
        return infos

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; ``seed`` (an int) reseeds the one generator of all sub-envs."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._states = self._initial_states(self.num_envs)
        self._elapsed[:] = 0
        self._ended[:] = False
        return self._states.copy(), self._infos(np.ones(self.num_envs))

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.isin(actions, np.arange(self._next.shape[1])).all():
            raise ValueError(
                f"`actions` must be {self.num_envs} actions in [0, {self._next.shape[1]}). "
                f"Received: actions={actions.tolist()}"
            )
        states, actions = self._states, actions.astype(np.int64)
        u = self._rng.random(self.num_envs)
        outcome = (self._cdf[states, actions] < u[:, None]).sum(axis=-1)
        next_states = self._next[states, actions, outcome]
        rewards = self._reward[states, actions, outcome]
        terminated = self._terminal[states, actions, outcome]
        prob = self._prob[states, actions, outcome]
        self._elapsed += 1
        truncated = (
            self._elapsed >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(self.num_envs, bool)
        )
        restart = self._ended  # NEXT_STEP autoreset: these sub-envs ended on the previous step
        if restart.any():
            next_states[restart] = self._initial_states(int(restart.sum()))
            rewards[restart], terminated[restart], truncated[restart] = 0.0, False, False
            prob[restart] = 1.0
            self._elapsed[restart] = 0
        self._states = next_states
        self._ended = terminated | truncated
        return next_states.copy(), rewards, terminated, truncated, self._infos(prob)
