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
import keras
from jax._src.core import is_concrete  # the public alias is deprecated


def do_not_convert(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer) and not is_concrete(x)


def fused_forms() -> bool:
    return False


def fused_sparse_nll(logits: Any, ids: Any) -> Any:
    raise NotImplementedError("fused_sparse_nll is TensorFlow's; fused_forms() is False on JAX.")


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
