"""kerasce.rl.presets: every per-env setting is one the agent takes, for an env gymnasium knows."""

import inspect

import gymnasium
import pytest

from kerasce.rl import ReinforceAgent, presets


@pytest.mark.parametrize("env_id", sorted(presets.PRESETS))
def test_each_preset_names_a_registered_env_and_constructor_arguments(env_id):
    assert env_id in gymnasium.registry
    arguments = set(inspect.signature(ReinforceAgent.__init__).parameters) - {"self"}
    unknown = set(presets.PRESETS[env_id]) - arguments
    assert not unknown, f"{env_id}: {sorted(unknown)} are not ReinforceAgent arguments"


def test_preset_is_a_copy_and_unknown_envs_get_the_defaults():
    settings = presets.preset("LunarLander-v3")
    settings["hidden_units"] = (1,)
    settings["num_envs"] = 1
    assert presets.PRESETS["LunarLander-v3"]["hidden_units"] == (64, 64)
    assert presets.PRESETS["LunarLander-v3"]["num_envs"] == 16
    assert presets.preset("NoSuchEnv-v0") == {}


def test_time_budgets_are_per_env_and_positive():
    assert presets.max_seconds("LunarLander-v3") == 900.0  # seeds 0-2 solved after 159-461 s of training here
    assert presets.max_seconds("CartPole-v1") == presets.DEFAULT_MAX_SECONDS == 120.0
    assert set(presets.MAX_SECONDS) <= set(gymnasium.registry)
    assert all(seconds > 0 for seconds in presets.MAX_SECONDS.values())


def test_setting_names_are_the_agents_knobs():
    # Reference: the constructor's signature read here; the env decides the shapes, --seed the seed.
    arguments = set(inspect.signature(ReinforceAgent.__init__).parameters) - {"self", "kwargs"}
    decided = {"observation_shape", "num_actions", "action_space", "observation_space", "seed", "policy"}
    assert presets.setting_names() == arguments - decided
    assert {"ent_coef", "gamma", "hidden_units", "baseline", "num_envs"} <= presets.setting_names()
