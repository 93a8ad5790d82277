"""Claims of the REINFORCE agent that a plausible bug would break, each checked against an independent reference.

Public names only (`ReinforceAgent`, its Keras `train_on_batch` -> `train_step`, `make_policy_sampler`,
`NumpyPolicy`), so the tests hold whatever module the agent's parts live in.
"""

from collections.abc import Callable

import keras
import numpy as np
import pytest

from kerasce.rl import NumpyPolicy, ReinforceAgent, make_policy_sampler


def _softmax64(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _value_variables(agent):
    """The agent's trainable variables that are not the policy's: the value network's."""
    policy_ids = {id(v) for v in agent.policy.trainable_variables}
    return [v for v in agent.trainable_variables if id(v) not in policy_ids]


@pytest.mark.parametrize("policy_loss", ["kerasce", "keras"])
@pytest.mark.parametrize("vf_coef", [0.0, 0.7])
@pytest.mark.parametrize("batch, dims, actions", [(6, 3, 3), (16, 5, 2)])
def test_one_baseline_update_equals_a_float64_reference(batch, dims, actions, vf_coef, policy_loss):
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
    """
    rng = np.random.default_rng(batch)
    observations = rng.normal(size=(batch, dims)).astype(np.float32)
    taken = rng.integers(0, actions, size=batch)
    returns = rng.normal(size=batch).astype(np.float32) * 2.0
    agent = ReinforceAgent((dims,), actions, hidden_units=(), baseline=True, vf_coef=vf_coef, ent_coef=0.0, seed=3)
    learning_rate = 0.1
    agent.compile(optimizer=keras.optimizers.SGD(learning_rate))
    if policy_loss == "keras":
        if not hasattr(agent, "policy_gradient_loss"):
            pytest.skip("the agent no longer exposes its policy-gradient loss")
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
