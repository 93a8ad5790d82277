"""Discrete observations (one-hot) and invalid-action masks: never sampled, -inf in the loss, an input
of the export."""

from collections.abc import Callable

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from scripted_envs import ScriptedEnv

from kerasce.rl import EvalCallback, ReinforceAgent, make_vector_env
from kerasce.rl.envs import info_action_mask
from kerasce.rl.rollout import sample_actions
from kerasce.rl.tabular import TabularVectorEnv


class MaskedEnv(ScriptedEnv):
    """ScriptedEnv whose ``info["action_mask"]`` allows only action ``allowed`` (of 3)."""

    def __init__(self, length=3, allowed=2):
        super().__init__(length, actions=3)
        self.allowed = allowed

    def _info(self):
        mask = np.zeros(3, np.int8)
        mask[self.allowed] = 1
        return {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs, self._info()

    def step(self, action):
        obs, reward, terminated, truncated, _ = super().step(action)
        return obs, reward, terminated, truncated, self._info()


def masked_vec_env(n=4, **kwargs):
    return gymnasium.vector.SyncVectorEnv([lambda: MaskedEnv(**kwargs) for _ in range(n)])


def test_masked_actions_are_never_sampled_and_the_rest_keep_their_ratios():
    rng = np.random.default_rng(0)
    logits = np.tile(np.array([[2.0, 0.0, 1.0, -1.0]]), (20000, 1))
    mask = np.tile(np.array([[False, True, True, True]]), (20000, 1))
    counts = np.bincount(sample_actions(logits, rng, mask), minlength=4)
    assert counts[0] == 0
    p = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()  # softmax over the valid actions
    np.testing.assert_allclose(counts[1:] / 20000, p, atol=5 * np.sqrt(0.25 / 20000))
    with pytest.raises(ValueError, match="at least one valid action"):
        sample_actions(logits[:2], rng, np.zeros((2, 4), bool))


@pytest.mark.parametrize("ent_coef", [0.0, 0.2])
def test_masked_train_step_equals_the_analytic_gradient(ent_coef):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 1, 0]], bool)
    a = np.array([0, 2, 0, 1, 2, 1], np.int32)
    g = rng.normal(size=6).astype(np.float32)
    policy = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    agent = ReinforceAgent((3,), 3, policy=policy, use_action_mask=True, ent_coef=ent_coef)
    agent.compile(optimizer=keras.optimizers.SGD(1.0))
    w0, b0 = (v.astype(np.float64) for v in policy.get_weights())
    # float64 reference: softmax over the valid actions only; masked logits get no gradient.
    z = np.where(mask, x.astype(np.float64) @ w0 + b0, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    log_p = np.where(mask, np.log(np.where(mask, p, 1.0)), 0.0)
    entropy = -(p * log_p).sum(-1)
    grad_z = (g[:, None] * (p - np.eye(3)[a]) + ent_coef * p * (log_p + entropy[:, None])) / 6
    logs = agent.train_on_batch((x, mask), a, sample_weight=g, return_dict=True)
    w1, b1 = policy.get_weights()
    np.testing.assert_allclose(w1, w0 - x.T.astype(np.float64) @ grad_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - grad_z.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["entropy"], entropy.mean(), rtol=1e-5)
    assert all(np.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("source", ["info", "function"])
def test_learn_samples_only_valid_actions_and_trains_on_masks(source, monkeypatch):
    env = masked_vec_env(allowed=2)
    agent = ReinforceAgent((2,), 3, use_action_mask=True, seed=0)
    seen = []
    update = agent.update

    def spy(batch):
        seen.append((batch.actions, batch.action_masks))
        return update(batch)

    monkeypatch.setattr(agent, "update", spy)
    allowed = 2
    action_mask_fn: Callable[[np.ndarray, dict], np.ndarray] | None = None  # None: info["action_mask"]
    if source == "function":  # a user function overrides info["action_mask"]
        allowed = 1
        action_mask_fn = lambda obs, infos: np.eye(3, dtype=bool)[np.ones(len(obs), int)]
    try:
        agent.learn(env, max_updates=2, action_mask_fn=action_mask_fn)
        taken = [a for sub in env.envs for a in sub.actions_taken]
    finally:
        env.close()
    assert taken and set(taken) == {allowed}
    for actions, masks in seen:
        assert set(actions.tolist()) == {allowed} and masks.shape == (len(actions), 3)
        assert (masks == np.eye(3, dtype=bool)[allowed]).all()


def test_mask_errors_are_clear():
    env = gymnasium.vector.SyncVectorEnv([lambda: ScriptedEnv(actions=3)])
    try:
        with pytest.raises(ValueError, match="info must hold 'action_mask'"):
            ReinforceAgent((2,), 3, use_action_mask=True).learn(env, max_updates=1)
        with pytest.raises(ValueError, match="use_action_mask=True"):
            ReinforceAgent((2,), 3).learn(env, max_updates=1, action_mask_fn=info_action_mask)
    finally:
        env.close()
    with pytest.raises(ValueError, match="`inputs` must be \\(observations"):
        ReinforceAgent((2,), 3, use_action_mask=True)(np.zeros((1, 2), np.float32))


@pytest.mark.parametrize("mode", ["auto", "sync"])
def test_discrete_observations_arrive_one_hot(mode):
    env = make_vector_env("FrozenLake-v1", 3, mode=mode)
    # "auto" is kerasce's NumPy env of the table (its own random stream), "sync" gymnasium's (seed + i).
    plain = (
        TabularVectorEnv("FrozenLake-v1", 3)
        if mode == "auto"
        else gymnasium.make_vec("FrozenLake-v1", 3, vectorization_mode="sync")
    )
    try:
        assert env.single_observation_space.shape == (16,)
        obs, _ = env.reset(seed=4)
        states, _ = plain.reset(seed=4)
        np.testing.assert_array_equal(obs, np.eye(16, dtype=np.float32)[states])
        obs, *_ = env.step(np.array([1, 2, 3]))
        states, *_ = plain.step(np.array([1, 2, 3]))
        np.testing.assert_array_equal(obs, np.eye(16, dtype=np.float32)[states])
    finally:
        env.close()
        plain.close()


@pytest.mark.slow
def test_taxi_with_masks_trains_evaluates_and_exports_a_mask_input(tmp_path):
    agent = ReinforceAgent.from_env(
        "Taxi-v4", hidden_units=(), use_action_mask=True, num_envs=16, seed=0, learning_rate=0.05
    )
    assert agent.observation_shape == (500,)
    history = agent.learn("Taxi-v4", max_updates=2, callbacks=[EvalCallback("Taxi-v4", episodes=3)])
    assert history.history["evaluated"][0] == 1.0
    serve = tf.saved_model.load(str(agent.export_policy(tmp_path / "taxi"))).signatures["serving_default"]
    observations = np.eye(500, dtype=np.float32)[[0, 17, 499]]
    mask = np.array([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1]], np.int8)
    out = serve(observations=tf.constant(observations), action_mask=tf.constant(mask))
    probabilities = out["probabilities"].numpy()
    assert (probabilities[mask == 0] == 0).all()
    np.testing.assert_allclose(probabilities, agent.action_probabilities(observations, mask), rtol=1e-5, atol=1e-7)
    assert all(mask[i, a] for i, a in enumerate(out["action"].numpy()))
