"""Checks of the losses' options (once, in Python) and of their data (at run time, on every backend).

Messages follow Keras's template: "`arg` must be <what is expected>. Received: arg=<value>".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from ._backend import (  # the backend seam: framework internals live there
    after,
    concrete_bool,
    concrete_float,
    data_error,
    graph_assert,
    keras_mask,
    set_keras_mask,
    traced,
    value_range,
)

Tensor = Any

LABEL_FORMS = ("auto", "sparse", "dense")

# Slack for probabilities a hair above 1 after rounding (a float32 softmax can sum to 1 + 1e-7).
PROBABILITY_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------------------------
# Options (Python values)
# ----------------------------------------------------------------------------------------------------------


def check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1]. Received: label_smoothing={label_smoothing}")


def check_focal_options(focal_gamma: float, poly_epsilon: float = 0.0, alpha: float | None = None) -> None:
    """Rejects a negative or non-finite ``focal_gamma``, a non-finite ``poly_epsilon``, ``alpha`` outside [0, 1]."""
    if not (math.isfinite(float(focal_gamma)) and float(focal_gamma) >= 0.0):
        raise ValueError(
            "`focal_gamma` must be a finite number >= 0 (0 turns the focal term off). "
            f"Received: focal_gamma={focal_gamma}"
        )
    if not math.isfinite(float(poly_epsilon)):
        raise ValueError(
            f"`poly_epsilon` must be a finite number (0 turns the poly term off). Received: poly_epsilon={poly_epsilon}"
        )
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1] (or None for no balancing). Received: alpha={alpha}")


def check_label_form(label_form: str) -> None:
    if label_form not in LABEL_FORMS:
        raise ValueError(f"`label_form` must be one of {LABEL_FORMS}. Received: label_form={label_form!r}")


def check_nonnegative_weights(weights: Sequence[float] | float | None, name: str) -> list[float] | None:
    """Normalises constructor weights to a list (for get_config) and rejects negative ones."""
    if weights is None:
        return None
    values = [float(w) for w in np.asarray(weights, np.float64).reshape(-1)]
    if any(w < 0 for w in values):
        raise ValueError(f"`{name}` must be non-negative. Received: {name}={values}")
    return values


def weights_vector(weights: Any, num: int, name: str, dtype: str) -> Tensor | None:
    """Checks a per-class / per-label weight vector against the number of classes."""
    if weights is None:
        return None
    vector = ops.convert_to_tensor(weights, dtype=dtype)
    if tuple(vector.shape) != (num,):
        raise ValueError(
            f"`{name}` must have one weight per class, expected shape ({num},). "
            f"Received: {name} of shape {tuple(vector.shape)}"
        )
    return vector


# ----------------------------------------------------------------------------------------------------------
# Tensors: dtypes and static shapes
# ----------------------------------------------------------------------------------------------------------


def as_float(x: Any) -> Tensor:
    """Converts to a float tensor; half precision is promoted to float32 (the math runs in it)."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype or dtype in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    return x


def dtype_of(x: Tensor) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def static_shape(x: Tensor) -> tuple[int | None, ...] | None:
    """The shape known now (``None`` for a dimension known at run time only), or None for an unknown rank."""
    try:
        return tuple(None if d is None else int(d) for d in x.shape)
    except (TypeError, ValueError):  # TensorFlow: a shape of unknown rank cannot be iterated
        return None


def compatible(a: Sequence[int | None], b: Sequence[int | None]) -> bool:
    """Whether two static shapes can be equal at run time."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def class_axis(pred: Tensor, axis: int, fn: str) -> int:
    """Validates `axis` against the prediction's rank and returns it as a non-negative index."""
    shape = static_shape(pred)
    if not shape:
        raise ValueError(
            f"{fn}: predictions must have a known rank >= 1 (a class axis). Received: predictions of shape {pred.shape}"
        )
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"{fn}: `axis` must be in range for predictions of rank {len(shape)} (out of range). Received: axis={axis}"
        )
    return axis % len(shape)


# ----------------------------------------------------------------------------------------------------------
# Data (run time)
# ----------------------------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """One datum of a check's message, eagerly: strings as they are, numbers with 6 significant digits."""
    if isinstance(value, str):
        return value
    array = np.asarray(keras.ops.convert_to_numpy(value))
    if array.ndim == 0:
        return f"{array.item():.6g}" if array.dtype.kind == "f" else str(array.item())
    return str(array.tolist())


