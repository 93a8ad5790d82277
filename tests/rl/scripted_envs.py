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


class CopyShiftedBitsEnv(gymnasium.Env):
    """``MultiBinary(6)`` actions: observe 6 random bits (float32 0/1), earn 1/6 per action bit that equals
    the observed bits rotated by one (``np.roll(obs, 1)``). Episodes of 8 steps: the optimum return is 8,
    a uniformly random policy's mean is 4. Registered as ``kerasce-test/CopyShiftedBits-v0``."""

    length = 8

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = gymnasium.spaces.MultiBinary(6)
        self.t, self.bits = 0, np.zeros(6, np.float32)

    def _obs(self):
        self.bits = self.np_random.integers(0, 2, 6).astype(np.float32)
        return self.bits.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(np.mean(np.asarray(action) == np.roll(self.bits, 1)))
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}


class MatchDialsEnv(gymnasium.Env):
    """``MultiDiscrete([3, 3])`` actions: observe two target dial settings (one-hot, float32 ``[6]``), earn
    1/2 per dial set to its target. Episodes of 8 steps: optimum 8, uniformly random 8/3. Registered as
    ``kerasce-test/MatchDials-v0``."""

    length = 8

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = gymnasium.spaces.MultiDiscrete([3, 3])
        self.t, self.targets = 0, np.zeros(2, np.int64)

    def _obs(self):
        self.targets = self.np_random.integers(0, 3, 2)
        return np.concatenate([np.eye(3, dtype=np.float32)[k] for k in self.targets])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(np.mean(np.asarray(action) == self.targets))
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}


class ReachTargetEnv(gymnasium.Env):
    """``Box(-1, 1, (2,))`` actions: observe a target in ``[-1.2, 1.2]²`` (sometimes beyond the action bounds),
    earn ``-|a - target|²``. Episodes of 8 steps. The optimum acts ``clip(target, -1, 1)``: its return is
    ``-Σ_t |target_t - clip(target_t)|²`` (0 when every target is inside the bounds). Registered as
    ``kerasce-test/ReachTarget-v0``."""

    length = 8

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-1.2, 1.2, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t, self.target = 0, np.zeros(2, np.float32)

    def _obs(self):
        self.target = self.np_random.uniform(-1.2, 1.2, 2).astype(np.float32)
        return self.target.copy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = -float(np.sum((np.asarray(action, np.float64) - self.target) ** 2))
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}


class DictKeyEnv(gymnasium.Env):
    """``Dict`` observations: ``key`` ``Discrete(3)`` names the door to open (action ``Discrete(3)``), ``noise``
    a ``Box(2)`` to ignore, ``action_mask`` allows the right door and one other. 1 per right door, 6 steps:
    optimum 6; a uniformly random valid action earns 3. ``info["action_mask"]`` holds the same mask.
    Registered as ``kerasce-test/DictKey-v0``."""

    length = 6

    def __init__(self):
        self.observation_space = gymnasium.spaces.Dict(
            {
                "key": gymnasium.spaces.Discrete(3),
                "noise": gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32),
                "action_mask": gymnasium.spaces.MultiBinary(3),
            }
        )
        self.action_space = gymnasium.spaces.Discrete(3)
        self.t, self.key = 0, 0

    def _obs(self):
        self.key = int(self.np_random.integers(3))
        mask = np.zeros(3, np.int8)
        mask[[self.key, (self.key + 1 + int(self.np_random.integers(2))) % 3]] = 1
        noise = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return {"key": self.key, "noise": noise, "action_mask": mask}, {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs()

    def step(self, action):
        reward = float(int(action) == self.key)
        self.t += 1
        obs, info = self._obs()
        return obs, reward, self.t >= self.length, False, info


class ObservationOutOfSpaceEnv(gymnasium.Env):
    """A broken custom env: ``reset`` returns a float64 observation of the wrong shape for its ``Box(3)``
    float32 space (what ``gymnasium.utils.env_checker.check_env`` reports)."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4), {}

    def step(self, action):
        return np.zeros(4), 0.0, True, False, {}


for _id, _entry_point, _steps in [
    ("kerasce-test/CopyShiftedBits-v0", CopyShiftedBitsEnv, CopyShiftedBitsEnv.length),
    ("kerasce-test/MatchDials-v0", MatchDialsEnv, MatchDialsEnv.length),
    ("kerasce-test/ReachTarget-v0", ReachTargetEnv, ReachTargetEnv.length),
    ("kerasce-test/DictKey-v0", DictKeyEnv, DictKeyEnv.length),
]:
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=_entry_point, max_episode_steps=_steps)  # type: ignore[arg-type]
