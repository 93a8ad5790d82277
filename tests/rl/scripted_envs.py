"""Small scripted gymnasium envs for the rl tests (no rendering, no downloads)."""

import gymnasium
import numpy as np


class ScriptedEnv(gymnasium.Env):
    """Episodes of fixed ``length``; reward ``t + 1`` at step t; obs ``[t, scale]``.

    ``truncate=True`` ends episodes by ``truncated`` instead of ``terminated``; ``nan_at`` returns a
    NaN observation at that step; ``nan_reward`` makes every reward NaN. The action space is
    ``Discrete(actions, start=start)``; every action ``step`` receives is appended to ``actions_taken``.
    """

    def __init__(self, length=3, truncate=False, nan_at=None, nan_reward=False, actions=2, start=0):
        self.length, self.truncate, self.nan_at, self.nan_reward = length, truncate, nan_at, nan_reward
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(actions, start=start)
        self.actions_taken = []
        self.t = 0

    def _obs(self):
        value = np.nan if self.nan_at is not None and self.t == self.nan_at else float(self.t)
        return np.array([value, self.length], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"bad action {action!r}")
        self.actions_taken.append(int(action))
        reward = np.nan if self.nan_reward else float(self.t + 1)
        self.t += 1
        done = self.t >= self.length
        return self._obs(), reward, done and not self.truncate, done and self.truncate, {}


class PixelEnv(gymnasium.Env):
    """Image observations for conv policies: an 8x8x1 float image with one bright pixel in the left or
    right half; action 0 ("left") or 1 ("right") earns 1 when it names that half. Episodes of 5 steps.
    Registered as ``kerasce-test/Pixels-v0``."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (8, 8, 1), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.t, self.side = 0, 0

    def _obs(self):
        self.side = int(self.np_random.integers(2))
        image = np.zeros((8, 8, 1), np.float32)
        image[int(self.np_random.integers(8)), 4 * self.side + int(self.np_random.integers(4)), 0] = 1.0
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return self._obs(), reward, self.t >= 5, False, {}


PIXELS_ID = "kerasce-test/Pixels-v0"
if PIXELS_ID not in gymnasium.registry:
    # gymnasium's stubs want an entry point that takes any keyword; make() passes only the spec's (none here).
    gymnasium.register(PIXELS_ID, entry_point=PixelEnv, max_episode_steps=5)  # type: ignore[arg-type]
