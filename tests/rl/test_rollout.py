"""Samplers (NumPy vs compiled TF) and episode collection from vector envs."""

import dataclasses

import gymnasium
import keras
import numpy as np
import pytest

from kerasce.rl.envs import check_env_spaces, make_vector_env
from kerasce.rl.returns import complete_episode_mask, first_episode_mask
from kerasce.rl.rollout import (
    CompiledPolicy,
    NumpyPolicy,
    collect_episodes,
    completed_episodes,
    make_policy_sampler,
    sample_actions,
    softmax,
    steppable_sub_envs,
)


def probabilities_of(model, x):
    """float64 softmax of the Keras model's own logits: the reference both samplers must match."""
    logits = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "elu", "softplus", "silu", "linear"])
def test_numpy_and_compiled_paths_give_the_same_probabilities(activation):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation=activation),
            keras.layers.Dense(8),
            keras.layers.Activation(activation),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32) * 3
    fast, general = NumpyPolicy(model), CompiledPolicy(model)
    expected = probabilities_of(model, x)
    np.testing.assert_allclose(softmax(fast.logits(x)), expected, atol=1e-5)
    np.testing.assert_allclose(softmax(general.logits(x)), expected, atol=1e-5)
    # Same probabilities and the same random numbers: the same actions.
    a = sample_actions(fast.logits(x), np.random.default_rng(7))
    b = sample_actions(general.logits(x), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_numpy_path_follows_weight_updates_after_refresh():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    fast = NumpyPolicy(model)
    x = np.ones((1, 2), np.float32)
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    assert not np.allclose(fast.logits(x), keras.ops.convert_to_numpy(model(x)))
    fast.refresh()
    np.testing.assert_allclose(fast.logits(x), keras.ops.convert_to_numpy(model(x)), atol=1e-6)


def test_functional_dense_chain_uses_the_fast_path():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inputs))
    assert isinstance(make_policy_sampler(keras.Model(inputs, outputs)), NumpyPolicy)


def residual_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Add()([inputs, hidden])))


@pytest.mark.parametrize(
    "build, reason",
    [
        (
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(8), keras.layers.LayerNormalization(), keras.layers.Dense(2)]
            ),
            "LayerNormalization",
        ),
        (
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(8, activation="gelu"), keras.layers.Dense(2)]
            ),
            "gelu",
        ),
        (residual_model, "Add"),
    ],
)
def test_other_models_take_the_compiled_path_with_the_same_probabilities(build, reason):
    model = build()
    with pytest.raises(TypeError, match=reason):
        NumpyPolicy(model)
    sampler = make_policy_sampler(model)
    assert isinstance(sampler, CompiledPolicy)
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(softmax(sampler.logits(x)), probabilities_of(model, x), atol=1e-6)


def test_fast_false_forces_the_compiled_path():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert isinstance(make_policy_sampler(model, fast=False), CompiledPolicy)


def test_sample_actions_frequencies_and_seeding():
    p = np.array([0.1, 0.6, 0.3])
    logits = np.tile(np.log(p), (200_000, 1))
    actions = sample_actions(logits, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(actions, minlength=3) / len(actions), p, atol=5e-3)
    np.testing.assert_array_equal(actions, sample_actions(logits, np.random.default_rng(0)))
    # A (nearly) deterministic policy always picks its action.
    assert (sample_actions(np.array([[0.0, 50.0, 0.0]] * 100), np.random.default_rng(1)) == 1).all()


def constant_actions(obs):
    return np.zeros(len(obs), np.int64)


