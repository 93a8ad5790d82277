"""Focal / poly loss kernels with closed-form gradients, for `kerasce.losses`.

Autodiff through the stable focal forms (log-sum-exp, softplus, ``where`` branches that keep ``inf`` out of
the gradient) builds a backward graph several times the size of the forward one; on CPU, without XLA, each
elementwise op is a pass over ``[B, C]`` memory, and that made kerasce's focal loss slower than Keras's
naive (clipped) form. Here each kernel computes its value from the same stable quantities and returns the
analytic gradient with respect to the logits (and the labels, for the sigmoid's soft labels), written in
those quantities too, so values and gradients stay finite and accurate for logits of any size, in a few
elementwise passes.

Both kernels take logits with the class / label axis last and float32 or float64 values (half precision
is cast up by the callers).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _power(x: tf.Tensor, log_x: tf.Tensor, exponent: float) -> tf.Tensor:
    """``x ** exponent`` for ``x >= 0``: repeated products for small integer exponents (exact, and no
    transcendental), else ``exp(exponent * log x)``."""
    if exponent == 0:
        return tf.ones_like(x)
    if float(exponent).is_integer() and exponent <= 4:
        result = x
        for _ in range(int(exponent) - 1):
            result = result * x
        return result
    return tf.exp(exponent * log_x)


def sparse_focal_poly(logits: tf.Tensor, ids: tf.Tensor, focal_gamma: float, poly_epsilon: float) -> tf.Tensor:
    """Per example ``-(1 - p_k)^γ log p_k + ε (1 - p_k)``, ``p = softmax(logits)``, ``k`` the class id.

    Where ``p_k > 1/2`` (then ``k`` is the top class), ``1 - p_k`` is the sum of the other classes'
    probabilities, never ``1`` minus a rounded ``p_k``: ``log p_k = log1p(-(1 - p_k))`` and
    ``log(1 - p_k)`` come from that sum (floored at the dtype's smallest normal number, ``1 - p_k`` below
    about 1e-38 in float32, where the focal factor is 0 either way). The gradient with respect to the
    logits is ``A (onehot(k) - p)``, with the accurate ``1 - p_k`` at ``k``, and
    ``A = (1 - p_k)^γ (γ p_k log p_k / (1 - p_k) - 1) - ε p_k``: as ``p_k -> 1`` it tends to 0 for every
    ``γ > 0`` (``p_k log p_k / (1 - p_k) -> -1``), which is what is returned. A masked class (logit
    ``-inf``) has ``p = 0`` and gradient 0; a masked *label* gives loss ``+inf``.

    Args:
        logits: ``[B, C]`` logits, class axis last (any number of batch axes).
        ids: ``[B]`` int32 class ids in ``[0, C)``. The forward pass builds nothing of the logits' shape
            from them (no one-hot labels); the gradient is ``[B, C]`` anyway.
        focal_gamma: ``γ >= 0``.
        poly_epsilon: ``ε``, any finite number.

    Returns:
        ``[B]`` losses, differentiable with respect to `logits`.
    """
    dtype = logits.dtype
    tiny = np.finfo(dtype.as_numpy_dtype).tiny
    batch_dims = ids.shape.rank

    @tf.custom_gradient
    def kernel(logits: tf.Tensor) -> tuple[tf.Tensor, object]:
        log_probs = tf.nn.log_softmax(logits)
        probs = tf.exp(log_probs)
        # Only the top class can have p > 1/2, and for it 1 - p is the sum of the others. The top comes from
        # the logits, so nothing of the logits' shape is built from the ids in the forward pass.
        top = tf.argmax(logits, axis=-1, output_type=tf.int32)
        is_top = tf.equal(tf.range(tf.shape(logits)[-1]), top[..., None])
        rest_of_top = tf.maximum(tf.reduce_sum(tf.where(is_top, tf.zeros_like(probs), probs), axis=-1), tiny)
        log_p_given = tf.gather(log_probs, ids, batch_dims=batch_dims)
        near_one = tf.equal(ids, top) & (rest_of_top < 0.5)
        rest = tf.where(near_one, rest_of_top, 0.5)  # 0.5: a harmless stand-in where unused
        log_p = tf.where(near_one, tf.math.log1p(-rest), log_p_given)
        p = tf.exp(log_p)
        # p <= 1/2 off the top: 1 - p = 1 - exp(log p) is accurate to a few ulps there.
        one_minus_p = tf.where(near_one, rest, 1.0 - p)
        log_one_minus_p = tf.where(near_one, tf.math.log(rest), tf.math.log1p(-tf.minimum(p, 0.5)))
        focal = _power(one_minus_p, log_one_minus_p, focal_gamma)
        # log p = -inf (a masked label) with focal = 1: +inf, not 0 * inf.
        value = -tf.math.multiply_no_nan(log_p, focal)
        if poly_epsilon:
            value += poly_epsilon * one_minus_p

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            scale = -focal
            if focal_gamma:
                # p log p = 0 at p = 0 (a masked label), not 0 * -inf.
                p_log_p = tf.math.multiply_no_nan(log_p, p)
                scale = focal * (focal_gamma * p_log_p / one_minus_p - 1.0)
            if poly_epsilon:
                scale -= poly_epsilon * p
            # onehot(k) - p, with the accurate 1 - p_k at k (1 - probs[k] rounds to 0 as p_k -> 1).
            is_label = tf.equal(tf.range(tf.shape(logits)[-1]), ids[..., None])
            return (upstream * scale)[..., None] * tf.where(is_label, one_minus_p[..., None], -probs)

        return value, grad

    return kernel(logits)


def sigmoid_focal(
    labels: tf.Tensor,
    logits: tf.Tensor,
    focal_gamma: float,
    positive_weight: tf.Tensor | float | None,
    negative_weight: float | None,
) -> tf.Tensor:
    """Per label ``-[a y (1 - p)^γ log p + b (1 - y) p^γ log(1 - p)]``, ``p = σ(z)``.

    With ``log p = -softplus(-z)``, ``log(1 - p) = -softplus(z)``, ``p = σ(z)`` and ``1 - p = σ(-z)``
    (each its own stable op: no ``1 - p`` cancellation, finite for logits of any size). Gradients
    (``dp/dz = p (1 - p)``)::

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

    @tf.custom_gradient
    def kernel(labels: tf.Tensor, logits: tf.Tensor) -> tuple[tf.Tensor, object]:
        # TF's softplus and sigmoid are the stable forms (no overflow, no 1 - p cancellation); the logs are
        # kept negated: -log p = softplus(-z), -log(1 - p) = softplus(z).
        negated = -logits
        minus_log_p, minus_log_q = tf.nn.softplus(negated), tf.nn.softplus(logits)
        p, q = tf.sigmoid(logits), tf.sigmoid(negated)
        q_gamma, p_gamma = _power(q, -minus_log_q, focal_gamma), _power(p, -minus_log_p, focal_gamma)
        positive = q_gamma * minus_log_p if focal_gamma else minus_log_p  # -(1 - p)^γ log p
        negative = p_gamma * minus_log_q if focal_gamma else minus_log_q  # -p^γ log(1 - p)
        if positive_weight is not None:
            positive = positive_weight * positive
        if negative_weight is not None:
            negative = negative_weight * negative
        value = negative + labels * (positive - negative)

        def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            # d/dz of -(1 - p)^γ log p and of -p^γ log(1 - p) (before the weights).
            d_positive = -q_gamma * (q + focal_gamma * p * minus_log_p) if focal_gamma else -q
            d_negative = p_gamma * (focal_gamma * q * minus_log_q + p) if focal_gamma else p
            if positive_weight is not None:
                d_positive = positive_weight * d_positive
            if negative_weight is not None:
                d_negative = negative_weight * d_negative
            d_logits = upstream * (d_negative + labels * (d_positive - d_negative))
            return upstream * (positive - negative), d_logits

        return value, grad

    return kernel(labels, logits)
