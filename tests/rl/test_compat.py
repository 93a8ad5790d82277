"""Files written by kerasce 0.2 (``tests/rl/fixtures``, made by ``make_agent_v02.py``) still load.

References: the ``.keras`` file's policy is checked against a NumPy forward pass of its own weights (a
``tanh`` MLP), the checkpoint's counters against its ``state.json`` and ``history.jsonl`` read as plain JSON,
and the two files against each other (they were written from one agent at one moment).
"""

import json
from pathlib import Path

import keras
import numpy as np

from kerasce.rl import ReinforceAgent

FIXTURES = Path(__file__).parent / "fixtures"


def _mlp_logits(weights: list[np.ndarray], observations: np.ndarray) -> np.ndarray:
    """float64 ``tanh`` MLP: ``[kernel, bias]`` pairs, the last one linear."""
    x = observations.astype(np.float64)
    pairs = list(zip(weights[0::2], weights[1::2]))
    for kernel, bias in pairs[:-1]:
        x = np.tanh(x @ kernel + bias)
    kernel, bias = pairs[-1]
    return x @ kernel + bias


def test_keras_file_of_v02_loads_and_acts():
    agent = keras.saving.load_model(FIXTURES / "agent_v02.keras")
    assert isinstance(agent, ReinforceAgent)
    assert (agent.observation_shape, agent.num_actions, agent.hidden_units, agent.baseline) == ((4,), 2, (4,), True)
    observations = np.load(FIXTURES / "observations.npy")
    policy_weights = [np.asarray(w, np.float64) for w in agent.policy.get_weights()]
    np.testing.assert_allclose(agent(observations).numpy(), _mlp_logits(policy_weights, observations), atol=1e-5)


def test_checkpoint_of_v02_restores_counters_weights_and_optimizer():
    directory = FIXTURES / "checkpoint_v02"
    state = json.loads((directory / "state.json").read_text())
    rows = [json.loads(line) for line in (directory / "history.jsonl").read_text().splitlines()]
    agent = ReinforceAgent((4,), 2, hidden_units=(4,), baseline=True, num_envs=4, seed=7)  # other initial weights
    agent.load_checkpoint(directory)
    assert (agent.updates, agent.env_steps) == (state["updates"], state["env_steps"]) == (2, 188)
    assert agent.episode_returns == [r for row in rows for r in row["episode_returns"]]
    assert [row["update"] for row in agent.training_log] == [1.0, 2.0]
    assert agent.return_scale.get_state() == state["return_scale"]
    assert int(agent.optimizer.iterations.numpy()) == 2
    saved = keras.saving.load_model(FIXTURES / "agent_v02.keras")
    for restored, written in zip(agent.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, written)


def test_checkpoint_of_v02_resumes_training(tmp_path):
    import shutil

    directory = tmp_path / "checkpoint"
    shutil.copytree(FIXTURES / "checkpoint_v02", directory)
    agent = ReinforceAgent((4,), 2, hidden_units=(4,), baseline=True, num_envs=4, seed=7)
    agent.load_checkpoint(directory)
    agent.learn("CartPole-v1", max_updates=3)
    assert agent.updates == 3 and len(agent.training_log) == 3
    assert int(agent.optimizer.iterations.numpy()) == 3
