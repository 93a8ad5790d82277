"""Checkpoints on tf.train.Checkpoint: a save writes only what is new, a crash mid-save is harmless,
a checkpoint of another agent is refused with a way out."""

import itertools
import json

import keras
import numpy as np
import pytest

from kerasce.rl import CheckpointCallback, ReinforceAgent
from kerasce.rl import checkpoints as checkpoints_module
from kerasce.rl.checkpoints import HISTORY_FILE, STATE_FILE, CheckpointStore


def test_each_save_writes_only_the_new_updates(scripted_vec_env, tmp_path, monkeypatch):
    env = scripted_vec_env([1, 2, 3])
    agent = ReinforceAgent((2,), 2, seed=0)
    rows_per_save: list[int] = []  # log rows written by each save
    dumps = json.dumps

    def counting_dumps(obj, **kwargs):
        rows_per_save[-1] += "log" in obj
        return dumps(obj, **kwargs)

    monkeypatch.setattr(checkpoints_module.json, "dumps", counting_dumps)
    saves, contents = [], []
    save = CheckpointStore.save

    def spy(store):
        rows_per_save.append(0)
        save(store)
        saves.append(store.state.updates)
        contents.append((tmp_path / HISTORY_FILE).read_bytes())

    monkeypatch.setattr(CheckpointStore, "save", spy)
    agent.learn(env, max_updates=7, callbacks=[CheckpointCallback(tmp_path, save_every=2)])
    assert saves == [2, 4, 6, 7]
    assert rows_per_save == [2, 2, 2, 1]  # not 2, 4, 6, 7: the cost of a save does not grow with the run
    for earlier, later in itertools.pairwise(contents):
        assert later.startswith(earlier)  # appended, never rewritten
    assert len(contents[-1].splitlines()) == 7
    assert len(list(tmp_path.glob("ckpt-*.index"))) == 2  # max_to_keep


@pytest.mark.slow
@pytest.mark.parametrize("baseline", [False, True])
def test_restore_continues_with_the_same_state(scripted_vec_env, tmp_path, baseline):
    env = scripted_vec_env([1, 2, 3])
    agent = ReinforceAgent((2,), 2, seed=0, baseline=baseline)
    agent.learn(env, max_updates=3, callbacks=[CheckpointCallback(tmp_path)])
    restored = ReinforceAgent((2,), 2, seed=1, baseline=baseline)  # other initial weights: all from the checkpoint
    restored.load_checkpoint(tmp_path)
    assert (restored.updates, restored.env_steps, restored.run_state.run_seed) == (3, agent.env_steps, 0)
    assert restored.episode_returns == agent.episode_returns and restored.training_log == agent.training_log
    assert restored.return_scale.get_state() == agent.return_scale.get_state()
    assert (restored.return_scale.count > 0) is baseline
    for a, b in zip(agent.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(agent.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_history_written_after_the_last_state_is_cut_off(scripted_vec_env, tmp_path):
    # A kill between the history append and state.json: the next restore ignores the extra lines.
    env = scripted_vec_env([1, 2])
    agent = ReinforceAgent((2,), 2, seed=0)
    agent.learn(env, max_updates=2, callbacks=[CheckpointCallback(tmp_path)])
    with open(tmp_path / HISTORY_FILE, "a") as f:
        f.write('{"log": {"episodes": 99.0}, "episode_returns": [1.0, 2.0]}\n{"half a li')
    resumed = ReinforceAgent((2,), 2, seed=0)
    resumed.learn(env, max_updates=4, callbacks=[CheckpointCallback(tmp_path, resume=True)])
    whole = ReinforceAgent((2,), 2, seed=0)
    whole.learn(env, max_updates=4)
    assert resumed.episode_returns == whole.episode_returns
    lines = (tmp_path / HISTORY_FILE).read_text().splitlines()
    assert [json.loads(line)["log"]["update"] for line in lines] == [1.0, 2.0, 3.0, 4.0]
    assert json.loads((tmp_path / STATE_FILE).read_text())["history_rows"] == 4


@pytest.mark.slow
def test_a_fresh_run_replaces_an_old_checkpoint(scripted_vec_env, tmp_path):
    env = scripted_vec_env([1, 2])
    ReinforceAgent((2,), 2, seed=0).learn(env, max_updates=3, callbacks=[CheckpointCallback(tmp_path)])
    fresh = ReinforceAgent((2,), 2, seed=0)
    fresh.learn(env, max_updates=1, callbacks=[CheckpointCallback(tmp_path)])  # resume=False: a fresh run
    restored = ReinforceAgent((2,), 2, seed=0)
    restored.load_checkpoint(tmp_path)
    assert restored.updates == 1 and len((tmp_path / HISTORY_FILE).read_text().splitlines()) == 1


@pytest.mark.parametrize("other", [{"observation_shape": (3,)}, {"hidden_units": (8,)}])
def test_a_checkpoint_of_another_agent_is_refused_with_a_way_out(tmp_path, other):
    ReinforceAgent((2,), 2, seed=0).save_checkpoint(tmp_path)
    kwargs = {"observation_shape": (2,), "num_actions": 2, **other}
    with pytest.raises(ValueError, match="does not fit this agent.*Delete that directory"):
        ReinforceAgent(**kwargs).load_checkpoint(tmp_path)


@pytest.mark.slow
def test_strict_json_everywhere(scripted_vec_env, tmp_path):
    def reject(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    env = scripted_vec_env([1, 2])
    ReinforceAgent((2,), 2, seed=0).learn(env, max_updates=2, callbacks=[CheckpointCallback(tmp_path)])
    json.loads((tmp_path / STATE_FILE).read_text(), parse_constant=reject)
    for line in (tmp_path / HISTORY_FILE).read_text().splitlines():
        json.loads(line, parse_constant=reject)
    keras.backend.clear_session()


def test_a_resumed_csv_log_keeps_the_rows_before_the_checkpoint_and_appends(tmp_path):
    from kerasce.rl.callbacks import continue_csv_log

    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n" + "".join(f"{e},{e / 10}\n" for e in range(6)))
    logger = keras.callbacks.CSVLogger(str(path))
    continue_csv_log(logger, 3)  # checkpoint at update 3: rows of epochs 3..5 are trained again
    assert path.read_text() == "epoch,loss\n0,0.0\n1,0.1\n2,0.2\n" and logger.append
    fresh = keras.callbacks.CSVLogger(str(path))
    continue_csv_log(fresh, 0)  # a fresh run leaves the logger's own setting alone
    assert not fresh.append
