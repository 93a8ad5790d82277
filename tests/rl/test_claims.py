"""Claims of the REINFORCE agent that a plausible bug would break, each checked against an independent reference.

Public names only (`ReinforceAgent`, its Keras `train_on_batch` -> `train_step`, `make_policy_sampler`,
`NumpyPolicy`), so the tests hold whatever module the agent's parts live in.
"""

import functools
from collections.abc import Callable

import gymnasium
import keras
import numpy as np
import pytest
from scripted_envs import ScriptedEnv

from kerasce.rl import NumpyPolicy, ReinforceAgent, make_policy_sampler


def _softmax64(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _value_variables(agent):
    """The agent's trainable variables that are not the policy's: the value network's."""
    policy_ids = {id(v) for v in agent.policy.trainable_variables}
    return [v for v in agent.trainable_variables if id(v) not in policy_ids]


@pytest.mark.parametrize("normalize_advantage", [False, True])
@pytest.mark.parametrize("policy_loss", ["kerasce", "keras"])
@pytest.mark.parametrize("vf_coef", [0.0, 0.7])
@pytest.mark.parametrize("batch, dims, actions", [(6, 3, 3), (16, 5, 2)])
def test_one_baseline_update_equals_a_float64_reference(
    batch, dims, actions, vf_coef, policy_loss, normalize_advantage
):
    """One SGD update of a linear policy and value network equals the float64 gradient of the docstring loss.

        loss = mean_b[(G_b - V(s_b)) · CE(a_b, z_b)] + vf_coef · mean_b[(G_b - V(s_b))²]

    with ``G - V`` a constant weight in the first term: the policy term moves only the policy, and the value
    network moves only by ``vf_coef`` times the value loss's gradient (not at all with ``vf_coef = 0``).

    The baseline is held constant twice: the agent's ``stop_gradient(V)`` and ``PolicyGradientLoss``, which
    stops the gradient of its sample weights. ``policy_loss="keras"`` swaps in Keras's own weighted sparse
    cross-entropy (the same value, ``mean_b w_b CE_b``, but gradients flow through its weights), so that
    the agent's own ``stop_gradient`` is what the test sees.

    Mutations tried: `advantages = returns - values[:, 0]` (no `stop_gradient`) in `ReinforceAgent.train_step`
    -> red for policy_loss="keras" (the value weights move by the policy term's gradient, also when
    `vf_coef = 0`; with kerasce's loss the update is unchanged: the loss holds the weights constant too);
    that and `sample_weight=sample_weight` (no `stop_gradient`) in `PolicyGradientLoss.__call__` -> red for both.

    ``normalize_advantage=True``: the policy term's weight is ``(A - mean A) / (std A + 1e-8)`` over the batch
    (population std); the value loss is unchanged. Mutations tried: the standardisation dropped in `train_step`
    -> red; the sample std (ddof 1) in `standardized_advantages` -> red.
    """
    rng = np.random.default_rng(batch)
    observations = rng.normal(size=(batch, dims)).astype(np.float32)
    taken = rng.integers(0, actions, size=batch)
    returns = rng.normal(size=batch).astype(np.float32) * 2.0
    agent = ReinforceAgent(
        (dims,),
        actions,
        hidden_units=(),
        baseline=True,
        vf_coef=vf_coef,
        normalize_advantage=normalize_advantage,
        seed=3,
    )
    learning_rate = 0.1
    agent.compile(optimizer=keras.optimizers.SGD(learning_rate))
    if policy_loss == "keras":
        # Fails (never skips) if the agent stops exposing its loss: this check of the baseline needs it.
        assert isinstance(agent.policy_gradient_loss, keras.losses.Loss), "the agent must expose its loss"
        agent.policy_gradient_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernel, bias = (np.asarray(v.numpy(), np.float64) for v in agent.policy.trainable_variables)
    value_kernel, value_bias = (np.asarray(v.numpy(), np.float64) for v in _value_variables(agent))
    assert kernel.shape == (dims, actions) and value_kernel.shape == (dims, 1)
    # The value network starts at zero output with Glorot weights; give it a bias so that G - V != G.
    value_bias = value_bias + 0.3
    _value_variables(agent)[1].assign(value_bias.astype(np.float32))

    agent.train_on_batch(observations, taken, sample_weight=returns)

    x, g = observations.astype(np.float64), returns.astype(np.float64)
    probabilities = _softmax64(x @ kernel + bias)
    values = (x @ value_kernel + value_bias)[:, 0]
    advantages = g - values  # a constant in the policy term
    if normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    d_logits = advantages[:, None] * (probabilities - np.eye(actions)[taken]) / batch
    d_values = -2.0 * vf_coef * (g - values) / batch
    expected = [
        kernel - learning_rate * x.T @ d_logits,
        bias - learning_rate * d_logits.sum(0),
        value_kernel - learning_rate * x.T @ d_values[:, None],
        value_bias - learning_rate * d_values.sum(),
    ]
    got = [v.numpy() for v in [*agent.policy.trainable_variables, *_value_variables(agent)]]
    for name, want, have in zip(["policy kernel", "policy bias", "value kernel", "value bias"], expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, err_msg=name)
    if vf_coef == 0.0:
        np.testing.assert_array_equal(got[2], value_kernel.astype(np.float32))


def _shared_dense_policy(repeats, activation):
    """A functional policy that applies ONE hidden Dense layer `repeats` times: a chain of weights in
    `model.layers` (each listed once) that a per-layer NumPy copy would run only once."""
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(
        4,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(1),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=2),
    )
    hidden = inputs
    for _ in range(repeats):
        hidden = shared(hidden)
    logits = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(3))(hidden)
    return keras.Model(inputs, logits), shared


