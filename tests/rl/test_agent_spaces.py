"""ReinforceAgent on every action space and on any env: one update against float64 closed forms, the test
envs' known optima reached through ``learn``, custom env instances and factories.

Each claim was checked with a mutation of the code that must turn it red; the docstrings list them.
"""

import gymnasium
import keras
import numpy as np
import pytest
from scipy import special
from scripted_envs import CopyShiftedBitsEnv, DictKeyEnv, MatchDialsEnv, ReachTargetEnv, ScriptedEnv

from kerasce.rl import EvalCallback, ReinforceAgent
from kerasce.rl.batch import Batch
from kerasce.rl.envs import info_action_mask
from kerasce.rl.evaluation import evaluate_policy

B, DIMS, LEARNING_RATE = 48, 3, 0.1
NVEC = [3, 2, 4]
SPACES = {
    "discrete": (gymnasium.spaces.Discrete(3), {}),
    "multibinary": (gymnasium.spaces.MultiBinary(4), {}),
    "multidiscrete": (gymnasium.spaces.MultiDiscrete(NVEC), {}),
    "box-clip": (gymnasium.spaces.Box(-2.0, 1.0, (2,), np.float32), {"state_dependent_std": True}),
    "box-tanh": (
        gymnasium.spaces.Box(-2.0, 1.0, (2,), np.float32),
        {"state_dependent_std": True, "action_bounds": "tanh"},
    ),
}


def _blocks(z, sizes):
    edges = np.cumsum([0, *sizes])
    return [z[:, edges[k] : edges[k + 1]] for k in range(len(sizes))]


def _categorical_grads(z, taken):
    """d(−log π)/dz and dH/dz of a softmax, float64."""
    p = special.softmax(z, -1)
    entropy = -(p * np.log(p)).sum(-1, keepdims=True)
    return p - np.eye(z.shape[1])[taken], -p * (np.log(p) + entropy)


