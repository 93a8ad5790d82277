"""ReinforceAgent: the train step against the analytic REINFORCE gradient, the learn loop
(improvement, seeding, resume, callbacks), serialization, export and bad input."""

import csv
import inspect
import json
import os
import time

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.kerasce_free import run_without_kerasce
from scripted_envs import ScriptedEnv

from kerasce.rl import Batch, CheckpointCallback, ReinforceAgent, RunContext, RunState, StopAtMeanReturn
from kerasce.rl.envs import make_vector_env

TIMING_KEYS = {"steps_per_second", "train_seconds", "collect_cpu_seconds"}


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def batch(rng, size=6, dims=3, actions=2):
    x = rng.normal(size=(size, dims)).astype(np.float32)
    a = rng.integers(0, actions, size=size).astype(np.int32)
    g = rng.normal(size=size).astype(np.float32)
    return x, a, g


def linear_agent(dims=3, actions=2, **kwargs):
    policy = keras.Sequential([keras.Input((dims,)), keras.layers.Dense(actions)])
    agent = ReinforceAgent((dims,), actions, policy=policy, **kwargs)
    agent.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    return agent


@pytest.mark.parametrize("ent_coef", [0.0, 0.3])
def test_train_step_gradient_equals_analytic_reinforce_gradient(ent_coef):
    agent = linear_agent(ent_coef=ent_coef)
    x, a, g = batch(np.random.default_rng(0))
    w0, b0 = (v.astype(np.float64) for v in agent.policy.get_weights())
    # float64 reference: loss = mean_b[G_b CE_b] - c mean_b[H_b];
    # d/dz = (G (p - onehot) + c p (log p + H)) / B, since dH/dz = -p (log p + H).
    z = x.astype(np.float64) @ w0 + b0
    p = np_softmax(z)
    onehot = np.eye(2)[a]
    log_p = np.log(p)
    entropy = -(p * log_p).sum(-1)
    ce = -(onehot * log_p).sum(-1)
    grad_z = (g[:, None] * (p - onehot) + ent_coef * p * (log_p + entropy[:, None])) / len(a)
    logs = agent.train_on_batch(x, a, sample_weight=g, return_dict=True)
    w1, b1 = agent.policy.get_weights()
    np.testing.assert_allclose(w1, w0 - x.T.astype(np.float64) @ grad_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b0 - grad_z.sum(0), rtol=1e-5, atol=1e-6)
    # The logged loss is the real loss, and each term is logged.
    np.testing.assert_allclose(logs["policy_loss"], np.mean(g * ce), rtol=1e-5)
    np.testing.assert_allclose(logs["entropy"], entropy.mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], np.mean(g * ce) - ent_coef * entropy.mean(), rtol=1e-5, atol=1e-7)


def test_each_updates_logs_are_that_updates_values():
    """learn() logs one update per row: the trackers are zeroed before each step (mutation tried: the reset
    dropped, so the second update logs the mean over both -> red)."""
    agent = linear_agent(ent_coef=0.1)
    rng = np.random.default_rng(3)
    agent.update(Batch(*batch(rng)))
    x, a, g = batch(rng, size=9)
    w, b = (v.astype(np.float64) for v in agent.policy.get_weights())
    p = np_softmax(x.astype(np.float64) @ w + b)
    ce = -np.log(p[np.arange(len(a)), a])
    entropy = -(p * np.log(p)).sum(-1).mean()
    logs = agent.update(Batch(x, a, g))
    np.testing.assert_allclose(logs["policy_loss"], np.mean(g * ce), rtol=1e-5)
    np.testing.assert_allclose(logs["entropy"], entropy, rtol=1e-5)


class _TimedScriptedEnv(ScriptedEnv):
    """ScriptedEnv whose every step sleeps (``busy=False``) or spins on the CPU (``busy=True``) ``seconds``."""

    def __init__(self, seconds, busy, **kwargs):
        super().__init__(**kwargs)
        self.seconds, self.busy = seconds, busy

    def step(self, action):
        if self.busy:
            end = time.process_time() + self.seconds
            while time.process_time() < end:
                pass
        else:
            time.sleep(self.seconds)
        return super().step(action)


