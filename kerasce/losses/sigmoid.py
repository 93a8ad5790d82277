"""Binary / multi-label sigmoid cross-entropy and its focal form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

import kerasce.losses.kernels as kernels
from kerasce.losses.checks import (
    Checks,
    as_float,
    check_focal_options,
    check_smoothing,
    check_unit_interval,
    class_axis,
    compatible,
    static_shape,
    weights_vector,
)
from kerasce.losses.logits import resolve_logits

from ._backend import do_not_convert, sigmoid_xent  # the backend seam: framework internals live there

Tensor = Any
_FN = "sigmoid_cross_entropy"


def _binary_shapes(labels: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """``[B]`` labels with ``[B, 1]`` predictions (or the reverse), the usual binary-classifier shapes, made
    equal; any other pair of shapes must already be compatible."""
    label_dims, pred_dims = static_shape(labels) or (), static_shape(logits) or ()
    if len(label_dims) == len(pred_dims) - 1 and pred_dims[-1] == 1:
        logits = ops.squeeze(logits, -1)
    elif len(pred_dims) == len(label_dims) - 1 and label_dims[-1] == 1:
        labels = ops.squeeze(labels, -1)
    label_dims, pred_dims = static_shape(labels) or (), static_shape(logits) or ()
    if not compatible(label_dims, pred_dims):
        raise ValueError(
            f"{_FN}: labels must have the predictions' shape. Received: labels of shape {list(label_dims)} and "
            f"predictions of shape {list(pred_dims)}"
        )
    return labels, logits


def _pos_weight(pos_weight: Any, logits: Tensor, axis: int) -> Tensor | None:
    """``pos_weight`` as a scalar or a ``[C]`` vector shaped to broadcast along the label axis."""
    if pos_weight is None:
        return None
    weight = ops.convert_to_tensor(pos_weight, logits.dtype)
    if len(weight.shape) == 0:
        return weight
    rank = len(logits.shape)
    weight = weights_vector(weight, logits.shape[axis] if rank > 1 else 1, "pos_weight", logits.dtype)
    return ops.reshape(weight, [-1] + [1] * (rank - 1 - axis))


def _per_label(
    labels: Tensor, logits: Tensor, from_logits: bool, weights: Tensor | None, focal_gamma: float, alpha: float | None
) -> Tensor:
    """The per-label loss ``l`` (see `sigmoid_cross_entropy`)."""
    if focal_gamma or alpha is not None:
        return _focal(labels, logits, from_logits, weights, focal_gamma, alpha)
    if from_logits and weights is None:
        fused = sigmoid_xent(labels, logits)
        if fused is not None:
            return fused
        return ops.softplus(logits) - labels * logits
    if from_logits and weights is not None:
        return (1.0 + (weights - 1.0) * labels) * ops.softplus(logits) - weights * labels * logits
    positive = labels * kernels.log_clipped(logits)
    if weights is not None:
        positive = positive * weights
    return -(positive + (1.0 - labels) * kernels.log_clipped(1.0 - logits))


def _focal(
    labels: Tensor,
    logits: Tensor,
    from_logits: bool,
    pos_weight: Tensor | None,
    focal_gamma: float,
    alpha: float | None,
) -> Tensor:
    """Per label ``-[α w y (1 - p)^γ log p + (1 - α)(1 - y) p^γ log(1 - p)]`` (see `sigmoid_cross_entropy`)."""
    positive_weight = pos_weight if alpha is None else alpha * (1.0 if pos_weight is None else pos_weight)
    negative_weight = None if alpha is None else 1.0 - alpha
    if from_logits:  # stable forms with a closed-form gradient
        return kernels.sigmoid_focal(labels, logits, focal_gamma, positive_weight, negative_weight)
    log_p, log_q = kernels.log_clipped(logits), kernels.log_clipped(1.0 - logits)
    positive, negative = labels * log_p, (1.0 - labels) * log_q
    if focal_gamma:
        positive = positive * ops.exp(focal_gamma * log_q)
        negative = negative * ops.exp(focal_gamma * log_p)
    if positive_weight is not None:
        positive = positive * positive_weight
    if negative_weight is not None:
        negative = negative * negative_weight
    return -(positive + negative)


@do_not_convert
def sigmoid_cross_entropy(
    labels: Any,
    logits: Any,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    pos_weight: Sequence[float] | np.ndarray | Tensor | float | None = None,
    axis: int = -1,
    focal_gamma: float = 0.0,
    alpha: float | None = None,
) -> Tensor:
    r"""Binary / multi-label sigmoid cross-entropy, averaged over the label axis; focal form.

    With ``σ`` the logistic function, smoothed labels ``ỹ = (1 - ε) y + ε / 2`` and positive-class weights
    ``w`` (ones by default), per label::

        l = -[w ỹ log σ(z) + (1 - ỹ) log(1 - σ(z))]
          = (1 + (w - 1) ỹ) softplus(z) - w ỹ z          (stable: one softplus, no exp overflow)

    and the result is the mean of ``l`` over the ``C`` labels. ``w > 1`` counts positives more (rare
    labels), ``w < 1`` less. Rank-1 inputs ``[B]`` are ``B`` binary examples: nothing is averaged.

    With ``focal_gamma = γ`` and ``alpha = α`` (Lin et al., 2017, eq. 5, for soft labels too)::

        l = -[α w ỹ (1 - p)^γ log p + (1 - α)(1 - ỹ) p^γ log(1 - p)],     p = σ(z)

    ``alpha=None`` (default) means no balancing: both ``α`` and ``1 - α`` are replaced by 1 (with ``γ = 0``
    that is the loss above, bit for bit). ``alpha`` and ``pos_weight`` combine by multiplying: the positive
    term's weight is ``α w``, the negative term's ``1 - α``. For hard 0/1 labels this is
    ``-α_t (1 - p_t)^γ log p_t`` of the paper, torchvision's and Optax's ``sigmoid_focal_loss``, and Keras's
    ``BinaryFocalCrossentropy`` (``apply_class_balancing=True`` for an ``alpha``); for soft labels each side
    keeps its own focal factor. Computed as ``log p = -softplus(-z)``, ``log(1 - p) = -softplus(z)``,
    ``(1 - p)^γ = exp(-γ softplus(z))``: finite values and gradients for logits of any size, and the
    gradient with respect to the logits tends to 0 as ``p -> 1`` for every ``γ > 0``.

    Args:
        labels: ``[B, C]`` targets in ``[0, 1]`` (multi-hot or soft); ``[B]`` also accepted for ``[B, 1]``
            predictions and vice versa.
        logits: ``[B, C]`` logits, or probabilities if ``from_logits=False``.
        from_logits: Whether ``logits`` are logits (default) or probabilities in ``[0, 1]``.
        label_smoothing: ``ε`` in ``[0, 1]``; pulls targets toward 1/2.
        pos_weight: Optional weight of the positive term: a scalar, or ``[C]`` one per label.
        axis: The label axis averaged over.
        focal_gamma: ``γ >= 0``, the focal exponent; 0 turns the focal factors off.
        alpha: ``α`` in ``[0, 1]`` balancing positives against negatives (0.25 in Lin et al.), or None.

    Returns:
        ``[B]`` losses (the label axis averaged); float32 for half-precision inputs.

    Raises:
        ValueError: label and prediction shapes differ, ``pos_weight`` of the wrong length,
            ``label_smoothing`` outside ``[0, 1]``, ``focal_gamma`` negative or not finite, ``alpha``
            outside ``[0, 1]``.
        tf.errors.InvalidArgumentError (TensorFlow) or ValueError (JAX, torch), where the values are known:
            labels or probabilities outside ``[0, 1]``; label and prediction shapes that differ at run time
            (when not known statically). Where nothing can raise (TF XLA, ``jax.jit``, ``torch.compile``) the
            result is NaN instead.

    References:
        Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2;
        ``tf.nn.weighted_cross_entropy_with_logits`` for the stable weighted form; Lin et al., *Focal Loss
        for Dense Object Detection* (2017).
    """
    check_smoothing(label_smoothing)
    check_focal_options(focal_gamma, alpha=alpha)
    logits, from_logits = resolve_logits(logits, from_logits, _FN, "sigmoid")
    logits = as_float(logits)
    labels = as_float(labels)
    class_axis(logits, axis, _FN)
    labels, logits = _binary_shapes(labels, logits)
    rank = len(logits.shape)
    labels = ops.cast(labels, logits.dtype)
    checks = Checks(logits)
    labels = checks.require_same_shape(labels, logits, f"{_FN}: labels must have the predictions' shape.")
    labels = check_unit_interval(checks, labels, "labels", _FN, labels=True)
    if not from_logits:
        logits = check_unit_interval(checks, logits, "probabilities (from_logits=False)", _FN)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    weights = _pos_weight(pos_weight, logits, axis % rank)
    per_label = _per_label(labels, logits, from_logits, weights, focal_gamma, alpha)
    return checks.gate(per_label if rank == 1 else kernels.mean(per_label, axis=axis))
