"""The typed batch of one REINFORCE update: what crosses from the trainer to ``ReinforceModel.update``.

Shapes: ``B`` kept steps, ``D...`` observation shape, ``A`` actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Batch"]


@dataclasses.dataclass(frozen=True)
class Batch:
    """The steps of one update, time-major over the complete episodes.

    Attributes:
      observations: ``[B, D...]`` float32.
      actions: ``[B]`` int32 in ``[0, A)``.
      returns: ``[B]`` float32, the (normalised) returns, the weights of the cross-entropy.
      action_masks: ``[B, A]`` bool valid actions, or None (an agent without masks).
      step_weights: ``[B]`` float32 weight of each step's terms in the mean, or None (all 1). Replicas of
        a ``tf.distribute`` strategy get batches padded to one size with weight 0 on the padding.
    """

    observations: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    action_masks: np.ndarray | None = None
    step_weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)

    def padded(self, rows: int, step_weight: float) -> Batch:
        """This batch padded with zero rows to ``rows``: real steps weigh ``step_weight``, padding 0.

        Padding is zeros as observations, action 0, return 0 and every action valid, so it adds nothing
        to the loss or the gradient.

        Raises:
          ValueError: ``rows`` is smaller than the batch.
        """
        pad = rows - len(self)
        if pad < 0:
            raise ValueError(f"`rows` must be at least the batch size, {len(self)}. Received: rows={rows}")

        def padded(x: np.ndarray, fill: float | bool) -> np.ndarray:
            return np.concatenate([x, np.full((pad,) + x.shape[1:], fill, x.dtype)])

        weights = np.concatenate([np.full(len(self), step_weight, np.float32), np.zeros(pad, np.float32)])
        return Batch(
            padded(self.observations, 0),
            padded(self.actions, 0),
            padded(self.returns, 0),
            None if self.action_masks is None else padded(self.action_masks, True),
            weights,
        )
