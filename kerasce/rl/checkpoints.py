"""Training checkpoints of a ReinforceAgent whose cost does not grow with the run.

A checkpoint directory holds:

* ``ckpt-<update>.*`` -- every variable of the agent and its optimizer, written by
  ``tf.train.CheckpointManager`` (keyed by the object graph, i.e. by variable path, not by position);
  the last ``max_to_keep`` are kept.
* ``history.jsonl`` -- one line per update (the log row and that update's episode returns), *appended*:
  a save writes only the updates since the previous save.
* ``state.json`` -- a small sidecar written atomically last: counters, the run seed, which
  ``ckpt-*`` it goes with and how many bytes of ``history.jsonl`` belong to it. A crash at any
  point leaves the previous ``state.json`` and everything it names valid; a restore cuts off history
  lines written after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from kerasce.export import write_json_atomic
from kerasce.rl.model import ReinforceModel
from kerasce.rl.normalization import ObservationNormalizer
from kerasce.rl.returns import RunningScale
from kerasce.rl.state import RunState

__all__ = ["CheckpointStore", "has_checkpoint"]

STATE_FILE = "state.json"
HISTORY_FILE = "history.jsonl"


def normalizer_record(normalizer: ObservationNormalizer | None) -> dict | None:
    """The observation statistics as JSON values (None without normalisation)."""
    if normalizer is None:
        return None
    state = normalizer.get_state()
    return dict(state, mean=state["mean"].tolist(), m2=state["m2"].tolist())


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a checkpoint written by :class:`CheckpointStore`."""
    return os.path.isfile(os.path.join(directory, STATE_FILE))


class CheckpointStore:
    """Saves and restores an agent's whole training state in one directory.

    Args:
      model: the model (its optimizer is built on first use).
      state: the run state saved beside the model's variables.
      directory: the checkpoint directory (created).
      max_to_keep: variable checkpoints kept on disk.
    """

    def __init__(self, model: ReinforceModel, state: RunState, directory: str | os.PathLike, max_to_keep: int = 2):
        self.model = model
        self.state = state
        self.directory = Path(directory)
        self.max_to_keep = int(max_to_keep)
        self._manager: tf.train.CheckpointManager | None = None
        self._rows_written: int | None = None  # history lines on disk that match the agent's log

    def _checkpoint(self) -> tf.train.Checkpoint:
        self.model.build_optimizer()
        return tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)

    def _manager_for_save(self) -> tf.train.CheckpointManager:
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(self._checkpoint(), str(self.directory), self.max_to_keep)
        return self._manager

    def _read_state(self) -> dict:
        with open(self.directory / STATE_FILE) as f:
            return json.load(f)

    def save(self) -> None:
        """Write the run's state: new history lines, the variables, then ``state.json``."""
        state = self.state
        self.directory.mkdir(parents=True, exist_ok=True)
        history = self.directory / HISTORY_FILE
        if self._rows_written is None:  # a fresh run here: nothing on disk belongs to it
            for path in self.directory.glob("ckpt-*"):
                path.unlink()
            for name in (STATE_FILE, "checkpoint"):
                (self.directory / name).unlink(missing_ok=True)
            history.write_bytes(b"")
            self._rows_written = 0
        log, returns = state.training_log, state.episode_returns
        with open(history, "a") as f:
            for u in range(self._rows_written, len(log)):
                start = int(log[u - 1]["episodes"]) if u > 0 else 0
                end = int(log[u]["episodes"])
                f.write(json.dumps({"log": log[u], "episode_returns": returns[start:end]}, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            history_bytes = f.tell()
        self._rows_written = len(log)
        prefix = self._manager_for_save().save(checkpoint_number=state.updates)
        record = {
            "updates": state.updates,
            "env_steps": state.env_steps,
            "train_seconds": state.train_seconds,
            "collect_seconds": state.collect_seconds,
            "run_seed": state.run_seed,
            "return_scale": state.return_scale.get_state(),
            "observation_normalizer": normalizer_record(state.observation_normalizer),
            "checkpoint": os.path.basename(prefix),
            "history_rows": len(log),
            "history_bytes": history_bytes,
        }
        write_json_atomic(self.directory / STATE_FILE, record)

    def restore(self) -> None:
        """Load the variables and run state ``state.json`` names into the model and the run state.

        Raises:
          ValueError: if there is no checkpoint, or it was written by an agent of another shape (the
            message says how to start fresh).
        """
        if not has_checkpoint(self.directory):
            raise ValueError(
                "`directory` must hold a checkpoint (from save_checkpoint). "
                f"Received: directory={str(self.directory)!r}"
            )
        record = self._read_state()
        normalizer = record.get("observation_normalizer")
        if (normalizer is None) != (self.state.observation_normalizer is None):
            raise ValueError(
                "The checkpoint must fit this agent's `normalize_observations`. Received: a checkpoint "
                f"{'without' if normalizer is None else 'with'} observation statistics in {str(self.directory)!r}"
            )
        try:
            status = self._checkpoint().restore(str(self.directory / record["checkpoint"]))
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            raise ValueError(
                "The checkpoint must fit this agent (same env, network and optimizer). Received: the one in "
                f"{str(self.directory)!r}, which does not fit this agent: {str(error).splitlines()[0]} Delete "
                "that directory (or choose another one) to start a fresh run."
            ) from None
        history = self.directory / HISTORY_FILE
        with open(history, "r+b") as f:
            f.truncate(record["history_bytes"])  # lines appended after the last complete save
            f.seek(0)
            rows = [json.loads(line) for line in f.read().decode().splitlines()]
        if len(rows) != record["history_rows"]:
            raise ValueError(
                f"`{HISTORY_FILE}` must have the {record['history_rows']} updates {STATE_FILE} names. Received: "
                f"{len(rows)} updates in {history}"
            )
        state = self.state
        state.updates = int(record["updates"])
        state.env_steps = int(record["env_steps"])
        state.train_seconds = float(record["train_seconds"])
        state.collect_seconds = float(record["collect_seconds"])
        state.run_seed = record["run_seed"]
        state.return_scale = RunningScale(**record.get("return_scale", {}))
        state.observation_normalizer = None if normalizer is None else ObservationNormalizer.from_state(normalizer)
        state.training_log = [row["log"] for row in rows]
        state.episode_returns = [float(r) for row in rows for r in row["episode_returns"]]
        self._rows_written = len(rows)
