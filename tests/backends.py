"""The active Keras backend, for tests that run on each of them: one process per backend, chosen by
``KERAS_BACKEND`` (as Keras's own CI does), e.g. ``KERAS_BACKEND=jax python -m pytest tests/test_losses.py``.

One place knows how each backend jit-compiles a function, differentiates it and hands back NumPy arrays;
tests call `jit`, `value_and_grad` and `to_numpy` and never import a framework at module level (the torch
environment has no TensorFlow). Tests of a TensorFlow-only feature say so with `tensorflow_only(what)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def tensorflow_only(what: str) -> pytest.MarkDecorator:
    """Marks a test of a TensorFlow-only feature (``tf.function``, XLA, ``tf.distribute``, ...)."""
    return pytest.mark.skipif(BACKEND != "tensorflow", reason=f"TensorFlow-only: {what}")


def to_numpy(x: Any) -> np.ndarray:
    """`x` as a NumPy array; bfloat16 (which NumPy lacks) as float32, exactly."""
    if hasattr(x, "dtype") and not isinstance(x, np.ndarray) and keras.backend.standardize_dtype(x.dtype) == "bfloat16":
        x = keras.ops.cast(x, "float32")
    return np.asarray(keras.ops.convert_to_numpy(x))


def data_error() -> type[Exception]:
    """What the losses raise for bad values known at run time on this backend."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.errors.InvalidArgumentError
    return ValueError


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` compiled by the backend's jit: ``tf.function(jit_compile=True)``, ``jax.jit``, ``torch.compile``."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import torch

    return torch.compile(fn)


def graph(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` traced without XLA where the backend has such a mode (``tf.function``); else `fn` itself."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def value_and_grad(fn: Callable[..., Any], *xs: Any, compiled: bool = False) -> tuple[np.ndarray, Any]:
    """``(fn(*xs), d fn / d xs)`` as NumPy arrays, for a scalar-valued `fn` of float arrays `xs`.

    Returns the gradient of each x (one array for a single x). `compiled`: the whole computation under the
    backend's jit.
    """
    if BACKEND == "tensorflow":
        value, grads = _tf_value_and_grad(fn, xs, compiled)
    elif BACKEND == "jax":
        import jax

        step = jax.value_and_grad(fn, argnums=tuple(range(len(xs))))
        value, grads = (jax.jit(step) if compiled else step)(*[keras.ops.convert_to_tensor(x) for x in xs])
    else:
        value, grads = _torch_value_and_grad(fn, xs, compiled)
    grads = tuple(to_numpy(g) for g in grads)
    return to_numpy(value), grads[0] if len(grads) == 1 else grads


def _tf_value_and_grad(fn: Callable[..., Any], xs: tuple[Any, ...], compiled: bool) -> tuple[Any, Any]:
    import tensorflow as tf

    def step(*args: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        return value, tape.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    run = tf.function(step, jit_compile=True) if compiled else step
    return run(*[tf.convert_to_tensor(x) for x in xs])


def _torch_value_and_grad(fn: Callable[..., Any], xs: tuple[Any, ...], compiled: bool) -> tuple[Any, Any]:
    import torch

    args = [keras.ops.convert_to_tensor(x).detach().requires_grad_(True) for x in xs]
    value = (torch.compile(fn) if compiled else fn)(*args)
    grads = torch.autograd.grad(value, args, allow_unused=True)
    return value.detach(), tuple(torch.zeros_like(a) if g is None else g for a, g in zip(args, grads))
