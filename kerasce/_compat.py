"""The one place where kerasce's models, optimizers and strategies touch framework internals.

Each function here wraps a Keras or TensorFlow API that is private (``keras.src.*``, ``tf.__internal__``) or a
piece of Keras's trainer that kerasce replaces. When Keras changes one of them, this file is where to look.
TensorFlow is imported inside the functions that need it, so importing this module imports no TensorFlow.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

__all__ = ["cond_across_replicas", "is_traced", "patch_keras_fit_for_multiworker"]


def is_traced(tensor: Any) -> bool:
    """Whether `tensor` is a JAX tracer (inside ``jax.jit`` or another transformation) rather than a value."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return isinstance(tensor, jax.core.Tracer)


def _needs_merge_call() -> bool:
    """Whether an update runs in the replica context of a strategy whose optimizer update calls ``merge_call``.

    MirroredStrategy and its kin: their optimizer update calls ``merge_call``, which a conditional built in the
    replica context cannot hold.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return False
    return not tf.__internal__.distribute.strategy_supports_no_merge_call()


def cond_across_replicas(finite: Any, apply: Callable[..., Any], args: Sequence[Any], skip: Callable[[], Any]) -> Any:
    """``apply(*args)`` if `finite` (a scalar bool tensor) else ``skip()``; returns the decision.

    On JAX and torch this is a Python branch. On TensorFlow, on one device and under strategies without
    ``merge_call``, it is one ``ops.cond`` (it works eagerly, in a ``tf.function`` and under XLA). Under
    MirroredStrategy each replica decided from its own shard: the decision is taken in the cross-replica
    context, where ``apply`` may call ``merge_call``, and the update is skipped on every replica if any replica
    saw a non-finite value (the structure of Keras's ``LossScaleOptimizer._tf_apply``). `args` arrive per
    replica there (passed as ``merge_call`` arguments: a closure would see one replica's tensors only).
    """
    if keras.backend.backend() in ("jax", "torch"):
        # JAX: a stateful update runs outside traced code (its trainer calls `stateless_apply` instead).
        # torch: `ops.cond` names a new op on every call, which makes torch.compile recompile every step;
        # a Python branch is what `ops.cond` does on torch anyway (torch.compile breaks the graph there).
        if bool(finite):
            apply(*args)
        else:
            skip()
        return finite
    if not _needs_merge_call():
        ops.cond(finite, lambda: apply(*args), skip)
        return finite
    import tensorflow as tf

    def cross_replica(strategy: tf.distribute.Strategy, bad: tf.Tensor, *per_replica: Any) -> tf.Tensor:
        # No arithmetic on per-replica values here, outside the replica context: only reduce and pass them on.
        agreed = tf.equal(strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None), 0.0)

        def apply_everywhere() -> None:
            strategy.extended.call_for_each_replica(apply, args=per_replica)

        ops.cond(agreed, apply_everywhere, skip)
        return agreed

    bad = 1.0 - tf.cast(finite, tf.float32)  # 1 on a replica that saw a non-finite value
    return tf.distribute.get_replica_context().merge_call(cross_replica, args=(bad, *args))


def patch_keras_fit_for_multiworker() -> None:
    """Lets Keras 3's ``fit`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two places in Keras's TensorFlow trainer fail only under the multi-worker (collective all-reduce)
    strategy; both are replaced, for that strategy only, once, when it is requested:

    1. Before the first step Keras builds the model from one batch obtained with
       ``strategy.reduce("MEAN", (x, y, sample_weight), axis=None)``. ``Strategy.reduce`` does not support
       nested values, and the collective implementation fails with "Attempt to convert a value
       (PerReplica ...) to a Tensor". The batch only serves to read shapes, so the first local replica's
       shard of each element is used instead.
    2. Each step's logs (loss and metric results: scalars) are reduced with
       ``strategy.reduce("MEAN", v, axis=0)``, which fails on a scalar ("Invalid reduction dimension 0").
       Scalars are reduced across replicas with ``axis=None`` instead; other values as before.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    trainer_cls = tf_trainer.TensorFlowTrainer
    if not (hasattr(trainer_cls, "_maybe_symbolic_build") and hasattr(tf_trainer, "reduce_per_replica")):
        warnings.warn(
            f"kerasce: Keras {keras.__version__} changed the trainer internals its multi-worker fix for "
            "keras-team/keras#20585 replaces; running without it. If fit() fails under "
            "MultiWorkerMirroredStrategy, use the Keras version kerasce was tested with (3.15).",
            stacklevel=2,
        )
        return
    original = trainer_cls._maybe_symbolic_build
    if getattr(original, "_kerasce_multiworker_fix", False):
        return
    build = _multiworker_symbolic_build(original)
    # The marker checked above, set through the function's __dict__ (mypy does not model function attributes).
    vars(build)["_kerasce_multiworker_fix"] = True
    trainer_cls._maybe_symbolic_build = build
    tf_trainer.reduce_per_replica = _multiworker_reduce_per_replica(tf_trainer.reduce_per_replica)


def _multiworker_symbolic_build(original: Callable[..., Any]) -> Callable[..., Any]:
    """Keras's ``_maybe_symbolic_build``, reading shapes from the first local shard under MultiWorkerMirrored."""
    import tensorflow as tf
    from keras.src import tree

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tree.map_structure(
                lambda v: (
                    strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
                ),
                next(it),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    return _maybe_symbolic_build


def _multiworker_reduce_per_replica(original_reduce: Callable[..., Any]) -> Callable[..., Any]:
    """Keras's ``reduce_per_replica``, reducing scalar logs with ``axis=None`` under MultiWorkerMirrored."""
    import tensorflow as tf
    from keras.src import tree

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)

        def reduce(v: Any) -> Any:
            # With one device per worker, step outputs are plain tensors rather than PerReplica values.
            if getattr(v, "shape", None) is not None and v.shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original_reduce(v, strategy, reduction)

        return tree.map_structure(reduce, values)

    return reduce_per_replica