def _reference_grads(space, params, raw):
    """Per step: d(−log π(a|s))/d params and dH/d params, written from each distribution's formula."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return _categorical_grads(params, raw)
    if isinstance(space, gymnasium.spaces.MultiBinary):
        s = special.expit(params)
        return s - raw, -params * s * (1 - s)
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        parts = [_categorical_grads(z, raw[:, k]) for k, z in enumerate(_blocks(params, NVEC))]
        return np.concatenate([p[0] for p in parts], -1), np.concatenate([p[1] for p in parts], -1)
    d = raw.shape[1]
    mean, var = params[:, :d], np.exp(2 * params[:, d:])
    # −log N(u; μ, σ): d/dμ = (μ − u)/σ², d/dlog σ = 1 − (u − μ)²/σ²; the tanh term has no parameter.
    # H = Σ_d (½ log 2πe + log σ_d): dH/dμ = 0, dH/dlog σ = 1.
    d_nll = np.concatenate([(mean - raw) / var, 1 - (raw - mean) ** 2 / var], -1)
    return d_nll, np.concatenate([np.zeros_like(mean), np.ones_like(mean)], -1)


@pytest.mark.parametrize("ent_coef", [0.0, 0.3])
@pytest.mark.parametrize("name", sorted(SPACES))
def test_one_update_equals_the_float64_policy_gradient(name, ent_coef):
    """One SGD ``update`` of a linear policy ``params = x W + b`` moves it by ``−lr xᵀ D / B`` with
    ``D = G ⊙ d(−log π)/d params − ent_coef · dH/d params``: the space's kerasce loss weighted by the return,
    and the entropy bonus, for every action space.

    Mutations tried: `train_step`'s non-Categorical policy loss without the returns (`neg_log_prob` alone) ->
    red for every space but discrete; the entropy as `softmax_entropy(logits)` for every space -> red for
    multibinary, multidiscrete, box with ent_coef 0.3; the batch's Box actions cast to int32 -> red for box.
    """
    space, options = SPACES[name]
    agent = ReinforceAgent.from_env(_vector_env(gymnasium.spaces.Box(-1, 1, (DIMS,)), space),  # type: ignore[arg-type]
                                    hidden_units=(), ent_coef=ent_coef, seed=2, **options)  # fmt: skip
    agent.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, DIMS)).astype(np.float32)
    returns = (rng.normal(size=B) * 2.0).astype(np.float32)
    kernel, bias = (np.asarray(v.numpy(), np.float64) for v in agent.policy.trainable_variables)
    params = x.astype(np.float64) @ kernel + bias
    raw = agent.distribution.np_sample(params.astype(np.float32), rng)
    agent.update(Batch(x, raw, returns))

    d_nll, d_entropy = _reference_grads(space, params, raw)
    d_params = (returns[:, None] * d_nll - ent_coef * d_entropy) / B
    new_kernel, new_bias = (v.numpy() for v in agent.policy.trainable_variables)
    np.testing.assert_allclose(new_kernel, kernel - LEARNING_RATE * x.T @ d_params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_bias, bias - LEARNING_RATE * d_params.sum(0), rtol=1e-4, atol=1e-5)


class _SpacesEnv(gymnasium.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


def _vector_env(observation_space, action_space):
    return gymnasium.vector.SyncVectorEnv([lambda: _SpacesEnv(observation_space, action_space)])


@pytest.mark.slow  # five small runs, a few seconds each
@pytest.mark.parametrize(
    "env_class, updates, options, at_least",
    [
        (CopyShiftedBitsEnv, 150, {}, 7.5),  # optimum 8, random 4
        (MatchDialsEnv, 150, {}, 7.5),  # optimum 8, random 8/3
        (ReachTargetEnv, 300, {}, -0.15),  # optimum about -0.04, random about -10
        (ReachTargetEnv, 300, {"action_bounds": "tanh"}, -0.5),
        (DictKeyEnv, 100, {}, 5.7),  # optimum 6, random valid action 3; masks from the Dict observation
    ],
    ids=["multibinary", "multidiscrete", "box-clip", "box-tanh", "dict-masked"],
)
def test_learn_reaches_each_test_envs_optimum(env_class, updates, options, at_least):
    """``from_env`` + ``learn`` on a custom env class (a factory, unregistered: gymnasium's checker runs) with
    every action space; the greedy play of 20 fresh episodes (evaluate_policy with the agent's distribution)
    reaches the known optimum.

    Mutations tried: the trainer stepping the env with the raw actions (no `np_to_env`) -> red for box-tanh
    (its raw Gaussian draws are not the squashed actions); `FlattenObservations` not moving the
    ``action_mask`` entry into the infos -> red for dict-masked (no mask: ValueError); the greedy action of
    the evaluation as `argmax` for every space -> red for multibinary, multidiscrete and box.
    """
    agent = ReinforceAgent.from_env(env_class, hidden_units=(32,), gamma=1.0, seed=0, **options)
    assert agent.use_action_mask == (env_class is DictKeyEnv)
    agent.learn(env_class, max_updates=updates)
    mask = info_action_mask if agent.use_action_mask else None
    logits = agent.policy_sampler().logits
    evaluation = evaluate_policy(logits, env_class(), 20, seed=10**6, action_mask=mask, distribution=agent.distribution)
    assert evaluation.mean >= at_least


def test_learn_takes_an_unregistered_instance_and_a_factory_and_leaves_the_instance_alone():
    """An instance is copied (its own state never stepped), a factory called per sub-env; both train and
    evaluate (``EvalCallback`` with an instance)."""
    instance = ScriptedEnv(length=3)
    agent = ReinforceAgent.from_env(instance, num_envs=4, seed=0)
    evaluation = EvalCallback(ScriptedEnv(length=3), episodes=2, eval_every=1)
    agent.learn(instance, max_updates=2, callbacks=[evaluation])
    assert agent.env_steps == 2 * 4 * 3 and instance.actions_taken == []
    assert [e["mean"] for e in evaluation.evaluations] == [6.0, 6.0]  # rewards 1 + 2 + 3 whatever the action
    agent.learn(lambda: ScriptedEnv(length=3), max_updates=3)
    assert agent.env_steps == 3 * 4 * 3


class _BrokenResetEnv(gymnasium.Env):
    """``reset`` returns the observation alone (gymnasium's API wants ``(observation, info)``)."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32)

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, True, False, {}


@pytest.mark.parametrize("how", ["instance", "factory"])
def test_a_broken_custom_env_fails_with_the_checkers_finding_first(how):
    """Mutation tried: `as_vector_env` without the checker for unregistered envs -> red (the vector env's
    own error comes later, at reset, and names no env)."""
    env = _BrokenResetEnv() if how == "instance" else _BrokenResetEnv
    for call in (lambda: ReinforceAgent.from_env(env), lambda: ReinforceAgent((2,), 2).learn(env, max_updates=1)):
        with pytest.raises(ValueError) as error:
            call()
        first = str(error.value).splitlines()[0]
        assert first.startswith("`env` must pass gymnasium.utils.env_checker.check_env. Received: env=_BrokenResetEnv")
        assert "The result returned by `env.reset()` was not a tuple of the form `(obs, info)`" in first


def test_from_env_reads_the_spaces_and_the_config_round_trips():
    """``from_env`` sizes the head for the space (``P``), keeps ``action_space`` / ``observation_space``; the
    config restores an agent with the same distribution and export inputs."""
    agent = ReinforceAgent.from_env(DictKeyEnv(), seed=0)
    assert (agent.num_actions, agent.observation_shape, agent.use_action_mask) == (3, (5,), True)
    clone = ReinforceAgent.from_config(agent.get_config())
    assert clone.observation_space == DictKeyEnv().observation_space
    assert clone.action_space == gymnasium.spaces.Discrete(3)
    assert [s.name for s in clone.serving_model()[1]] == ["key", "noise", "action_mask"]
    box = ReinforceAgent.from_env(ReachTargetEnv(), action_bounds="tanh", log_std_init=-0.5, seed=0)
    assert box.num_actions == 4  # mean and log σ per action dimension
    clone = ReinforceAgent.from_config(box.get_config())
    assert (clone.distribution.bounds, clone.log_std_init) == ("tanh", -0.5)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(clone.distribution.high, [1.0, 1.0])  # type: ignore[attr-defined]


class _ObservationMaskOnlyEnv(DictKeyEnv):
    """DictKeyEnv with the mask in the observation only (empty infos); records every action's validity."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def _obs(self):
        observation, _ = super()._obs()
        self.mask = observation["action_mask"]
        return observation, {}

    def step(self, action):
        self.record.append(bool(self.mask[int(action)]))
        return super().step(action)


MASK_ONLY_ID, MASK_ONLY_RECORD = "kerasce-test/ObservationMaskOnly-v0", []  # type: ignore[var-annotated]
if MASK_ONLY_ID not in gymnasium.registry:  # registered: no env checker, whose random steps would be recorded
    gymnasium.register(MASK_ONLY_ID, entry_point=lambda: _ObservationMaskOnlyEnv(MASK_ONLY_RECORD))  # type: ignore[arg-type]


def test_the_mask_of_a_dict_observation_is_used_in_training_and_evaluation():
    """Only the observation's ``action_mask`` entry says which doors are valid: no invalid action is ever
    taken, in training or in greedy evaluation. Mutation tried: `FlattenObservations` not moving the entry
    into the infos -> red (no mask found)."""
    agent = ReinforceAgent.from_env(MASK_ONLY_ID, num_envs=8, seed=0)
    evaluation = EvalCallback(MASK_ONLY_ID, episodes=4, eval_every=1)
    MASK_ONLY_RECORD.clear()
    agent.learn(MASK_ONLY_ID, max_updates=3, callbacks=[evaluation])
    assert len(MASK_ONLY_RECORD) == 3 * (8 + 4) * 6 and all(MASK_ONLY_RECORD)


def _named_input_policy():
    """A functional policy of DictKeyEnv's entries by name: an embedding of the key, the noise beside it."""
    key = keras.Input((), dtype="int64", name="key")
    noise = keras.Input((2,), name="noise")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(3, 4, embeddings_initializer="uniform")(key))
    hidden = keras.layers.Dense(16, activation="tanh")(keras.layers.Concatenate()([embedded, noise]))
    return keras.Model({"key": key, "noise": noise}, keras.layers.Dense(3)(hidden))


def test_a_policy_with_named_inputs_trains_on_dict_observations_and_is_exported_as_given(tmp_path):
    """The user's model sees each entry as it is (the key's int state, not a one-hot), in training, in the
    config and in the export. Mutation tried: `UnflattenObservations` returning the one-hot block, not the
    state -> red (the Embedding gets another input)."""
    import tensorflow as tf

    policy = _named_input_policy()
    agent = ReinforceAgent.from_env(DictKeyEnv, policy=policy, seed=0, num_envs=8)
    agent.learn(DictKeyEnv, max_updates=2)
    rng = np.random.default_rng(0)
    key, noise = rng.integers(0, 3, 5), rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    want = keras.ops.convert_to_numpy(policy({"key": key, "noise": noise}))
    flat = np.concatenate([np.eye(3, dtype=np.float32)[key], noise], axis=1)  # gymnasium sorts keys: key, noise
    np.testing.assert_allclose(agent.policy(flat), want, rtol=1e-6, atol=1e-6)
    mask = np.ones((5, 3), np.int8)
    served = tf.saved_model.load(str(agent.export_policy(tmp_path / "policy"))).signatures["serving_default"]
    got = served(key=tf.constant(key, tf.int64), noise=tf.constant(noise), action_mask=tf.constant(mask))
    np.testing.assert_allclose(got["probabilities"], tf.nn.softmax(want).numpy(), atol=1e-6)
    clone = ReinforceAgent.from_config(agent.get_config())
    assert clone.named_input_policy is not None and set(clone.named_input_policy.input) == {"key", "noise"}


def test_unflatten_observations_gives_back_each_entry():
    """flatten_observations then UnflattenObservations returns the observations themselves (a Discrete
    entry's state with its ``start``, a Box entry in its shape). Mutations tried: the ``start`` left out ->
    red; the Box entry not reshaped -> red."""
    from kerasce.rl.networks import UnflattenObservations
    from kerasce.rl.spaces import flatten_observations

    space = gymnasium.spaces.Dict(
        {"key": gymnasium.spaces.Discrete(3, start=5), "grid": gymnasium.spaces.Box(-1.0, 1.0, (2, 2), np.float32)}
    )
    space.seed(0)
    samples = [space.sample() for _ in range(6)]
    batch = {k: np.stack([s[k] for s in samples]) for k in ("key", "grid")}
    got = UnflattenObservations(space)(flatten_observations(space, batch))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["key"]), batch["key"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["grid"]), batch["grid"])
