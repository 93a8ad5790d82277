"""Any Keras policy trains through learn() and exports: Sequential, functional, subclassed, and a conv
policy on image observations; the NumPy fast path never stands in for a model it does not reproduce."""

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from scripted_envs import PIXELS_ID

from kerasce.rl import EvalCallback, ReinforceAgent
from kerasce.rl.rollout import CompiledPolicy, NumpyPolicy, make_policy_sampler


def sequential(shape, actions):
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(actions),
        ]
    )


def functional(shape, actions):
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(16, activation="relu")(x)
    skip = keras.layers.Concatenate()([x, hidden])  # not a chain: the compiled path
    return keras.Model(inputs, keras.layers.Dense(actions)(skip))


@keras.saving.register_keras_serializable(package="kerasce_tests")
class Subclassed(keras.Model):
    """A subclassed policy: no symbolic ``inputs`` (the AttributeError of issue 12)."""

    def __init__(self, actions=2, **kwargs):
        super().__init__(**kwargs)
        self.actions = actions
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.out = keras.layers.Dense(actions)

    def call(self, x, training=None):
        return self.out(self.hidden(self.flatten(x)))

    def get_config(self):
        return dict(super().get_config(), actions=self.actions)


def subclassed(shape, actions):
    return Subclassed(actions)


def conv(shape, actions):
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(actions),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, build",
    [
        ("CartPole-v1", sequential),
        ("CartPole-v1", functional),
        ("CartPole-v1", subclassed),
        (PIXELS_ID, subclassed),
        (PIXELS_ID, conv),
    ],
)
def test_any_keras_policy_trains_through_learn_and_exports(env_id, build, tmp_path):
    keras.utils.set_random_seed(0)
    probe = ReinforceAgent.from_env(env_id)
    agent = ReinforceAgent.from_env(
        env_id, policy=build(probe.observation_shape, probe.num_actions), num_envs=8, seed=0, learning_rate=0.05
    )
    before = [w.copy() for w in agent.policy.get_weights()]
    history = agent.learn(env_id, max_updates=3, callbacks=[EvalCallback(env_id, episodes=4, eval_every=3)])
    assert agent.updates == 3 and len(history.history["loss"]) == 3
    assert any(not np.array_equal(b, a) for b, a in zip(before, agent.policy.get_weights()))
    observations = np.random.default_rng(0).uniform(size=(5,) + agent.observation_shape).astype(np.float32)
    serve = tf.saved_model.load(str(agent.export_policy(tmp_path / "policy"))).signatures["serving_default"]
    np.testing.assert_allclose(
        serve(tf.constant(observations))["probabilities"].numpy(),
        agent.action_probabilities(observations),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow
def test_conv_policy_learns_the_pixel_task():
    # Reward 1 per step when the action names the half with the bright pixel: random play scores 2.5 of 5.
    keras.utils.set_random_seed(0)
    agent = ReinforceAgent.from_env(PIXELS_ID, policy=conv((8, 8, 1), 2), num_envs=32, seed=0, learning_rate=0.03)
    agent.learn(PIXELS_ID, max_updates=40)
    assert np.mean(agent.episode_returns[-64:]) > 3.5, np.mean(agent.episode_returns[-64:])


def test_subclassed_policy_samples_through_either_path():
    model = Subclassed(3)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    sampler = make_policy_sampler(model, observation_shape=(4,))
    np.testing.assert_allclose(sampler.logits(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(CompiledPolicy(model, (4,)).logits(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="observation_shape"):
        CompiledPolicy(model)


def test_a_dense_layer_used_twice_is_not_taken_for_a_stack():
    # x -> shared -> shared -> out: model.layers lists `shared` once, so a NumPy stack built from the
    # layer list would apply it once and sample from the wrong probabilities.
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, activation="tanh")
    model = keras.Model(inputs, keras.layers.Dense(2)(shared(shared(inputs))))
    x = np.random.default_rng(2).normal(size=(16, 4)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    with pytest.raises(TypeError, match="does not reproduce"):
        NumpyPolicy(model)
    sampler = make_policy_sampler(model)
    assert isinstance(sampler, CompiledPolicy)
    np.testing.assert_allclose(sampler.logits(x), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_policy_samples_through_numpy_with_its_current_log_std():
    """The default Box policy (a Dense stack and ``AppendLogStd``) gets the NumPy sampler, which gives the float64
    forward pass of its weights ``[tanh(tanh(x W1 + b1) W2 + b2) W3 + b3, log_std]``, and after ``refresh()`` the
    log-std it has now. Mutations tried: `AppendLogStd.numpy_function` reading ``log_std_init`` instead of the
    variable -> red; `NumpyPolicy.refresh` keeping the first ``numpy_function()`` -> red."""
    space = gymnasium.spaces.Box(-2.0, 2.0, (2,), np.float32)
    agent = ReinforceAgent((3,), 4, action_space=space, hidden_units=(8, 8), log_std_init=-0.5, seed=0)
    sampler = make_policy_sampler(agent.policy, observation_shape=(3,))
    assert isinstance(sampler, NumpyPolicy)
    log_std = next(v for v in agent.policy.trainable_variables if "log_std" in v.path)
    log_std.assign([0.25, -1.5])
    sampler.refresh()
    x = np.random.default_rng(0).normal(size=(5, 3))
    kernels = [np.asarray(v.numpy(), np.float64) for v in agent.policy.trainable_variables if v is not log_std]
    h = x
    for i in range(0, len(kernels), 2):
        h = h @ kernels[i] + kernels[i + 1]
        h = np.tanh(h) if i + 2 < len(kernels) else h
    want = np.concatenate([h, np.broadcast_to([0.25, -1.5], (5, 2))], axis=-1)
    np.testing.assert_allclose(sampler.logits(x.astype(np.float32)), want, rtol=1e-5, atol=1e-6)
