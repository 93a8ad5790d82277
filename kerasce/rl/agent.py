"""REINFORCE as a Keras model: the policy gradient is softmax cross-entropy weighted by the return.

Shapes: ``B`` batch of steps, ``T`` time steps, ``N`` envs, ``A`` actions, ``D...`` observation shape.

``ReinforceAgent.train_step`` takes ``(observations [B, D...], actions [B], returns [B])`` and
minimises ``kerasce.losses.PolicyGradientLoss`` -- the same sparse softmax cross-entropy the image
classifiers use, with the return as the Keras sample weight. So

    agent.compile()
    agent.fit(observations, actions, sample_weight=returns)

is one REINFORCE update, and :meth:`ReinforceAgent.learn` is the loop that collects the data from a
gymnasium vector env and calls the same compiled train step once per update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from kerasce.losses import PolicyGradientLoss, softmax_entropy
from kerasce.rl.envs import check_spaces, make_vector_env
from kerasce.rl.returns import complete_episode_mask, discounted_returns, first_episode_mask, normalize
from kerasce.rl.rollout import (
    Rollout,
    collect_episodes,
    completed_episodes,
    make_policy_sampler,
    sample_actions,
)

__all__ = ["ReinforceAgent", "StopAtMeanReturn", "build_mlp"]

_CHECKPOINT_ARRAYS = "arrays.npz"
_CHECKPOINT_STATE = "state.json"


def build_mlp(
    input_shape: Sequence[int],
    outputs: int,
    hidden_units: Sequence[int] = (32, 32),
    activation: str = "tanh",
    seed: int | None = None,
    name: str = "policy",
) -> keras.Sequential:
    """A plain Dense stack ``[B, D...] -> [B, outputs]`` (flattened input, float32 output layer).

    Args:
      input_shape: observation shape ``D...``.
      outputs: size of the linear output layer (``A`` logits, or 1 for a value head).
      hidden_units: widths of the hidden layers.
      activation: activation of the hidden layers.
      seed: seeds the Glorot initialisers (layer ``i`` uses ``seed + i``) for a reproducible network.
      name: model name.
    """

    def init(i):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)

    layers: list[keras.layers.Layer] = [keras.Input(tuple(input_shape))]
    if len(input_shape) != 1:
        layers.append(keras.layers.Flatten())
    for i, units in enumerate(hidden_units):
        layers.append(keras.layers.Dense(units, activation=activation, kernel_initializer=init(i)))
    layers.append(
        keras.layers.Dense(outputs, kernel_initializer=init(len(hidden_units)), dtype="float32")
    )
    return keras.Sequential(layers, name=name)


def _replica_scale() -> float | tf.Tensor:
    """``1 / num_replicas``: what Keras ``Loss`` reductions apply under a ``tf.distribute`` strategy."""
    context = tf.distribute.get_replica_context()
    return 1.0 if context is None else 1.0 / context.num_replicas_in_sync


class StopAtMeanReturn(keras.callbacks.Callback):
    """Stop training once the running mean return (``monitor``) reaches ``target_return``.

    Checked after every update, and also when training begins, against the last row of the agent's
    ``training_log`` (restored by ``load_checkpoint``): a run resumed from a checkpoint that already
    met the target stops before doing another update.

    Args:
      target_return: e.g. 475 for CartPole-v1 (its ``reward_threshold``).
      monitor: the log key holding the running mean (``"mean_return_100"`` in ``learn``).
      min_episodes: episodes needed before stopping (``logs["episodes"]``), so that a 100-episode
        mean is over 100 episodes.

    Attributes:
      reached_at: the index of the update that reached the target, or None.
    """

    def __init__(self, target_return: float, monitor: str = "mean_return_100", min_episodes: int = 100):
        super().__init__()
        self.target_return = float(target_return)
        self.monitor = monitor
        self.min_episodes = int(min_episodes)
        self.reached_at: int | None = None

    def _reached(self, logs: dict[str, float]) -> bool:
        value = logs.get(self.monitor)
        enough = logs.get("episodes", math.inf) >= self.min_episodes
        return value is not None and enough and value >= self.target_return

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        history = getattr(self.model, "training_log", None)
        if history and self._reached(history[-1]):
            self.reached_at = int(history[-1].get("update", len(history))) - 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._reached(logs or {}):
            self.reached_at = epoch
            self.model.stop_training = True


@keras.saving.register_keras_serializable(package="kerasce")
class ReinforceAgent(keras.Model):
    """REINFORCE (Williams, 1992) with optional learned baseline and entropy bonus.

    ``call(observations)`` returns the policy logits ``[B, A]``. The loss of one update is::

        loss = policy_loss - ent_coef * entropy + vf_coef * value_loss
        policy_loss = mean_b[ A_b * CE(a_b, logits_b) ]     # PolicyGradientLoss, A = G (or G - V(s))
        entropy     = mean_b[ H(softmax(logits_b)) ]          # softmax_entropy
        value_loss  = mean_b[ (G_b - V(s_b))^2 ]              # only with baseline=True

    Every term is reduced with Keras ``Loss`` semantics (``1 / num_replicas`` under a strategy), so a
    ``MirroredStrategy`` update equals a single-device update of the same global batch.

    Args:
      observation_shape: shape ``D...`` of one observation (a ``Box`` space).
      num_actions: number ``A`` of discrete actions.
      policy: optional Keras model ``[B, D...] -> [B, A]`` logits; default ``build_mlp`` with
        ``hidden_units`` and ``activation``.
      hidden_units: hidden widths of the default policy (and of the value network).
      activation: hidden activation of the default networks.
      baseline: learn a state-value network ``V(s)`` and use ``G - V(s)`` as the policy weight.
      gamma: discount factor.
      learning_rate: of the default Adam optimizer (``compile()`` without an optimizer).
      ent_coef: weight of the entropy bonus.
      vf_coef: weight of the value loss (with ``baseline``).
      normalize_returns: standardise the returns of each update's batch (collection side, in ``learn``).
      max_grad_norm: clip the global gradient norm, through the optimizer's ``global_clipnorm``.
      num_envs: sub-envs of the vector env ``learn`` builds from an env id.
      max_rollout_steps: most vector steps per update; an update without a complete episode fails.
      fast_sampling: sample actions from a NumPy copy of the policy when it is a plain Dense stack.
      seed: seeds the default networks, the env resets and the action sampling (``None``: random).
      **kwargs: passed to ``keras.Model`` (``name``, ``dtype``).

    Raises:
      ValueError: if the policy's input or output shape does not match the spaces, or a knob is
        out of range.
    """

    def __init__(
        self,
        observation_shape: Sequence[int],
        num_actions: int,
        policy: keras.Model | None = None,
        hidden_units: Sequence[int] = (32, 32),
        activation: str = "tanh",
        baseline: bool = False,
        gamma: float = 0.99,
        learning_rate: float = 1e-2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        normalize_returns: bool = True,
        max_grad_norm: float | None = None,
        num_envs: int = 32,
        max_rollout_steps: int = 2000,
        fast_sampling: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.num_actions = int(num_actions)
        if self.num_actions < 1:
            raise ValueError(f"Expected `num_actions` >= 1, got {num_actions}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Expected `gamma` in [0, 1], got {gamma}.")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"Expected `max_grad_norm` > 0 or None, got {max_grad_norm}.")
        if int(num_envs) < 1 or int(max_rollout_steps) < 1:
            raise ValueError(
                f"Expected `num_envs` >= 1 and `max_rollout_steps` >= 1, got {num_envs} and "
                f"{max_rollout_steps}."
            )
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.baseline = bool(baseline)
        self.gamma = float(gamma)
        self.learning_rate = float(learning_rate)
        self.ent_coef = float(ent_coef)
        self.vf_coef = float(vf_coef)
        self.normalize_returns = bool(normalize_returns)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.num_envs = int(num_envs)
        self.max_rollout_steps = int(max_rollout_steps)
        self.fast_sampling = bool(fast_sampling)
        self.seed = None if seed is None else int(seed)
        self._custom_policy = policy is not None

        if policy is None:
            policy = build_mlp(self.observation_shape, self.num_actions, self.hidden_units,
                               activation, seed=self.seed, name="policy")
        self.policy = policy
        self._check_policy()
        self.value_network = None
        if self.baseline:
            value_seed = None if self.seed is None else self.seed + 1000
            self.value_network = build_mlp(self.observation_shape, 1, self.hidden_units,
                                           activation, seed=value_seed, name="value")

        self.policy_gradient_loss = PolicyGradientLoss()
        self.value_mse = keras.losses.MeanSquaredError(name="value_mse")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.policy_loss_tracker = keras.metrics.Mean(name="policy_loss")
        self.entropy_tracker = keras.metrics.Mean(name="entropy")
        self.value_loss_tracker = keras.metrics.Mean(name="value_loss") if self.baseline else None

        # Training state, saved by save_checkpoint: counters and the per-episode / per-update history.
        self.updates = 0
        self.env_steps = 0
        self.train_seconds = 0.0
        self.collect_seconds = 0.0
        self.episode_returns: list[float] = []
        self.training_log: list[dict[str, float]] = []
        self._run_seed: int | None = self.seed
        self.built = True  # the networks above are built; call() needs nothing more

    # ---------------------------------------------------------------------------------------------
    # Keras model API
    # ---------------------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: str | gymnasium.vector.VectorEnv, **kwargs: Any) -> "ReinforceAgent":
        """An agent sized for ``env`` (an id or a vector env); ``kwargs`` are constructor knobs.

        Raises:
          ValueError: for an unknown id or unsupported spaces.
        """
        if isinstance(env, str):
            probe = make_vector_env(env, 1)
            try:
                shape, actions = check_spaces(probe)
            finally:
                probe.close()
        else:
            shape, actions = check_spaces(env)
        return cls(shape, actions, **kwargs)

    def _check_policy(self) -> None:
        probe = np.zeros((2,) + self.observation_shape, np.float32)
        try:
            logits = self.policy(probe)
        except Exception as error:  # any failure here means the policy does not take these inputs
            raise ValueError(
                f"The policy must accept observations of shape [B, {', '.join(map(str, self.observation_shape))}]; "
                f"calling it failed: {error}"
            ) from None
        if tuple(logits.shape) != (2, self.num_actions):
            raise ValueError(
                f"The policy must output [B, {self.num_actions}] logits (one per action), got shape "
                f"{tuple(logits.shape)[1:]} per batch of observations."
            )

    def call(self, observations: tf.Tensor | np.ndarray, training: bool | None = None) -> tf.Tensor:
        """Policy logits ``[B, A]`` for observations ``[B, D...]``."""
        return self.policy(observations, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        trackers = [self.loss_tracker, self.policy_loss_tracker, self.entropy_tracker]
        return trackers + ([self.value_loss_tracker] if self.baseline else [])

    def compile(
        self,
        optimizer: keras.optimizers.Optimizer | str | None = None,
        jit_compile: bool | str = False,
        **kwargs: Any,
    ) -> None:
        """Compile with Adam(``learning_rate``, ``global_clipnorm=max_grad_norm``) unless given one.

        A given optimizer without clipping of its own gets ``global_clipnorm = max_grad_norm``.
        ``loss`` and ``metrics`` are not accepted: the agent's loss is its own.

        ``jit_compile`` defaults to False, not Keras's ``"auto"``: ``"auto"`` turns XLA on whenever a
        GPU is present, and XLA compiles out the run-time checks of ``PolicyGradientLoss`` (actions
        must be integer ids in ``[0, A)``): XLA's gather then clamps a bad id instead of reporting it.
        ``True`` or ``"auto"`` are passed through to ``keras.Model.compile``.

        Raises:
          ValueError: if ``loss`` or ``metrics`` is passed.
        """
        for key in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"ReinforceAgent computes its own loss and metrics; expected no `{key}`, got {kwargs[key]!r}."
                )
            kwargs.pop(key, None)
        if optimizer is None:
            optimizer = keras.optimizers.Adam(self.learning_rate, global_clipnorm=self.max_grad_norm)
        else:
            optimizer = keras.optimizers.get(optimizer)
            unclipped = all(getattr(optimizer, k, None) is None
                            for k in ("clipnorm", "global_clipnorm", "clipvalue"))
            if self.max_grad_norm is not None and unclipped:
                optimizer.global_clipnorm = self.max_grad_norm
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def train_step(self, data: tuple[Any, ...]) -> dict[str, tf.Tensor]:
        """One REINFORCE update on ``data = (observations [B, D...], actions [B], returns [B])``.

        This is the ``(x, y, sample_weight)`` triple of ``fit(observations, actions,
        sample_weight=returns)``. The returns are used as given (``learn`` normalises them).

        Returns:
          ``{"loss", "policy_loss", "entropy"[, "value_loss"]}`` metric results.
        """
        observations, actions, returns = keras.utils.unpack_x_y_sample_weight(data)
        if actions is None or returns is None:
            raise ValueError(
                "ReinforceAgent.train_step expects (observations, actions, returns), e.g. "
                "fit(observations, actions, sample_weight=returns); got None for "
                f"{'actions' if actions is None else 'returns'}."
            )
        returns = tf.stop_gradient(tf.cast(returns, tf.float32))
        scale = _replica_scale()
        with tf.GradientTape() as tape:
            logits = tf.cast(self(observations, training=True), tf.float32)
            advantages = returns
            value_loss = 0.0
            if self.baseline:
                values = tf.cast(self.value_network(observations, training=True), tf.float32)
                advantages = returns - tf.stop_gradient(values[:, 0])
                value_loss = self.value_mse(returns[:, None], values)
            # The REINFORCE term: the project's cross-entropy, weighted by the return (advantage).
            policy_loss = self.policy_gradient_loss(actions, logits, advantages)
            # A mean per replica, scaled like a Keras Loss so that replicas sum to the global mean.
            entropy = tf.reduce_mean(softmax_entropy(logits)) * scale
            loss = policy_loss - self.ent_coef * entropy + self.vf_coef * value_loss
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))

        # Trackers average over replicas: undo the 1/num_replicas so they show global values.
        self.loss_tracker.update_state(loss / scale)
        self.policy_loss_tracker.update_state(policy_loss / scale)
        self.entropy_tracker.update_state(entropy / scale)
        if self.baseline:
            self.value_loss_tracker.update_state(value_loss / scale)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            observation_shape=list(self.observation_shape),
            num_actions=self.num_actions,
            policy=keras.saving.serialize_keras_object(self.policy) if self._custom_policy else None,
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            baseline=self.baseline,
            gamma=self.gamma,
            learning_rate=self.learning_rate,
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            normalize_returns=self.normalize_returns,
            max_grad_norm=self.max_grad_norm,
            num_envs=self.num_envs,
            max_rollout_steps=self.max_rollout_steps,
            fast_sampling=self.fast_sampling,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ReinforceAgent":
        config = dict(config)
        if config.get("policy") is not None:
            config["policy"] = keras.saving.deserialize_keras_object(config["policy"])
        return cls(**config)

    # ---------------------------------------------------------------------------------------------
    # Acting
    # ---------------------------------------------------------------------------------------------

    def action_probabilities(self, observations: np.ndarray) -> np.ndarray:
        """``softmax(policy(observations))`` as a NumPy ``[B, A]`` array."""
        logits = tf.cast(self.policy(np.asarray(observations, np.float32), training=False), tf.float32)
        return tf.nn.softmax(logits).numpy()

    def greedy_action(self, observations: np.ndarray) -> np.ndarray:
        """``argmax`` action ``[B]`` of the policy."""
        return np.argmax(self.action_probabilities(observations), axis=-1)

    def export_policy(
        self, path: str | os.PathLike, write_extras: Callable[[Path], None] | None = None
    ) -> Path:
        """Write a SavedModel whose ``serving_default`` maps float32 observations ``[B, D...]`` to
        ``action`` (``[B]`` int64, greedy) and ``probabilities`` (``[B, A]`` float32), atomically,
        through ``kerasce.export``. It loads with plain TensorFlow (``tf.saved_model.load``).
        ``action`` is the index ``0..A-1``; add ``env.action_space.start`` for a ``Discrete`` space
        that does not start at 0.

        Args:
          path: the export directory, created or replaced as a whole.
          write_extras: called with the temporary export directory to add files (metrics, plots)
            that appear together with the SavedModel or not at all.

        Returns:
          The export directory.
        """
        from kerasce.export import export_saved_model

        policy = self.policy

        def serve(observations):
            probabilities = tf.nn.softmax(tf.cast(policy(observations, training=False), tf.float32))
            return {"action": tf.argmax(probabilities, axis=-1), "probabilities": probabilities}

        spec = tf.TensorSpec((None,) + self.observation_shape, tf.float32, name="observations")
        return export_saved_model(path, policy, serve, [spec], write_extras=write_extras)

    # ---------------------------------------------------------------------------------------------
    # Checkpoints: weights + optimizer state + counters + episode history, written atomically
    # ---------------------------------------------------------------------------------------------

    def _ensure_optimizer(self) -> None:
        if not self.compiled:
            with self.distribute_strategy.scope():
                self.compile()
        if not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def save_checkpoint(self, directory: str | os.PathLike) -> None:
        """Write the training state into ``directory``, replacing it atomically.

        Saved: every model weight, every optimizer variable (step count, moments, loss scale),
        ``updates``, ``env_steps``, ``train_seconds``, the run seed, ``episode_returns`` and
        ``training_log``. A crash while writing leaves the previous checkpoint intact.
        """
        from kerasce.export import atomic_directory

        self._ensure_optimizer()
        arrays = {f"w{i}": v.numpy() for i, v in enumerate(self.weights)}
        arrays.update({f"o{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        state = {
            "updates": self.updates,
            "env_steps": self.env_steps,
            "train_seconds": self.train_seconds,
            "collect_seconds": self.collect_seconds,
            "run_seed": self._run_seed,
            "episode_returns": self.episode_returns,
            "training_log": self.training_log,
            "num_weights": len(self.weights),
            "num_optimizer_variables": len(self.optimizer.variables),
        }
        with atomic_directory(directory) as tmp:
            np.savez(os.path.join(tmp, _CHECKPOINT_ARRAYS), **arrays)
            with open(os.path.join(tmp, _CHECKPOINT_STATE), "w") as f:
                json.dump(state, f)

    @staticmethod
    def has_checkpoint(directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a checkpoint written by :meth:`save_checkpoint`."""
        return os.path.isfile(os.path.join(directory, _CHECKPOINT_STATE))

    def load_checkpoint(self, directory: str | os.PathLike) -> None:
        """Restore weights, optimizer state, counters and history saved by :meth:`save_checkpoint`.

        Raises:
          ValueError: if there is no checkpoint or it was written by a differently shaped agent.
        """
        if not self.has_checkpoint(directory):
            raise ValueError(f"Expected a checkpoint (from save_checkpoint) in {directory!r}, found none.")
        self._ensure_optimizer()
        with open(os.path.join(directory, _CHECKPOINT_STATE)) as f:
            state = json.load(f)
        expected = (len(self.weights), len(self.optimizer.variables))
        found = (state["num_weights"], state["num_optimizer_variables"])
        if expected != found:
            raise ValueError(
                f"Checkpoint in {directory!r} has {found[0]} weights and {found[1]} optimizer variables; "
                f"this agent has {expected[0]} and {expected[1]}."
            )
        with np.load(os.path.join(directory, _CHECKPOINT_ARRAYS)) as arrays:
            for i, v in enumerate(self.weights):
                if tuple(v.shape) != arrays[f"w{i}"].shape:
                    raise ValueError(
                        f"Checkpoint weight {i} ({v.path}) has shape {arrays[f'w{i}'].shape}, expected {tuple(v.shape)}."
                    )
                v.assign(arrays[f"w{i}"])
            for i, v in enumerate(self.optimizer.variables):
                v.assign(arrays[f"o{i}"])
        self.updates = int(state["updates"])
        self.env_steps = int(state["env_steps"])
        self.train_seconds = float(state["train_seconds"])
        self.collect_seconds = float(state["collect_seconds"])
        self._run_seed = state["run_seed"]
        self.episode_returns = [float(r) for r in state["episode_returns"]]
        self.training_log = list(state["training_log"])

    # ---------------------------------------------------------------------------------------------
    # The training loop
    # ---------------------------------------------------------------------------------------------

    def mean_return(self, window: int = 100) -> float:
        """Mean undiscounted return of the last ``window`` episodes (fewer early on; NaN before any)."""
        recent = self.episode_returns[-window:]
        return float(np.mean(recent)) if recent else math.nan

    def _train_on_batch(self, observations, actions, returns) -> dict[str, float]:
        self._ensure_optimizer()  # built in the strategy's scope before the step is traced
        strategy = self.distribute_strategy
        replicas = strategy.num_replicas_in_sync
        data = (tf.constant(observations), tf.constant(actions), tf.constant(returns))
        if replicas > 1:
            shard = len(actions) // replicas  # the caller trims the batch to a multiple of replicas

            def split(context):
                i = context.replica_id_in_sync_group
                return tuple(x[i * shard:(i + 1) * shard] for x in data)

            data = strategy.experimental_distribute_values_from_function(split)
        self.make_train_function()
        self.reset_metrics()
        logs = self.train_function(iter([data]))
        return {k: float(v) for k, v in logs.items()}

    def learn(
        self,
        env: str | gymnasium.vector.VectorEnv = "CartPole-v1",
        *,
        total_timesteps: int | None = 1_000_000,
        max_updates: int | None = None,
        max_seconds: float | None = None,
        target_return: float | None = None,
        callbacks: Iterable[keras.callbacks.Callback] | None = None,
        verbose: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
    ) -> keras.callbacks.History:
        """Train on the first episode of each sub-env of a vector env, one update per collection round.

        Each update: reset every sub-env (seeded from ``(seed, update)``), step them with actions
        sampled from the current policy until every sub-env has finished its first episode, keep the
        steps of those first episodes (one per sub-env), compute discounted returns, normalise them
        (``normalize_returns``) and run the compiled ``train_step`` once on that batch. Because every
        update starts from seeds derived from the update index, a resumed run continues exactly as
        the uninterrupted one.

        Only the first episode of each sub-env is used (and logged in ``episode_returns``): a fast
        sub-env's 2nd, 3rd, ... episodes finish before the slowest sub-env's first one only when they
        are short, so keeping them would bias the gradient and ``mean_return_100`` toward short
        episodes. First episodes all start at the update's reset and are all waited for (unless
        ``max_rollout_steps`` cuts one off), so they are an unbiased sample of the current policy's
        episodes. The later steps are still collected (a vector env steps all sub-envs at once) and
        counted in ``env_steps``.

        Callbacks see one update as one epoch; logs hold ``loss``, ``policy_loss``, ``entropy``,
        (``value_loss``), ``mean_return_100``, ``episode_return`` (this update's mean), ``episodes``,
        ``env_steps``, ``steps_per_second`` (collection) and ``train_seconds``.

        Args:
          env: a gymnasium id (a vector env of ``num_envs`` is made and closed here) or a vector env.
          total_timesteps: stop after this many env steps in total (``None``: no limit).
          max_updates: stop after this many updates in total.
          max_seconds: stop after this much training wall time (this call).
          target_return: stop when the mean return of the last 100 episodes reaches it.
          callbacks: Keras callbacks (``CSVLogger``, ``TensorBoard``, ``EarlyStopping``, ...).
          verbose: 1 prints one line per update.
          checkpoint_dir: save :meth:`save_checkpoint` there every ``checkpoint_every`` updates and
            at the end.
          checkpoint_every: updates between checkpoints.
          resume: load the checkpoint in ``checkpoint_dir`` first, if there is one.

        Returns:
          The ``keras.callbacks.History`` of this call (``history.history[key]`` per update).

        Raises:
          ValueError: bad env / spaces / observations (NaN), or no complete episode in
            ``max_rollout_steps``.
          FloatingPointError: a non-finite loss; training stops, the last checkpoint is kept.
        """
        if all(x is None for x in (total_timesteps, max_updates, max_seconds, target_return)):
            raise ValueError(
                "Expected a stopping condition: total_timesteps, max_updates, max_seconds or target_return."
            )
        own_env = isinstance(env, str)
        vec_env = make_vector_env(env, self.num_envs) if own_env else env
        try:
            return self._learn(vec_env, total_timesteps, max_updates, max_seconds, target_return,
                               callbacks, verbose, checkpoint_dir, checkpoint_every, resume)
        finally:
            if own_env:
                vec_env.close()

    def _learn(self, env, total_timesteps, max_updates, max_seconds, target_return, callbacks,
               verbose, checkpoint_dir, checkpoint_every, resume):
        _, num_actions = check_spaces(env, self.observation_shape, self.num_actions)
        action_offset = int(env.single_action_space.start)
        if checkpoint_dir is not None and resume and self.has_checkpoint(checkpoint_dir):
            self.load_checkpoint(checkpoint_dir)
        self._ensure_optimizer()
        if self._run_seed is None:
            self._run_seed = int(np.random.SeedSequence().generate_state(1)[0])
        replicas = self.distribute_strategy.num_replicas_in_sync
        sampler = make_policy_sampler(self.policy, fast=self.fast_sampling)

        callbacks = list(callbacks or [])
        if target_return is not None:
            callbacks.append(StopAtMeanReturn(target_return))
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=False, model=self, verbose=verbose,
            epochs=max_updates or 0, steps=1,
        )
        self.stop_training = False
        callback_list.on_train_begin()
        start = time.perf_counter()
        logs: dict[str, float] = {}
        while not self.stop_training:
            if max_updates is not None and self.updates >= max_updates:
                break
            if total_timesteps is not None and self.env_steps >= total_timesteps:
                break
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                break
            update_start = time.perf_counter()
            update = self.updates
            callback_list.on_epoch_begin(update)
            callback_list.on_train_batch_begin(0)

            seeds = np.random.SeedSequence([self._run_seed, update]).generate_state(2)
            rng = np.random.default_rng(seeds[1])
            observations, _ = env.reset(seed=int(seeds[0]))

            def act(obs):
                return sample_actions(sampler.logits(obs), rng) + action_offset

            rollout, _ = collect_episodes(env, act, observations, self.max_rollout_steps)
            # Each sub-env's first episode only (see `learn`): later ones become invalid steps, like
            # the autoreset steps, so they get no return, no batch row and no logged episode.
            first = first_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
            rollout = dataclasses.replace(rollout, valid=first)
            collect_seconds = time.perf_counter() - update_start
            self._check_observations(rollout.observations, update)
            batch = self._make_batch(rollout, action_offset, num_actions, replicas, update)
            metrics = self._train_on_batch(*batch)
            if not all(math.isfinite(v) for v in metrics.values()):
                raise FloatingPointError(
                    f"Non-finite loss at update {update} ({metrics}); training stopped. "
                    + (f"The last good checkpoint is in {checkpoint_dir!r}."
                       if checkpoint_dir is not None else "No checkpoint_dir was set.")
                )
            sampler.refresh()

            episode_returns, _ = completed_episodes(rollout)
            self.episode_returns.extend(float(r) for r in episode_returns)
            self.updates += 1
            self.env_steps += rollout.env_steps
            self.train_seconds += time.perf_counter() - update_start
            self.collect_seconds += collect_seconds
            logs = dict(
                metrics,
                mean_return_100=self.mean_return(100),
                episode_return=float(np.mean(episode_returns)),
                episodes=float(len(self.episode_returns)),
                env_steps=float(self.env_steps),
                steps_per_second=rollout.env_steps / max(collect_seconds, 1e-9),
                train_seconds=self.train_seconds,
            )
            self.training_log.append(dict(logs, update=float(self.updates)))
            callback_list.on_train_batch_end(0, metrics)
            callback_list.on_epoch_end(update, logs)
            if verbose:
                print(
                    f"update {self.updates:4d}  mean_return_100 {logs['mean_return_100']:7.1f}  "
                    f"episodes {len(self.episode_returns):6d}  env_steps {self.env_steps:8d}  "
                    f"loss {logs['loss']:+.4f}  entropy {logs['entropy']:.3f}  "
                    f"{logs['steps_per_second']:,.0f} steps/s",
                    flush=True,
                )
            if checkpoint_dir is not None and self.updates % max(checkpoint_every, 1) == 0:
                self.save_checkpoint(checkpoint_dir)
        if checkpoint_dir is not None and logs:
            self.save_checkpoint(checkpoint_dir)
        callback_list.on_train_end(logs)
        return self.history

    @staticmethod
    def _check_observations(observations: np.ndarray, update: int) -> None:
        finite = np.isfinite(observations).reshape(observations.shape[0], observations.shape[1], -1)
        if not finite.all():
            t, n = np.argwhere(~finite.all(axis=-1))[0]
            raise ValueError(
                f"Expected finite observations, got NaN/inf at update {update}, rollout step {t}, env {n}: "
                f"{observations[t, n]}. Training stopped; the last checkpoint (if any) is kept."
            )

    def _make_batch(
        self, rollout: Rollout, action_offset: int, num_actions: int, replicas: int, update: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(observations [B, D...] float32, actions [B] int32 in [0, A), returns [B] float32)``: the
        steps of the complete episodes, time-major, trimmed to a multiple of ``replicas``."""
        mask = complete_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
        if not mask.any():
            raise ValueError(
                f"No episode ended within max_rollout_steps={self.max_rollout_steps} vector steps at "
                f"update {update}; expected at least one complete episode per update (raise "
                "max_rollout_steps or use an env with a time limit)."
            )
        returns = discounted_returns(rollout.rewards, rollout.terminated, rollout.truncated,
                                     self.gamma, rollout.valid)
        if self.normalize_returns:
            returns = normalize(returns, mask)
        keep = np.flatnonzero(mask.reshape(-1))
        keep = keep[: len(keep) - len(keep) % replicas]  # equal shards under a strategy
        observations = rollout.observations.reshape((-1,) + self.observation_shape)[keep]
        actions = rollout.actions.reshape(-1)[keep] - action_offset
        if actions.min() < 0 or actions.max() >= num_actions:
            raise ValueError(f"Expected actions in [0, {num_actions}), got {actions.min()}..{actions.max()}.")
        return (observations.astype(np.float32), actions.astype(np.int32),
                returns.reshape(-1)[keep].astype(np.float32))
