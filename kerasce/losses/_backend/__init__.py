"""The backend-specific pieces of `kerasce.losses`: the only module that touches framework internals.

The math of the losses is written once, in ``keras.ops``. What cannot be (how a failed run-time check stops
a step, custom gradients, the attributes Keras caches on tensors, the TensorFlow-only fast paths) lives in
one module per Keras backend, picked here from ``keras.backend.backend()``; only that backend's framework is
imported. Every backend module provides the same names:

* ``do_not_convert(fn)``: keeps TensorFlow's AutoGraph out of a function (identity elsewhere).
* ``traced(x)``: True where nothing can raise at run time and the values of `x` are unknown now (TF under
  XLA, ``jax.jit``, ``torch.compile``): run-time checks then turn the result NaN instead.
* ``concrete_bool(ok)``: the Python value of the scalar `ok` if it is known now, else None;
  ``concrete_float(x)``: the same for a numeric scalar.
* ``data_error(message)``: the exception raised for bad values known now.
* ``graph_assert(ok, message, data)``: an op that fails the running graph when `ok` is false, or None where
  the backend has none (then checks act through NaN); ``after(ops, x)``: `x` once `ops` have run.
* ``custom_gradient(fn)``: ``fn(*tensors) -> (value, grad(upstream))`` with the gradient `grad` returns.
* ``mean_is_plain()``: whether Keras's mean reductions of a loss are the plain mean (not on TensorFlow, where
  ``tf.distribute`` scales them by ``1 / replicas``).
* ``sparse_nll(logits, ids)``: ``-log softmax(logits)[id]`` per example (class axis last) by the backend's
  fastest form, or None where ``-take_class(log_softmax(logits), ids)`` is the fastest.
* ``sigmoid_xent(labels, logits)``: ``softplus(z) - y z`` per label by the backend's fused op, or None.
* ``mul_no_nan(x, y)``: ``x * y``, 0 where ``y == 0`` (also for infinite `x`), with finite gradients.
* ``argmax_last(x)``: the int32 index of the largest entry on the last axis, in the fewest passes.
* ``max_last(x)``: the largest entry on the last axis (also of an empty batch), in one graph.
* ``value_range(x)``: ``(min(x), max(x))`` over all entries, in the fewest passes.
* ``take_class(values, ids)``: ``values[..., id]`` per example (class axis last), the fastest gather.
* ``activation_of(x)``: ``"softmax"``, ``"sigmoid"`` or ``"activation"`` if `x` was produced by such an
  activation (probabilities, not logits), as far as the backend can tell; None otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras
from keras.src.backend.common.tensor_attributes import get_tensor_attr, set_tensor_attr

_BACKEND = keras.backend.backend()
if _BACKEND not in ("tensorflow", "jax", "torch"):
    raise ImportError(
        "`KERAS_BACKEND` must be tensorflow, jax or torch for kerasce.losses. Received: "
        f"KERAS_BACKEND={_BACKEND}. Set KERAS_BACKEND=tensorflow, jax or torch."
    )
# Only the active backend's module is imported (it imports that framework alone).
_impl = importlib.import_module(f"kerasce.losses._backend.{_BACKEND}")
activation_of = _impl.activation_of
after = _impl.after
argmax_last = _impl.argmax_last
concrete_bool = _impl.concrete_bool
concrete_float = _impl.concrete_float
custom_gradient = _impl.custom_gradient
data_error = _impl.data_error
do_not_convert = _impl.do_not_convert
mean_is_plain = _impl.mean_is_plain
max_last = _impl.max_last
graph_assert = _impl.graph_assert
mul_no_nan = _impl.mul_no_nan
sigmoid_xent = _impl.sigmoid_xent
sparse_nll = _impl.sparse_nll
take_class = _impl.take_class
traced = _impl.traced
value_range = _impl.value_range

__all__ = [
    "activation_of",
    "after",
    "argmax_last",
    "cached_logits",
    "concrete_bool",
    "concrete_float",
    "custom_gradient",
    "data_error",
    "do_not_convert",
    "graph_assert",
    "keras_mask",
    "max_last",
    "mean_is_plain",
    "mul_no_nan",
    "set_cached_logits",
    "set_keras_mask",
    "sigmoid_xent",
    "sparse_nll",
    "take_class",
    "traced",
    "value_range",
]


def cached_logits(x: Any) -> Any:
    """The logits a Keras ``softmax`` / ``sigmoid`` activation cached on its output `x`, or None.

    Keras caches them on TensorFlow and torch tensors; JAX arrays take no attributes, so there is none.
    """
    return get_tensor_attr(x, "_keras_logits")


def set_cached_logits(x: Any, logits: Any) -> None:
    set_tensor_attr(x, "_keras_logits", logits)


def keras_mask(x: Any) -> Any:
    """The Keras mask (padded positions) carried by `x`, or None."""
    return keras.src.backend.get_keras_mask(x)


def set_keras_mask(x: Any, mask: Any) -> None:
    keras.src.backend.set_keras_mask(x, mask)
