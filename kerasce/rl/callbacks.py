"""Callbacks of ``ReinforceAgent.learn``: greedy evaluation, checkpoints, stopping at a target return.

Like Stable-Baselines3's ``common/callbacks.py``: training hands them what they need through one explicit
interface. Before training begins, the trainer calls :meth:`RLCallback.bind` with a :class:`RunContext`
(the run state, the workers' collective, the action masks); Keras's ``set_model`` gives them the model.
They read nothing else of the trainer. The trainer runs them in a fixed place among the others:
``EvalCallback`` first (its ``eval_*`` keys reach the other callbacks and the run's log row), then the
user's callbacks, then ``StopAtMeanReturn``, and ``CheckpointCallback`` last (it saves complete rows).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasce.export import write_json_atomic
from kerasce.rl.checkpoints import CheckpointStore, has_checkpoint
from kerasce.rl.collective import Collective, LocalCollective
from kerasce.rl.evaluation import Evaluation, evaluate_policy
from kerasce.rl.state import RunState

__all__ = [
    "CheckpointCallback",
    "EvalCallback",
    "RLCallback",
    "RunContext",
    "StopAtMeanReturn",
    "arrange_callbacks",
    "bind_callbacks",
    "continue_csv_log",
]

BEST_JSON = "best.json"
# Keras's own weights file: keyed by each variable's place in the model's structure (not by position in a
# flat list, nor by auto-generated layer names, which depend on what else the process built first).
BEST_WEIGHTS = "best.weights.h5"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a run gives its callbacks.

    Attributes:
      state: the run state (counters, run seed, episode returns, the log row of each update).
      collective: the exchanges of the run's workers (a local one for a single process).
      action_mask_fn: ``(observations, infos) -> [N, A]`` valid actions, or None without masks.
      target_return: ``learn``'s ``target_return``, or None.
      budget: ``learn``'s limits, ``{"total_timesteps", "max_updates", "max_seconds"}`` (None: no limit).
    """

    state: RunState
    collective: Collective = dataclasses.field(default_factory=LocalCollective)
    action_mask_fn: Callable | None = None
    target_return: float | None = None
    budget: dict[str, float | None] = dataclasses.field(default_factory=dict)


class RLCallback(keras.callbacks.Callback):
    """A Keras callback that also receives the run's :class:`RunContext` before training begins."""

    def __init__(self) -> None:
        super().__init__()
        self.context: RunContext | None = None

    def bind(self, context: RunContext) -> None:
        """Called by the trainer once per ``learn``, before ``on_train_begin``."""
        self.context = context

    def run_context(self) -> RunContext:
        """The bound context.

        Raises:
          RuntimeError: the callback is used outside ``learn`` (nothing bound it).
        """
        if self.context is None:
            raise RuntimeError(f"{type(self).__name__} must be bound to a run: pass it to ReinforceAgent.learn.")
        return self.context


def arrange_callbacks(callbacks: list, target_return: float | None) -> list:
    """``callbacks`` in run order: evaluations, the others, a ``StopAtMeanReturn(target_return)`` (which
    waits for the first evaluation's greedy mean too), checkpoints."""
    evaluations = [c for c in callbacks if isinstance(c, EvalCallback)]
    checkpoints = [c for c in callbacks if isinstance(c, CheckpointCallback)]
    others = [c for c in callbacks if not isinstance(c, (EvalCallback, CheckpointCallback))]
    if target_return is not None:
        others.append(StopAtMeanReturn(target_return, evaluation=evaluations[0] if evaluations else None))
    return evaluations + others + checkpoints


def bind_callbacks(callbacks: list, context: RunContext) -> None:
    """Bind every :class:`RLCallback` of ``callbacks`` to ``context``, in order."""
    for callback in callbacks:
        if isinstance(callback, RLCallback):
            callback.bind(context)


def continue_csv_log(logger: keras.callbacks.CSVLogger, updates: int) -> None:
    """A resumed run appends to its ``CSVLogger`` file instead of truncating it; rows of updates after
    the checkpoint (written before a kill, trained again now) are dropped first. A fresh run
    (``updates == 0``) keeps the logger's own ``append`` setting."""
    if updates == 0 or not os.path.isfile(logger.filename):
        return
    with open(logger.filename, newline="") as f:
        rows = list(csv.reader(f, delimiter=logger.sep))
    if rows:
        epoch = rows[0].index("epoch") if "epoch" in rows[0] else 0
        kept = [rows[0]] + [row for row in rows[1:] if row and int(float(row[epoch])) < updates]
        with open(logger.filename, "w", newline="") as f:
            csv.writer(f, delimiter=logger.sep, lineterminator="\n").writerows(kept)
    logger.append = True


