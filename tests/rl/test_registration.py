"""kerasce.rl.registration: minigrid's envs under kerasce ids, their observations without the mission text.

The reference is minigrid's own env, made with the same id and seed and stepped with the same actions.
"""

import gymnasium
import minigrid  # noqa: F401  (registers minigrid's ids; the test fails where minigrid is missing)
import numpy as np
import pytest

from kerasce.rl import ReinforceAgent, make_vector_env
from kerasce.rl.registration import MINIGRID_THRESHOLDS, NAMESPACE, without_mission

KERASCE_ID = "kerasce/MiniGrid-Empty-Random-5x5-v0"


def test_the_kerasce_ids_are_registered_with_their_greedy_target():
    """Mutation tried: reward_threshold left out of the registration."""
    assert MINIGRID_THRESHOLDS == {"MiniGrid-Empty-Random-5x5-v0": 0.9}
    for env_id, threshold in MINIGRID_THRESHOLDS.items():
        spec = gymnasium.spec(f"{NAMESPACE}/{env_id}")
        assert spec.reward_threshold == threshold
        assert gymnasium.spec(env_id).reward_threshold is None  # minigrid registers none


def test_the_observation_is_minigrids_without_the_mission():
    """Mutation tried: the filter keeps every key (the Text space would reach the agent)."""
    ours, theirs = gymnasium.make(KERASCE_ID), gymnasium.make("MiniGrid-Empty-Random-5x5-v0")
    assert isinstance(theirs.observation_space, gymnasium.spaces.Dict)
    assert set(theirs.observation_space.spaces) == {"image", "direction", "mission"}
    assert ours.observation_space == gymnasium.spaces.Dict(
        {key: theirs.observation_space[key] for key in ("image", "direction")}
    )
    got, _ = ours.reset(seed=3)
    expected, _ = theirs.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        assert set(got) == {"image", "direction"}
        np.testing.assert_array_equal(got["image"], expected["image"])
        assert got["direction"] == expected["direction"]
        action = int(rng.integers(3))  # left, right, forward
        got, reward, terminated, truncated, _ = ours.step(action)
        expected, expected_reward, expected_terminated, expected_truncated, _ = theirs.step(action)
        assert (reward, terminated, truncated) == (expected_reward, expected_terminated, expected_truncated)
        if terminated or truncated:
            got, _ = ours.reset(seed=4)
            expected, _ = theirs.reset(seed=4)


def test_the_agent_builds_one_input_per_kept_entry():
    agent = ReinforceAgent.from_env(KERASCE_ID, num_envs=2, seed=0)
    assert isinstance(agent.observation_space, gymnasium.spaces.Dict)
    assert set(agent.observation_space.spaces) == {"image", "direction"}
    # The flat size: the 7x7x3 image and the direction one-hot.
    assert agent.observation_shape == (7 * 7 * 3 + 4,)
    vector = make_vector_env(KERASCE_ID, 2, render_mode="rgb_array")
    vector.reset(seed=0)
    assert np.asarray(vector.render()).shape == (2, 160, 160, 3)
    vector.close()


def test_a_missing_minigrid_names_the_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "minigrid", None)  # `import minigrid` raises ImportError
    with pytest.raises(gymnasium.error.DependencyNotInstalled, match="pip install minigrid"):
        without_mission("MiniGrid-Empty-Random-5x5-v0")
