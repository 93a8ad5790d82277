"""`SkipNonFinite`: a Keras optimizer wrapper that skips an update whose gradients are not all finite.

Why: under XLA (``jit_compile=True``, and Keras's default ``"auto"`` on a GPU), ``jax.jit`` or compiled
torch, nothing can raise in the middle of a train step. A bad batch (a NaN input, a class id out of range
that kerasce's losses turn into a NaN loss) then reaches the stock optimizer, which applies the NaN
gradients: the weights are NaN after that step, and Adam's moments and ``iterations`` have moved. Wrapped
in `SkipNonFinite`, the step leaves the weights and every variable of the inner optimizer bit-identical,
and counts the skip::

    model.compile(optimizer=kerasce.optimizers.SkipNonFinite(keras.optimizers.Adam()), loss=...)

It has the shape of ``keras.optimizers.LossScaleOptimizer`` (which also skips non-finite steps, while it
scales the loss): an ``inner_optimizer`` attribute, ``get_config``/``from_config``, every optimizer inside,
every backend (TensorFlow, JAX, torch), with and without jit, and under ``tf.distribute``.

Importing this module imports no TensorFlow on the JAX and torch backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from kerasce import _compat

__all__ = ["SkipNonFinite", "all_finite"]


def _dense_values(tensor: Any) -> Any:
    """The entries a gradient holds: the ``values`` of a TensorFlow ``IndexedSlices`` (an embedding's gradient)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(tensor, tf.IndexedSlices):
            return tensor.values
    return tensor


def all_finite(tensors: Sequence[Any]) -> Any:
    """Scalar bool tensor: every entry of each non-None tensor is finite (no NaN, no inf).

    Computed as one sum per tensor and one finiteness check of their total: a NaN or inf entry makes its
    tensor's sum, and the total, NaN or inf (``inf - inf`` is NaN). One reduction per tensor instead of an
    elementwise ``isfinite`` and its ``all``: a train step runs this over every gradient. Finite entries whose
    total overflows (beyond about 3e38 in float32; half-precision tensors are summed in float32) also read as
    not finite.
    """
    parts = [_dense_values(t) for t in tensors if t is not None]
    if not parts:
        return ops.convert_to_tensor(True)
    dtypes = [keras.backend.standardize_dtype(p.dtype) for p in parts]
    sums = [ops.sum(ops.cast(p, "float32") if d in ("float16", "bfloat16") else p) for p, d in zip(parts, dtypes)]
    widest = "float64" if "float64" in dtypes else "float32"
    return ops.isfinite(ops.sum(ops.stack([ops.cast(s, widest) for s in sums])))


@keras.saving.register_keras_serializable(package="kerasce")
class SkipNonFinite(keras.optimizers.Optimizer):
    """Applies the inner optimizer's update only when every gradient is finite; counts the skipped steps.

    After a skipped step the trainable variables and every variable of `inner_optimizer` (its slots, such
    as Adam's moments, and its ``iterations``) are bit-identical to before it; `skipped_steps` is one higher.
    A step with finite gradients is exactly the inner optimizer's step. ``learning_rate``, ``iterations``,
    ``scale_loss`` and ``finalize_variable_values`` are the inner optimizer's.

    Args:
        inner_optimizer: The ``keras.optimizers.Optimizer`` whose updates are protected (any, with its own
            learning-rate schedule, clipping, weight decay, EMA or gradient accumulation).
        name: The optimizer's name.

    Attributes:
        inner_optimizer: The wrapped optimizer.
        skipped_steps: An integer variable, the number of skipped updates (created by ``build``).
    """

    def __init__(self, inner_optimizer: keras.optimizers.Optimizer, name: str | None = None):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer instance. "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer

    def build(self, var_list: Sequence[keras.Variable]) -> None:
        self.skipped_steps = self.add_variable(
            shape=(), dtype="int", initializer="zeros", aggregation="none", name="skipped_steps"
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self) -> list[keras.Variable]:
        """This wrapper's own variables, then the inner optimizer's (saved and restored together)."""
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[keras.Variable] | None = None) -> None:
        """The inner optimizer's ``apply(grads, trainable_variables)`` if every gradient is finite; else a skip."""
        grads = list(grads)
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "`trainable_variables` must be given on the first call of apply (it builds the optimizer). "
                    "Received: trainable_variables=None"
                )
            # Slot variables cannot be created inside a conditional branch of a tf.function.
            with keras.name_scope(self.name):
                self.build(trainable_variables)  # sets `built`
        finite = all_finite(grads)
        _compat.cond_across_replicas(finite, self.inner_optimizer.apply, (grads, trainable_variables), self._count_skip)

    def _count_skip(self) -> None:
        self.skipped_steps.assign_add(1)

    def apply_gradients(self, grads_and_vars: Any) -> Any:
        grads, trainable_variables = zip(*grads_and_vars)
        self.apply(grads, trainable_variables)
        return self.iterations

    def stateless_apply(
        self, optimizer_variables: Sequence[Any], grads: Sequence[Any], trainable_variables: Sequence[Any]
    ) -> tuple[list[Any], list[Any]]:
        """The stateless form of `apply` (the JAX trainer's): new trainable and optimizer variable values."""
        if not self.built:
            raise ValueError(
                f"{self.__class__.__name__} must be built before stateless_apply: call "
                "`optimizer.build(trainable_variables)` first. Received: an optimizer that is not built"
            )
        own, inner = (
            list(optimizer_variables[: len(self._variables)]),
            list(optimizer_variables[len(self._variables) :]),
        )
        counter = next(i for i, v in enumerate(self._variables) if v is self.skipped_steps)

        def update() -> tuple[list[Any], list[Any]]:
            new_trainable, new_inner = self.inner_optimizer.stateless_apply(inner, grads, trainable_variables)
            return list(new_trainable), own + list(new_inner)

        def skip() -> tuple[list[Any], list[Any]]:
            counted = own[:counter] + [own[counter] + ops.ones_like(own[counter])] + own[counter + 1 :]
            return list(trainable_variables), counted + inner

        finite = all_finite(grads)
        if not _compat.is_traced(finite):
            # Eager: the inner update runs op by op, exactly as without the wrapper (a cond would compile it).
            return update() if bool(finite) else skip()
        return ops.cond(finite, update, skip)

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> keras.Variable:
        """The inner optimizer's step counter: it does not move on a skipped step."""
        return self.inner_optimizer.iterations

    def scale_loss(self, loss: Any) -> Any:
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list: Sequence[keras.Variable]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        # Not super().get_config(): this wrapper has no learning rate, clipping or decay of its own.
        return {"name": self.name, "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> SkipNonFinite:
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)