@pytest.mark.parametrize("busy", [False, True])
def test_collect_cpu_seconds_is_the_collections_cpu_time(busy):
    """``collect_cpu_seconds`` counts CPU time, not wall time: env steps that sleep 5 ms add wall time and
    (almost) no CPU time, steps that spin 5 ms of CPU add at least that (mutation tried: wall time logged
    -> the sleeping case red; the CPU time of the update instead of the collection's only -> not caught,
    the update is short; CPU time not counted -> the spinning case red)."""
    seconds, length, n = 0.005, 4, 2
    env = gymnasium.vector.SyncVectorEnv([lambda: _TimedScriptedEnv(seconds, busy, length=length) for _ in range(n)])
    agent = ReinforceAgent((2,), 2, hidden_units=(), seed=0)
    agent.learn(env, max_updates=2)
    env.close()
    for row in agent.training_log:
        collect_wall = length * n / row["steps_per_second"]  # first episodes only: length steps per sub-env
        assert collect_wall >= length * n * seconds
        if busy:
            assert row["collect_cpu_seconds"] >= length * n * seconds
        else:
            assert 0 < row["collect_cpu_seconds"] < 0.5 * length * n * seconds


def test_updates_of_any_batch_size_share_one_trace():
    """learn()'s batches differ in size at every update; the compiled step is traced once for all of them (one
    trace costs about 0.8 s here). Mutation tried: Keras's own ``train_function`` (traced for the first shape,
    again relaxed for the second) -> 2 traces, red."""
    agent = linear_agent()
    rng = np.random.default_rng(0)
    for size in (6, 9, 4):
        agent.update(Batch(*batch(rng, size=size)))
    assert [f.experimental_get_tracing_count() for f in agent._update_functions.values()] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("baseline", [False, True])
