"""Observation normalisation: running per-feature mean and variance, and a Keras layer that holds them frozen.

Shapes: ``N`` observations in a batch, ``D...`` the observation shape.

As Stable-Baselines3's ``VecNormalize``: the policy sees ``clip((x - μ) / sqrt(σ² + ε), -c, c)`` with ``μ``,
``σ²`` the mean and variance of every observation collected so far. The statistics go into checkpoints as
plain arrays (`ObservationNormalizer.get_state`) and into the export as a layer (`NormalizeObservations`),
so the exported model takes raw observations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasce.rl.returns import RunningScale

__all__ = ["NormalizeObservations", "ObservationNormalizer", "with_normalization"]


class ObservationNormalizer:
    """Running mean / variance of observations ``[D...]``, updated batch by batch, and the clipped normalisation.

    The per-feature statistics are merged with :class:`kerasce.rl.returns.RunningScale`'s update (Chan et
    al.'s parallel variance formula), elementwise: a batch at a time equals the whole data at once.

    Args:
      shape: ``D...``, the observation shape.
      clip: ``c > 0``: normalised values are clipped to ``[-c, c]`` (10, as ``VecNormalize``).
      epsilon: ``ε`` added to the variance (1e-8).

    Raises:
      ValueError: for ``clip <= 0`` or ``epsilon < 0``.
    """

    def __init__(self, shape: Sequence[int], clip: float = 10.0, epsilon: float = 1e-8):
        if not clip > 0:
            raise ValueError(f"`clip` must be > 0. Received: clip={clip!r}")
        if not epsilon >= 0:
            raise ValueError(f"`epsilon` must be >= 0. Received: epsilon={epsilon!r}")
        self.shape, self.clip, self.epsilon = tuple(int(d) for d in shape), float(clip), float(epsilon)
        self.stats = RunningScale()
        self.stats.mean = np.zeros(self.shape)  # type: ignore[assignment]  # elementwise: one per feature
        self.stats.m2 = np.zeros(self.shape)  # type: ignore[assignment]

    @property
    def count(self) -> float:
        return self.stats.count

    @property
    def mean(self) -> np.ndarray:
        """``[D...]`` float64 mean (0 before any data)."""
        return np.asarray(self.stats.mean)

    @property
    def var(self) -> np.ndarray:
        """``[D...]`` float64 population variance (1 before any data)."""
        if self.stats.count == 0:
            return np.ones(self.shape)
        return np.asarray(self.stats.m2) / self.stats.count

    def update(self, observations: np.ndarray) -> None:
        """Fold a batch ``[N, D...]`` into the statistics.

        Raises:
          ValueError: if the batch's observation shape is not ``D...``.
        """
        x = np.asarray(observations, np.float64)
        if x.shape[1:] != self.shape:
            raise ValueError(f"`observations` must have shape [N, {self.shape}]. Received: shape={x.shape}")
        if x.shape[0] == 0:
            return
        mean = x.mean(axis=0)
        self.stats.merge(x.shape[0], mean, ((x - mean) ** 2).sum(axis=0))

    def normalize(self, observations: np.ndarray) -> np.ndarray:
        """``clip((x - μ) / sqrt(σ² + ε), -c, c)`` as float32, ``[N, D...]``."""
        z = (np.asarray(observations, np.float64) - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        """Plain values for a checkpoint: ``count`` (float), ``mean`` and ``m2`` (float64 arrays), ``clip``,
        ``epsilon``."""
        return {"count": self.count, "mean": self.mean.copy(), "m2": np.array(self.stats.m2, np.float64),
                "clip": self.clip, "epsilon": self.epsilon}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ObservationNormalizer:
        """The normalizer `get_state` describes."""
        normalizer = cls(np.shape(state["mean"]), state["clip"], state["epsilon"])
        mean, m2 = np.asarray(state["mean"], np.float64), np.asarray(state["m2"], np.float64)
        normalizer.stats.merge(state["count"], mean, m2)  # type: ignore[arg-type]  # elementwise
        return normalizer

    def layer(self, name: str = "normalize_observations") -> NormalizeObservations:
        """A `NormalizeObservations` layer holding the current statistics, frozen."""
        return NormalizeObservations(self.mean.tolist(), self.var.tolist(), self.clip, self.epsilon, name=name)


@keras.saving.register_keras_serializable(package="kerasce")
class NormalizeObservations(keras.layers.Layer):
    """``clip((x - μ) / sqrt(σ² + ε), -c, c)`` with frozen ``μ``, ``σ²`` (non-trainable weights, saved with the
    model and in a SavedModel); float32 output.

    Args:
      mean: ``[D...]`` means (nested lists or an array).
      var: ``[D...]`` variances.
      clip: ``c``.
      epsilon: ``ε``.
    """

    def __init__(self, mean: Any, var: Any, clip: float = 10.0, epsilon: float = 1e-8, **kwargs: Any):
        super().__init__(**kwargs)
        self.mean_value = np.asarray(mean, np.float32)
        self.var_value = np.asarray(var, np.float32)
        self.clip, self.epsilon = float(clip), float(epsilon)
        shape = self.mean_value.shape
        self.mean = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="mean")
        self.var = self.add_weight(shape=shape, initializer="ones", trainable=False, name="var")
        self.mean.assign(self.mean_value)
        self.var.assign(self.var_value)

    def call(self, observations: Any) -> Any:
        x = keras.ops.cast(observations, "float32")
        z = (x - self.mean) / keras.ops.sqrt(self.var + self.epsilon)
        return keras.ops.clip(z, -self.clip, self.clip)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean_value.tolist(), "var": self.var_value.tolist(),
                "clip": self.clip, "epsilon": self.epsilon}  # fmt: skip


def with_normalization(model: keras.Model, normalizer: ObservationNormalizer, name: str | None = None) -> keras.Model:
    """``model`` behind a frozen `NormalizeObservations` layer: a model of raw observations ``[B, D...]``
    (for the export; training feeds ``normalizer.normalize(x)`` to ``model`` itself)."""
    inputs = keras.Input(normalizer.shape, dtype="float32", name="observations")
    return keras.Model(inputs, model(normalizer.layer()(inputs)), name=name or f"{model.name}_on_raw_observations")
