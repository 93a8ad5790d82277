"""Greedy evaluation: evaluate_policy against single-env replays, EvalCallback in learn (logs, stop
rule, best weights), and the export played by plain TensorFlow reproducing the reported evaluation."""

import json
from typing import cast

import gymnasium
import keras
import numpy as np
import pytest
from helpers.kerasce_free import run_without_kerasce

from kerasce.rl import EvalCallback, ReinforceAgent, RunContext, RunState, StopAtMeanReturn, evaluate_policy


def replay_greedy(env_id, logits, seed, episodes):
    """Independent reference: one gymnasium.make env per episode, reset with seed + i, argmax actions."""
    returns = []
    for i in range(episodes):
        env = gymnasium.make(env_id)
        action_space = cast(gymnasium.spaces.Discrete, env.action_space)  # the stubs type it as Space
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action = int(np.argmax(logits(obs[None].astype(np.float32))[0])) + int(action_space.start)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        env.close()
        returns.append(total)
    return np.array(returns)


def test_returns_are_in_seed_order(scripted_vec_env):
    # Episodes of 3, 1 and 2 steps (reward k + 1 at step k) end in the order 1, 2, 0; the result is by env.
    env = scripted_vec_env([3, 1, 2])
    result = evaluate_policy(lambda obs: np.zeros((len(obs), 2)), env, episodes=3, seed=5)
    np.testing.assert_array_equal(result.returns, [6.0, 1.0, 3.0])
    np.testing.assert_array_equal(result.lengths, [3, 1, 2])
    assert (result.mean, result.episodes, result.seed) == (pytest.approx(10 / 3), 3, 5)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_evaluate_policy_equals_single_env_replays(env_id):
    agent = ReinforceAgent.from_env(env_id, seed=3)
    logits = agent.policy_sampler().logits
    episodes = 4 if env_id == "CartPole-v1" else 2
    result = evaluate_policy(logits, env_id, episodes=episodes, seed=11)
    np.testing.assert_array_equal(result.returns, replay_greedy(env_id, logits, 11, episodes))


def test_episodes_that_do_not_end_are_an_error(scripted_vec_env):
    env = scripted_vec_env([2, 50])
    with pytest.raises(ValueError, match=r"episodes \[1\] did not end within max_steps=10"):
        evaluate_policy(lambda obs: np.zeros((len(obs), 2)), env, episodes=2, seed=0, max_steps=10)


class FakeEvaluation:
    def __init__(self, mean, epoch):
        self.last = {"mean": mean, "epoch": epoch}


@pytest.mark.parametrize("eval_mean, eval_epoch, stops", [(10.0, 4, True), (9.0, 4, False), (10.0, 3, False)])
def test_the_stop_rule_needs_a_fresh_greedy_evaluation_at_the_target(eval_mean, eval_epoch, stops):
    agent = ReinforceAgent((2,), 2)
    # A stand-in for EvalCallback: StopAtMeanReturn reads only its `last` evaluation.
    stopper = StopAtMeanReturn(10.0, evaluation=cast(EvalCallback, FakeEvaluation(eval_mean, eval_epoch)))
    stopper.set_model(agent)
    agent.stop_training = False
    stopper.on_epoch_end(4, {"mean_return_100": 12.0, "episodes": 200.0})
    assert agent.stop_training is stops


@pytest.mark.slow
def test_learn_evaluates_logs_every_update_and_keeps_the_best_weights():
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0, num_envs=8)
    evaluation = EvalCallback("CartPole-v1", episodes=5, eval_every=3)
    weights_at = {}

    class Snapshot(keras.callbacks.Callback):  # runs after the evaluation: the weights it evaluated
        def on_epoch_end(self, epoch, logs=None):
            weights_at[epoch] = [w.copy() for w in self.model.get_weights()]

    history = agent.learn("CartPole-v1", max_updates=7, callbacks=[Snapshot(), evaluation])
    assert history.history["evaluated"] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]  # update 1, then every 3rd
    assert [e["epoch"] for e in evaluation.evaluations] == [0, 2, 5]
    for key in ("eval_return_mean", "eval_return_std", "eval_episodes", "eval_seed"):
        assert len(history.history[key]) == 7  # every row has every key (CSVLogger)
        assert [row[key] for row in agent.training_log] == history.history[key]  # and the run's own log
    seeds = [e["seed"] for e in evaluation.evaluations]
    assert len(set(seeds)) == 3  # fresh seeds each time
    best = max(evaluation.evaluations, key=lambda e: (e["mean"], e["epoch"]))
    assert evaluation.best == best
    for w, expected in zip(agent.get_weights(), weights_at[best["epoch"]]):
        np.testing.assert_array_equal(w, expected)  # restored on train end
    # The evaluation is what a replay of those seeds with these weights gives.
    np.testing.assert_array_equal(
        np.mean(replay_greedy("CartPole-v1", agent.policy_sampler().logits, best["seed"], 5)), best["mean"]
    )