def test_xla_updates_equal_the_plain_ones(baseline):
    """``compile(jit_compile=True)``: three updates of different batch sizes give the weights and logs of the
    plain compiled step to 1e-5 (mutation tried: XLA step fed a batch with one return changed -> red)."""
    agents = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(1)
        agent = ReinforceAgent((3,), 2, hidden_units=(8,), baseline=baseline, ent_coef=0.1, seed=1)
        agent.compile(jit_compile=jit_compile)
        agents.append(agent)
    assert [a.jit_compile for a in agents] == [False, True]
    rng = np.random.default_rng(2)
    for size in (6, 9, 4):
        data = batch(rng, size=size)
        plain, xla = (agent.update(Batch(*data)) for agent in agents)
        assert plain.keys() == xla.keys()
        for key in plain:
            np.testing.assert_allclose(xla[key], plain[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(*(agent.get_weights() for agent in agents)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_baseline_logs_value_loss_and_uses_advantages():
    agent = ReinforceAgent((3,), 2, baseline=True, vf_coef=0.5, seed=0)
    agent.compile()
    x, a, g = batch(np.random.default_rng(1))
    p = np_softmax(keras.ops.convert_to_numpy(agent(x)).astype(np.float64))
    assert agent.value_network is not None
    v = keras.ops.convert_to_numpy(agent.value_network(x))[:, 0].astype(np.float64)
    ce = -np.log(p[np.arange(len(a)), a])
    entropy = -(p * np.log(p)).sum(-1).mean()
    logs = agent.fit(x, a, sample_weight=g, batch_size=len(a), epochs=1, verbose=0, shuffle=False).history
    expected_policy = np.mean((g - v) * ce)
    expected_value = np.mean((g - v) ** 2)
    np.testing.assert_allclose(logs["policy_loss"][0], expected_policy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["value_loss"][0], expected_value, rtol=1e-4)
    np.testing.assert_allclose(logs["entropy"][0], entropy, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"][0], expected_policy + 0.5 * expected_value, rtol=1e-4, atol=1e-6)


def test_fit_is_reinforce_and_history_shows_the_real_loss():
    agent = linear_agent()
    x, a, g = batch(np.random.default_rng(2), size=8)
    w0, b0 = agent.policy.get_weights()
    p = np_softmax(x.astype(np.float64) @ w0 + b0)
    expected = np.mean(g * -np.log(p[np.arange(8), a]))
    history = agent.fit(x, a, sample_weight=g, batch_size=8, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)


def sgd_update(dtype_policy, unscaled=False):
    """Weights before and after one SGD(0.1) step of a seed-0 agent under ``dtype_policy``."""
    keras.mixed_precision.set_dtype_policy(dtype_policy)
    try:
        agent = ReinforceAgent((3,), 2, seed=0)
        agent.compile(optimizer=keras.optimizers.SGD(0.1))
        if unscaled:  # what a train_step that forgets scale_loss does
            agent.optimizer.scale_loss = lambda loss: loss
        x, a, g = batch(np.random.default_rng(3))
        before = [w.copy() for w in agent.policy.get_weights()]
        logs = agent.train_on_batch(x, a, sample_weight=g, return_dict=True)
        return agent, before, agent.policy.get_weights(), logs
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.slow
def test_mixed_float16_scales_the_loss_and_trains():
    # SGD, not Adam: Adam's update is invariant to the gradient's scale and would hide a missing
    # scale_loss. The LossScaleOptimizer divides the gradients by its scale (2^15): without
    # scale_loss in train_step the update comes out 2^15 times too small.
    agent, before, after, logs = sgd_update("mixed_float16")
    assert isinstance(agent.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(agent.optimizer.dynamic_scale.numpy()) == 2.0**15  # no overflow, step applied
    assert np.isfinite(logs["loss"])
    _, before32, after32, logs32 = sgd_update("float32")
    for b16, a16, b32, a32 in zip(before, after, before32, after32):
        np.testing.assert_array_equal(b16, b32)  # the same initial weights
        np.testing.assert_allclose(a16 - b16, a32 - b32, rtol=1e-2, atol=1e-4)
    np.testing.assert_allclose(logs["loss"], logs32["loss"], rtol=1e-2)
    # Negative control: the same comparison catches a train_step that forgets scale_loss.
    _, before_bad, after_bad, _ = sgd_update("mixed_float16", unscaled=True)
    assert not np.allclose(after_bad[0] - before_bad[0], after32[0] - before32[0], rtol=1e-2, atol=1e-4)


@pytest.mark.slow
def test_the_train_step_gets_aligned_steps_of_complete_episodes(scripted_vec_env, monkeypatch):
    # Sub-envs with episodes of 1, 2 and 4 steps, actions Discrete(2, start=1), next-step autoreset.
    # Collection stops at row 3, when the 4-step episode ends. Rows (t) per env; "-": the sub-env has
    # finished its first episode and is not stepped any more (a SyncVectorEnv's sub-envs are stepped one
    # by one; stepping them would give a reset step and a 2nd episode, both dropped):
    #   env 0 (L=1): ep0 t0 | - t1 t2 t3
    #   env 1 (L=2): ep0 t0 t1 | - t2 t3
    #   env 2 (L=4): ep0 t0 t1 t2 t3
    # The batch is time-major over the kept steps. ScriptedEnv's obs is [step in episode, L] and its
    # reward r_k = k + 1, so with gamma = 0.5: L=1 G = [1]; L=2 G = [1 + 0.5*2, 2] = [2, 2];
    # L=4 G = [3.25, 4.5, 5, 4] (G_3 = 4, G_2 = 3 + 2, G_1 = 2 + 2.5, G_0 = 1 + 2.25).
    # Each row: (env, index into that env's actions_taken, step in episode, L, G).
    expected = [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 2, 2.0),
        (2, 0, 0, 4, 3.25),  # t0
        (1, 1, 1, 2, 2.0),
        (2, 1, 1, 4, 4.5),  # t1
        (2, 2, 2, 4, 5.0),  # t2
        (2, 3, 3, 4, 4.0),  # t3
    ]
    env = scripted_vec_env([1, 2, 4], start=1)
    agent = ReinforceAgent((2,), 2, gamma=0.5, normalize_returns=False, seed=0)
    update, seen = agent.update, []

    def spy(batch):
        assert batch.action_masks is None and batch.step_weights is None
        seen.append((batch.observations, batch.actions, batch.returns))
        return update(batch)

    monkeypatch.setattr(agent, "update", spy)
    agent.learn(env, max_updates=1)

    ((observations, actions, returns),) = seen
    taken = [sub.actions_taken for sub in env.envs]
    assert [len(a) for a in taken] == [1, 2, 4]  # only first-episode steps reach the env's step
    np.testing.assert_array_equal(observations, [[k, length] for _, _, k, length, _ in expected])
    np.testing.assert_array_equal(actions, [taken[n][i] - 1 for n, i, _, _, _ in expected])  # start=1
    np.testing.assert_array_equal(returns, [g for *_, g in expected])
    assert (observations.dtype, actions.dtype, returns.dtype) == (np.float32, np.int32, np.float32)
    assert len(set(actions.tolist())) == 2  # both actions occur: the alignment check has teeth


@pytest.mark.parametrize("given, expected", [(None, False), (False, False), (True, True), ("auto", True)])
def test_compile_keeps_xla_off_unless_asked(monkeypatch, given, expected):
    # Keras's default jit_compile="auto" means XLA whenever a GPU exists, and XLA compiles the
    # loss's run-time checks out. Pretend to be on such a machine.
    monkeypatch.setattr(keras.Model, "_resolve_auto_jit_compile", lambda self: True)
    agent = ReinforceAgent((3,), 2)
    agent.compile(**({} if given is None else {"jit_compile": given}))
    assert agent.jit_compile is expected
    if given is None:  # learn() compiles an uncompiled agent the same way
        fresh = ReinforceAgent((3,), 2)
        fresh.build_optimizer()
        assert fresh.jit_compile is False


def test_each_env_contributes_its_first_episode_only(scripted_vec_env):
    # Env 0's episodes last 1 step, env 1's 5 steps: env 0 finishes 3 episodes of return 1 while
    # env 1 finishes one of return 15. Keeping them all would weight the short episodes 3:1.
    env = scripted_vec_env([1, 5])
    agent = ReinforceAgent((2,), 2, seed=0)
    history = agent.learn(env, max_updates=2)
    assert agent.episode_returns == [1.0, 15.0] * 2
    assert history.history["episode_return"] == [8.0, 8.0]
    assert history.history["batch_steps"] == [6.0, 6.0]  # 1 + 5 steps of the first episodes, in 5 rows
    # Env 0 is not stepped after its first episode (a SyncVectorEnv: sub-envs step one by one), so only
    # those 6 steps per update are taken and counted (10 per update when every row steps every env).
    assert agent.env_steps == 2 * (1 + 5)


def test_max_grad_norm_goes_through_the_optimizer():
    agent = ReinforceAgent((3,), 2, max_grad_norm=0.5)
    agent.compile()
    assert agent.optimizer.global_clipnorm == 0.5
    other = ReinforceAgent((3,), 2, max_grad_norm=0.5)
    other.compile(optimizer=keras.optimizers.SGD(0.1))
    assert other.optimizer.global_clipnorm == 0.5


def comparable(log):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in log]


@pytest.mark.slow
def test_short_cartpole_run_improves():
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0)
    history = agent.learn("CartPole-v1", max_updates=10)
    returns = history.history["episode_return"]
    assert len(returns) == 10 and agent.updates == 10
    assert np.mean(returns[-3:]) > 2 * returns[0], returns
    assert set(history.history) >= {"loss", "policy_loss", "entropy", "mean_return_100", "episodes", "env_steps"}


@pytest.mark.slow
def test_general_sampling_path_trains_too():
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0, fast_sampling=False)
    history = agent.learn("CartPole-v1", max_updates=6)
    returns = history.history["episode_return"]
    assert np.mean(returns[-2:]) > 1.5 * returns[0], returns


@pytest.mark.slow
def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        agent = ReinforceAgent.from_env("CartPole-v1", seed=3, num_envs=8)
        agent.learn("CartPole-v1", max_updates=3)
        runs.append((comparable(agent.training_log), agent.get_weights(), agent.episode_returns))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for w0, w1 in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(w0, w1)


def test_not_stepping_finished_sub_envs_changes_nothing_but_the_steps_taken(monkeypatch):
    """learn() on a SyncVectorEnv, with and without stepping sub-envs past their first episode: the same
    updates, episodes and weights; fewer env steps (mutation tried: skipped steps not subtracted from
    ``env_steps`` -> red)."""
    from kerasce.rl import rollout

    runs = {}
    for lean in (True, False):
        if not lean:
            monkeypatch.setattr(rollout, "steppable_sub_envs", lambda env: None)
        env = make_vector_env("CartPole-v1", 8, mode="sync")
        agent = ReinforceAgent.from_env("CartPole-v1", seed=4, num_envs=8)
        agent.learn(env, max_updates=3)
        env.close()
        runs[lean] = agent
    lean, full = runs[True], runs[False]
    assert lean.episode_returns == full.episode_returns and len(lean.episode_returns) == 24
    for w0, w1 in zip(lean.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    steps = lambda agent: [row["batch_steps"] for row in agent.training_log]
    assert steps(lean) == steps(full)
    assert sum(steps(lean)) == lean.env_steps < full.env_steps  # only first-episode steps were taken


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_run(tmp_path):
    def agent():
        return ReinforceAgent.from_env("CartPole-v1", seed=5, num_envs=8)

    whole = agent()
    whole.learn("CartPole-v1", max_updates=4)
    first = agent()
    first.learn("CartPole-v1", max_updates=2, callbacks=[CheckpointCallback(tmp_path / "ckpt")])
    resumed = agent()  # a fresh process would start here
    resumed.learn("CartPole-v1", max_updates=4, callbacks=[CheckpointCallback(tmp_path / "ckpt", resume=True)])
    assert resumed.updates == 4 and int(resumed.optimizer.iterations.numpy()) == 4
    assert comparable(resumed.training_log) == comparable(whole.training_log)
    assert resumed.episode_returns == whole.episode_returns
    for w0, w1 in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(w0, w1, rtol=1e-6)
    for v0, v1 in zip(whole.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(v0.numpy(), v1.numpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_keras_callbacks_work_in_learn(tmp_path):
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0, num_envs=8)
    callbacks = [
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "agent.weights.h5"), save_weights_only=True),
        keras.callbacks.ProgbarLogger(),
    ]
    history = agent.learn("CartPole-v1", max_updates=3, callbacks=callbacks)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], history.history["loss"], rtol=1e-5)
    assert os.listdir(tmp_path / "tb")
    assert (tmp_path / "agent.weights.h5").exists()

    stopper = StopAtMeanReturn(1.0, min_episodes=1)  # every return is >= 1: stops after one update
    fresh = ReinforceAgent.from_env("CartPole-v1", seed=0, num_envs=8)
    fresh.learn("CartPole-v1", max_updates=10, callbacks=[stopper])
    assert stopper.reached_at == 0 and fresh.updates == 1