class Checks:
    """The run-time checks of one loss call, and the gate that ties the loss value to them.

    Each check is a scalar boolean ``ok`` plus a message. What a failed check does depends on the backend:

    * where the values are known now (eager TensorFlow, JAX and torch; ``jax.grad`` without ``jit``), it
      raises at once (the backend's `data_error`: ``tf.errors.InvalidArgumentError`` on TensorFlow,
      ``ValueError`` elsewhere);
    * inside ``tf.function`` (no XLA), one ``Assert`` op per check fails the call. `gate` makes the loss
      value *and its gradient* depend on those asserts, so Keras's ``fit`` raises before the update;
    * where nothing can raise (TF XLA, ``jax.jit``, ``torch.compile``), `gate` multiplies the values by NaN
      when a check fails (for elementwise checks, the failing entries, fused into the loss's own pass):
      the loss and its gradients are NaN, and an optimizer that skips non-finite updates leaves the weights
      untouched.
    """

    def __init__(self, like: Tensor) -> None:
        self._ok: list[Tensor] = []
        self._asserts: list[Any] = []
        self._factors: list[Tensor] = []  # traced: elementwise 1 / NaN factors of the result
        self._traced = traced(like)

    def require(self, ok: Tensor, message: str, *data: Any) -> None:
        """Records the check `ok` (scalar bool); `data` are numeric tensors reported after `message`."""
        known = concrete_bool(ok)
        if known is not None:
            if not known:
                details = " ".join(_format_value(d) for d in data)
                raise data_error(f"{message} {details}".strip())
            return
        self._ok.append(ok)
        op = graph_assert(ok, message, data)
        if op is not None:
            self._asserts.append(op)

    def require_range(
        self,
        values: Tensor,
        high: float,
        message: str,
        *,
        high_inclusive: bool = True,
        integral: bool = False,
        poison: bool = False,
        per_example: bool = False,
        constant: bool = False,
    ) -> Tensor:
        """Checks ``0 <= values <= high`` (``< high``), and that they are integers if `integral`; returns `values`.

        NaN fails the comparisons, so it is rejected too; the message reports min and max. Traced (no run-time
        raise possible), the check is elementwise and fuses into the loss's own passes: with `poison`, `values`
        come back NaN where out of range (the NaN reaches the loss and its gradients through the math); with
        `per_example` (`values` of the result's shape, e.g. sparse ids), `gate` multiplies those entries of
        the result by NaN. `constant` (labels, whose gradient no one wants): a select, not a product.
        """
        if 0 in (static_shape(values) or ()):
            return values  # an empty batch: nothing to check (and no min or max to take)
        if self._traced and (poison or per_example):
            return self._poison(values, high, high_inclusive, integral, poison, constant)
        low, top = value_range(values)
        fractional = integral and "float" in dtype_of(values)  # Keras's Loss.__call__ hands class ids over as floats
        low_now, top_now = concrete_float(low), concrete_float(top)
        if low_now is not None and top_now is not None:  # eager: compared in Python, fewer small ops
            ok_now = low_now >= 0 and (top_now <= high if high_inclusive else top_now < high)
            if ok_now and fractional:
                ok_now = bool(ops.all(values == ops.round(values)))
            self.require(ok_now, message, "Got values from", low, "to", top)
            return values
        ok = (low >= 0) & ((top <= high) if high_inclusive else (top < high))
        if fractional:
            ok = ok & ops.all(values == ops.round(values))
        if self._traced:
            self.require(ok, message)
        else:
            self.require(ok, message, "Got values from", low, "to", top)
        return values

    def _poison(
        self, values: Tensor, high: float, high_inclusive: bool, integral: bool, poison: bool, constant: bool
    ) -> Tensor:
        """The elementwise form of `require_range`: comparisons, False for NaN. (Not ``clip(v) == v``: the same
        verdict, but Inductor's vectorised clamp-and-compare costs three times the loss itself on CPU.)"""
        good = (values >= 0) & ((values <= high) if high_inclusive else (values < high))
        if integral and "float" in dtype_of(values):
            good = good & (values == ops.floor(values))
        if poison and constant:
            return ops.where(good, values, float("nan"))
        factor = ops.where(good, 1.0, float("nan"))  # Keras's float dtype; `gate` casts it to the result's
        if poison:
            return values * ops.cast(factor, dtype_of(values))
        self._factors.append(factor)
        return values

    @property
    def deferred(self) -> bool:
        """Whether a check's verdict is still to come (a graph assert or a NaN factor), not raised or passed."""
        return bool(self._ok or self._factors)

    def require_same_shape(self, labels: Tensor, predictions: Tensor, message: str) -> Tensor:
        """Run-time shape equality, for shapes not fully known when traced; returns `labels`.

        The returned labels wait for the check: the math that uses them would otherwise fail first with its
        own broadcasting error.
        """
        if None not in (static_shape(labels) or (None,)) + (static_shape(predictions) or (None,)):
            return labels  # already checked statically by the caller
        got, want = _dynamic_shape(labels), _dynamic_shape(predictions)
        before = len(self._asserts)
        self.require(ops.all(got == want), message, "Got labels of shape", got, "predictions", want)
        return after(self._asserts[before:], labels)

    def gate(self, values: Tensor) -> Tensor:
        """`values` after every check has passed; NaN (value and gradient) where a traced check fails."""
        if not (self._ok or self._factors):
            return values
        gated = values
        for factor in self._factors:
            gated = gated * ops.cast(factor, values.dtype)
        if self._ok:
            ok = ops.all(ops.stack(self._ok))
            # The gradient of values * factor is upstream * factor: it waits for the asserts too.
            factor = after(self._asserts, ops.where(ok, 1.0, float("nan")))
            gated = gated * ops.cast(factor, values.dtype)
        mask = keras_mask(values)
        if mask is not None:
            set_keras_mask(gated, mask)
        return gated


def _dynamic_shape(x: Tensor) -> Tensor:
    return ops.stack([ops.cast(d, "int32") for d in ops.shape(x)])


def check_unit_interval(checks: Checks, x: Tensor, what: str, fn: str, *, labels: bool = False) -> Tensor:
    """Run-time check that every entry of `x` lies in [0, 1]; returns `x` (NaN where not, when traced)."""
    return checks.require_range(
        x, 1.0 + PROBABILITY_TOLERANCE, f"{fn}: {what} must be in [0, 1].", poison=True, constant=labels
    )
