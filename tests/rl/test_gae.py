"""``gae_lambda`` and ``normalize_advantage`` of the agent: the batches ``learn`` makes and the advantages' padding,
against float64 references written from the formulas (Schulman et al. 2016; SB3's ``normalize_advantage``). One
update with ``normalize_advantage``: ``tests/rl/test_claims.py``."""

import functools
from typing import Any

import gymnasium
import numpy as np
import pytest
import tensorflow as tf
from scripted_envs import ScriptedEnv

from kerasce.rl import ReinforceAgent
from kerasce.rl.model import standardized_advantages


def _first_batch(agent, env):
    """The batch the first update of ``learn`` hands to ``agent.update``, and the value network's weights
    before that update (the ones the batch was made with)."""
    update, seen = agent.update, []

    def spy(batch):
        seen.append(batch)
        return update(batch)

    agent.update = spy
    agent.learn(env, max_updates=1)
    return seen[0]


def _two_episodes_env():
    """Sub-env 0 truncated after 2 steps (reaching obs [2, 2]), sub-env 1 terminated after 4 (obs [t, 4]); reward
    t + 1 at step t. Stepped whole, so sub-env 0 autoresets and its later steps are not kept."""
    envs = [functools.partial(ScriptedEnv, 2, truncate=True), functools.partial(ScriptedEnv, 4)]
    return gymnasium.vector.VectorWrapper(gymnasium.vector.SyncVectorEnv(envs))


def _episode_gae(rewards, values, following, gamma, lam):
    """float64 A_t = sum_k (gamma lam)^k delta_{t+k} of one episode, ``following`` the value after its last step."""
    nexts = list(values[1:]) + [following]
    deltas = [r + gamma * v_next - v for r, v, v_next in zip(rewards, values, nexts)]
    return [sum((gamma * lam) ** j * d for j, d in enumerate(deltas[i:])) for i in range(len(deltas))]


def _reference_lambda_returns(agent, gamma, lam, scale):
    """The batch's lambda-returns A + V, time-major, with V = scale * value network (the returns' units)."""
    v = lambda states: [scale * float(x) for x in agent.value_network(np.array(states, np.float32))[:, 0]]
    v0, v1, (v_reached,) = v([[0, 2], [1, 2]]), v([[0, 4], [1, 4], [2, 4], [3, 4]]), v([[2, 2]])
    a0 = _episode_gae([1.0, 2.0], v0, v_reached, gamma, lam)  # truncated: bootstrapped from the state reached
    a1 = _episode_gae([1.0, 2.0, 3.0, 4.0], v1, 0.0, gamma, lam)  # terminated: nothing after it
    g0, g1 = np.add(a0, v0), np.add(a1, v1)
    return np.array([g0[0], g1[0], g0[1], g1[1], g1[2], g1[3]])


@pytest.mark.parametrize("lam", [0.0, 0.8])
def test_gae_batch_holds_the_lambda_returns(lam):
    """With ``gae_lambda < 1`` the batch's returns are ``A + V(s)``: the value target, and ``G - V(s)`` in the
    update is the GAE. Mutations tried in `Trainer.episode_returns`: the Monte-Carlo returns for every lambda
    (the `gae_lambda == 1.0` branch always) -> red; `bootstrap=None` -> red; the values left at 0 (advantages
    alone) -> red."""
    agent = ReinforceAgent((2,), 2, gamma=0.5, gae_lambda=lam, baseline=True, normalize_returns=False, seed=0)
    env = _two_episodes_env()
    try:
        want = _reference_lambda_returns(agent, 0.5, lam, 1.0)
        batch = _first_batch(agent, env)
    finally:
        env.close()
    np.testing.assert_allclose(batch.returns, want, rtol=1e-5, atol=1e-6)


