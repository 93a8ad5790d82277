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
  kerasce's `ImageClassifier` trains through it.

A model of your own compiled with a kerasce loss and ``jit_compile=True`` uses Keras's stock train step:
the loss is NaN for that batch (``keras.callbacks.TerminateOnNaN`` or `RaiseOnNonFiniteLoss` stop the run),
but the stock optimizer applies the NaN gradients, so the weights are NaN after that step (measured:
``tests/test_losses_xla.py::test_stock_keras_step_under_xla_applies_the_nan``). Override ``train_step`` with
`apply_gradients_if_finite`, or train with ``jit_compile=False`` to get the error before the update.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

__all__ = ["all_finite", "apply_gradients_if_finite"]


def all_finite(loss: tf.Tensor, gradients: Sequence[tf.Tensor | tf.IndexedSlices | None]) -> tf.Tensor:
    """Scalar bool: every entry of `loss` and of each non-None gradient is finite (no NaN, no inf).

    Computed as one sum per tensor and one check of their total: a NaN or inf entry makes its tensor's sum,
    and the total, NaN or inf (``inf - inf`` is NaN). One op per tensor instead of two (an elementwise
    ``isfinite`` and its ``all``): the train step runs this over every gradient before it may update. Finite
    entries whose total overflows (beyond about 3e38; half-precision tensors are summed in float32) also
    read as not finite: such a step is skipped too.
    """
    parts = [loss] + [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None]
    sums = [tf.reduce_sum(tf.cast(p, tf.float32) if p.dtype in (tf.float16, tf.bfloat16) else p) for p in parts]
    if len({s.dtype for s in sums}) > 1:  # e.g. a float32 loss beside float64 gradients
        sums = [tf.cast(s, tf.float64) for s in sums]
    return tf.math.is_finite(tf.add_n(sums))


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
    taken in the cross-replica context, where the optimizer's update may call ``merge_call``).

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
    if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
        ops.cond(finite, lambda: optimizer.apply(gradients, variables), lambda: None)
        return finite

    # MirroredStrategy and friends: the optimizer's apply calls merge_call, which a cond in the replica
    # context cannot hold (the structure LossScaleOptimizer._tf_apply uses). Every replica computed `finite`
    # from its own shard, so skip if any replica saw a non-finite value.
    def cross_replica(strategy: tf.distribute.Strategy, bad: tf.Tensor, gradients: list) -> tf.Tensor:
        # `bad` and `gradients` arrive per replica (passed as merge_call arguments: a closure would see one
        # replica's tensors only); no arithmetic on them here, outside the replica context.
        finite = tf.equal(strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None), 0.0)

        def apply() -> None:
            strategy.extended.call_for_each_replica(optimizer.apply, args=(gradients, variables))

        ops.cond(finite, apply, lambda: None)
        return finite

    bad = 1.0 - tf.cast(finite, tf.float32)  # 1 on a replica that saw a non-finite value
    return tf.distribute.get_replica_context().merge_call(cross_replica, args=(bad, gradients))
