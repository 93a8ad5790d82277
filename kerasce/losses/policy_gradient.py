"""The REINFORCE loss: sparse softmax cross-entropy of the taken actions, weighted by the return."""

from __future__ import annotations

from typing import Any

from keras import ops

from kerasce.losses.checks import compatible, static_shape
from kerasce.losses.softmax import softmax_cross_entropy

from ._backend import do_not_convert  # the backend seam: framework internals live there

Tensor = Any


def per_step(returns: Any, values: Tensor, fn: str) -> Tensor:
    """`returns` shaped like the per-step `values`: a trailing size-1 axis is dropped, other shapes rejected
    (a ``[B]`` by ``[B, 1]`` product would broadcast to ``[B, B]``)."""
    returns = ops.convert_to_tensor(returns)
    dims, want = static_shape(returns) or (), static_shape(values) or ()
    if len(dims) == len(want) + 1 and dims[-1] == 1:
        returns = ops.squeeze(returns, -1)
        dims = dims[:-1]
    if not compatible(dims, want):
        raise ValueError(
            f"{fn}: `returns` must have the shape of the per-step losses, {list(want)} (one per step). "
            f"Received: returns of shape {list(dims)}"
        )
    return returns


@do_not_convert
def policy_gradient_loss(actions: Any, logits: Any, returns: Any) -> Tensor:
    r"""REINFORCE loss per step: sparse softmax cross-entropy of the taken action times the return.

    ``loss_t = -G_t log π(a_t | s_t) = G_t · softmax_cross_entropy(a_t, z_t)``, whose gradient is the
    REINFORCE estimator ``-G_t ∇ log π(a_t | s_t)`` (Williams, 1992). A classifier is the special case
    ``G_t = 1``.

    This function is what `PolicyGradientLoss` runs for its per-step values.

    Args:
        actions: ``[B]`` (or ``[B, 1]``) integer actions taken.
        logits: ``[B, A]`` policy logits.
        returns: ``[B]`` (or ``[B, 1]``) returns (or advantages) ``G_t``; any sign. Treated as constants.

    Returns:
        ``[B]`` per-step losses.

    Raises:
        ValueError: `returns` of a shape other than the per-step losses' (a ``[B]`` by ``[B, 1]`` product
            would broadcast to ``[B, B]``), and the errors of `softmax_cross_entropy`.
    """
    cross_entropy = softmax_cross_entropy(actions, logits)
    returns = per_step(returns, cross_entropy, "policy_gradient_loss")
    return ops.stop_gradient(ops.cast(returns, cross_entropy.dtype)) * cross_entropy  # G_t is a constant weight