@pytest.mark.parametrize("copy", [True, False])
def test_collect_next_step_autoreset(scripted_vec_env, copy):
    # env 0: episodes of 1 step; env 1: one episode of 4 steps. copy=False: the env overwrites one
    # observation buffer every step, so the rollout must store copies.
    env = scripted_vec_env([1, 4], copy=copy)
    obs, _ = env.reset(seed=0)
    rollout, _ = collect_episodes(env, constant_actions, obs, max_steps=100)
    assert rollout.actions.shape == (4, 2)  # stops once every env finished an episode
    # env 0: done at t=0, reset step t=1 (invalid, reward 0), done at t=2, reset step t=3.
    np.testing.assert_array_equal(rollout.valid[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(rollout.rewards[:, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(rollout.valid[:, 1], [1, 1, 1, 1])
    np.testing.assert_array_equal(rollout.terminated[:, 1], [0, 0, 0, 1])
    # The observation recorded with each action is the one it was chosen from: env 1 sees t = 0..3.
    np.testing.assert_array_equal(rollout.observations[:, 1, 0], [0, 1, 2, 3])
    returns, lengths = completed_episodes(rollout)
    np.testing.assert_array_equal(returns, [1, 1, 10])  # ordered by the step they ended
    np.testing.assert_array_equal(lengths, [1, 1, 4])


@pytest.mark.parametrize("copy", [True, False])
def test_collect_same_step_autoreset(scripted_vec_env, copy):
    env = scripted_vec_env([2, 3], mode=gymnasium.vector.AutoresetMode.SAME_STEP, copy=copy, truncate=True)
    obs, _ = env.reset(seed=0)
    rollout, _ = collect_episodes(env, constant_actions, obs, max_steps=100)
    assert rollout.valid.all()
    np.testing.assert_array_equal(rollout.truncated[:, 0], [0, 1, 0])
    np.testing.assert_array_equal(rollout.observations[:, 0, 0], [0, 1, 0])  # reset obs at t=2
    mask = complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
    np.testing.assert_array_equal(mask, [[1, 1], [1, 1], [0, 1]])
    returns, lengths = completed_episodes(rollout)
    np.testing.assert_array_equal(returns, [3, 6])
    np.testing.assert_array_equal(lengths, [2, 3])


def test_collect_stops_at_max_steps(scripted_vec_env):
    env = scripted_vec_env([50, 50])
    obs, _ = env.reset(seed=0)
    rollout, _ = collect_episodes(env, constant_actions, obs, max_steps=5)
    assert rollout.actions.shape == (5, 2)
    assert not complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid).any()


def test_collect_cartpole_invariants():
    env = make_vector_env("CartPole-v1", 8)
    try:
        observation_space, action_space = check_env_spaces(env)
        assert (observation_space.shape, action_space.n) == ((4,), 2)  # type: ignore[attr-defined]
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        sampler = NumpyPolicy(model)
        rng = np.random.default_rng(0)
        obs, _ = env.reset(seed=0)
        rollout, _ = collect_episodes(env, lambda o: sample_actions(sampler.logits(o), rng), obs, 1000)
    finally:
        env.close()
    done = rollout.terminated | rollout.truncated
    assert done.any(axis=0).all()
    # Next-step autoreset: invalid exactly on the step after an episode ended, with reward 0.
    np.testing.assert_array_equal(rollout.valid[1:], ~done[:-1])
    assert (rollout.rewards[~rollout.valid] == 0).all()
    returns, lengths = completed_episodes(rollout)
    np.testing.assert_array_equal(returns, lengths)  # CartPole pays 1 per step
    mask = complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
    assert lengths.sum() == mask.sum()


def test_a_missing_box2d_is_one_line_naming_the_extra(monkeypatch):
    def make_vec(*args, **kwargs):
        raise gymnasium.error.DependencyNotInstalled(
            "Box2D is not installed, you can install it by run `pip install swig` followed by "
            '`pip install "gymnasium[box2d]"`'
        )

    monkeypatch.setattr(gymnasium, "make_vec", make_vec)
    with pytest.raises(ValueError, match=r'pip install -e "\.\[box2d\]".*LunarLander-v3') as error:
        make_vector_env("LunarLander-v3", 2)
    assert "\n" not in str(error.value)


def test_unknown_vector_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown vector env mode='threads'"):
        make_vector_env("CartPole-v1", 2, mode="threads")
    with pytest.raises(ValueError, match="no native vector implementation"):
        make_vector_env("Acrobot-v1", 2, mode="native")


@pytest.mark.parametrize("env_id, kwargs", [("CartPole-v1", {}), ("CartPole-v1", {"max_episode_steps": 18})])
def test_first_episodes_only_skips_exactly_the_steps_that_would_be_thrown_away(env_id, kwargs):
    """Sub-envs past their first episode are not stepped; the first episodes are those of stepping them all.

    With an 18-step limit some first episodes are truncated: their following observation (the state the
    baseline bootstraps from) must be the same too. Mutation tried: stepping a finished sub-env once more
    (its autoreset step) -> red (env_steps).
    """
    rollouts = {}
    for only in (False, True):
        env = make_vector_env(env_id, 6, mode="sync", **kwargs)
        assert steppable_sub_envs(env) is not None
        rng = np.random.default_rng(3)
        obs, _ = env.reset(seed=11)
        act = lambda o: rng.integers(0, 2, len(o))  # CartPole: Discrete(2)
        rollouts[only], _ = collect_episodes(env, act, obs, 600, first_episodes_only=only)
        env.close()
    full, lean = rollouts[False], rollouts[True]
    first = first_episode_mask(full.terminated, full.truncated, full.valid)
    assert lean.actions.shape == full.actions.shape  # both stop when the slowest first episode ends
    np.testing.assert_array_equal(first_episode_mask(lean.terminated, lean.truncated, lean.valid), first)
    for field in ("observations", "actions", "rewards", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(lean, field)[first], getattr(full, field)[first], err_msg=field)
    assert lean.env_steps == first.sum() < full.env_steps == full.actions.size
    np.testing.assert_array_equal(lean.valid, first)  # a row not stepped belongs to no episode
    t, n = np.nonzero(first & full.truncated)
    assert len(t) > 0 or not kwargs
    following = lambda r: np.concatenate([r.observations[1:], r.last_observations[None]])
    np.testing.assert_array_equal(following(lean)[t, n], following(full)[t, n])
    np.testing.assert_array_equal(
        completed_episodes(dataclasses.replace(lean, valid=first))[0],
        completed_episodes(dataclasses.replace(full, valid=first))[0],
    )


def test_only_a_plain_sync_vector_env_is_stepped_sub_env_by_sub_env():
    native = make_vector_env("CartPole-v1", 2)  # gymnasium's NumPy CartPole
    taxi = make_vector_env("Taxi-v4", 2)  # kerasce's TabularVectorEnv
    same_step = gymnasium.make_vec(
        "CartPole-v1",
        2,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
    )
    try:
        assert steppable_sub_envs(native) is None and steppable_sub_envs(taxi) is None
        assert steppable_sub_envs(same_step) is None
    finally:
        for env in (native, taxi, same_step):
            env.close()
