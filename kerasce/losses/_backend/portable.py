"""The pieces of the backend seam that are the same on JAX and torch: ``keras.ops`` forms, no graph asserts
(a failed check there raises eagerly, or turns the result NaN when traced). `tensorflow.py` has its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

__all__ = [
    "after",
    "argmax_last",
    "data_error",
    "do_not_convert",
    "graph_assert",
    "max_last",
    "mul_no_nan",
    "take_class",
]  # value_range: imported by name where it serves (torch has a one-pass form)


def do_not_convert(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def data_error(message: str) -> Exception:
    return ValueError(message)


def graph_assert(ok: Any, message: str, data: Sequence[Any]) -> None:
    del ok, message, data
    return None


def after(ops: Sequence[Any], x: Any) -> Any:
    del ops
    return x


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


def max_last(x: Any) -> Any:
    """The largest entry on the last axis. ``amax``: Keras's torch ``max`` breaks ``torch.compile``'s graph."""
    return keras.ops.amax(x, axis=-1)


def value_range(x: Any) -> tuple[Any, Any]:
    """``(min(x), max(x))`` over all entries."""
    return keras.ops.min(x), keras.ops.max(x)
