"""The negative log-likelihood and the entropy of a diagonal Gaussian (continuous actions, regression with
a learned variance)."""

from __future__ import annotations

import math
from typing import Any

from keras import ops

from kerasce.losses.checks import Checks, as_float, class_axis, compatible, static_shape

from ._backend import do_not_convert  # the backend seam: framework internals live there

Tensor = Any
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _broadcastable(shape: tuple[int | None, ...], to: tuple[int | None, ...]) -> bool:
    """Whether a static `shape` broadcasts to `to` (without changing `to`)."""
    if len(shape) > len(to):
        return False
    return all(s in (1, None) or t is None or s == t for s, t in zip(reversed(shape), reversed(to)))


@do_not_convert
def gaussian_nll(actions: Any, mean: Any, log_std: Any, axis: int = -1) -> Tensor:
    r"""Negative log-likelihood of `actions` under a diagonal Gaussian, summed over `axis`.

    With ``σ = exp(log_std)``::

        loss = Σ_axis [ (a - μ)² / (2 σ²) + log σ + ½ log 2π ]  = -log N(a; μ, diag(σ²))

    computed as ``½ (a - μ)² exp(-2 log σ) + log σ + ½ log 2π`` (no division, finite for any finite
    ``log σ``). Its gradients are ``d/dμ = -(a - μ) / σ²`` and ``d/d log σ = 1 - (a - μ)² / σ²``. As a
    policy-gradient loss, weight it by the return: ``G · gaussian_nll(a, μ, log σ)`` is REINFORCE for a
    ``Box`` action space.

    Args:
        actions: ``[B, D]`` actions (or targets) ``a``; any rank, float.
        mean: ``[B, D]`` means ``μ``, the shape of `actions`.
        log_std: Log standard deviations ``log σ``, broadcastable to `mean`: ``[B, D]`` (state-dependent),
            ``[D]`` (a state-independent vector), or a scalar.
        axis: The action axis summed over.

    Returns:
        ``[B]`` losses: the shape of `actions` without `axis`; float32 for half-precision inputs.

    Raises:
        ValueError: `actions` and `mean` of different shapes, `log_std` not broadcastable to `mean`, `axis`
            out of range.

    References:
        Bishop, *Pattern Recognition and Machine Learning* (2006), §2.3; Williams, *Simple Statistical
        Gradient-Following Algorithms* (1992), for REINFORCE with Gaussian units.
    """
    fn = "gaussian_nll"
    actions, mean, log_std = as_float(actions), as_float(mean), as_float(log_std)
    axis = class_axis(mean, axis, fn)
    got, want, scale = static_shape(actions) or (), static_shape(mean) or (), static_shape(log_std) or ()
    if not compatible(got, want):
        raise ValueError(
            f"{fn}: `actions` must have the shape of `mean`, {list(want)}. Received: actions of shape {list(got)}"
        )
    if not _broadcastable(scale, want):
        raise ValueError(
            f"{fn}: `log_std` must be broadcastable to the shape of `mean`, {list(want)}. Received: log_std of "
            f"shape {list(scale)}"
        )
    checks = Checks(mean)
    actions = checks.require_same_shape(actions, mean, f"{fn}: `actions` must have the shape of `mean`.")
    dtype = mean.dtype
    actions, log_std = ops.cast(actions, dtype), ops.cast(log_std, dtype)
    z = (actions - mean) * ops.exp(-log_std)
    per_dim = 0.5 * ops.square(z) + log_std + _HALF_LOG_2PI
    return checks.gate(ops.sum(per_dim, axis=axis))


@do_not_convert
def gaussian_entropy(log_std: Any, axis: int = -1) -> Tensor:
    r"""Entropy of a diagonal Gaussian, summed over `axis`: ``H = Σ_axis [ ½ log(2πe) + log σ ]``.

    It does not depend on the mean. Its gradient with respect to each ``log σ`` is 1.

    Args:
        log_std: ``[B, D]`` (or ``[D]``) log standard deviations ``log σ``.
        axis: The action axis summed over.

    Returns:
        ``[B]`` entropies in nats (``[]`` for a ``[D]`` vector); float32 for half-precision inputs.

    Raises:
        ValueError: a scalar `log_std` (no axis to sum), `axis` out of range.

    References:
        Cover & Thomas, *Elements of Information Theory* (2006), Theorem 8.4.1.
    """
    log_std = as_float(log_std)
    axis = class_axis(log_std, axis, "gaussian_entropy")
    return ops.sum(log_std + (_HALF_LOG_2PI + 0.5), axis=axis)
