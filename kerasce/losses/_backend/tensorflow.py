"""TensorFlow pieces of `kerasce.losses` (see the package's docstring for the contract)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # the XLA-context test has no public API

from .portable import value_range  # noqa: F401 (re-exported: the keras.ops form serves here too)

# The losses hold no Python control flow on tensors, so AutoGraph has nothing to rewrite in them; left to it,
# the first trace of a train step that calls one spends seconds of CPU converting the code (measured: 4.4 s
# for softmax_cross_entropy). Keras and TensorFlow exempt their own code the same way.
do_not_convert = tf.autograph.experimental.do_not_convert


def _in_xla() -> bool:
    return not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def traced(x: Any) -> bool:
    """Under XLA (``tf.function(jit_compile=True)``, Keras's ``jit_compile``) asserts are compiled out."""
    del x
    return _in_xla()


def mean_is_plain() -> bool:
    return False  # Keras scales a mean-reduced loss by 1 / replicas under ``tf.distribute``


def sparse_nll(logits: tf.Tensor, ids: tf.Tensor) -> tf.Tensor | None:
    """The fused op under XLA; None in a graph, where the log-softmax and the one-hot-gradient gather are
    faster (benchmarks/losses.py)."""
    if not _in_xla():
        return None
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)


def sigmoid_xent(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor | None:
    """The fused op under XLA (which compiles it better than ``softplus(z) - y z`` or a closed form with a
    custom gradient); None in a graph, where ``softplus(z) - y z`` is the faster (benchmarks/losses.py)."""
    if not _in_xla():
        return None
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def concrete_bool(ok: tf.Tensor) -> bool | None:
    return bool(ok) if tf.executing_eagerly() else None


def concrete_float(x: tf.Tensor) -> float | None:
    return float(x) if tf.executing_eagerly() else None


def data_error(message: str) -> Exception:
    return tf.errors.InvalidArgumentError(None, None, message)


def graph_assert(ok: tf.Tensor, message: str, data: Sequence[Any]) -> tf.Operation | None:
    """A raw ``Assert`` inside ``tf.function`` without XLA.

    The raw op: ``tf.debugging.Assert`` wraps it in a conditional (an If op, a function call per step) when
    its data are not all strings / int32. Data are the message and numeric tensors only: XLA has no kernel
    for string formatting, which would make every ``jit_compile=True`` step fail to compile.
    """
    if _in_xla():
        return None
    return tf.raw_ops.Assert(condition=ok, data=[message, *data], summarize=8)


def after(ops: Sequence[tf.Operation], x: tf.Tensor) -> tf.Tensor:
    """`x` (value, and the gradient through it) once `ops` have run."""
    if not ops:
        return x
    with tf.control_dependencies(list(ops)):
        return tf.identity(x)


def custom_gradient(fn: Callable[..., Any]) -> Callable[..., Any]:
    return tf.custom_gradient(fn)


def activation_of(x: Any) -> str | None:
    """Keras caches ``_keras_logits`` on activation outputs; in a graph the producing op tells which one."""
    op_type = None
    if not tf.executing_eagerly() and isinstance(x, tf.Tensor) and hasattr(x, "op"):
        op_type = getattr(x.op, "type", None)
    if op_type in ("Softmax", "Sigmoid"):
        return op_type.lower()
    if hasattr(x, "_keras_logits"):
        return "activation"
    return None


def take_class(values: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """``values[..., id]`` per example: one gather with batch dims (``take_along_axis`` builds index grids)."""
    return tf.gather(values, ids, batch_dims=ids.shape.rank)


def mul_no_nan(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """TensorFlow's own op: no ``where`` whose condition XLA would have to broadcast over dynamic dimensions."""
    return tf.math.multiply_no_nan(x, y)


def max_last(x: tf.Tensor) -> tf.Tensor:
    """The largest entry on the last axis; an empty batch is no error (Keras's eager ``max`` asserts a size)."""
    return tf.reduce_max(x, axis=-1)


def argmax_last(x: tf.Tensor) -> tf.Tensor:
    """int32 index of the largest entry on the last axis: ``tf.argmax`` itself (``ops.argmax`` adds four
    elementwise passes for a flush-to-zero corner of ``-0.0``, which does not change which class is on top)."""
    return tf.argmax(x, axis=-1, output_type=tf.int32)