def test_a_resumed_runs_best_weights_come_back_by_structure_not_by_name(tmp_path):
    """The best evaluation's weights on disk are a Keras weights file (keyed by each variable's place in the
    model, like the checkpoints): a resumed run restores them into a policy built after other models (other
    auto-generated layer names), and a policy of another shape is a clear error. Mutation tried: the old
    npz keyed by auto-named variable path -> red (KeyError 'policy/dense_3/kernel')."""
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0, num_envs=4)
    best_dir = tmp_path / "best_eval"
    agent.learn("CartPole-v1", max_updates=2, callbacks=[EvalCallback("CartPole-v1", 2, best_model_save_path=best_dir)])
    best = [keras.ops.convert_to_numpy(v) for v in agent.weights]  # learn() restored the best evaluation's

    resumed = EvalCallback("CartPole-v1", 2, best_model_save_path=best_dir)
    resumed.bind(RunContext(RunState(updates=2)))  # a resumed run: its state has updates
    fresh = ReinforceAgent.from_env("CartPole-v1", seed=1, num_envs=4)  # other initial weights and layer names
    assert [v.path for v in fresh.weights] != [v.path for v in agent.weights]
    assert not np.array_equal(keras.ops.convert_to_numpy(fresh.weights[0]), best[0])
    resumed.set_model(fresh)
    resumed.on_train_begin()
    resumed.on_train_end()
    for variable, want in zip(fresh.weights, best):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), want)

    other = ReinforceAgent.from_env("CartPole-v1", seed=1, num_envs=4, hidden_units=(8,))
    resumed.set_model(other)
    with pytest.raises(ValueError, match="best evaluation's weights must fit this policy"):
        resumed.on_train_end()


@pytest.mark.slow
def test_the_exported_policy_reproduces_the_reported_evaluation(tmp_path, zygote):
    agent = ReinforceAgent.from_env("CartPole-v1", seed=1, num_envs=8)
    evaluation = EvalCallback("CartPole-v1", episodes=4, eval_every=2)
    agent.learn("CartPole-v1", max_updates=4, callbacks=[evaluation])
    best = evaluation.best
    assert best is not None
    export_dir = agent.export_policy(tmp_path / "policy")
    code = """
        import json, sys
        import gymnasium, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        serve, sample = loaded.signatures["serving_default"], loaded.signatures["sample"]
        seed, episodes = int(sys.argv[2]), int(sys.argv[3])
        returns = []
        for i in range(episodes):
            env = gymnasium.make("CartPole-v1")
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(serve(tf.constant(obs[None]))["action"][0]))
                total, done = total + reward, terminated or truncated
            returns.append(total)
        x = tf.constant(np.tile(np.array([[0.1, 0.5, -0.05, -0.3]], np.float32), (4000, 1)))
        out = sample(x)
        print(json.dumps({"returns": returns, "sampled": np.bincount(out["action"].numpy(), minlength=2).tolist(),
                          "probabilities": out["probabilities"].numpy()[0].tolist()}))
        """
    stdout = run_without_kerasce(zygote, code, export_dir, best["seed"], 4, cwd=tmp_path)
    out = json.loads(stdout.strip().splitlines()[-1])
    assert np.mean(out["returns"]) == best["mean"] and np.std(out["returns"]) == pytest.approx(best["std"])
    # The `sample` signature draws from `probabilities` (4000 draws: 5 standard errors).
    p = out["probabilities"][1]
    assert abs(out["sampled"][1] / 4000 - p) < 5 * np.sqrt(p * (1 - p) / 4000) + 1e-3
