"""Keras callbacks for kerasce's models (the agent's own are in :mod:`kerasce.rl.callbacks`)."""

from __future__ import annotations

import math

import keras

__all__ = ["RaiseOnNonFiniteLoss"]


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
