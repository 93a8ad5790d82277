"""Numerical kernels shared by the losses: stable forms, with closed-form gradients where autodiff's are
costly or inexact.

Autodiff through the stable focal forms (log-sum-exp, softplus, ``where`` branches that keep ``inf`` out of
the gradient) builds a backward graph several times the size of the forward one; each elementwise op is a
pass over ``[B, C]`` memory. The focal kernels here compute their value from the same stable quantities and
return the analytic gradient, written in those quantities too, so values and gradients stay finite and
accurate for logits of any size, in a few elementwise passes, on every backend (through the seam's
``custom_gradient``).

Every kernel takes the class / label axis last and float32 or float64 values (callers cast half precision).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ._backend import (  # the backend seam: framework internals live there
    custom_gradient,
    max_last,
    mul_no_nan,
)
from ._backend import (
    take_class as gather_class,
)

Tensor = Any


def at_least_tiny(x: Tensor) -> Tensor:
    """``max(x, tiny)``, ``tiny`` the smallest normal number of `x`'s float dtype.

    A ``where``, not ``ops.maximum``: Keras's dtype promotion there turns float64 into float32 on torch (and a
    Python float64 ``tiny`` would round to 0 in float32).
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    tiny = ops.convert_to_tensor(np.finfo(dtype).tiny, dtype=dtype)
    return ops.where(x < tiny, tiny, x)


def mean(x: Tensor, axis: int) -> Tensor:
    """The mean over `axis` as a sum over the count: ``ops.mean`` on torch computes float64 in float32."""
    count = x.shape[axis]
    if count is None:  # TensorFlow: known at run time only
        count = ops.cast(ops.shape(x)[axis], x.dtype)
    return ops.sum(x, axis=axis) / count


def log_clipped(p: Tensor) -> Tensor:
    """``log(clip(p, eps, 1 - eps))`` whose gradient passes straight through the clip.

    A plain clip has zero gradient outside ``[eps, 1 - eps]``: a model that outputs a probability of exactly
    0 for the true class would get no signal at all. Here ``d/dp = 1 / clip(p)``: finite and never zero.
    """
    eps = keras.config.epsilon()
    clipped = ops.clip(p, eps, 1.0 - eps)
    return ops.log(p + ops.stop_gradient(clipped - p))


def move_axis_last(x: Tensor, axis: int) -> Tensor:
    rank = len(x.shape)
    return x if axis % rank == rank - 1 else ops.moveaxis(x, axis, -1)


def take_class(values: Tensor, ids: Tensor) -> Tensor:
    """``values[..., id]`` per example, whose gradient is ``upstream * one_hot(ids)``.

    The same numbers as the gather's own gradient, in 3 ops instead of a scatter (on TensorFlow: about 30
    graph ops of ranges, tiles and a segment sum), which is what a small batch's train step pays for.
    """

    @custom_gradient
    def kernel(values: Tensor) -> Any:
        def grad(upstream: Tensor) -> Tensor:
            return upstream[..., None] * ops.one_hot(ids, ops.shape(values)[-1], dtype=values.dtype)

        return gather_class(values, ids), grad

    return kernel(values)