def test_keras_round_trip_and_config(tmp_path):
    agent = ReinforceAgent((4,), 2, hidden_units=(8,), baseline=True, gamma=0.9, ent_coef=0.01, seed=1)
    path = str(tmp_path / "agent.keras")
    agent.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ReinforceAgent)
    assert loaded.get_config() == agent.get_config()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded(x), agent(x), rtol=1e-6)
    assert loaded.value_network is not None and agent.value_network is not None
    np.testing.assert_allclose(loaded.value_network(x), agent.value_network(x), rtol=1e-6)
    own = set(inspect.signature(ReinforceAgent.__init__).parameters) - {"self", "kwargs"}
    assert own <= set(agent.get_config())

    custom = ReinforceAgent((4,), 3, policy=keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    custom.save(path)
    revived = keras.saving.load_model(path)
    np.testing.assert_allclose(revived(x), custom(x), rtol=1e-6)


@pytest.mark.slow
def test_export_loads_and_plays_without_kerasce(tmp_path, zygote):
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0)
    agent.learn("CartPole-v1", max_updates=2)
    export_dir = agent.export_policy(tmp_path / "policy")
    observations = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    np.save(tmp_path / "obs.npy", observations)
    code = """
        import json, sys
        import gymnasium, numpy as np, tensorflow as tf
        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        out = serve(tf.constant(np.load(sys.argv[2])))
        env = gymnasium.make("CartPole-v1")
        obs, _ = env.reset(seed=0)
        length, done = 0, False
        while not done:
            action = int(serve(tf.constant(obs[None]))["action"][0])
            obs, reward, terminated, truncated, _ = env.step(action)
            length, done = length + 1, terminated or truncated
        print(json.dumps({"action": out["action"].numpy().tolist(),
                          "probabilities": out["probabilities"].numpy().tolist(), "length": length}))
        """
    stdout = run_without_kerasce(zygote, code, export_dir, tmp_path / "obs.npy", cwd=tmp_path)
    out = json.loads(stdout.strip().splitlines()[-1])
    probabilities = agent.action_probabilities(observations)
    np.testing.assert_allclose(out["probabilities"], probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["action"], probabilities.argmax(-1))
    assert out["length"] >= 1


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors naming what was wrong and what was expected
# ----------------------------------------------------------------------------------------------