class CheckpointCallback(RLCallback):
    """Save the whole training state into ``directory`` every ``save_every`` updates and when training
    ends (:mod:`kerasce.rl.checkpoints`); with ``resume``, restore the checkpoint there first.

    Under a strategy every worker saves into a directory of its own, after a barrier: no worker saves
    update ``u`` before every worker has finished it, so a worker that dies leaves all checkpoints at the
    same, earlier update.

    Args:
      directory: the checkpoint directory (created).
      save_every: updates between checkpoints.
      resume: restore the checkpoint in ``directory``, if there is one, before training begins.

    Attributes:
      resumed_at: the update the run resumed from (0: it started fresh).
    """

    def __init__(self, directory: str | os.PathLike, save_every: int = 10, resume: bool = False):
        super().__init__()
        if int(save_every) < 1:
            raise ValueError(f"`save_every` must be >= 1. Received: save_every={save_every}")
        self.directory = Path(directory)
        self.save_every = int(save_every)
        self.resume = bool(resume)
        self.resumed_at = 0
        self.store: CheckpointStore | None = None
        self.saved_update: int | None = None

    def bind(self, context: RunContext) -> None:
        super().bind(context)
        self.store = CheckpointStore(self.model, context.state, self.directory)
        if self.resume and has_checkpoint(self.directory):
            self.store.restore()
        self.resumed_at = context.state.updates
        self.saved_update = context.state.updates

    def save(self) -> None:
        """Save now (every worker must call it together)."""
        context = self.run_context()
        if self.store is None:
            raise RuntimeError("CheckpointCallback must be bound to a run before it saves.")
        context.collective.barrier()
        self.store.save()
        self.saved_update = context.state.updates

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.run_context().state.updates % self.save_every == 0:
            self.save()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.run_context().state.updates != self.saved_update:
            self.save()


class StopAtMeanReturn(RLCallback):
    """Stop training once the running mean return (``monitor``) reaches ``target_return``.

    Checked after every update, and also when training begins, against the last row of the run's
    training log (restored from a checkpoint): a run resumed from a checkpoint that already met the
    target stops before doing another update.

    With ``evaluation`` (an :class:`EvalCallback`, which runs before this one), training stops only at an
    update whose greedy evaluation also reached the target: the stochastic training episodes alone do
    not say how the greedy (exported) policy plays.

    Args:
      target_return: e.g. 475 for CartPole-v1 (its ``reward_threshold``).
      monitor: the log key holding the running mean (``"mean_return_100"`` in ``learn``).
      min_episodes: episodes needed before stopping (``logs["episodes"]``), so that a 100-episode
        mean is over 100 episodes.
      evaluation: optional :class:`EvalCallback` whose evaluation must reach the target too.

    Attributes:
      reached_at: the index (from 0) of the update that reached the target, or None.
    """

    def __init__(
        self,
        target_return: float,
        monitor: str = "mean_return_100",
        min_episodes: int = 100,
        evaluation: EvalCallback | None = None,
    ):
        super().__init__()
        self.target_return = float(target_return)
        self.monitor = monitor
        self.min_episodes = int(min_episodes)
        self.evaluation = evaluation
        self.reached_at: int | None = None

    def _reached(self, logs: dict[str, float]) -> bool:
        value = logs.get(self.monitor)
        enough = logs.get("episodes", math.inf) >= self.min_episodes
        return value is not None and enough and value >= self.target_return

    def _evaluation_reached(self, epoch: int | None) -> bool:
        if self.evaluation is None:
            return True
        last = self.evaluation.last
        if last is None or not (epoch is None or last["epoch"] == epoch):
            return False  # no evaluation yet, or not one of this epoch
        return last["mean"] >= self.target_return

    def reached_in(self, row: dict[str, float]) -> bool:
        """Whether a training-log row met the target (and, with ``evaluation``, its evaluation did too)."""
        if not self._reached(row):
            return False
        return self.evaluation is None or (
            row.get("evaluated") == 1.0 and row.get("eval_return_mean", -math.inf) >= self.target_return
        )

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        history = self.run_context().state.training_log
        # A resumed run re-evaluates before its first update; the restored row's eval must have passed.
        if history and self.reached_in(history[-1]):
            self.reached_at = int(history[-1].get("update", len(history))) - 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._reached(logs or {}) and self._evaluation_reached(epoch):
            self.reached_at = epoch
            self.model.stop_training = True