def power(x: Tensor, log_x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for ``x >= 0``: repeated products for small integer exponents (exact, and no
    transcendental), else ``exp(exponent * log x)``."""
    if exponent == 0:
        return ops.ones_like(x)
    if float(exponent).is_integer() and exponent <= 4:
        result = x
        for _ in range(int(exponent) - 1):
            result = result * x
        return result
    return ops.exp(exponent * log_x)


def _top_and_rest(logits: Tensor, probs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The largest logit, which classes hold it, whether one class alone does, and the sum of the other
    classes' probabilities (``1 - p`` of a single top, floored at the smallest normal number)."""
    top = max_last(logits)
    is_top = logits == top[..., None]
    single_top = ops.sum(ops.cast(is_top, logits.dtype), axis=-1) == 1.0
    return top, is_top, single_top, at_least_tiny(ops.sum(ops.where(is_top, 0.0, probs), axis=-1))


def _top_one_minus_p(logits: Tensor, log_probs: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log p_k, 1 - p_k, log(1 - p_k))`` at the ids, accurate as ``p_k -> 1``.

    Only the top class can have ``p > 1/2``, and for it ``1 - p`` is the sum of the others' probabilities
    (floored at the dtype's smallest normal number). The top is the class whose logit equals the largest
    (a ``max``, not an ``argmax``: several times faster on XLA CPU for many classes); tied tops all have
    ``p <= 1/2`` and take the ordinary branch. Nothing of the logits' shape is built from the ids.
    """
    top, _, single_top, rest_of_top = _top_and_rest(logits, ops.exp(log_probs))
    near_one = (gather_class(logits, ids) == top) & single_top & (rest_of_top < 0.5)
    rest = ops.where(near_one, rest_of_top, 0.5)  # 0.5: a harmless stand-in where unused
    log_p = ops.where(near_one, ops.log1p(-rest), gather_class(log_probs, ids))
    p = ops.exp(log_p)
    # p <= 1/2 off the top: 1 - p = 1 - exp(log p) is accurate to a few ulps there.
    one_minus_p = ops.where(near_one, rest, 1.0 - p)
    log_one_minus_p = ops.where(near_one, ops.log(rest), ops.log1p(-ops.where(p < 0.5, p, 0.5)))
    return log_p, one_minus_p, log_one_minus_p


def sparse_focal_poly(logits: Tensor, ids: Tensor, focal_gamma: float, poly_epsilon: float) -> Tensor:
    """Per example ``-(1 - p_k)^γ log p_k + ε (1 - p_k)``, ``p = softmax(logits)``, ``k`` the class id.

    The gradient with respect to the logits is ``A (onehot(k) - p)``, with the accurate ``1 - p_k`` at
    ``k``, and ``A = (1 - p_k)^γ (γ p_k log p_k / (1 - p_k) - 1) - ε p_k``: as ``p_k -> 1`` it tends to 0
    for every ``γ > 0``, which is what is returned. A masked class (logit ``-inf``) has ``p = 0`` and
    gradient 0; a masked *label* gives loss ``+inf``.

    Args:
        logits: ``[B, C]`` logits, class axis last (any number of batch axes).
        ids: ``[B]`` int32 class ids in ``[0, C)``.
        focal_gamma: ``γ >= 0``.
        poly_epsilon: ``ε``, any finite number.

    Returns:
        ``[B]`` losses, differentiable with respect to `logits`.
    """

    @custom_gradient
    def kernel(logits: Tensor) -> Any:
        log_probs = ops.log_softmax(logits, axis=-1)
        log_p, one_minus_p, log_one_minus_p = _top_one_minus_p(logits, log_probs, ids)
        focal = power(one_minus_p, log_one_minus_p, focal_gamma)
        value = -mul_no_nan(log_p, focal)  # log p = -inf (a masked label) with focal = 1: +inf, not 0 * inf
        if poly_epsilon:
            value = value + poly_epsilon * one_minus_p

        def grad(upstream: Tensor) -> Tensor:
            p = ops.exp(log_p)
            scale = -focal
            if focal_gamma:
                scale = focal * (focal_gamma * mul_no_nan(log_p, p) / one_minus_p - 1.0)
            if poly_epsilon:
                scale = scale - poly_epsilon * p
            # onehot(k) - p, with the accurate 1 - p_k at k (1 - probs[k] rounds to 0 as p_k -> 1).
            is_label = ops.arange(ops.shape(logits)[-1], dtype="int32") == ids[..., None]
            probs = ops.exp(log_probs)
            return (upstream * scale)[..., None] * ops.where(is_label, one_minus_p[..., None], -probs)

        return value, grad

    return kernel(logits)


def _one_minus_p_all(logits: Tensor, log_probs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(p, log p, 1 - p, log(1 - p))`` for every class (class axis last), accurate as ``p -> 1``: the single
    top class's ``1 - p`` is the sum of the others' probabilities, as in `_top_one_minus_p`."""
    probs = ops.exp(log_probs)
    _, is_top, single_top, rest = _top_and_rest(logits, probs)
    near_one = is_top & (single_top & (rest < 0.5))[..., None]
    rest = rest[..., None]
    # Values only (the caller's gradient is closed-form): the unused branches may be -inf.
    log_p = ops.where(near_one, ops.log1p(-rest), log_probs)
    one_minus_p = ops.where(near_one, rest, 1.0 - probs)
    log_one_minus_p = ops.where(near_one, ops.log(rest), ops.log1p(-probs))
    return probs, log_p, one_minus_p, log_one_minus_p


def dense_focal_poly(logits: Tensor, labels: Tensor, focal_gamma: float, poly_epsilon: float) -> Tensor:
    """Per example ``Σ_c y_c [-(1 - p_c)^γ log p_c + ε (1 - p_c)]``, ``p = softmax(logits)``, for one-hot or
    soft (weighted) labels ``y``.

    Gradients in closed form: with ``g_c = y_c [γ p_c (1 - p_c)^(γ-1) log p_c - (1 - p_c)^γ - ε p_c]`` and
    ``G = Σ_c g_c``, ``d/dz_j = g_j - p_j G``, computed as ``g_j (1 - p_j) - p_j (G - g_j)`` with the accurate
    ``1 - p_j``; ``d/dy_c`` is the class's term (0 where ``y_c = 0``). A masked class (logit ``-inf``) has
    ``p = 0``: its term is ``+inf``, which a label of 0 multiplies away, and its gradient is 0.

    Args:
        logits: ``[B, C]`` logits, class axis last (any number of batch axes).
        labels: ``[B, C]`` weights of the classes (smoothed, class-weighted labels), the logits' dtype.
        focal_gamma: ``γ >= 0``.
        poly_epsilon: ``ε``, any finite number.

    Returns:
        ``[B]`` losses, differentiable with respect to `logits` and `labels`.
    """

    @custom_gradient
    def kernel(logits: Tensor, labels: Tensor) -> Any:
        p, log_p, one_minus_p, log_one_minus_p = _one_minus_p_all(logits, ops.log_softmax(logits, axis=-1))
        focal = power(one_minus_p, log_one_minus_p, focal_gamma)
        terms = -log_p * focal + poly_epsilon * one_minus_p
        value = ops.sum(mul_no_nan(terms, labels), axis=-1)

        def grad(upstream: Tensor) -> tuple[Tensor, Tensor]:
            bracket = -focal - poly_epsilon * p
            if focal_gamma:
                bracket = bracket + focal_gamma * (mul_no_nan(log_p, p) / one_minus_p) * focal
            g = bracket * labels
            others = ops.sum(g, axis=-1)[..., None] - g
            d_logits = upstream[..., None] * (g * one_minus_p - p * others)
            return d_logits, upstream[..., None] * ops.where(labels == 0, 0.0, terms)

        return value, grad

    return kernel(logits, labels)


def _sigmoid_parts(logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(softplus(-z), softplus(z), σ(z), σ(-z))`` from one ``e = exp(-|z|)``: one exponential, one
    ``log1p`` and one division per entry instead of four transcendental passes."""
    e = ops.exp(-ops.abs(logits))
    log1p_e = ops.log1p(e)
    r = 1.0 / (1.0 + e)
    positive = logits >= 0
    p = ops.where(positive, r, e * r)
    q = ops.where(positive, e * r, r)
    return ops.relu(-logits) + log1p_e, ops.relu(logits) + log1p_e, p, q


def sigmoid_focal(
    labels: Tensor,
    logits: Tensor,
    focal_gamma: float,
    positive_weight: Tensor | float | None,
    negative_weight: float | None,
) -> Tensor:
    """Per label ``-[a y (1 - p)^γ log p + b (1 - y) p^γ log(1 - p)]``, ``p = σ(z)``.

    With ``log p = -softplus(-z)``, ``log(1 - p) = -softplus(z)``, ``p = σ(z)`` and ``1 - p = σ(-z)``
    (no ``1 - p`` cancellation, finite for logits of any size). Gradients (``dp/dz = p (1 - p)``)::

        dl/dz = -[a y (1 - p)^γ (1 - p - γ p log p) + b (1 - y) p^γ (γ (1 - p) log(1 - p) - p)]
        dl/dy = -[a (1 - p)^γ log p - b p^γ log(1 - p)]

    Args:
        labels: ``[B, C]`` targets in ``[0, 1]``, the logits' dtype.
        logits: ``[B, C]`` logits.
        focal_gamma: ``γ >= 0``.
        positive_weight: ``a`` (``α`` times ``pos_weight``), broadcastable to the logits, or None for 1.
        negative_weight: ``b`` (``1 - α``), or None for 1.

    Returns:
        ``[B, C]`` per-label losses, differentiable with respect to `logits` and `labels`.
    """

    def weighted(weight: Tensor | float | None, x: Tensor) -> Tensor:
        return x if weight is None else weight * x

    @custom_gradient
    def kernel(labels: Tensor, logits: Tensor) -> Any:
        minus_log_p, minus_log_q, p, q = _sigmoid_parts(logits)
        q_gamma, p_gamma = power(q, -minus_log_q, focal_gamma), power(p, -minus_log_p, focal_gamma)
        positive = weighted(positive_weight, q_gamma * minus_log_p if focal_gamma else minus_log_p)  # -a (1-p)^γ log p
        negative = weighted(negative_weight, p_gamma * minus_log_q if focal_gamma else minus_log_q)  # -b p^γ log(1-p)
        value = negative + labels * (positive - negative)

        def grad(upstream: Tensor) -> tuple[Tensor, Tensor]:
            d_positive = weighted(
                positive_weight, -q_gamma * (q + focal_gamma * p * minus_log_p) if focal_gamma else -q
            )
            d_negative = weighted(negative_weight, p_gamma * (focal_gamma * q * minus_log_q + p) if focal_gamma else p)
            d_logits = upstream * (d_negative + labels * (d_positive - d_negative))
            return upstream * (positive - negative), d_logits

        return value, grad

    return kernel(labels, logits)
