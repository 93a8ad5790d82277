"""Keras callbacks shared by the classifiers and the agent."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import numpy as np

_BEST_JSON = "best.json"
# Keras's own weights file: keyed by each variable's place in the model's structure (not by position in a
# flat list, nor by auto-generated layer names, which depend on what else the process built first).
_BEST_WEIGHTS = "best.weights.h5"

__all__ = ["EvalCallback", "RaiseOnNonFiniteLoss", "StopAtMeanReturn"]


class RaiseOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails training with an error naming the epoch and step at which the loss became NaN or infinite.

    Keras's ``TerminateOnNaN`` stops quietly and ``fit`` returns as if training had finished. This raises
    ``FloatingPointError`` instead, before any later callback runs for that step, so checkpoints written
    earlier (``BackupAndRestore``, ``ModelCheckpoint``) still hold the last good state and a rerun resumes
    from there. Put it first in the callback list.

    Args:
        monitor: The log entry to watch (``"loss"`` by default).
    """

    def __init__(self, monitor: str = "loss"):
        super().__init__()
        self.monitor = monitor
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or math.isfinite(float(value)):
            return
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer is not None else None
        raise FloatingPointError(
            f"`{self.monitor}` must be finite. Received: {self.monitor}={float(value)} at epoch {self._epoch + 1}, "
            f"batch {batch + 1} (optimizer step {step}). Training stopped and the last good checkpoint was kept: "
            "check the inputs for NaN/inf or lower the learning rate."
        )


