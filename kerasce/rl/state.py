"""The run state of a REINFORCE agent: counters, the run seed and what the run has seen so far.

One record that the trainer advances, checkpoints save and restore, and callbacks read; the Keras model
holds none of it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kerasce.rl.normalization import ObservationNormalizer
from kerasce.rl.returns import RunningScale

__all__ = ["RunState"]


@dataclasses.dataclass
class RunState:
    """Where a run stands.

    Attributes:
      updates: updates done (over the whole run, resumes included).
      env_steps: env steps collected.
      train_seconds: wall time of the updates, collection included.
      collect_seconds: wall time of the collection rounds.
      episode_returns: undiscounted return of every training episode, in order.
      training_log: one dict of logs per update (``update`` counts from 1).
      run_seed: seeds every update's env resets and action sampling (None: drawn when training starts).
      return_scale: the running standard deviation of every return seen (baseline targets).
      observation_normalizer: the running mean / variance of every observation collected, with
        ``normalize_observations``; else None.
    """

    updates: int = 0
    env_steps: int = 0
    train_seconds: float = 0.0
    collect_seconds: float = 0.0
    episode_returns: list[float] = dataclasses.field(default_factory=list)
    training_log: list[dict[str, float]] = dataclasses.field(default_factory=list)
    run_seed: int | None = None
    return_scale: RunningScale = dataclasses.field(default_factory=RunningScale)
    observation_normalizer: ObservationNormalizer | None = None

    def mean_return(self, window: int = 100) -> float:
        """Mean undiscounted return of the last ``window`` episodes (fewer early on; NaN before any)."""
        recent = self.episode_returns[-window:]
        return float(np.mean(recent)) if recent else math.nan

    def seed(self) -> int:
        """The run seed, drawn from the OS's entropy on first use when the agent was given none."""
        if self.run_seed is None:
            self.run_seed = int(np.random.SeedSequence().generate_state(1)[0])
        return self.run_seed
