"""JAX pieces of `kerasce.losses` (see the package's docstring for the contract).

JAX has no run-time assert inside ``jax.jit``: checks on traced values turn the result NaN. Values known now
(eager calls, ``jax.grad`` without ``jit``: Keras's ``jit_compile=False``) raise. JAX arrays take no
attributes, so Keras caches no logits on activation outputs: a softmax output passed as logits cannot be
detected here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
from jax._src.core import is_concrete  # the public alias is deprecated


def do_not_convert(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer) and not is_concrete(x)


def fused_forms() -> bool:
    return False


def sparse_nll(logits: Any, ids: Any) -> Any:
    """``logsumexp(z) - z_k`` with the gather's own gradient: no ``[B, C]`` log-probabilities, and XLA fuses
    the gather's scatter-add into the softmax pass (as fast as Optax's ``softmax_cross_entropy_with_integer_labels``;
    the one-hot gradient of ``take_class`` costs a further ``[B, C]`` pass here)."""
    picked = jnp.take_along_axis(logits, ids[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def sigmoid_xent(labels: Any, logits: Any) -> Any:
    del labels, logits
    return None


def concrete_bool(ok: Any) -> bool | None:
    try:
        return bool(ok)
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError):
        return None


def data_error(message: str) -> Exception:
    return ValueError(message)


def graph_assert(ok: Any, message: str, data: Sequence[Any]) -> None:
    del ok, message, data
    return None


def after(ops: Sequence[Any], x: Any) -> Any:
    del ops
    return x


def custom_gradient(fn: Callable[..., Any]) -> Callable[..., Any]:
    return keras.ops.custom_gradient(fn)


def activation_of(x: Any) -> str | None:
    del x
    return None


def take_class(values: Any, ids: Any) -> Any:
    """``values[..., id]`` per example."""
    return keras.ops.take_along_axis(values, ids[..., None], axis=-1)[..., 0]


def mul_no_nan(x: Any, y: Any) -> Any:
    """``x * y``, 0 where ``y == 0`` even if `x` is infinite, with finite gradients there (inner ``where``)."""
    zero = y == 0
    return keras.ops.where(zero, 0.0, keras.ops.where(zero, 0.0, x) * y)


def argmax_last(x: Any) -> Any:
    """int32 index of the largest entry on the last axis."""
    return keras.ops.cast(keras.ops.argmax(x, axis=-1), "int32")