def sync_env(n=2, **kwargs):
    return gymnasium.vector.SyncVectorEnv([lambda: ScriptedEnv(**kwargs) for _ in range(n)])


class SpacesEnv(gymnasium.Env):
    """An env with the given spaces (never stepped: the space checks come first)."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


@pytest.mark.parametrize(
    "spaces, message",
    [
        (
            (gymnasium.spaces.Box(-1, 1, (2,)), gymnasium.spaces.MultiBinary([2, 2])),
            r"`action_space` must be one of \('Discrete', 'MultiBinary', 'MultiDiscrete', 'Box'\).*Received: "
            "action_space=MultiBinary",
        ),
        (
            (gymnasium.spaces.Text(4), gymnasium.spaces.Discrete(2)),
            r"`observation_space` must be one of \('Box', 'Discrete', 'Dict', 'Tuple'\).*Received: "
            "observation_space=Text",
        ),
    ],
    ids=["multibinary-2d-actions", "text-observations"],
)
def test_unsupported_spaces_are_rejected(spaces, message):
    env = gymnasium.vector.SyncVectorEnv([lambda: SpacesEnv(*spaces)])
    with pytest.raises(ValueError, match=message):
        ReinforceAgent.from_env(env)
    with pytest.raises(ValueError, match=message):
        ReinforceAgent((2,), 2).learn(env, max_updates=1)


def test_unknown_id_is_rejected():
    with pytest.raises(ValueError, match="unknown gymnasium env id 'NoSuchEnv-v0'"):
        ReinforceAgent.from_env("NoSuchEnv-v0")


def test_a_discrete_model_refuses_other_action_spaces():
    with pytest.raises(ValueError, match="must be Discrete for a model built without `action_space`.*Received: Box"):
        ReinforceAgent((3,), 2).learn("Pendulum-v1", max_updates=1)


def test_policy_output_size_must_match_the_actions():
    with pytest.raises(ValueError, match=r"\[B, 2\] logits.*has shape \(3,\)"):
        ReinforceAgent((4,), 2, policy=keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    env = sync_env(actions=2)
    try:
        with pytest.raises(ValueError, match="outputs logits, 3. Received: an env with 2 actions"):
            ReinforceAgent((2,), 3).learn(env, max_updates=1)
        with pytest.raises(ValueError, match=r"the policy expects, \(5,\). Received: observations of shape \(2,\)"):
            ReinforceAgent((5,), 2).learn(env, max_updates=1)
    finally:
        env.close()


def test_nan_observation_names_update_and_step():
    env = sync_env(length=5, nan_at=2)
    try:
        with pytest.raises(ValueError, match="NaN/inf at update 0, rollout step 2, env 0"):
            ReinforceAgent((2,), 2).learn(env, max_updates=1)
    finally:
        env.close()


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    good = sync_env(length=3)
    bad = sync_env(length=3, nan_reward=True)
    agent = ReinforceAgent((2,), 2, seed=0)
    try:
        agent.learn(good, max_updates=1, callbacks=[CheckpointCallback(tmp_path)])
        with pytest.raises(FloatingPointError, match="The loss must be finite.*at update 2"):
            agent.learn(bad, max_updates=3, callbacks=[CheckpointCallback(tmp_path, resume=True)])
    finally:
        good.close()
        bad.close()
    restored = ReinforceAgent((2,), 2, seed=0)
    restored.load_checkpoint(tmp_path)
    assert restored.updates == 1
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_no_complete_episode_is_an_error():
    env = sync_env(length=100)
    try:
        with pytest.raises(ValueError, match="must hold a complete episode.*max_rollout_steps=5"):
            ReinforceAgent((2,), 2, max_rollout_steps=5).learn(env, max_updates=1)
    finally:
        env.close()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: a.compile(loss="mse"), "`loss` must not be given"),
        (lambda a: a.learn("CartPole-v1", total_timesteps=None), "stopping condition"),
        (lambda a: a.train_on_batch(np.zeros((2, 4)), np.zeros(2)), "Received: returns=None"),
        (lambda a: a.load_checkpoint("/nonexistent/dir"), "`directory` must hold a checkpoint"),
    ],
)
def test_bad_calls_raise(call, message):
    agent = ReinforceAgent((4,), 2)
    agent.compile()
    with pytest.raises(ValueError, match=message):
        call(agent)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 1.5}, "gamma"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"num_envs": 0}, "num_envs"),
        ({"num_actions": 0}, "num_actions"),
    ],
)
def test_bad_knobs_raise(kwargs, message):
    arguments = {"observation_shape": (4,), "num_actions": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ReinforceAgent(**arguments)


def test_stop_at_mean_return_waits_for_a_full_window():
    agent = ReinforceAgent((2,), 2)
    stopper = StopAtMeanReturn(10.0)
    stopper.set_model(agent)
    agent.stop_training = False
    stopper.on_epoch_end(0, {"mean_return_100": 20.0, "episodes": 99.0})
    assert not agent.stop_training
    stopper.on_epoch_end(1, {"mean_return_100": 9.0, "episodes": 150.0})
    assert not agent.stop_training
    stopper.on_epoch_end(2, {"mean_return_100": 10.0, "episodes": 150.0})
    assert agent.stop_training and stopper.reached_at == 2


@pytest.mark.parametrize(
    "last_row, stops",
    [
        ({"mean_return_100": 10.0, "episodes": 100.0, "update": 7.0}, True),
        ({"mean_return_100": 20.0, "episodes": 99.0, "update": 7.0}, False),  # window not full
        ({"mean_return_100": 9.9, "episodes": 300.0, "update": 7.0}, False),
        (None, False),  # a fresh agent: no history
    ],
)
def test_stop_at_mean_return_checks_the_history_when_training_begins(last_row, stops):
    agent = ReinforceAgent((2,), 2)
    log = [] if last_row is None else [{"mean_return_100": 0.0, "episodes": 0.0}, last_row]
    stopper = StopAtMeanReturn(10.0)
    stopper.set_model(agent)
    stopper.bind(RunContext(RunState(training_log=log)))
    agent.stop_training = False
    stopper.on_train_begin()
    assert agent.stop_training is stops
    assert stopper.reached_at == (6 if stops else None)


@pytest.mark.slow
def test_resuming_a_run_that_met_the_target_does_no_update(scripted_vec_env, tmp_path):
    # 50 one-step episodes of return 1 per update: after 2 updates the 100-episode mean is 1.
    env = scripted_vec_env([1] * 50)
    first = ReinforceAgent((2,), 2, seed=0)
    first.learn(env, max_updates=10, target_return=1.0, callbacks=[CheckpointCallback(tmp_path)])
    assert first.updates == 2 and len(first.episode_returns) == 100
    resumed = ReinforceAgent((2,), 2, seed=0)
    checkpoints = CheckpointCallback(tmp_path, resume=True)
    history = resumed.learn(env, max_updates=10, target_return=1.0, callbacks=[checkpoints])
    assert checkpoints.resumed_at == 2
    assert history.epoch == [] and resumed.updates == 2
    assert int(resumed.optimizer.iterations.numpy()) == 2
    for w0, w1 in zip(first.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(w0, w1)


@pytest.mark.slow
@pytest.mark.parametrize("baseline", [False, True])
def test_jit_compiled_update_equals_the_plain_update(baseline):
    x, a, g = batch(np.random.default_rng(4), size=16, dims=4)
    weights = []
    for jit in (False, True):
        agent = ReinforceAgent((4,), 2, baseline=baseline, ent_coef=0.1, seed=0)
        # SGD: Adam's first step is about lr * sign(g), which turns float32 rounding in a near-zero gradient
        # into a difference of up to 2 lr; SGD compares the gradients themselves.
        agent.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        agent.train_on_batch(x, a, sample_weight=g)
        weights.append(agent.get_weights())
    for plain, xla in zip(*weights):
        np.testing.assert_allclose(xla, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_bad_actions_never_reach_the_weights(jit):
    """An action id outside [0, A): eagerly / in tf.function the loss's check raises before the update; under
    XLA (no run-time errors) the loss is NaN and kerasce.training.apply_gradients_if_finite skips the update.
    Either way the weights and the optimizer's variables (Adam's moments, iterations) are bit-identical.
    Mutation tried: the agent's plain optimizer.apply_gradients -> the XLA case ends with NaN weights (red)."""
    x, a, g = batch(np.random.default_rng(5), size=16, dims=4)
    agent = ReinforceAgent((4,), 2, baseline=True, seed=0)
    agent.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=jit)
    agent.train_on_batch(x, a, sample_weight=g)  # a good step first: Adam's moments are non-zero
    before = [np.array(v) for v in agent.weights + agent.optimizer.variables]
    bad = a.copy()
    bad[3] = 7
    if jit:
        logs = agent.train_on_batch(x, bad, sample_weight=g, return_dict=True)
        assert not np.isfinite(logs["loss"])
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"class ids in \[0, 2\)"):
            agent.train_on_batch(x, bad, sample_weight=g)
    after = [np.array(v) for v in agent.weights + agent.optimizer.variables]
    for b, c in zip(before, after):
        np.testing.assert_array_equal(b, c)


