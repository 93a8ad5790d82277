"""JAX pieces of `kerasce.losses` (see the package's docstring for the contract).

JAX has no run-time assert inside ``jax.jit``: checks on traced values turn the result NaN. Values known now
(eager calls, ``jax.grad`` without ``jit``: Keras's ``jit_compile=False``) raise. JAX arrays take no
attributes, so Keras caches no logits on activation outputs: a softmax output passed as logits cannot be
detected here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
from jax._src.core import is_concrete  # the public alias is deprecated

from .portable import *  # noqa: F403 (the seam's names JAX and torch share: portable.__all__)
from .portable import value_range  # noqa: F401 (re-exported)


def traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer) and not is_concrete(x)


def mean_is_plain() -> bool:
    return True  # no replica scaling: a global batch is one array


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


def concrete_float(x: Any) -> float | None:
    try:
        return float(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def custom_gradient(fn: Callable[..., Any]) -> Callable[..., Any]:
    return keras.ops.custom_gradient(fn)


def activation_of(x: Any) -> str | None:
    del x
    return None
