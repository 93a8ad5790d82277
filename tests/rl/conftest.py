"""Fixtures of the rl tests."""

import functools

import gymnasium
import pytest
from scripted_envs import ScriptedEnv


@pytest.fixture
def scripted_vec_env():
    """``scripted_vec_env(lengths, mode=NEXT_STEP, copy=True, **kwargs)`` -> a SyncVectorEnv, closed
    afterwards. ``copy=False`` makes the env return one observation buffer it overwrites every step."""
    envs = []

    def make(lengths, mode=gymnasium.vector.AutoresetMode.NEXT_STEP, copy=True, **kwargs):
        env = gymnasium.vector.SyncVectorEnv(
            [functools.partial(ScriptedEnv, n, **kwargs) for n in lengths], autoreset_mode=mode, copy=copy
        )
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