@pytest.mark.slow
def test_baseline_bootstraps_truncated_episodes_with_the_value_of_the_state_reached(scripted_vec_env, monkeypatch):
    # One 3-step episode ended by a time limit (truncated), rewards 1, 2, 3; obs [t, 3]. With a baseline
    # the last return continues with gamma * V(s') for s' = [3, 3], the state the time limit cut off.
    env = scripted_vec_env([3], truncate=True)
    agent = ReinforceAgent((2,), 2, gamma=0.5, baseline=True, normalize_returns=False, seed=0)
    assert agent.value_network is not None
    v = float(agent.value_network(np.array([[3.0, 3.0]], np.float32))[0, 0])
    update, seen = agent.update, []

    def spy(batch):
        seen.append(batch.returns)
        return update(batch)

    monkeypatch.setattr(agent, "update", spy)
    agent.learn(env, max_updates=1)
    g2 = 3 + 0.5 * v
    np.testing.assert_allclose(seen[0], [1 + 0.5 * (2 + 0.5 * g2), 2 + 0.5 * g2, g2], rtol=1e-5)


@pytest.mark.slow
def test_baseline_targets_are_divided_by_the_running_std_of_returns(scripted_vec_env, monkeypatch):
    agent = ReinforceAgent((2,), 2, gamma=1.0, baseline=True, seed=0)
    update, seen = agent.update, []

    def spy(batch):
        seen.append(batch.returns)
        return update(batch)

    monkeypatch.setattr(agent, "update", spy)
    agent.learn(scripted_vec_env([1, 2, 3]), max_updates=1)
    agent.learn(scripted_vec_env([4]), max_updates=2)
    first = np.array([1.0, 3.0, 6.0, 2.0, 5.0, 3.0])  # time-major G of episodes of 1, 2, 3 steps (r_k = k + 1)
    second = np.array([10.0, 9.0, 7.0, 4.0])  # one episode of 4 steps
    np.testing.assert_allclose(seen[0], first / first.std(), rtol=1e-5)
    # Not second / second.std(): the scale is that of every return so far, so the value target keeps its scale.
    running = np.concatenate([first, second]).std()
    np.testing.assert_allclose(seen[1], second / running, rtol=1e-5)
    np.testing.assert_allclose(agent.return_scale.scale, running, rtol=1e-12)
