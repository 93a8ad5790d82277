"""`kerasce.rl.envs`: any env (id, instance, factory, vector env) as a vector env; space checks; mask sources.

The small envs with known optima (tests/rl/scripted_envs.py) are checked here against their oracle policies.
"""

import copy

import gymnasium
import numpy as np
import pytest
from scripted_envs import (
    CopyShiftedBitsEnv,
    DictKeyEnv,
    MatchDialsEnv,
    ObservationOutOfSpaceEnv,
    ReachTargetEnv,
    ScriptedEnv,
)

from kerasce.rl.envs import (
    action_mask_source,
    as_vector_env,
    check_env_spaces,
    info_action_mask,
    observation_action_mask,
)


class CountingEnv(ScriptedEnv):
    """A custom (unregistered) env that counts its steps per instance."""

    def __init__(self):
        super().__init__(length=3)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return super().step(action)


def test_an_instance_becomes_deep_copies_and_is_never_stepped():
    """Mutation tried: `factories = [lambda: env] * n` (the instance itself, shared) -> red."""
    env = CountingEnv()
    vector = as_vector_env(env, num_envs=3)
    assert isinstance(vector, gymnasium.vector.SyncVectorEnv) and vector.num_envs == 3
    vector.reset(seed=0)
    vector.step(np.zeros(3, np.int64))
    vector.step(np.zeros(3, np.int64))
    assert env.steps == 0
    assert [sub.unwrapped.steps for sub in vector.envs] == [2, 2, 2]  # type: ignore[attr-defined]
    assert len({id(sub.unwrapped) for sub in vector.envs}) == 3


def test_a_factory_is_called_per_sub_env():
    made = []

    def factory():
        made.append(CountingEnv())
        return made[-1]

    vector = as_vector_env(factory, num_envs=2)
    vector.reset(seed=0)
    vector.step(np.zeros(2, np.int64))
    assert [e.steps for e in made[-2:]] == [1, 1]  # the first call made the env the checker probed


def test_an_id_and_a_vector_env():
    vector = as_vector_env("CartPole-v1", num_envs=4)
    assert vector.num_envs == 4 and vector.single_action_space == gymnasium.spaces.Discrete(2)
    assert as_vector_env(vector) is vector
    with pytest.raises(ValueError, match="`num_envs` must be None or the vector env's 4. Received: num_envs=2"):
        as_vector_env(vector, num_envs=2)


def test_a_registered_instance_is_copied_with_its_wrappers():
    env = gymnasium.wrappers.TimeLimit(gymnasium.make("CartPole-v1"), max_episode_steps=5)
    vector = as_vector_env(env, num_envs=2)
    vector.reset(seed=0)
    for _ in range(5):
        _, _, terminated, truncated, _ = vector.step(np.zeros(2, np.int64))
    assert (terminated | truncated).all()