def _reference_logits(model, shared, repeats, activation, observations):
    """The model's forward pass in float64 NumPy, written out: the shared layer applied `repeats` times."""
    kernel, bias = (np.asarray(w, np.float64) for w in shared.get_weights())
    out_kernel, out_bias = (np.asarray(w, np.float64) for w in model.layers[-1].get_weights())
    activations: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}
    act = activations[activation]
    h = observations.astype(np.float64)
    for _ in range(repeats):
        h = act(h @ kernel + bias)
    return h @ out_kernel + out_bias


@pytest.mark.parametrize("repeats", [2, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_sampler_of_a_policy_reusing_a_dense_layer_has_the_models_probabilities(repeats, activation):
    """The sampler that `learn` uses gives the model's probabilities, also for a layer applied twice.

    Mutation tried: skipping `NumpyPolicy`'s self-check against the Keras model (`_check_matches_model`)
    -> red: the NumPy copy applies the shared layer once, probabilities off by up to ~0.2.
    """
    model, shared = _shared_dense_policy(repeats, activation)
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32) * 2.0
    want = _softmax64(_reference_logits(model, shared, repeats, activation, observations))
    # The reference is the model (guards the reference itself), and the single-application reading is not.
    np.testing.assert_allclose(_softmax64(np.asarray(model(observations), np.float64)), want, atol=1e-5)
    assert np.abs(_softmax64(_reference_logits(model, shared, 1, activation, observations)) - want).max() > 1e-3

    sampler = make_policy_sampler(model)
    np.testing.assert_allclose(_softmax64(np.asarray(sampler.logits(observations), np.float64)), want, atol=1e-5)


def test_numpy_policy_refuses_a_model_it_does_not_reproduce():
    """`NumpyPolicy` either reproduces the model or refuses it with TypeError (never silently differs).

    Mutation tried: skipping `_check_matches_model` -> red.
    """
    model, shared = _shared_dense_policy(2, "tanh")
    observations = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    try:
        policy = NumpyPolicy(model)
    except TypeError as error:
        assert "does not reproduce" in str(error)
        return
    want = _reference_logits(model, shared, 2, "tanh", observations)
    np.testing.assert_allclose(policy.logits(observations), want, rtol=1e-4, atol=1e-5)


def _batches_of(agent, env, updates=1):
    """The batches ``learn`` hands to ``agent.update``, captured on the way."""
    update, seen = agent.update, []

    def spy(batch):
        seen.append(batch)
        return update(batch)

    agent.update = spy
    agent.learn(env, max_updates=updates)
    return seen


def _discounted(rewards, gamma, tail=0.0):
    """float64 reward-to-go of one episode, ``tail`` the value after its last step."""
    out, running = [], tail
    for r in reversed(rewards):
        running = r + gamma * running
        out.append(running)
    return out[::-1]


def test_default_return_normalisation_is_over_the_kept_steps_only(scripted_vec_env):
    """The default path (``normalize_returns=True``, no baseline) standardises the returns of the kept steps:
    ``(G - mean) / (std + eps)`` over them alone, not over the rollout's padded invalid steps.

    Sub-envs with episodes of 1, 2 and 3 steps (reward ``k + 1`` at step ``k``): the rollout has 3 rows, 3 of
    its 9 entries invalid (after a sub-env's first episode). Mutations tried in `Trainer.finish_returns`:
    normalisation removed (`return returns, kept_steps` first) -> red; mean and std over every entry of the
    rollout (`moments(returns)` instead of `moments(returns[mask])`) -> red.
    """
    agent = ReinforceAgent((2,), 2, gamma=0.5, seed=0)
    assert agent.normalize_returns and not agent.baseline  # the defaults under test
    (batch,) = _batches_of(agent, scripted_vec_env([1, 2, 3]))
    g1, g2, g3 = (_discounted([k + 1.0 for k in range(n)], 0.5) for n in (1, 2, 3))
    kept = np.array([g1[0], g2[0], g3[0], g2[1], g3[1], g3[2]])  # time-major
    want = (kept - kept.mean()) / (kept.std() + np.finfo(np.float64).eps)
    np.testing.assert_allclose(batch.returns, want, rtol=1e-6, atol=1e-7)
    assert batch.returns.dtype == np.float32


def test_a_truncation_mid_rollout_bootstraps_from_its_own_next_observation():
    """A time-limit truncation that is not on the rollout's last row continues its return with ``gamma * V``
    of the state that step reached, not of another row's.

    Sub-env 0 is truncated after 2 steps (reaching obs ``[2, 2]``), sub-env 1 terminates after 4. The vector
    env is wrapped, so it is stepped whole: sub-env 0 autoresets and runs on, and the rollout's other rows
    and its last observations hold other states (``[0, 2]``, ``[1, 2]``). Mutations tried in
    `Trainer.bootstrap_values`: the observation of the truncated step's own row (`rollout.observations`
    instead of `following`) -> red; the rollout's last observations for every truncated step -> red; the
    last row's observations -> red.
    """
    envs = [functools.partial(ScriptedEnv, 2, truncate=True), functools.partial(ScriptedEnv, 4)]
    env = gymnasium.vector.VectorWrapper(gymnasium.vector.SyncVectorEnv(envs))
    agent = ReinforceAgent((2,), 2, gamma=0.5, baseline=True, normalize_returns=False, seed=0)
    assert agent.value_network is not None
    states = np.array([[2.0, 2.0], [0.0, 2.0], [1.0, 2.0]], np.float32)
    v_reached, *v_others = (float(v) for v in agent.value_network(states)[:, 0])
    assert min(abs(v_reached - v) for v in v_others) > 1e-3  # the wrong rows would show
    try:
        (batch,) = _batches_of(agent, env)
    finally:
        env.close()
    g0 = _discounted([1.0, 2.0], 0.5, tail=v_reached)
    g1 = _discounted([1.0, 2.0, 3.0, 4.0], 0.5)
    np.testing.assert_allclose(batch.returns, [g0[0], g1[0], g0[1], g1[1], g1[2], g1[3]], rtol=1e-5)
    np.testing.assert_array_equal(batch.observations[:3], [[0, 2], [0, 4], [1, 2]])
