"""``ReinforceAgent``: the REINFORCE model (``model.py``) with its run state and ``learn``.

Like Stable-Baselines3's algorithms: ``learn(env, total_timesteps=..., callbacks=[...])`` trains;
evaluation, checkpoints and stopping at a target are callbacks (:mod:`kerasce.rl.callbacks`). The model
itself imports nothing of the loop; this module joins it to the trainer (:mod:`kerasce.rl.trainer`) and
the checkpoints (:mod:`kerasce.rl.checkpoints`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import gymnasium
import keras
import numpy as np

from kerasce.rl.checkpoints import CheckpointStore, has_checkpoint
from kerasce.rl.envs import as_vector_env
from kerasce.rl.model import ReinforceModel
from kerasce.rl.normalization import ObservationNormalizer
from kerasce.rl.returns import RunningScale
from kerasce.rl.state import RunState
from kerasce.rl.trainer import StopConditions, Trainer

__all__ = ["ReinforceAgent"]


@keras.saving.register_keras_serializable(package="kerasce")
class ReinforceAgent(ReinforceModel):
    """A :class:`~kerasce.rl.model.ReinforceModel` that trains itself on a gymnasium env.

    Takes the model's arguments (see :class:`~kerasce.rl.model.ReinforceModel`). The run state
    (``run_state``, a :class:`~kerasce.rl.state.RunState`) is read through ``updates``, ``env_steps``,
    ``episode_returns``, ``training_log``, ...; checkpoints save and restore it with the weights.

    Example::

        from kerasce.rl import EvalCallback, ReinforceAgent

        agent = ReinforceAgent.from_env("CartPole-v1", seed=0)
        agent.learn("CartPole-v1", target_return=475, callbacks=[EvalCallback("CartPole-v1")])
        agent.export_policy("saved_models/reinforce_cartpole")
    """

    @property
    def run_state(self) -> RunState:
        """The run state (made on first use, seeded with ``seed``; checkpoints restore it)."""
        state = getattr(self, "_run_state", None)
        if state is None:
            normalizer = ObservationNormalizer(self.observation_shape) if self.normalize_observations else None
            state = RunState(run_seed=self.seed, observation_normalizer=normalizer)
            object.__setattr__(self, "_run_state", state)  # a record, not a tracked Keras attribute
        return state

    def observation_normalizer(self) -> ObservationNormalizer | None:
        """The run state's observation statistics (``normalize_observations``), or None."""
        return self.run_state.observation_normalizer

    @property
    def updates(self) -> int:
        return self.run_state.updates

    @property
    def env_steps(self) -> int:
        return self.run_state.env_steps

    @property
    def train_seconds(self) -> float:
        return self.run_state.train_seconds

    @property
    def collect_seconds(self) -> float:
        return self.run_state.collect_seconds

    @property
    def episode_returns(self) -> list[float]:
        return self.run_state.episode_returns

    @property
    def training_log(self) -> list[dict[str, float]]:
        return self.run_state.training_log

    @property
    def return_scale(self) -> RunningScale:
        return self.run_state.return_scale

    def mean_return(self, window: int = 100) -> float:
        """Mean undiscounted return of the last ``window`` episodes (fewer early on; NaN before any)."""
        return self.run_state.mean_return(window)

    def save_checkpoint(self, directory: str | os.PathLike) -> None:
        """Save the training state into ``directory`` (see :mod:`kerasce.rl.checkpoints`).

        Saved: every model and optimizer variable (step count, moments, loss scale) and the run state
        (counters, run seed, episode returns, training log). A crash while writing leaves the previous
        checkpoint intact.
        """
        CheckpointStore(self, self.run_state, directory).save()

    @staticmethod
    def has_checkpoint(directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a checkpoint written by :meth:`save_checkpoint` or ``learn``."""
        return has_checkpoint(directory)

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Restore weights, optimizer state and run state saved by :meth:`save_checkpoint`.

        Raises:
          ValueError: if there is no checkpoint or it was written by a differently shaped agent.
        """
        CheckpointStore(self, self.run_state, directory).restore()

    def learn(
        self,
        env: str | gymnasium.Env | gymnasium.vector.VectorEnv | Callable[[], gymnasium.Env] = "CartPole-v1",
        *,
        total_timesteps: int | None = 1_000_000,
        max_updates: int | None = None,
        max_seconds: float | None = None,
        target_return: float | None = None,
        callbacks: Iterable[keras.callbacks.Callback] | None = None,
        verbose: int = 0,
        action_mask_fn: Callable[[np.ndarray, dict], np.ndarray] | None = None,
    ) -> keras.callbacks.History:
        """Train on the first episode of each sub-env of a vector env, one update per collection round.

        Each update (:class:`kerasce.rl.trainer.Trainer`): reset every sub-env (seeded from ``(run seed,
        update)``), step them with actions sampled from the current policy until every sub-env has
        finished its first episode, keep the steps of those first episodes, compute discounted returns,
        normalise them (``normalize_returns``) and call :meth:`update` once on that batch. Because every
        update starts from seeds derived from the update index, a resumed run continues exactly as the
        uninterrupted one. Under a strategy with several replicas each worker collects its own episodes
        and the update, counts and stop decisions are global (the same loop over a collective).

        Callbacks see one update as one epoch. Those of :mod:`kerasce.rl.callbacks` run in a fixed place:
        ``EvalCallback`` first (its ``eval_*`` keys reach the others), ``CheckpointCallback`` last (it saves
        the update's complete row). Logs hold ``loss``, ``policy_loss``, ``entropy``, (``value_loss``),
        ``mean_return_100``, ``episode_return`` (this update's mean), ``episodes``, ``env_steps``,
        ``batch_steps``, ``steps_per_second`` (collection), ``collect_cpu_seconds`` and
        ``train_seconds``.

        Args:
          env: a gymnasium id, a ``gymnasium.Env`` instance (``num_envs`` copies) or a zero-argument factory
            (a vector env of ``num_envs`` is made and closed here, :func:`kerasce.rl.envs.as_vector_env`; a
            custom env goes through gymnasium's env checker first), or a vector env. Any action space of
            :mod:`kerasce.rl.spaces` the agent was built for (``from_env``).
          total_timesteps: stop after this many env steps in total (``None``: no limit).
          max_updates: stop after this many updates in total.
          max_seconds: stop after this much training wall time (this call).
          target_return: stop when the mean return of the last 100 episodes reaches it (and, with an
            ``EvalCallback`` among ``callbacks``, its greedy evaluation too).
          callbacks: Keras callbacks (``CSVLogger``, ``TensorBoard``, ...) and those of
            :mod:`kerasce.rl.callbacks` (``EvalCallback``, ``CheckpointCallback``, ``StopAtMeanReturn``).
          verbose: 1 prints one line per update.
          action_mask_fn: with ``use_action_mask``, ``(observations [N, D...], infos) -> [N, A]`` valid
            actions (default :func:`kerasce.rl.envs.info_action_mask`, i.e. ``info["action_mask"]``).

        Returns:
          The ``keras.callbacks.History`` of this call (``history.history[key]`` per update).

        Raises:
          ValueError: bad env / spaces / observations (NaN), no stopping condition, or no complete
            episode in ``max_rollout_steps``.
          FloatingPointError: a non-finite loss; training stopped, the last checkpoint is kept.
        """
        stop = StopConditions(total_timesteps, max_updates, max_seconds)
        if stop.unlimited() and target_return is None:
            raise ValueError(
                "One of `total_timesteps`, `max_updates`, `max_seconds` or `target_return` must be set (a "
                "stopping condition). Received: all None"
            )
        own_env = not isinstance(env, gymnasium.vector.VectorEnv)
        vec_env = as_vector_env(env, self.num_envs if own_env else None)
        try:
            trainer = Trainer(
                self,
                self.run_state,
                vec_env,
                callbacks=callbacks,
                verbose=verbose,
                target_return=target_return,
                action_mask_fn=action_mask_fn,
            )
            return trainer.run(stop)
        finally:
            if own_env:
                vec_env.close()