def test_a_broken_custom_env_fails_with_the_checkers_finding():
    """The error's first line says what is wrong, in gymnasium's env checker's words.

    Mutation tried: skipping `_check_custom_env` -> red (the vector env is built and fails later, elsewhere).
    """
    with pytest.raises(ValueError) as info:
        as_vector_env(ObservationOutOfSpaceEnv(), num_envs=2)
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("`env` must pass gymnasium.utils.env_checker.check_env")
    assert "ObservationOutOfSpaceEnv" in first_line
    assert "not within the observation space" in first_line
    with pytest.raises(ValueError, match="not within the observation space"):
        as_vector_env(ObservationOutOfSpaceEnv)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`env` must be an env id, a gymnasium.Env"):
        as_vector_env(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`num_envs` must be an int >= 1. Received: num_envs=0"):
        as_vector_env(CountingEnv(), num_envs=0)
    with pytest.raises(ValueError, match=r"`kwargs` must be empty unless `env` is an id"):
        as_vector_env(CountingEnv(), render_mode="rgb_array")


@pytest.mark.parametrize("env_class", [CopyShiftedBitsEnv, MatchDialsEnv, ReachTargetEnv, DictKeyEnv])
def test_every_supported_space_passes_the_checks(env_class):
    """Mutation tried: the comparison with the policy's spaces skipped -> red."""
    vector = as_vector_env(env_class(), num_envs=2)
    observation_space, action_space = check_env_spaces(vector)
    assert observation_space == env_class().observation_space and action_space == env_class().action_space
    check_env_spaces(vector, observation_space, action_space)
    with pytest.raises(ValueError, match=r"`action_space` of the env must be the policy's Discrete\(7\)"):
        check_env_spaces(vector, action_space=gymnasium.spaces.Discrete(7))


@pytest.mark.parametrize("env_id", ["Blackjack-v1", "Pendulum-v1"])
def test_registered_envs_with_tuple_observations_or_box_actions(env_id):
    """Blackjack's ``Tuple(Discrete, Discrete, Discrete)`` observations and Pendulum's ``Box`` actions."""
    vector = as_vector_env(env_id, num_envs=2)
    assert check_env_spaces(vector) == (vector.single_observation_space, vector.single_action_space)


class TextObservationEnv(ScriptedEnv):
    def __init__(self):
        super().__init__()
        self.observation_space = gymnasium.spaces.Text(8)

    def _obs(self):
        return "abc"


class IntegerBoxActionEnv(ScriptedEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gymnasium.spaces.Box(0, 3, (2,), np.int64)

    def step(self, action):
        return super().step(0)


@pytest.mark.parametrize(
    "env_class, message",
    [
        (TextObservationEnv, r"`observation_space` must be one of \('Box', 'Discrete', 'Dict', 'Tuple'\).*Text"),
        (IntegerBoxActionEnv, r"`action_space` must be one of \('Discrete', 'MultiBinary', 'MultiDiscrete', 'Box'\)"),
    ],
)
def test_unsupported_spaces_are_named_with_the_supported_ones(env_class, message):
    vector = gymnasium.vector.SyncVectorEnv([env_class])
    with pytest.raises(ValueError, match=message):
        check_env_spaces(vector)


def test_action_mask_from_a_dict_observation_or_from_info():
    """A `Dict` observation's `action_mask` key is the mask source; `info` otherwise. The two agree for
    DictKeyEnv, which provides both.

    Mutation tried: `action_mask_source` returning `info_action_mask` always -> red."""
    vector = as_vector_env(DictKeyEnv(), num_envs=4)
    observations, infos = vector.reset(seed=0)
    source = action_mask_source(vector)
    assert source is observation_action_mask
    mask = source(observations, infos)
    assert mask.dtype == bool and mask.shape == (4, 3) and (mask.sum(-1) == 2).all()
    np.testing.assert_array_equal(mask, info_action_mask(observations, infos))
    assert action_mask_source(as_vector_env("Taxi-v4", num_envs=2)) is info_action_mask
    with pytest.raises(ValueError, match="`observations` must be a dict with an 'action_mask' entry"):
        observation_action_mask(np.zeros((2, 3)), {})


def _oracle(env, observation):
    if isinstance(env, CopyShiftedBitsEnv):
        return np.roll(observation, 1).astype(np.int8)
    if isinstance(env, MatchDialsEnv):
        return np.array([observation[:3].argmax(), observation[3:].argmax()])
    if isinstance(env, ReachTargetEnv):
        return np.clip(observation, -1, 1)
    return observation["key"]


@pytest.mark.parametrize("env_class", [CopyShiftedBitsEnv, MatchDialsEnv, ReachTargetEnv, DictKeyEnv])
def test_known_optimum_is_reached_by_the_oracle_and_not_by_chance(env_class):
    """The documented optimum of each test env: the oracle policy's return; a random policy's is lower."""
    env = env_class()
    for policy, seed in [("oracle", 0), ("random", 1)]:
        observation, _ = env.reset(seed=seed)
        env.action_space.seed(seed + 100)  # not the env's own stream (the same generator for one seed)
        total, optimum, done = 0.0, 0.0, False
        while not done:
            target = getattr(env, "target", None)
            if target is not None:
                optimum -= float(np.sum((target - np.clip(target, -1, 1)) ** 2))
            else:
                optimum += 1.0
            action = _oracle(env, observation) if policy == "oracle" else env.action_space.sample()
            observation, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        if policy == "oracle":
            np.testing.assert_allclose(total, optimum, atol=1e-5)
        else:
            assert total < optimum - 0.5


def test_deep_copies_are_independent_of_each_other():
    env = MatchDialsEnv()
    vector = as_vector_env(copy.deepcopy(env), num_envs=3)
    observations, _ = vector.reset(seed=[5, 6, 7])  # type: ignore[arg-type]
    for i, seed in enumerate([5, 6, 7]):
        np.testing.assert_array_equal(observations[i], MatchDialsEnv().reset(seed=seed)[0])
