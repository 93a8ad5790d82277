"""The ``learn`` loop of a ReinforceAgent: collect -> batch -> train step -> callbacks -> checkpoints.

Each piece is a method of :class:`Learner` with one job, so that another driver (e.g. one worker of
several) can reuse them: :meth:`Learner.collect` (one seeded collection round), :meth:`Learner.make_batch`
(returns and the flat batch), ``agent._train_on_batch`` (the compiled update), :meth:`Learner.record`
(counters and logs) and :class:`StopConditions` (when to stop).

Shapes: ``T`` time steps, ``N`` envs, ``B`` kept steps, ``D...`` observation shape.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gymnasium
import keras
import numpy as np

from kerasce.callbacks import EvalCallback, StopAtMeanReturn
from kerasce.rl.checkpoints import CheckpointStore, has_checkpoint
from kerasce.rl.envs import check_spaces, info_action_mask, one_hot_observations
from kerasce.rl.returns import complete_episode_mask, discounted_returns, first_episode_mask, normalize
from kerasce.rl.rollout import Rollout, collect_episodes, completed_episodes, make_policy_sampler, sample_actions

if TYPE_CHECKING:
    from kerasce.rl.agent import ReinforceAgent

__all__ = ["Learner", "StopConditions", "UpdateTimes"]


@dataclasses.dataclass(frozen=True)
class StopConditions:
    """The budget of a ``learn`` call; ``None`` means no limit.

    Attributes:
      total_timesteps: env steps in total (over the whole run, resumes included).
      max_updates: updates in total.
      max_seconds: wall time of this call.
    """

    total_timesteps: int | None = None
    max_updates: int | None = None
    max_seconds: float | None = None

    def reached(self, agent: ReinforceAgent, elapsed: float) -> str | None:
        """The name of the first limit reached, or None."""
        if self.max_updates is not None and agent.updates >= self.max_updates:
            return "max_updates"
        if self.total_timesteps is not None and agent.env_steps >= self.total_timesteps:
            return "total_timesteps"
        if self.max_seconds is not None and elapsed >= self.max_seconds:
            return "max_seconds"
        return None


@dataclasses.dataclass(frozen=True)
class UpdateTimes:
    """Where one update's time went (in a cluster, once gathered: see `Learner.gather_counts`).

    Attributes:
      collect_seconds: wall time of the collection round (a cluster's: its slowest worker's).
      collect_cpu_seconds: CPU time the process used during collection, all its threads (a cluster's: the
        sum over its workers). Per env step, it tells a slower CPU (on a VM whose other cores are busy,
        say) from time spent waiting.
      update_seconds: wall time of the whole update, collection included.
    """

    collect_seconds: float
    collect_cpu_seconds: float
    update_seconds: float


class Learner:
    """Runs updates of ``agent`` on ``env`` until a stop condition or callback ends training.

    Args:
      agent: the ``ReinforceAgent``.
      env: a gymnasium vector env (the caller owns and closes it).
      callbacks: Keras callbacks; one update is one epoch.
      verbose: 1 prints one line per update.
      checkpoint_dir: where :class:`~kerasce.rl.checkpoints.CheckpointStore` saves, or None.
      checkpoint_every: updates between checkpoints (and one at the end).
      resume: restore the checkpoint in ``checkpoint_dir`` first, if there is one.
      target_return: stop when the 100-episode training mean reaches it (and the evaluation too, with
        ``evaluation``).
      evaluation: an :class:`~kerasce.callbacks.EvalCallback`, run before the other callbacks.
      action_mask_fn: valid-action masks for an agent with ``use_action_mask`` (default
        ``info["action_mask"]``).
    """

    def __init__(
        self,
        agent: ReinforceAgent,
        env: gymnasium.vector.VectorEnv,
        *,
        callbacks: Iterable[keras.callbacks.Callback] | None = None,
        verbose: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
        target_return: float | None = None,
        evaluation: EvalCallback | None = None,
        action_mask_fn: Callable[[np.ndarray, dict], np.ndarray] | None = None,
    ):
        self.agent = agent
        self.env = env = one_hot_observations(env)
        if action_mask_fn is not None and not agent.use_action_mask:
            raise ValueError(
                "Expected an agent built with use_action_mask=True for `action_mask_fn`; this one takes no mask."
            )
        self.action_mask_fn = (action_mask_fn or info_action_mask) if agent.use_action_mask else None
        _, self.num_actions = check_spaces(env, agent.observation_shape, agent.num_actions)
        self.action_offset = int(env.single_action_space.start)  # type: ignore[attr-defined]  # Discrete (stubs: Space)
        self.verbose = int(verbose)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = max(int(checkpoint_every), 1)
        self.store = None if checkpoint_dir is None else CheckpointStore(agent, checkpoint_dir)
        resumed = False
        if self.store is not None and checkpoint_dir is not None and resume and has_checkpoint(checkpoint_dir):
            self.store.restore()
            resumed = True
        callbacks = list(callbacks or [])
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.CSVLogger):
                _continue_csv_log(callback, agent.updates if resumed else 0)
        if evaluation is not None:
            if evaluation.action_mask is None:
                evaluation.action_mask = self.action_mask_fn
            evaluation.attach(None if checkpoint_dir is None else os.path.join(checkpoint_dir, "best_eval"), resumed)
        agent._ensure_optimizer()
        if agent._run_seed is None:
            agent._run_seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.sampler = make_policy_sampler(
            agent.policy, fast=agent.fast_sampling, observation_shape=agent.observation_shape
        )
        self.evaluation = evaluation
        if evaluation is not None:
            callbacks.insert(0, evaluation)  # its eval_* keys are in the logs the others see
        if target_return is not None:
            callbacks.append(StopAtMeanReturn(target_return, evaluation=evaluation))
        self.callbacks = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=False, model=agent, verbose=verbose, epochs=0, steps=1
        )

    def batch_multiple(self) -> int:
        """The batch is trimmed to a multiple of this: the number of replicas, for equal shards."""
        return self.agent.distribute_strategy.num_replicas_in_sync

    def collect(self, update: int) -> Rollout:
        """One collection round: reset every sub-env (seeded from ``(run seed, update)``) and keep
        each sub-env's first episode (later ones get ``valid=False``).

        Only first episodes: a fast sub-env's 2nd, 3rd, ... episodes finish before the slowest sub-env's
        first one only when they are short, so keeping them would bias the gradient and
        ``mean_return_100`` toward short episodes.
        """
        agent = self.agent
        seeds = np.random.SeedSequence(self.seed_entropy(update)).generate_state(2)
        rng = np.random.default_rng(seeds[1])
        observations, infos = self.env.reset(seed=int(seeds[0]))

        def act(obs, mask=None):
            return sample_actions(self.sampler.logits(obs), rng, mask) + self.action_offset

        rollout, _ = collect_episodes(
            self.env,
            act,
            observations,
            agent.max_rollout_steps,
            action_mask=self.action_mask_fn,
            infos=infos,
            first_episodes_only=True,  # the steps after a sub-env's first episode would be thrown away
        )
        first = first_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
        return dataclasses.replace(rollout, valid=first)

    def make_batch(self, rollout: Rollout, update: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(observations [B, D...] float32, actions [B] int32 in [0, A), returns [B] float32, action masks
        [B, A] bool or None)``: the steps of the complete episodes, time-major, trimmed to a multiple of
        :meth:`batch_multiple`.

        Raises:
          ValueError: for non-finite observations, or no complete episode in the rollout.
        """
        agent = self.agent
        _check_observations(rollout.observations, update)
        mask = complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
        scale = agent.return_scale.scale if agent.baseline and agent.normalize_returns else 1.0
        returns = discounted_returns(
            rollout.rewards,
            rollout.terminated,
            rollout.truncated,
            agent.gamma,
            rollout.valid,
            bootstrap=self.bootstrap_values(rollout, scale),
        )
        returns = self.finish_returns(returns, mask, update)
        keep = np.flatnonzero(mask.reshape(-1))
        replicas = self.batch_multiple()
        keep = keep[: len(keep) - len(keep) % replicas]  # equal shards under a strategy
        observations = rollout.observations.reshape((-1,) + agent.observation_shape)[keep]
        actions = rollout.actions.reshape(-1)[keep] - self.action_offset
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"Expected actions in [0, {self.num_actions}), got {actions.min()}..{actions.max()}.")
        masks = None if rollout.masks is None else rollout.masks.reshape(-1, self.num_actions)[keep]
        return (
            observations.astype(np.float32),
            actions.astype(np.int32),
            returns.reshape(-1)[keep].astype(np.float32),
            masks,
        )

    def bootstrap_values(self, rollout: Rollout, scale: float) -> np.ndarray | None:
        """``[T, N]`` ``scale * V(s')`` for the time-limit-truncated steps (``s'`` the state they reached),
        for :func:`~kerasce.rl.returns.discounted_returns`; None without a baseline or truncations."""
        agent = self.agent
        truncated = rollout.truncated & ~rollout.terminated & rollout.valid
        value_network = agent.value_network  # set exactly when agent.baseline
        if not agent.baseline or value_network is None or rollout.last_observations is None or not truncated.any():
            return None
        # With next-step autoreset the observation after step t is row t + 1's (the reset step's row).
        following = np.concatenate([rollout.observations[1:], rollout.last_observations[None]], axis=0)
        t, n = np.nonzero(truncated)
        values = keras.ops.convert_to_numpy(value_network(following[t, n], training=False))[:, 0]
        bootstrap = np.zeros(rollout.rewards.shape)
        bootstrap[t, n] = values.astype(np.float64) * scale
        return bootstrap

    # Hooks: one process decides alone here; kerasce.rl.distributed.DistributedLearner overrides them so
    # that every worker of a cluster collects its own episodes and all of them take the same decisions.

    def seed_entropy(self, update: int) -> list[int]:
        """What seeds the env resets and the action sampling of ``update``."""
        run_seed = self.agent._run_seed
        if run_seed is None:  # __init__ draws one when the agent has none
            raise RuntimeError("Learner expects the agent's run seed to be set.")
        return [run_seed, update]

    def finish_returns(self, returns: np.ndarray, mask: np.ndarray, update: int) -> np.ndarray:
        """Checks that an episode ended (``mask [T, N]`` has a kept step) and scales ``returns [T, N]``
        (with ``normalize_returns``): normalised over the kept steps, or, with a baseline, divided by the
        running std of all returns so far (``agent.return_scale``).

        Raises:
          ValueError: no complete episode in the rollout.
        """
        if not mask.any():
            raise ValueError(
                f"No episode ended within max_rollout_steps={self.agent.max_rollout_steps} vector steps at "
                f"update {update}; expected at least one complete episode per update (raise "
                "max_rollout_steps or use an env with a time limit)."
            )
        agent = self.agent
        if agent.baseline and agent.normalize_returns:
            # The value network's target keeps its scale across updates: G / (std of all returns so far).
            agent.return_scale.update(returns[mask])
            return np.where(mask, returns / agent.return_scale.scale, 0.0)
        return normalize(returns, mask) if agent.normalize_returns else returns

    def train_on_batch(self, batch: tuple) -> dict[str, float]:
        """One update on ``make_batch``'s output; returns the loss metrics."""
        return self.agent._train_on_batch(*batch)

    def gather_counts(self, rollout: Rollout, times: UpdateTimes) -> tuple[np.ndarray, int, UpdateTimes]:
        """``(episode returns, env steps, times)`` of this update."""
        episode_returns, _ = completed_episodes(rollout)
        return np.asarray(episode_returns, np.float64), int(rollout.env_steps), times

    def stop_reason(self, stop: StopConditions, elapsed: float) -> str | None:
        """Why training stops before the next update (a callback set ``stop_training``, a limit), or None."""
        return "callback" if self.agent.stop_training else stop.reached(self.agent, elapsed)

    def batch_steps(self, batch: tuple) -> int:
        """The env steps that entered this update's batch (every worker's in a cluster)."""
        return len(batch[1])

    def save_checkpoint(self) -> None:
        """Save the training state into ``checkpoint_dir``."""
        if self.store is None:
            raise RuntimeError("Learner.save_checkpoint needs a checkpoint_dir.")
        self.store.save()

    def record(
        self, rollout: Rollout, metrics: dict[str, float], times: UpdateTimes, batch_steps: int
    ) -> dict[str, float]:
        """Count the update's episodes and steps into the agent; return the update's logs
        (``batch_steps``: the env steps that entered the batch; the rest of ``rollout.env_steps`` are
        autoreset steps and later episodes, collected because a vector env steps all sub-envs at once)."""
        agent = self.agent
        episode_returns, env_steps, times = self.gather_counts(rollout, times)
        agent.episode_returns.extend(float(r) for r in episode_returns)
        agent.updates += 1
        agent.env_steps += env_steps
        agent.train_seconds += times.update_seconds
        agent.collect_seconds += times.collect_seconds
        return dict(
            metrics,
            mean_return_100=agent.mean_return(100),
            episode_return=float(np.mean(episode_returns)) if len(episode_returns) else math.nan,
            episodes=float(len(agent.episode_returns)),
            env_steps=float(agent.env_steps),
            batch_steps=float(batch_steps),
            steps_per_second=env_steps / max(times.collect_seconds, 1e-9),
            collect_cpu_seconds=times.collect_cpu_seconds,
            train_seconds=agent.train_seconds,
        )

    def run(self, stop: StopConditions) -> keras.callbacks.History:
        """Train until ``stop`` or a callback says so; checkpoints every ``checkpoint_every`` updates."""
        agent = self.agent
        agent.stop_training = False
        self.callbacks.on_train_begin()
        start = time.perf_counter()
        logs: dict[str, float] = {}
        while self.stop_reason(stop, time.perf_counter() - start) is None:
            update_start = time.perf_counter()
            update = agent.updates
            self.callbacks.on_epoch_begin(update)
            self.callbacks.on_train_batch_begin(0)
            cpu_start = time.process_time()
            rollout = self.collect(update)
            collect_seconds = time.perf_counter() - update_start
            collect_cpu_seconds = time.process_time() - cpu_start
            batch = self.make_batch(rollout, update)
            metrics = self.train_on_batch(batch)
            if not all(math.isfinite(v) for v in metrics.values()):
                raise FloatingPointError(
                    f"Non-finite loss at update {update} ({metrics}); training stopped. "
                    + (
                        f"The last good checkpoint is in {str(self.checkpoint_dir)!r}."
                        if self.checkpoint_dir is not None
                        else "No checkpoint_dir was set."
                    )
                )
            self.sampler.refresh()
            times = UpdateTimes(collect_seconds, collect_cpu_seconds, time.perf_counter() - update_start)
            logs = self.record(rollout, metrics, times, self.batch_steps(batch))
            self.callbacks.on_train_batch_end(0, metrics)
            self.callbacks.on_epoch_end(update, logs)
            if self.evaluation is not None:  # CallbackList hands callbacks a copy of `logs`
                logs.update(self.evaluation.latest_logs)
            agent.training_log.append(dict(logs, update=float(agent.updates)))
            if self.verbose:
                _print_update(agent, logs)
            if self.store is not None and agent.updates % self.checkpoint_every == 0:
                self.save_checkpoint()
        if self.store is not None and logs:
            self.save_checkpoint()
        self.callbacks.on_train_end(logs)
        return agent.history


def _print_update(agent: ReinforceAgent, logs: dict[str, float]) -> None:
    evaluation = f"  eval {logs['eval_return_mean']:7.1f}" if "eval_return_mean" in logs else ""
    print(
        f"update {agent.updates:4d}  mean_return_100 {logs['mean_return_100']:7.1f}{evaluation}  "
        f"episodes {len(agent.episode_returns):6d}  env_steps {agent.env_steps:8d}  "
        f"loss {logs['loss']:+.4f}  entropy {logs['entropy']:.3f}  {logs['steps_per_second']:,.0f} steps/s",
        flush=True,
    )


def _check_observations(observations: np.ndarray, update: int) -> None:
    finite = np.isfinite(observations).reshape(observations.shape[0], observations.shape[1], -1)
    if not finite.all():
        t, n = np.argwhere(~finite.all(axis=-1))[0]
        raise ValueError(
            f"Expected finite observations, got NaN/inf at update {update}, rollout step {t}, env {n}: "
            f"{observations[t, n]}. Training stopped; the last checkpoint (if any) is kept."
        )


def _continue_csv_log(logger: keras.callbacks.CSVLogger, updates: int) -> None:
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
