"""``normalize_observations``: the running statistics are those of every kept observation, the update sees
observations normalised with the statistics of the updates before it, checkpoints carry them, the export
takes raw observations.

Each claim was checked with a mutation of the code that must turn it red; the docstrings list them.
"""

import numpy as np
import pytest
import tensorflow as tf

from kerasce.rl import CheckpointCallback, ReinforceAgent

LENGTHS = [1, 2, 3]  # ScriptedEnv observes [t, length]: each update keeps these six observations
KEPT = np.array([[t, n] for n in LENGTHS for t in range(n)], np.float64)


def _reference(observations, seen):
    """float64 ``clip((x - μ) / sqrt(σ² + 1e-8), -10, 10)`` with the population moments of ``seen``."""
    if len(seen) == 0:
        return np.clip(observations, -10, 10)
    mean, var = seen.mean(0), seen.var(0)
    return np.clip((observations - mean) / np.sqrt(var + 1e-8), -10, 10)


def test_each_update_sees_observations_normalised_with_the_updates_before_it(scripted_vec_env, monkeypatch):
    """Mutations tried: `fold_observations` before `model.update` (the statistics include the batch being
    trained on) -> red; folding every row of the rollout (not only the kept ones) -> red (the statistics
    count the repeated last observations)."""
    agent = ReinforceAgent((2,), 2, seed=0, normalize_observations=True)
    seen_batches = []
    update = agent.update
    monkeypatch.setattr(
        agent,
        "update",
        lambda batch: (seen_batches.append(batch.observations.copy()), update(batch))[1],  # type: ignore[func-returns-value]
    )
    agent.learn(scripted_vec_env(LENGTHS), max_updates=3)
    for k, observations in enumerate(seen_batches):
        raw = np.sort(KEPT.view("f8,f8"), axis=0).view(np.float64).reshape(-1, 2)  # the batch's rows, any order
        want = _reference(raw, np.tile(KEPT, (k, 1)))
        got = np.sort(observations.astype(np.float64).view("f8,f8"), axis=0).view(np.float64).reshape(-1, 2)
        np.testing.assert_allclose(got, np.sort(want.view("f8,f8"), axis=0).view(np.float64).reshape(-1, 2), atol=1e-5)
    normalizer = agent.run_state.observation_normalizer
    np.testing.assert_allclose(normalizer.mean, np.tile(KEPT, (3, 1)).mean(0), rtol=1e-12)  # type: ignore[union-attr]
    np.testing.assert_allclose(normalizer.var, np.tile(KEPT, (3, 1)).var(0), rtol=1e-12)  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_resumed_run_with_normalisation_continues_exactly(scripted_vec_env, tmp_path):
    """Mutations tried: the checkpoint without `observation_normalizer` (restore leaves fresh statistics) ->
    red; restoring it without the mismatch check -> red for the agent without normalisation."""
    env = scripted_vec_env(LENGTHS)
    first = ReinforceAgent((2,), 2, seed=0, normalize_observations=True)
    first.learn(env, max_updates=2, callbacks=[CheckpointCallback(tmp_path)])
    resumed = ReinforceAgent((2,), 2, seed=0, normalize_observations=True)
    resumed.learn(env, max_updates=4, callbacks=[CheckpointCallback(tmp_path, resume=True)])
    whole = ReinforceAgent((2,), 2, seed=0, normalize_observations=True)
    whole.learn(env, max_updates=4)
    assert resumed.run_state.observation_normalizer.get_state()["count"] == 4 * len(KEPT)  # type: ignore[union-attr]
    for key in ("mean", "m2"):
        np.testing.assert_array_equal(
            resumed.run_state.observation_normalizer.get_state()[key],  # type: ignore[union-attr]
            whole.run_state.observation_normalizer.get_state()[key],  # type: ignore[union-attr]
        )
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="fit this agent's `normalize_observations`.*with observation statistics"):
        ReinforceAgent((2,), 2, seed=0).load_checkpoint(tmp_path)


def test_the_export_takes_raw_observations(scripted_vec_env, tmp_path):
    """The SavedModel's probabilities on raw observations are the policy's on the float64-normalised ones.
    Mutation tried: `serving_model` without `with_normalization` -> red."""
    agent = ReinforceAgent((2,), 2, seed=0, normalize_observations=True)
    agent.learn(scripted_vec_env(LENGTHS), max_updates=2)
    raw = np.array([[0.0, 1.0], [2.0, 3.0], [40.0, -5.0]], np.float32)
    served = tf.saved_model.load(str(agent.export_policy(tmp_path / "policy"))).signatures["serving_default"]
    got = served(observations=tf.constant(raw))["probabilities"].numpy()
    logits = agent.policy(_reference(raw.astype(np.float64), np.tile(KEPT, (2, 1))).astype(np.float32)).numpy()
    np.testing.assert_allclose(got, tf.nn.softmax(logits).numpy(), atol=1e-6)
    np.testing.assert_array_equal(agent.greedy_action(raw), got.argmax(-1))
