"""PyTorch pieces of `kerasce.losses` (see the package's docstring for the contract).

Eagerly, bad values raise before the update. Under ``torch.compile`` (Keras's ``jit_compile=True`` on
torch) a data-dependent raise would break the graph, so checks turn the result NaN, as under XLA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import torch
import torch.nn.functional as F


def do_not_convert(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def traced(x: Any) -> bool:
    del x
    return bool(torch.compiler.is_compiling())


def fused_forms() -> bool:
    return False


def sparse_nll(logits: Any, ids: Any) -> Any:
    """``F.cross_entropy``: one fused kernel each way (``torch.logsumexp`` is slow on CPU for many classes)."""
    num_classes = logits.shape[-1]
    flat = F.cross_entropy(logits.reshape(-1, num_classes), ids.reshape(-1).long(), reduction="none")
    return flat.reshape(ids.shape)


def sigmoid_xent(labels: Any, logits: Any) -> Any:
    """``max(z, 0) - y z + log1p(exp(-|z|))``: the fused op eagerly; under ``torch.compile`` the same formula
    by autodiff, which Inductor fuses into fewer passes than the op's own backward."""
    if torch.compiler.is_compiling():
        return torch.relu(logits) - logits * labels + torch.log1p(torch.exp(-torch.abs(logits)))
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none")


def concrete_bool(ok: Any) -> bool | None:
    return None if torch.compiler.is_compiling() else bool(ok)


def data_error(message: str) -> Exception:
    return ValueError(message)


def graph_assert(ok: Any, message: str, data: Sequence[Any]) -> None:
    del ok, message, data
    return None


def after(ops: Sequence[Any], x: Any) -> Any:
    del ops
    return x


def custom_gradient(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Keras's torch ``custom_gradient`` calls the gradient function as ``grad(*inputs, upstream=...)``."""

    def forward(*args: Any) -> Any:
        value, grad = fn(*args)
        return value, lambda *inputs, upstream: grad(upstream)

    return keras.ops.custom_gradient(forward)


def activation_of(x: Any) -> str | None:
    """Keras's ``softmax`` / ``sigmoid`` activations cache ``_keras_logits`` on torch tensors."""
    return "activation" if hasattr(x, "_keras_logits") else None


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