class EvalCallback(RLCallback):
    """Evaluate the agent's greedy policy on a separate env every ``eval_every`` updates; keep the best.

    Like Stable-Baselines3's ``EvalCallback``: ``episodes`` whole episodes, each on a fresh reset seed
    (derived from the run seed and the update, never a training seed), played with the ``argmax``
    action -- what the exported ``serving_default`` does. Each evaluation adds ``eval_return_mean``,
    ``eval_return_std``, ``eval_episodes`` and ``eval_seed`` (episode ``i`` was reset with
    ``eval_seed + i``) to the update's logs (the latest evaluation's values on the updates between two
    evaluations, so every row has the same keys); ``evaluated`` is 1 on updates that evaluated. With
    ``best_model_save_path`` the best evaluation survives a kill: it is saved there whenever it
    improves, and a resumed run (one whose run state has updates) starts from it. Under a strategy,
    each worker plays its own contiguous share of the episodes.

    An evaluation also runs after the first update of a run and whenever ``trigger`` (a log key,
    default the training mean) reaches ``target_return`` (default: ``learn``'s) with a full 100-episode
    window, so that a stop condition needing both can be met without waiting ``eval_every`` updates.

    Args:
      env: the env to evaluate on: an id, a ``gymnasium.Env`` instance or a zero-argument factory (a ``sync``
        vector env of ``episodes`` sub-envs is made at each evaluation), or a vector env of ``episodes``.
      episodes: episodes per evaluation (``N >= 20`` gives a usable mean; the example uses 20).
      eval_every: updates between evaluations.
      seed: base of the evaluation seeds (default: the run seed).
      target_return: with ``trigger``, evaluate as soon as the training mean reaches it.
      trigger: the log key compared with ``target_return``.
      restore_best: when training ends, load the weights with the best evaluation mean (ties: the
        later one) into the agent, as ``EarlyStopping(restore_best_weights=True)`` does.
      verbose: 1 prints one line per evaluation.
      action_mask: ``(observations, infos) -> [N, A]`` valid actions (default: the run's).
      best_model_save_path: a directory for the best evaluation's weights and summary, or None.

    Attributes:
      evaluations: one dict per evaluation (``epoch``, ``update``, ``mean``, ``std``, ``episodes``, ``seed``).
      last: the latest of them, or None.
      best: the one with the highest mean, or None; ``best_weights`` holds the agent's weights then.
    """

    def __init__(
        self,
        env: Any,
        episodes: int = 20,
        eval_every: int = 10,
        seed: int | None = None,
        target_return: float | None = None,
        trigger: str = "mean_return_100",
        restore_best: bool = True,
        verbose: int = 0,
        action_mask: Callable | None = None,
        best_model_save_path: str | os.PathLike | None = None,
    ):
        super().__init__()
        for name, value in (("episodes", episodes), ("eval_every", eval_every)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
        self.env = env
        self.episodes = int(episodes)
        self.eval_every = int(eval_every)
        self.seed = seed
        self.target_return = target_return
        self.trigger = trigger
        self.restore_best = bool(restore_best)
        self.verbose = int(verbose)
        self.action_mask = action_mask
        self.directory = None if best_model_save_path is None else Path(best_model_save_path)
        self.evaluations: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.best_weights: list | None = None  # this run's best, in memory
        self.best_file: Path | None = None  # a resumed run's best so far, on disk
        self.carried: dict[str, float] = {}  # the latest evaluation's log keys

    @property
    def last(self) -> dict[str, float] | None:
        return self.evaluations[-1] if self.evaluations else None

    def save_best(self) -> None:
        """Writes the model's weights (those just evaluated best) and then the json that describes them."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / ("tmp." + BEST_WEIGHTS)  # Keras wants the .weights.h5 suffix
        self.model.save_weights(tmp)
        os.replace(tmp, self.directory / BEST_WEIGHTS)
        self.best_file = None  # the weights in memory are the best now
        write_json_atomic(self.directory / BEST_JSON, self.best)

    def on_train_begin(self, logs: dict | None = None) -> None:
        state = self.run_context().state
        # Carry the last evaluation of a resumed run forward, so every row has the eval_* keys.
        last_row = state.training_log[-1] if state.training_log else {}
        self.carried = {k: v for k, v in last_row.items() if k.startswith("eval_")}
        self.best_file = None
        # A resumed run keeps the best weights its killed part found.
        if state.updates > 0 and self.directory is not None and (self.directory / BEST_JSON).is_file():
            self.best = json.loads((self.directory / BEST_JSON).read_text())
            self.best_file = self.directory / BEST_WEIGHTS  # loaded into the model at the end of training

    def _due(self, epoch: int, logs: dict) -> bool:
        # Evaluation updates depend on the update index only: a resumed run evaluates where the
        # uninterrupted one did.
        if epoch == 0 or (epoch + 1) % self.eval_every == 0:
            return True
        target = self.target_return if self.target_return is not None else self.run_context().target_return
        value = logs.get(self.trigger)
        return target is not None and value is not None and logs.get("episodes", 0) >= 100 and value >= target

    def play(self, base: int) -> Evaluation:
        """This run's greedy episodes from reset seed ``base`` (every worker's share, gathered)."""
        context = self.run_context()
        sampler, normalizer = self.model.policy_sampler(), context.state.observation_normalizer
        logits = sampler.logits if normalizer is None else lambda obs: sampler.logits(normalizer.normalize(obs))
        distribution = self.model.distribution
        mask = self.action_mask if self.action_mask is not None else context.action_mask_fn
        collective = context.collective
        if collective.workers == 1:
            return evaluate_policy(logits, self.env, self.episodes, base, action_mask=mask, distribution=distribution)
        # Episode i is still reset with base + i: the same evaluation as on one worker, in 1/W of the time.
        worker, workers = collective.worker, collective.workers
        lo, hi = (self.episodes * worker) // workers, (self.episodes * (worker + 1)) // workers
        mine = (
            evaluate_policy(logits, self.env, hi - lo, base + lo, action_mask=mask, distribution=distribution)
            if hi > lo
            else Evaluation(np.zeros(0), np.zeros(0, np.int64), base + lo)
        )
        capacity = -(-self.episodes // workers)
        row = np.zeros(1 + 2 * capacity)
        row[0] = mine.returns.size
        row[1 : 1 + mine.returns.size] = mine.returns
        row[1 + capacity : 1 + capacity + mine.lengths.size] = mine.lengths
        rows = collective.all_gather(row)
        counts = rows[:, 0].astype(int)
        returns = np.concatenate([r[1 : 1 + n] for r, n in zip(rows, counts)])
        lengths = np.concatenate([r[1 + capacity : 1 + capacity + n] for r, n in zip(rows, counts)])
        return Evaluation(returns=returns, lengths=lengths.astype(np.int64), seed=base)

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Run one evaluation of the current weights now; returns (and records) its summary."""
        state = self.run_context().state
        run_seed = self.seed if self.seed is not None else (state.run_seed or 0)
        # Fresh seeds per evaluation, disjoint in practice from the training resets (another key).
        base = int(np.random.SeedSequence([int(run_seed), state.updates, 1]).generate_state(1)[0] % 2**30)
        result = self.play(base)
        summary = {
            "epoch": epoch,
            "update": state.updates,
            "mean": result.mean,
            "std": result.std,
            "episodes": result.episodes,
            "seed": base,
        }
        self.evaluations.append(summary)
        if self.best is None or summary["mean"] >= self.best["mean"]:
            self.best = summary
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            self.save_best()
        if self.verbose:
            print(
                f"eval at update {state.updates}: greedy return {result.mean:.1f} +- {result.std:.1f} "
                f"over {result.episodes} episodes",
                flush=True,
            )
        return summary

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        evaluated = self._due(epoch, logs)
        if evaluated:
            self.evaluate(epoch)
        last = self.last
        if last is not None:
            self.carried = dict(
                eval_return_mean=last["mean"],
                eval_return_std=last["std"],
                eval_episodes=float(last["episodes"]),
                eval_seed=float(last["seed"]),
            )
        added = dict(self.carried, evaluated=float(evaluated))
        logs.update(added)
        state = self.run_context().state
        if state.training_log:  # the update's row in the run's log
            state.training_log[-1].update(added)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.restore_best:
            return
        if self.best_weights is not None:  # found by this run (same process, same model)
            self.model.set_weights(self.best_weights)
        elif self.best_file is not None:  # found before a resume: from the run's best-evaluation file
            try:
                self.model.load_weights(self.best_file)
            except (ValueError, OSError) as error:
                raise ValueError(
                    f"The best evaluation's weights must fit this policy. Received: {self.best_file} ({error}); "
                    "resume with the settings the run was started with, or start fresh."
                ) from None