def test_gae_values_are_in_the_running_return_scale():
    """``normalize_returns`` with a baseline: the value network learns returns / (running std), so its outputs
    are multiplied by that scale before they enter the advantages, and the lambda-returns are divided by the
    scale updated with them, as the Monte-Carlo returns are. Mutation tried: the values not multiplied by the
    scale in `Trainer.episode_returns` -> red."""
    agent = ReinforceAgent((2,), 2, gamma=0.5, gae_lambda=0.8, baseline=True, seed=0)
    agent.return_scale.merge(10, 0.0, 90.0)  # std 3 before the update
    env = _two_episodes_env()
    try:
        lambda_returns = _reference_lambda_returns(agent, 0.5, 0.8, 3.0)
        batch = _first_batch(agent, env)
    finally:
        env.close()
    n, mean = len(lambda_returns), lambda_returns.mean()
    m2 = 90.0 + ((lambda_returns - mean) ** 2).sum() + mean**2 * 10 * n / (10 + n)  # Chan et al., the old mean 0
    np.testing.assert_allclose(batch.returns, lambda_returns / np.sqrt(m2 / (10 + n)), rtol=1e-5, atol=1e-6)


def test_gae_lambda_one_is_the_monte_carlo_batch_bit_for_bit():
    """``gae_lambda=1`` (the default) is the Monte-Carlo path unchanged: the batch equals, to the bit, the
    float64 discounted returns (bootstrapped from V of the state reached) cast to float32, and the batch of an
    agent built without the argument."""
    batches = []
    settings: list[dict[str, Any]] = [{}, {"gae_lambda": 1.0}]
    for kwargs in settings:
        agent = ReinforceAgent((2,), 2, gamma=0.5, baseline=True, normalize_returns=False, seed=0, **kwargs)
        assert agent.gae_lambda == 1.0 and agent.value_network is not None
        (v_reached,) = (float(x) for x in agent.value_network(np.array([[2, 2]], np.float32))[:, 0])
        env = _two_episodes_env()
        try:
            batches.append(_first_batch(agent, env))
        finally:
            env.close()
    g0 = [1.0 + 0.5 * (2.0 + 0.5 * v_reached), 2.0 + 0.5 * v_reached]
    g1 = [1.0 + 0.5 * (2.0 + 0.5 * (3.0 + 0.5 * 4.0)), 2.0 + 0.5 * (3.0 + 0.5 * 4.0), 3.0 + 0.5 * 4.0, 4.0]
    want = np.array([g0[0], g1[0], g0[1], g1[1], g1[2], g1[3]]).astype(np.float32)
    for batch in batches:
        np.testing.assert_array_equal(batch.returns, want)
        np.testing.assert_array_equal(batch.observations, batches[0].observations)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gae_lambda": 0.95}, "`gae_lambda` must be 1.0 for a model without a baseline. Received: gae_lambda=0.95"),
        ({"gae_lambda": 1.5, "baseline": True}, "`gae_lambda` must be in \\[0, 1\\]. Received: gae_lambda=1.5"),
    ],
)
def test_bad_gae_lambda_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReinforceAgent((2,), 2, **kwargs)


def test_settings_travel_in_the_config():
    agent = ReinforceAgent((2,), 2, baseline=True, gae_lambda=0.9, normalize_advantage=True, seed=0)
    clone = ReinforceAgent.from_config(agent.get_config())
    assert (clone.gae_lambda, clone.normalize_advantage) == (0.9, True)


def test_standardized_advantages_leave_out_padding():
    """Mean and population std over the steps with a step weight > 0 only. Mutations tried in
    `standardized_advantages`: every step counted (padding too) -> red; the sample std (ddof 1) -> red."""
    advantages = np.array([1.0, -2.0, 4.0, 0.5, 0.0, 0.0])
    weights = np.array([1.5, 1.5, 1.5, 1.5, 0.0, 0.0])
    real = advantages[:4]
    want = (advantages - real.mean()) / (real.std() + 1e-8)
    got = standardized_advantages(tf.constant(advantages, tf.float32), tf.constant(weights, tf.float32))
    np.testing.assert_allclose(got.numpy()[:4], want[:4], rtol=1e-5)
    plain = standardized_advantages(tf.constant(real, tf.float32)).numpy()
    np.testing.assert_allclose(plain, (real - real.mean()) / (real.std() + 1e-8), rtol=1e-5)
