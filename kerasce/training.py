"""Training-step helpers shared by kerasce's models: an optimizer update that bad data cannot reach.

Why: kerasce's losses check their inputs (class ids in range, labels and probabilities in ``[0, 1]``,
label shapes). What a failed check does depends on how the step runs:

* eagerly and inside ``tf.function`` (``jit_compile=False``) it raises ``InvalidArgumentError``, and the loss
  value and its gradients depend on the check, so Keras's ``fit`` stops before ``apply_gradients``: the
  weights and the optimizer's variables stay as they were;
* under XLA (``jit_compile=True``, and Keras's default ``"auto"`` on any GPU) nothing can raise at run time.
  The loss makes its value and gradients NaN instead. `apply_gradients_if_finite` then skips the update
  (weights, Adam's moments and ``iterations`` unchanged) and a callback such as
  `kerasce.callbacks.RaiseOnNonFiniteLoss` turns the NaN loss into an error naming the step.
  kerasce's `ReinforceAgent` trains through it; `ImageClassifier` compiles its optimizer wrapped in
  `kerasce.optimizers.SkipNonFinite`, which does the same for any model.

A model of your own compiled with a kerasce loss and ``jit_compile=True`` uses Keras's stock train step:
the loss is NaN for that batch (``keras.callbacks.TerminateOnNaN`` or `RaiseOnNonFiniteLoss` stop the run),
and a stock optimizer applies the NaN gradients, so the weights are NaN after that step (measured:
``tests/test_losses_xla.py::test_stock_keras_step_under_xla_applies_the_nan``). Compile it with
``optimizer=kerasce.optimizers.SkipNonFinite(keras.optimizers.Adam())`` to skip such a step instead, or train
with ``jit_compile=False`` to get the error before the update.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from kerasce import _compat, optimizers

__all__ = ["all_finite", "apply_gradients_if_finite"]


def all_finite(loss: tf.Tensor, gradients: Sequence[tf.Tensor | tf.IndexedSlices | None]) -> tf.Tensor:
    """Scalar bool: every entry of `loss` and of each non-None gradient is finite (no NaN, no inf).

    `kerasce.optimizers.all_finite` over the loss and the gradients: one sum per tensor and one check of their
    total (finite entries whose total overflows, beyond about 3e38, also read as not finite).
    """
    return optimizers.all_finite([loss, *gradients])


def apply_gradients_if_finite(
    optimizer: keras.optimizers.Optimizer,
    gradients: Sequence[tf.Tensor | None],
    variables: Sequence[keras.Variable],
    loss: tf.Tensor,
) -> tf.Tensor:
    """``optimizer.apply(gradients, variables)`` only if `loss` and every gradient are finite (`all_finite`).

    Otherwise nothing changes: not the variables, not the optimizer's slots (Adam's moments) nor its
    ``iterations``. Works eagerly, inside ``tf.function`` and under XLA (an ``ops.cond``, the way Keras's
    ``LossScaleOptimizer`` skips non-finite steps), and under a ``tf.distribute`` strategy (the decision is
    taken in the cross-replica context, where the optimizer's update may call ``merge_call``, and an update is
    skipped on every replica if any replica saw a non-finite value).

    Args:
        optimizer: A Keras optimizer (built on first use, outside the conditional).
        gradients: One gradient (or None) per variable; for a distributed step, the per-replica gradients
            (the optimizer all-reduces them).
        variables: The trainable variables, in the order of `gradients`.
        loss: The step's loss (any shape); a NaN or inf entry skips the update.

    Returns:
        Scalar bool tensor: whether the update was applied.
    """
    gradients, variables = list(gradients), list(variables)
    if len(gradients) != len(variables):
        raise ValueError(
            "`gradients` must hold one gradient per variable. "
            f"Received: {len(gradients)} gradients for {len(variables)} variables"
        )
    if not optimizer.built:
        # Slot variables cannot be created inside a conditional branch of a tf.function.
        optimizer.build(variables)
    finite = all_finite(loss, gradients)
    return _compat.cond_across_replicas(finite, optimizer.apply, (gradients, variables), lambda: None)