class StopAtMeanReturn(keras.callbacks.Callback):
    """Stop training once the running mean return (``monitor``) reaches ``target_return``.

    Checked after every update, and also when training begins, against the last row of the agent's
    ``training_log`` (restored by ``load_checkpoint``): a run resumed from a checkpoint that already
    met the target stops before doing another update.

    With ``evaluation`` (an :class:`EvalCallback` placed before this one), training stops only at an
    update whose greedy evaluation also reached the target: the stochastic training episodes alone do
    not say how the greedy (exported) policy plays.

    Args:
      target_return: e.g. 475 for CartPole-v1 (its ``reward_threshold``).
      monitor: the log key holding the running mean (``"mean_return_100"`` in ``learn``).
      min_episodes: episodes needed before stopping (``logs["episodes"]``), so that a 100-episode
        mean is over 100 episodes.
      evaluation: optional :class:`EvalCallback` whose evaluation must reach the target too.

    Attributes:
      reached_at: the index of the update that reached the target, or None.
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

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        history = getattr(self.model, "training_log", None)
        # A resumed run re-evaluates before its first update; the restored row's eval must have passed.
        if (
            history
            and self._reached(history[-1])
            and (
                self.evaluation is None
                or (
                    history[-1].get("evaluated") == 1.0
                    and history[-1].get("eval_return_mean", -math.inf) >= self.target_return
                )
            )
        ):
            self.reached_at = int(history[-1].get("update", len(history))) - 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._reached(logs or {}) and self._evaluation_reached(epoch):
            self.reached_at = epoch
            self.model.stop_training = True


class EvalCallback(keras.callbacks.Callback):
    """Evaluate the agent's greedy policy on a separate env every ``eval_every`` updates; keep the best.

    Like Stable-Baselines3's ``EvalCallback``: ``episodes`` whole episodes, each on a fresh reset seed
    (derived from the run seed and the update, never a training seed), played with the ``argmax``
    action -- what the exported ``serving_default`` does. Each evaluation adds ``eval_return_mean``,
    ``eval_return_std``, ``eval_episodes`` and ``eval_seed`` (episode ``i`` was reset with
    ``eval_seed + i``) to the update's logs (the latest evaluation's values on the updates between two
    evaluations, so every row has the same keys for ``CSVLogger``); ``evaluated`` is 1 on updates that
    evaluated. Put it before the callbacks that read these keys. With :meth:`attach` (``learn`` does it)
    the best evaluation survives a kill: it is saved next to the checkpoints whenever it improves.

    An evaluation also runs after the first update of a run and whenever ``trigger`` (a log key,
    default the training mean) reaches ``target_return`` with a full 100-episode window, so that a
    stop condition needing both can be met without waiting ``eval_every`` updates.

    Args:
      env: the env id to evaluate on (a ``sync`` vector env of ``episodes`` sub-envs is made).
      episodes: episodes per evaluation (``N >= 20`` gives a usable mean; the example uses 20).
      eval_every: updates between evaluations.
      seed: base of the evaluation seeds (default: the agent's run seed).
      target_return: with ``trigger``, evaluate as soon as the training mean reaches it.
      trigger: the log key compared with ``target_return``.
      restore_best: when training ends, load the weights with the best evaluation mean (ties: the
        later one) into the agent, as ``EarlyStopping(restore_best_weights=True)`` does.
      verbose: 1 prints one line per evaluation.
      action_mask: ``(observations, infos) -> [N, A]`` valid actions (``learn`` sets the agent's).

    Attributes:
      evaluations: one dict per evaluation (``epoch``, ``update``, ``mean``, ``std``, ``episodes``, ``seed``).
      last: the latest of them, or None.
      best: the one with the highest mean, or None; ``best_weights`` holds the agent's weights then.
    """

    def __init__(
        self,
        env: str,
        episodes: int = 20,
        eval_every: int = 10,
        seed: int | None = None,
        target_return: float | None = None,
        trigger: str = "mean_return_100",
        restore_best: bool = True,
        verbose: int = 0,
        action_mask: Callable | None = None,
    ):
        super().__init__()
        if int(episodes) < 1 or int(eval_every) < 1:
            raise ValueError(f"Expected `episodes` >= 1 and `eval_every` >= 1, got {episodes} and {eval_every}.")
        self.env = env
        self.episodes = int(episodes)
        self.eval_every = int(eval_every)
        self.seed = seed
        self.target_return = target_return
        self.trigger = trigger
        self.restore_best = bool(restore_best)
        self.verbose = int(verbose)
        self.action_mask = action_mask
        self.evaluations: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.best_weights: list | None = None  # this run's best, in memory
        self._best_file: Path | None = None  # a resumed run's best so far, on disk
        self.directory: Path | None = None
        self._carried: dict[str, float] = {}
        self.latest_logs: dict[str, float] = {}  # what on_epoch_end added to the logs
        # Set by kerasce.rl.distributed.DistributedLearner: (worker, workers, gather). Each worker then plays
        # its own contiguous share of the episodes and `gather` assembles every worker's in episode order.
        self.share: tuple[int, int, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] | None = None

    @property
    def last(self) -> dict[str, float] | None:
        return self.evaluations[-1] if self.evaluations else None

    def attach(self, directory: str | os.PathLike | None, resumed: bool) -> None:
        """Keep the best evaluation in ``directory`` (``learn`` passes ``<checkpoint_dir>/best_eval``),
        and with ``resumed``, start from the best saved there: a resumed run keeps the best weights its
        killed part found."""
        self.directory = None if directory is None else Path(directory)
        self._best_file = None
        if resumed and self.directory is not None and (self.directory / _BEST_JSON).is_file():
            self.best = json.loads((self.directory / _BEST_JSON).read_text())
            self._best_file = self.directory / _BEST_WEIGHTS  # loaded into the model at the end of training

    def _save_best(self) -> None:
        """Writes the model's weights (those just evaluated best) and then the json that describes them."""
        from kerasce.export import write_json_atomic

        directory = self.directory
        if directory is None or self.best_weights is None:
            raise RuntimeError("EvalCallback._save_best needs an attached directory and best weights.")
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / ("tmp." + _BEST_WEIGHTS)  # Keras wants the .weights.h5 suffix
        self.model.save_weights(tmp)
        os.replace(tmp, directory / _BEST_WEIGHTS)
        self._best_file = None  # the weights in memory are the best now
        write_json_atomic(directory / _BEST_JSON, self.best)

    def on_train_begin(self, logs: dict | None = None) -> None:
        # Carry the last evaluation of a resumed run forward, so every row has the eval_* keys.
        history = getattr(self.model, "training_log", None) or [{}]
        self._carried = {k: v for k, v in history[-1].items() if k.startswith("eval_")}

    def _due(self, epoch: int, logs: dict) -> bool:
        # Evaluation updates depend on the update index only: a resumed run evaluates where the
        # uninterrupted one did.
        if epoch == 0 or (epoch + 1) % self.eval_every == 0:
            return True
        value = logs.get(self.trigger)
        return (
            self.target_return is not None
            and value is not None
            and logs.get("episodes", 0) >= 100
            and value >= self.target_return
        )

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Run one evaluation of the current weights now; returns (and records) its summary."""
        import numpy as np

        from kerasce.rl.evaluation import Evaluation, evaluate_policy

        agent = self.model
        run_seed = self.seed if self.seed is not None else (getattr(agent, "_run_seed", None) or 0)
        update = int(getattr(agent, "updates", epoch + 1))
        # Fresh seeds per evaluation, disjoint in practice from the training resets (another key).
        base = int(np.random.SeedSequence([int(run_seed), update, 1]).generate_state(1)[0] % 2**30)
        logits = agent.policy_sampler().logits
        if self.share is None:
            result = evaluate_policy(logits, self.env, self.episodes, base, action_mask=self.action_mask)
        else:
            # Episode i is still reset with base + i: the same evaluation as on one worker, in 1/W of the time.
            worker, workers, gather = self.share
            lo, hi = (self.episodes * worker) // workers, (self.episodes * (worker + 1)) // workers
            mine = (
                evaluate_policy(logits, self.env, hi - lo, base + lo, action_mask=self.action_mask)
                if hi > lo
                else Evaluation(np.zeros(0), np.zeros(0, np.int64), base + lo)
            )
            returns, lengths = gather(mine.returns, mine.lengths)
            result = Evaluation(returns=returns, lengths=lengths, seed=base)
        summary = {
            "epoch": epoch,
            "update": update,
            "mean": result.mean,
            "std": result.std,
            "episodes": result.episodes,
            "seed": base,
        }
        self.evaluations.append(summary)
        if self.best is None or summary["mean"] >= self.best["mean"]:
            self.best = summary
            self.best_weights = [w.copy() for w in agent.get_weights()]
            if self.directory is not None:
                self._save_best()
        if self.verbose:
            print(
                f"eval at update {update}: greedy return {result.mean:.1f} +- {result.std:.1f} "
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
            self._carried = dict(
                eval_return_mean=last["mean"],
                eval_return_std=last["std"],
                eval_episodes=float(last["episodes"]),
                eval_seed=float(last["seed"]),
            )
        self.latest_logs = dict(self._carried, evaluated=float(evaluated))
        logs.update(self.latest_logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.restore_best:
            return
        if self.best_weights is not None:  # found by this run (same process, same model)
            self.model.set_weights(self.best_weights)
        elif self._best_file is not None:  # found before a resume: from the run's best-evaluation file
            try:
                self.model.load_weights(self._best_file)
            except (ValueError, OSError) as error:
                raise ValueError(
                    f"the best evaluation's weights in {self._best_file} do not fit this policy ({error}); "
                    "resume with the settings the run was started with, or start fresh."
                ) from None
