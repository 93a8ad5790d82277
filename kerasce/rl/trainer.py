"""The ``learn`` loop: collect -> batch -> ``model.update(batch)`` -> callbacks, over a collective.

One loop for one process and for the workers of a ``tf.distribute`` cluster alike. What differs goes
through :mod:`kerasce.rl.collective` (a local collective answers every exchange with this worker's row):

* **Own episodes.** Worker ``w`` of ``W`` seeds its env resets and action sampling from ``(run seed,
  update, w)`` (one worker: ``(run seed, update)``); the run seed is the chief's.
* **Exact update.** The returns are normalised with the moments of every worker's kept steps; with
  several replicas, every replica's batch is zero-padded to the same ``P = ceil(max_w B_w / L)`` rows
  (``L`` local replicas) and each real step weighs ``k = R * P / B`` (``R`` replicas, ``B = sum_w B_w``),
  padding 0: a replica's loss is then ``(1 / R) * (1 / P) * sum_b k_b l_b = sum_b l_b / B`` and the
  all-reduced gradient is that of the global mean. Only an update with no kept step anywhere fails.
* **Global counts and decisions.** Env steps, episode returns and times are all-gathered; whether to
  stop is the chief's decision (its clock, its callbacks' ``stop_training``), so every worker stops after
  the same update and none waits forever in an all-reduce.

Shapes: ``T`` time steps, ``N`` envs, ``B`` kept steps, ``D...`` observation shape.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable

import gymnasium
import keras
import numpy as np

from kerasce.rl.batch import Batch
from kerasce.rl.callbacks import RunContext, arrange_callbacks, bind_callbacks, continue_csv_log
from kerasce.rl.collective import Collective, collective_for
from kerasce.rl.envs import check_env_spaces, flat_observation_env, info_action_mask
from kerasce.rl.model import ReinforceModel
from kerasce.rl.returns import (
    combine_moments,
    complete_episode_mask,
    discounted_returns,
    first_episode_mask,
    gae_advantages,
    moments,
)
from kerasce.rl.rollout import Rollout, collect_episodes, completed_episodes, make_policy_sampler
from kerasce.rl.spaces import Categorical, DiagGaussian
from kerasce.rl.state import RunState

__all__ = ["StopConditions", "Trainer", "UpdateTimes"]


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

    def unlimited(self) -> bool:
        """Whether no limit is set."""
        return self.total_timesteps is None and self.max_updates is None and self.max_seconds is None

    def reached(self, state: RunState, elapsed: float) -> str | None:
        """The name of the first limit reached, or None."""
        if self.max_updates is not None and state.updates >= self.max_updates:
            return "max_updates"
        if self.total_timesteps is not None and state.env_steps >= self.total_timesteps:
            return "total_timesteps"
        if self.max_seconds is not None and elapsed >= self.max_seconds:
            return "max_seconds"
        return None


@dataclasses.dataclass(frozen=True)
class UpdateTimes:
    """Where one update's time went (in a cluster, once gathered).

    Attributes:
      collect_seconds: wall time of the collection round (a cluster's: its slowest worker's).
      collect_cpu_seconds: CPU time the process used during collection, all its threads (a cluster's: the
        sum over its workers). Per env step, it tells a slower CPU from time spent waiting.
      update_seconds: wall time of the whole update, collection included.
    """

    collect_seconds: float
    collect_cpu_seconds: float
    update_seconds: float


class Trainer:
    """Runs updates of ``model`` on ``env`` until a stop condition or a callback ends training.

    Args:
      model: the ``ReinforceModel`` (or ``ReinforceAgent``) to train.
      state: the run state the trainer advances (``ReinforceAgent.run_state``).
      env: a gymnasium vector env (the caller owns and closes it).
      callbacks: Keras callbacks and those of :mod:`kerasce.rl.callbacks`; one update is one epoch.
      verbose: 1 prints one line per update.
      target_return: stop when the 100-episode training mean reaches it (and the greedy evaluation of
        an ``EvalCallback`` among ``callbacks``).
      action_mask_fn: valid-action masks for a model with ``use_action_mask`` (default
        ``info["action_mask"]``).
    """

    def __init__(
        self,
        model: ReinforceModel,
        state: RunState,
        env: gymnasium.vector.VectorEnv,
        *,
        callbacks: Iterable[keras.callbacks.Callback] | None = None,
        verbose: int = 0,
        target_return: float | None = None,
        action_mask_fn: Callable[[np.ndarray, dict], np.ndarray] | None = None,
    ):
        self.model, self.state = model, state
        check_model_spaces(model, env)
        self.env = env = flat_observation_env(env)
        if action_mask_fn is not None and not model.use_action_mask:
            raise ValueError(
                "`action_mask_fn` must be None for a model built without use_action_mask=True. "
                f"Received: action_mask_fn={action_mask_fn!r}"
            )
        self.action_mask_fn = (action_mask_fn or info_action_mask) if model.use_action_mask else None
        self.num_actions = model.num_actions
        self.distribution = distribution = model.distribution
        if isinstance(distribution, Categorical):  # the env's own start (a model without action_space has none)
            offset = int(env.single_action_space.start)  # type: ignore[attr-defined]  # Discrete (stubs: Space)
            self.to_env: Callable[[np.ndarray], np.ndarray] = lambda actions: actions + offset
        else:
            self.to_env = distribution.np_to_env
        self.verbose = int(verbose)
        self.collective: Collective = collective_for(model.distribute_strategy)
        self.context = RunContext(state, self.collective, self.action_mask_fn, target_return)
        self.callback_list = arrange_callbacks(list(callbacks or []), target_return)
        self.callbacks = keras.callbacks.CallbackList(
            self.callback_list, add_history=True, add_progbar=False, model=model, verbose=verbose, epochs=0, steps=1
        )
        self.episode_capacity = env.num_envs  # first episodes only: at most one per sub-env and update
        self.sampler = make_policy_sampler(
            model.policy, fast=model.fast_sampling, observation_shape=model.observation_shape
        )
        # GAE needs V of every kept step each update: the sampler's NumPy copy when it reproduces the network.
        # The Monte-Carlo path keeps the Keras call for its bootstrap values (its batches stay as they were).
        self.value_sampler = None
        if model.value_network is not None and model.gae_lambda < 1.0:
            self.value_sampler = make_policy_sampler(
                model.value_network, fast=model.fast_sampling, observation_shape=model.observation_shape
            )

    # -- the start of a run -------------------------------------------------------------------------

    def begin(self) -> None:
        """Bind the callbacks (checkpoints restore here), agree on the run across workers, then tell the
        callbacks that training begins."""
        self.model.build_optimizer()
        bind_callbacks(self.callback_list, self.context)
        rows = self.collective.all_gather([self.state.seed(), self.state.updates, self.env.num_envs])
        if (rows[:, 1] != rows[0, 1]).any():
            raise ValueError(
                "The workers' checkpoints must be of one update. Received: updates "
                f"{rows[:, 1].astype(int).tolist()} (worker order; a worker died while saving). Every worker's "
                "checkpoint of an update is the same state: copy one worker's checkpoint directory over the "
                "others' to resume from it, or delete them all to start afresh."
            )
        self.state.run_seed = int(rows[0, 0])  # the chief's: one run, whichever seed each worker drew
        self.episode_capacity = int(rows[:, 2].max())
        if self.state.updates > 0:
            for callback in self.callback_list:
                if isinstance(callback, keras.callbacks.CSVLogger):
                    continue_csv_log(callback, self.state.updates)
        self.refresh_samplers()  # a checkpoint may have restored other weights
        self.model.stop_training = False
        self.callbacks.on_train_begin()

    def refresh_samplers(self) -> None:
        """Copy the current weights into the policy's (and the value network's) sampler."""
        self.sampler.refresh()
        if self.value_sampler is not None:
            self.value_sampler.refresh()

    def state_values(self, observations: np.ndarray) -> np.ndarray:
        """``[B]`` float64 ``V(s)`` of the value network (set with a baseline) on ``[B, D...]`` normalised
        observations, as the value network learns it (in the running return scale)."""
        if self.value_sampler is not None:
            return self.value_sampler.logits(observations)[:, 0].astype(np.float64)
        value_network = self.model.value_network
        if value_network is None:
            raise ValueError("`state_values` must be called on a trainer of a model with a baseline. Received: none")
        return keras.ops.convert_to_numpy(value_network(observations, training=False))[:, 0].astype(np.float64)

    # -- one update ---------------------------------------------------------------------------------

    def seed_entropy(self, update: int) -> list[int]:
        """What seeds the env resets and the action sampling of ``update`` on this worker."""
        base = [self.state.seed(), update]
        return base if self.collective.workers == 1 else base + [self.collective.worker]

    def collect(self, update: int) -> Rollout:
        """One collection round: reset every sub-env (seeded from :meth:`seed_entropy`) and keep each
        sub-env's first episode (later ones get ``valid=False``).

        Only first episodes: a fast sub-env's 2nd, 3rd, ... episodes finish before the slowest sub-env's
        first one only when they are short, so keeping them would bias the gradient and
        ``mean_return_100`` toward short episodes.
        """
        seeds = np.random.SeedSequence(self.seed_entropy(update)).generate_state(2)
        rng = np.random.default_rng(seeds[1])
        observations, infos = self.env.reset(seed=int(seeds[0]))

        normalize = self.normalize

        def act(obs, mask=None):
            return self.distribution.np_sample(self.sampler.logits(normalize(obs)), rng, mask)

        rollout, _ = collect_episodes(
            self.env,
            act,
            observations,
            self.model.max_rollout_steps,
            action_mask=self.action_mask_fn,
            infos=infos,
            first_episodes_only=True,  # the steps after a sub-env's first episode would be thrown away
            to_env=self.to_env,
        )
        first = first_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
        return dataclasses.replace(rollout, valid=first)

    def normalize(self, observations: np.ndarray) -> np.ndarray:
        """``observations`` as the policy sees them: normalised with the run's statistics (frozen during an
        update's collection and its gradient step), or as they are."""
        normalizer = self.state.observation_normalizer
        return observations if normalizer is None else normalizer.normalize(observations)

    def fold_observations(self, rollout: Rollout) -> None:
        """Merge every worker's kept observations into the run's statistics (``normalize_observations``)."""
        normalizer = self.state.observation_normalizer
        if normalizer is None:
            return
        x = rollout.observations[rollout.valid].reshape(-1, math.prod(normalizer.shape)).astype(np.float64)
        mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        rows = self.collective.all_gather(np.concatenate([[len(x)], mean, ((x - mean) ** 2).sum(axis=0)]))
        size, shape = x.shape[1], normalizer.shape
        for row in rows[rows[:, 0] > 0]:
            normalizer.stats.merge(row[0], row[1 : 1 + size].reshape(shape), row[1 + size :].reshape(shape))

    def make_batch(self, rollout: Rollout, update: int) -> tuple[Batch, np.ndarray]:
        """The steps of the complete episodes, time-major, with their (normalised) returns, and every
        worker's count of them ``[W]``.

        Raises:
          ValueError: for non-finite observations or actions out of range, or no complete episode in
            any worker's rollout.
        """
        model = self.model
        _check_observations(rollout.observations, update)
        mask = complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
        keep = np.flatnonzero(mask.reshape(-1))
        observations = self.normalize(rollout.observations.reshape((-1,) + model.observation_shape)[keep])
        observations = observations.astype(np.float32)
        returns = self.episode_returns(rollout, observations, mask)
        returns, kept_steps = self.finish_returns(returns, mask, update)
        actions = rollout.actions.reshape((-1, *self.distribution.action_shape))[keep]
        if (
            isinstance(self.distribution, Categorical)
            and actions.size
            and (actions.min() < 0 or actions.max() >= self.num_actions)
        ):
            raise ValueError(
                f"`actions` must be in [0, {self.num_actions}) after the space's start. Received: actions in "
                f"{actions.min()}..{actions.max()}"
            )
        masks = None if rollout.masks is None else rollout.masks.reshape(-1, self.num_actions)[keep]
        batch = Batch(
            observations,
            actions.astype(np.float32 if isinstance(self.distribution, DiagGaussian) else np.int32),
            returns.reshape(-1)[keep].astype(np.float32),
            masks,
        )
        return batch, kept_steps

    def episode_returns(self, rollout: Rollout, observations: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``[T, N]`` returns of the kept steps (``mask``; ``observations`` theirs, as the policy sees them):
        discounted returns, bootstrapped where truncated; with ``gae_lambda < 1`` the lambda-returns
        ``A + V(s)`` (:func:`~kerasce.rl.returns.gae_advantages`). Values are in the returns' units:
        ``V`` times the running return scale the value network learns in (``normalize_returns``)."""
        model = self.model
        scale = self.state.return_scale.scale if model.baseline and model.normalize_returns else 1.0
        bootstrap = self.bootstrap_values(rollout, scale)
        args = (rollout.terminated, rollout.truncated, model.gamma)
        if model.gae_lambda == 1.0:  # Monte-Carlo; the update takes G - V(s)
            return discounted_returns(rollout.rewards, *args, rollout.valid, bootstrap=bootstrap)
        values = np.zeros(rollout.rewards.shape)  # gae_lambda < 1 comes with a baseline (the model checks)
        if len(observations):
            values.reshape(-1)[np.flatnonzero(mask.reshape(-1))] = self.state_values(observations) * scale
        advantages = gae_advantages(
            rollout.rewards, values, *args, model.gae_lambda, rollout.valid, bootstrap=bootstrap
        )
        return advantages + values

    def bootstrap_values(self, rollout: Rollout, scale: float) -> np.ndarray | None:
        """``[T, N]`` ``scale * V(s')`` for the time-limit-truncated steps (``s'`` the state they reached),
        for :func:`~kerasce.rl.returns.discounted_returns`; None without a baseline or truncations."""
        truncated = rollout.truncated & ~rollout.terminated & rollout.valid
        value_network = self.model.value_network  # set exactly when model.baseline
        if value_network is None or rollout.last_observations is None or not truncated.any():
            return None
        # With next-step autoreset the observation after step t is row t + 1's (the reset step's row).
        following = np.concatenate([rollout.observations[1:], rollout.last_observations[None]], axis=0)
        t, n = np.nonzero(truncated)
        bootstrap = np.zeros(rollout.rewards.shape)
        bootstrap[t, n] = self.state_values(self.normalize(following[t, n])) * scale
        return bootstrap

    def finish_returns(self, returns: np.ndarray, mask: np.ndarray, update: int) -> tuple[np.ndarray, np.ndarray]:
        """``returns [T, N]`` scaled (with ``normalize_returns``) over every worker's kept steps (``mask``):
        standardised, or, with a baseline, divided by the running std of all returns so far
        (``state.return_scale``); and every worker's number of kept steps ``[W]``.

        Raises:
          ValueError: no complete episode in any worker's rollout.
        """
        rows = self.collective.all_gather(moments(returns[mask]))
        kept_steps = rows[:, 0].astype(np.int64)
        if kept_steps.sum() == 0:
            raise ValueError(
                f"A rollout must hold a complete episode. Received: none within max_rollout_steps="
                f"{self.model.max_rollout_steps} vector steps at update {update} (raise max_rollout_steps or "
                "use an env with a time limit)."
            )
        if not self.model.normalize_returns:
            return returns, kept_steps
        if self.model.baseline:
            # The value network's target keeps its scale across updates: G / (std of all returns so far).
            for row in rows:
                self.state.return_scale.merge(*row)
            return np.where(mask, returns / self.state.return_scale.scale, 0.0), kept_steps
        mean, std = combine_moments(rows[:, 0], rows[:, 1], rows[:, 2])
        eps = np.finfo(returns.dtype).eps
        return np.where(mask, (returns - mean) / (std + eps), 0.0).astype(returns.dtype), kept_steps

    def update(self, batch: Batch, kept_steps: np.ndarray) -> dict[str, float]:
        """``model.update`` on this worker's batch; with several replicas, padded to one size per replica
        with the step weights that make the replicas' summed gradient that of the global mean."""
        collective = self.collective
        if collective.replicas > 1:
            per_replica = -(-int(kept_steps.max()) // collective.local_replicas)  # the same on every worker
            weight = collective.replicas * per_replica / int(kept_steps.sum())
            batch = batch.padded(collective.local_replicas * per_replica, weight)
        return self.model.update(batch)

    def gather_counts(self, rollout: Rollout, times: UpdateTimes) -> tuple[np.ndarray, int, UpdateTimes]:
        """``(episode returns, env steps, times)`` of this update over every worker."""
        returns, _ = completed_episodes(rollout)
        if returns.size > self.episode_capacity:
            raise ValueError(
                f"A worker's update must end at most {self.episode_capacity} episodes. Received: {returns.size}"
            )
        head = 5
        row = np.zeros(head + self.episode_capacity)
        row[:head] = (
            rollout.env_steps,
            times.collect_seconds,
            times.collect_cpu_seconds,
            times.update_seconds,
            returns.size,
        )
        row[head : head + returns.size] = returns
        rows = self.collective.all_gather(row)
        episodes = np.concatenate([r[head : head + int(r[4])] for r in rows])  # worker order
        # Workers collect in parallel: the slowest one's time is the cluster's; the chief's for the update.
        gathered = UpdateTimes(float(rows[:, 1].max()), float(rows[:, 2].sum()), float(rows[0, 3]))
        return episodes, int(rows[:, 0].sum()), gathered

    def record(self, rollout: Rollout, metrics: dict[str, float], times: UpdateTimes, batch_steps: int) -> dict:
        """Count the update's episodes and steps into the run state; return the update's logs
        (``batch_steps``: the env steps that entered the batch, every worker's)."""
        state = self.state
        episode_returns, env_steps, times = self.gather_counts(rollout, times)
        state.episode_returns.extend(float(r) for r in episode_returns)
        state.updates += 1
        state.env_steps += env_steps
        state.train_seconds += times.update_seconds
        state.collect_seconds += times.collect_seconds
        return dict(
            metrics,
            mean_return_100=state.mean_return(100),
            episode_return=float(np.mean(episode_returns)) if len(episode_returns) else math.nan,
            episodes=float(len(state.episode_returns)),
            env_steps=float(state.env_steps),
            batch_steps=float(batch_steps),
            steps_per_second=env_steps / max(times.collect_seconds, 1e-9),
            collect_cpu_seconds=times.collect_cpu_seconds,
            train_seconds=state.train_seconds,
        )

    def stop_reason(self, stop: StopConditions, elapsed: float) -> str | None:
        """Why training stops before the next update (a callback set ``stop_training``, a limit), or None.
        The chief's clock and callbacks decide, for every worker."""
        rows = self.collective.all_gather([elapsed, float(self.model.stop_training)])
        self.model.stop_training = bool(rows[0, 1])
        return "callback" if self.model.stop_training else stop.reached(self.state, float(rows[0, 0]))

    def run_update(self) -> dict[str, float]:
        """Collect, batch, update and record one update; returns its logs (before the callbacks')."""
        update_start, cpu_start = time.perf_counter(), time.process_time()
        update = self.state.updates
        rollout = self.collect(update)
        collect_seconds = time.perf_counter() - update_start
        collect_cpu_seconds = time.process_time() - cpu_start
        batch, kept_steps = self.make_batch(rollout, update)
        metrics = self.update(batch, kept_steps)
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"The loss must be finite. Received: {metrics} at update {update + 1}; training stopped (the "
                "update was skipped) and the last checkpoint, if any, is kept."
            )
        self.refresh_samplers()
        self.fold_observations(rollout)
        times = UpdateTimes(collect_seconds, collect_cpu_seconds, time.perf_counter() - update_start)
        return self.record(rollout, metrics, times, int(kept_steps.sum()))

    def run(self, stop: StopConditions) -> keras.callbacks.History:
        """Train until ``stop`` or a callback says so."""
        self.context = dataclasses.replace(self.context, budget=dataclasses.asdict(stop))
        self.begin()
        start = time.perf_counter()
        logs: dict[str, float] = {}
        while self.stop_reason(stop, time.perf_counter() - start) is None:
            epoch = self.state.updates
            self.callbacks.on_epoch_begin(epoch)
            self.callbacks.on_train_batch_begin(0)
            logs = self.run_update()
            self.state.training_log.append(dict(logs, update=float(self.state.updates)))
            self.callbacks.on_train_batch_end(0, {m.name: logs[m.name] for m in self.model.metrics})
            self.callbacks.on_epoch_end(epoch, logs)
            logs = self.state.training_log[-1]
            if self.verbose:
                _print_update(logs)
        self.callbacks.on_train_end(logs)
        return self.model.history


def check_model_spaces(model: ReinforceModel, env: gymnasium.vector.VectorEnv) -> None:
    """Check that ``env`` (before its observations are flattened) is one ``model`` was built for.

    Raises:
      ValueError: an unsupported space, or spaces that are not the model's (the message names the space).
    """
    check_env_spaces(env, model.observation_space, model.action_space)
    flat = flat_observation_env(env).single_observation_space
    if tuple(flat.shape or ()) != model.observation_shape:
        raise ValueError(
            f"The env's observations must have the shape the policy expects, {model.observation_shape}. "
            f"Received: observations of shape {tuple(flat.shape or ())} from the env"
        )
    action_space = env.single_action_space
    if model.action_space is None and not isinstance(action_space, gymnasium.spaces.Discrete):
        raise ValueError(
            "The env's action space must be Discrete for a model built without `action_space` (build it with "
            f"ReinforceAgent.from_env(env)). Received: {action_space} ({type(action_space).__name__})"
        )
    if isinstance(action_space, gymnasium.spaces.Discrete) and int(action_space.n) != model.num_actions:
        raise ValueError(
            f"The env must have as many actions as the policy outputs logits, {model.num_actions}. "
            f"Received: an env with {int(action_space.n)} actions"
        )


def _print_update(logs: dict[str, float]) -> None:
    evaluation = f"  eval {logs['eval_return_mean']:7.1f}" if "eval_return_mean" in logs else ""
    print(
        f"update {int(logs['update']):4d}  mean_return_100 {logs['mean_return_100']:7.1f}{evaluation}  "
        f"episodes {int(logs['episodes']):6d}  env_steps {int(logs['env_steps']):8d}  "
        f"loss {logs['loss']:+.4f}  entropy {logs['entropy']:.3f}  {logs['steps_per_second']:,.0f} steps/s",
        flush=True,
    )


def _check_observations(observations: np.ndarray, update: int) -> None:
    finite = np.isfinite(observations).reshape(observations.shape[0], observations.shape[1], -1)
    if not finite.all():
        t, n = np.argwhere(~finite.all(axis=-1))[0]
        raise ValueError(
            f"Observations must be finite. Received: NaN/inf at update {update}, rollout step {t}, env {n}: "
            f"{observations[t, n]}. Training stopped; the last checkpoint (if any) is kept."
        )
