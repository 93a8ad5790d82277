"""Softmax cross-entropy for integer class ids or one-hot / soft labels, its focal and poly forms, and the
softmax entropy."""

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
    check_label_form,
    check_smoothing,
    check_unit_interval,
    class_axis,
    compatible,
    static_shape,
    weights_vector,
)
from kerasce.losses.logits import resolve_logits

from ._backend import (  # the backend seam: framework internals live there
    argmax_last,
    do_not_convert,
    mul_no_nan,
    set_keras_mask,
    sparse_nll,
)

Tensor = Any
_FN = "softmax_cross_entropy"


def _label_form(labels: Tensor, logits: Tensor, axis: int, label_form: str, ignore_class: int | None) -> bool | None:
    """Sparse (True) or dense (False) labels from the static shapes, or None: only the run time can tell.

    Sparse: the predictions' shape without the class axis, or with a size-1 class axis. Dense: the
    predictions' shape. Labels of the predictions' rank whose class axis has an unknown size (``[None, None]``
    for ``[None, C]`` predictions, TensorFlow only) fit both; ``label_form="auto"`` then returns None and the
    caller decides on the run-time size of that axis (1: ids), unless ``ignore_class`` is set.
    """
    check_label_form(label_form)
    pred = static_shape(logits) or ()
    dims = static_shape(labels) or ()
    sparse_dims = pred[:axis] + pred[axis + 1 :]
    same_rank = len(dims) == len(pred)
    squeezable = same_rank and compatible(dims[:axis] + dims[axis + 1 :], sparse_dims)
    sparse_ok = compatible(dims, sparse_dims) or (squeezable and dims[axis] in (1, None))
    dense_ok = compatible(dims, pred)
    expected = f"integer class ids of shape {list(sparse_dims)} (or with a size-1 class axis)"
    if (label_form == "sparse" and not sparse_ok) or (label_form == "dense" and not dense_ok):
        wanted = expected if label_form == "sparse" else f"labels of shape {list(pred)}"
        raise ValueError(
            f"{_FN}: label_form={label_form!r} expects {wanted}. Received: labels of shape {list(dims)} for "
            f"predictions of shape {list(pred)} (class axis {axis})"
        )
    if not (sparse_ok or dense_ok):
        raise ValueError(
            f"{_FN}: labels must be {expected} or one-hot / soft labels of shape {list(pred)}; they match the "
            f"predictions in neither form. Received: labels of shape {list(dims)} for predictions of shape "
            f"{list(pred)} (class axis {axis})"
        )
    if label_form == "auto" and sparse_ok and dense_ok and same_rank and ignore_class is None:
        return None  # [B, ?] for [B, C]: size 1 or C, known at run time only
    return not (label_form == "dense" or not sparse_ok)


def _class_axis_and_size(labels: Tensor, logits: Tensor, axis: int) -> tuple[int, int]:
    """The class axis (non-negative) and its static size, >= 2; labels of a known rank."""
    if static_shape(labels) is None:
        raise ValueError(
            f"{_FN}: labels must have a known rank (their form is read from the shape). Received: labels of "
            f"shape {labels.shape}"
        )
    axis = class_axis(logits, axis, _FN)
    num_classes = logits.shape[axis]
    if num_classes is None or num_classes < 2:
        raise ValueError(
            f"{_FN}: the class axis (axis={axis}) of the predictions must have a static size >= 2 (a softmax over a "
            f"single class is always 1: loss 0, no gradient). Received: predictions of shape {logits.shape}. "
            "For a binary task use SigmoidCrossEntropy with one logit, or two softmax logits."
        )
    return axis, int(num_classes)


def _squeeze_ids(checks: Checks, labels: Tensor, logits: Tensor, axis: int) -> Tensor:
    """Sparse labels without their class axis (a size-1 one, if the labels have the predictions' rank).

    A take rather than a squeeze: it also compiles for a size other than 1 (the branch of a run-time decision
    that is not taken), and the check rejects that size where it would be used.
    """
    dims = static_shape(labels) or ()
    if len(dims) != len(static_shape(logits) or ()):
        return labels
    if dims[axis] is None:
        size = ops.shape(labels)[axis]
        checks.require(size == 1, f"{_FN}: sparse labels need a class axis of size 1.", "Got size", size)
    return ops.take(labels, 0, axis=axis)


def _sparse_class_ids(
    checks: Checks, labels: Tensor, num_classes: int, ignore_class: int | None
) -> tuple[Tensor, Tensor | None]:
    """Checks sparse labels and returns (int32 ids safe to gather, valid mask or None)."""
    valid = None
    if ignore_class is not None:
        valid = labels != ops.cast(ignore_class, labels.dtype)
        labels = ops.where(valid, labels, ops.zeros_like(labels))
    ignored = "" if ignore_class is None else f" (or ignore_class={ignore_class})"
    checks.require_range(
        labels,
        num_classes,
        f"{_FN}: sparse labels must be integer class ids in [0, {num_classes}){ignored}. "
        "(Soft labels need the same shape as the predictions.)",
        high_inclusive=False,
        integral=True,
        per_example=True,
    )
    # Clipped while a check's verdict is still to come, so that a bad id never reaches the gather (it would
    # raise its own error before the check's; traced, the check cannot raise and the gated value is NaN anyway).
    ids = ops.cast(labels, "int32")
    return (ops.clip(ids, 0, num_classes - 1) if checks.deferred else ids), valid


def _log_probs(predictions: Tensor, from_logits: bool) -> Tensor:
    """``log p`` per class (class axis last): a log-softmax of logits, or the clipped log of probabilities."""
    return ops.log_softmax(predictions, axis=-1) if from_logits else kernels.log_clipped(predictions)


def _dense_nll(
    checks: Checks,
    labels: Tensor,
    logits_in: Tensor,
    logits: Tensor,
    *,
    axis: int,
    from_logits: bool,
    label_smoothing: float,
    weights: Tensor | None,
    focal_gamma: float,
    poly_epsilon: float,
) -> Tensor:
    """``-Σ_c w_c ỹ_c log p_c`` (or the focal / poly terms) for one-hot / soft labels; class axis last."""
    labels = as_float(labels)
    labels = checks.require_same_shape(
        labels, logits_in, f"{_FN}: one-hot / soft labels must have the predictions' shape."
    )
    labels = ops.cast(kernels.move_axis_last(labels, axis), logits.dtype)
    labels = check_unit_interval(checks, labels, "one-hot / soft labels", _FN, labels=True)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / logits.shape[-1]
    if weights is not None:
        labels = labels * weights
    if (focal_gamma or poly_epsilon) and from_logits:
        return kernels.dense_focal_poly(logits, labels, focal_gamma, poly_epsilon)
    log_probs = _log_probs(logits, from_logits)
    if focal_gamma or poly_epsilon:
        terms = _focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon)
        return ops.sum(mul_no_nan(terms, labels), axis=-1)
    # A class with label 0 adds 0 even where its log-probability is -inf (a masked logit), not NaN.
    return -ops.sum(mul_no_nan(log_probs, labels), axis=-1)


def _nll_at_ids(logits: Tensor, ids: Tensor, from_logits: bool, focal_gamma: float, poly_epsilon: float) -> Tensor:
    """``-log p_k`` (or the focal / poly terms) at the ids, building ``[B, C]`` log-probabilities only where
    needed: from logits, the focal form is a kernel of its own and the plain one the backend's fastest form."""
    focal_poly = bool(focal_gamma or poly_epsilon)
    if from_logits and focal_poly:
        return kernels.sparse_focal_poly(logits, ids, focal_gamma, poly_epsilon)
    fast = sparse_nll(logits, ids) if from_logits else None
    if fast is not None:
        return fast
    log_probs = _log_probs(logits, from_logits)
    if focal_poly:
        return _focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon, ids)
    return -kernels.take_class(log_probs, ids)


def _sparse_nll(
    checks: Checks,
    labels: Tensor,
    logits: Tensor,
    *,
    from_logits: bool,
    label_smoothing: float,
    weights: Tensor | None,
    ignore_class: int | None,
    focal_gamma: float,
    poly_epsilon: float,
) -> Tensor:
    """``-log p_k`` (or the focal / poly terms at ``k``), smoothed and weighted, for class ids ``k``."""
    ids, valid = _sparse_class_ids(checks, labels, logits.shape[-1], ignore_class)
    focal_poly = bool(focal_gamma or poly_epsilon)
    nll = _nll_at_ids(logits, ids, from_logits, focal_gamma, poly_epsilon)
    if weights is not None:
        nll = nll * ops.take(weights, ids)
    if label_smoothing:
        # Σ_c over [B, C] terms from the log-probabilities: still no one-hot labels.
        log_probs = _log_probs(logits, from_logits)
        terms = _focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon) if focal_poly else -log_probs
        uniform_nll = kernels.mean(terms if weights is None else terms * weights, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll
    if valid is not None:
        nll = ops.where(valid, nll, ops.zeros_like(nll))
        # Keras's Loss.__call__ reads this mask and averages over the unmasked positions only (what its own
        # sparse_categorical_crossentropy does for ignore_class).
        set_keras_mask(nll, valid)
    return nll


def _log_p_and_log1m_p(log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p, log(1 - p))`` for ``p = exp(log_probs)`` (a log-softmax, class axis last), accurate as ``p -> 1``.

    ``log1p(-p)`` rounds to ``log(0)`` near ``p = 1``. Only the top class (``argmax``) can have ``p > 1/2``,
    so the other classes use ``log p`` as given and ``log1p(-p)``, and the top class uses
    ``S = Σ_{c ≠ top} p_c / p_top``, summed from the other classes instead of subtracted from 1:
    ``log p = -log1p(S)``, ``log(1 - p) = log S - log1p(S)``. ``S`` is floored at the dtype's smallest
    normal number, which keeps values and gradients finite for logits of any size.
    """
    top = argmax_last(log_probs)
    is_top = ops.arange(log_probs.shape[-1], dtype="int32") == top[..., None]
    log_p_top = kernels.take_class(log_probs, top)
    ratios = ops.where(is_top, ops.zeros_like(log_probs), ops.exp(log_probs - log_p_top[..., None]))
    rest = kernels.at_least_tiny(ops.sum(ratios, axis=-1))
    log_p_top = -ops.log1p(rest)[..., None]
    log1m_top = ops.log(rest)[..., None] + log_p_top
    # The top entries get a dummy p in log1p: the unused branch of a where must not produce inf / NaN gradients.
    p = ops.exp(ops.where(is_top, -ops.ones_like(log_probs), log_probs))
    return ops.where(is_top, log_p_top, log_probs), ops.where(is_top, log1m_top, ops.log1p(-p))


def _focal_poly_terms(log_p: Tensor, log1m_p: Tensor, focal_gamma: float, poly_epsilon: float) -> Tensor:
    """Per class ``-(1 - p)^γ log p + ε (1 - p)``, with ``(1 - p)^γ = exp(γ log(1 - p))``."""
    if focal_gamma == 0:
        focal = log_p
    else:
        # A masked class (logit -inf, so log p = -inf) keeps its -inf value, which a label of 0 multiplies
        # away; the inner where keeps -inf out of the product, whose gradient would be 0 x inf = NaN.
        finite = ops.isfinite(log_p)
        safe = ops.where(finite, log_p, ops.zeros_like(log_p))
        focal = ops.where(finite, ops.exp(focal_gamma * log1m_p) * safe, log_p)
    return poly_epsilon * ops.exp(log1m_p) - focal if poly_epsilon else -focal


def _focal_poly(
    log_probs: Tensor,
    predictions: Tensor,
    from_logits: bool,
    focal_gamma: float,
    poly_epsilon: float,
    ids: Tensor | None = None,
) -> Tensor:
    """The focal / poly per-class terms: ``[B, C]`` for every class, or ``[B]`` at the `ids` (probabilities).

    `predictions` are the logits, or the probabilities when ``from_logits=False`` (the only case with ids:
    from logits, `kernels.sparse_focal_poly` is the form at the ids).
    """
    if from_logits:
        log_p, log1m_p = _log_p_and_log1m_p(log_probs)
    else:
        # Probabilities as given: 1 - p is as accurate as the input; clipped like log p (value only).
        pick = (lambda x: x) if ids is None else (lambda x: kernels.take_class(x, ids))
        log_p, log1m_p = pick(log_probs), kernels.log_clipped(1.0 - pick(predictions))
    return _focal_poly_terms(log_p, log1m_p, focal_gamma, poly_epsilon)


@do_not_convert
def softmax_cross_entropy(
    labels: Any,
    logits: Any,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    class_weight: Sequence[float] | np.ndarray | Tensor | None = None,
    ignore_class: int | None = None,
    axis: int = -1,
    label_form: str = "auto",
    focal_gamma: float = 0.0,
    poly_epsilon: float = 0.0,
) -> Tensor:
    r"""Softmax cross-entropy per example, for integer class ids or one-hot / soft labels; focal and poly forms.

    With ``p = softmax(logits)`` over the class axis, smoothed labels
    ``ỹ = (1 - ε) y + ε / C`` and class weights ``w`` (all ones by default)::

        loss = -Σ_c w_c ỹ_c log p_c                      (computed as log p = z - logsumexp(z))

    With ``focal_gamma = γ`` and ``poly_epsilon = ε₁`` (both 0 by default, which is the loss above, bit
    for bit)::

        loss = Σ_c w_c ỹ_c [-(1 - p_c)^γ log p_c + ε₁ (1 - p_c)]

    the focal loss (Lin et al., 2017; ``w`` plays the role of its per-class ``α``) plus the Poly-1 term
    (Leng et al., 2022). For labels that sum to 1 and no class weights the poly term is ``ε₁ (1 - Σ_c ỹ_c
    p_c)``, the paper's ``ε₁ (1 - p_t)`` with smoothed labels. It is weighted by ``w_c ỹ_c`` like the
    cross-entropy term, so a class of weight 0 adds nothing and an all-zero (masked) dense label row gives
    loss 0. ``(1 - p)^γ`` is ``exp(γ log(1 - p))``; where ``p > 1/2``, ``log p`` and ``log(1 - p)`` come from
    the sum of the other classes' probabilities (no ``1 - p`` rounding to 0): values and gradients stay
    finite, and accurate, for logits of any size. As ``p -> 1`` the focal
    term's gradient with respect to the logits tends to 0 for every ``γ > 0`` (also ``0 < γ < 1``, where
    ``d(1 - p)^γ / dp`` itself is infinite: it is multiplied by ``log p · dp/dz -> 0``), and that exact
    limit is what is returned. With ``from_logits=False``, ``1 - p`` is clipped to ``[eps, 1 - eps]`` like
    ``p`` (value only), so the gradient stays finite there too. With both options on, the poly term is
    added as written, not as the paper's focal variant ``ε₁ (1 - p_t)^(γ+1)``. A masked class (logit
    ``-inf``) with label 0 adds 0, with a finite gradient.

    Integer labels ``k`` mean ``y = one_hot(k)``, so the unsmoothed, unweighted sparse loss is
    ``logsumexp(z) - z_k``. Its gradient with respect to the logits is ``(Σ_c w_c ỹ_c) p - w ⊙ ỹ``
    (``softmax(z) - y`` in the plain case).

    Args:
        labels: Either integer class ids of shape ``[B]`` (the predictions' shape without the class axis)
            or ``[B, 1]`` (a size-1 class axis), int or integer-valued float; or one-hot / soft labels of
            the predictions' shape ``[B, C]`` with values in ``[0, 1]``. The form is read from the shapes (see
            `label_form`).
        logits: Predictions ``[B, C]``: logits, or probabilities if ``from_logits=False``. ``C >= 2``
            and known statically. Any rank; ``axis`` names the class axis.
        from_logits: Whether ``logits`` are logits (default) or probabilities in ``[0, 1]`` (used as
            given: ``p`` is not renormalised to sum to 1, unlike Keras's ``categorical_crossentropy``).
        label_smoothing: ``ε`` in ``[0, 1]``; mixes the labels with the uniform distribution.
        class_weight: Optional ``[C]`` weights ``w_c``, one per class.
        ignore_class: Optional class id (for example 255 or -1 in segmentation maps) whose positions get
            loss 0 and are masked out of the Keras mean (the returned tensor carries a Keras mask). Only
            for integer labels.
        axis: The class axis of ``logits`` (and of dense labels).
        label_form: ``"auto"`` (default) reads the form from the shapes; where they fit both forms when the
            graph is traced (labels ``[B, ?]`` for predictions ``[B, C]``), it decides at run time on the size
            of the labels' class axis: 1 means class ids. ``"sparse"`` or ``"dense"`` state the form.
        focal_gamma: ``γ >= 0``, the focal exponent (2 in Lin et al.); 0 turns the focal factor off.
        poly_epsilon: ``ε₁``, the Poly-1 coefficient (any finite number; the paper uses values in
            ``[-1, ∞)``, where the loss stays a decreasing function of ``p``); 0 turns it off.

    Returns:
        Loss per example, shape ``[B]`` (``logits`` without its class axis); float32 for half-precision
        inputs, else the dtype of ``logits``. Where nothing can raise at run time (TF XLA, ``jax.jit``,
        ``torch.compile``), bad values make the result NaN instead (the examples with a bad class id, or all
        of it; so the mean loss and its gradients are NaN: see `kerasce.losses`).

    Raises:
        ValueError: ``C < 2`` or unknown, label and prediction shapes that match neither form, a
            ``class_weight`` of the wrong length, ``label_smoothing`` outside ``[0, 1]``, ``ignore_class``
            with dense labels, an unknown `label_form` or labels that do not have its shape, ``focal_gamma``
            negative or not finite, ``poly_epsilon`` not finite.
        tf.errors.InvalidArgumentError (TensorFlow) or ValueError (JAX, torch), where the values are known:
            (see `kerasce.losses`) sparse labels outside ``[0, C)`` (other than ``ignore_class``) or not
            integers; dense labels outside ``[0, 1]`` or (shapes known at run time only) not of the
            predictions' shape; probabilities outside ``[0, 1]``.

    References:
        Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.3; Szegedy et al., *Rethinking the
        Inception Architecture* (2016), §7, for label smoothing; Lin et al., *Focal Loss for Dense Object
        Detection* (2017), eq. 5; Leng et al., *PolyLoss* (ICLR 2022), eq. 3 (Poly-1).
    """
    check_smoothing(label_smoothing)
    check_focal_options(focal_gamma, poly_epsilon)
    logits, from_logits = resolve_logits(logits, from_logits, _FN, "softmax")
    logits = as_float(logits)
    labels = ops.convert_to_tensor(labels)
    axis, num_classes = _class_axis_and_size(labels, logits, axis)
    options: dict[str, Any] = dict(
        from_logits=from_logits, label_smoothing=label_smoothing, class_weight=class_weight, axis=axis
    )
    options.update(focal_gamma=focal_gamma, poly_epsilon=poly_epsilon)
    sparse = _label_form(labels, logits, axis, label_form, ignore_class)
    if sparse is None:  # TensorFlow's [None, None] labels for [None, C] predictions: decided at run time
        return ops.cond(
            ops.shape(labels)[axis] == 1,
            lambda: softmax_cross_entropy(labels, logits, label_form="sparse", **options),
            lambda: softmax_cross_entropy(labels, logits, label_form="dense", **options),
        )
    if not sparse and ignore_class is not None:
        raise ValueError(
            f"{_FN}: `ignore_class` needs integer class ids; mask dense labels with sample_weight instead. "
            f"Received: ignore_class={ignore_class} with one-hot / soft labels of shape {labels.shape}"
        )
    checks = Checks(logits)
    weights = weights_vector(class_weight, num_classes, "class_weight", logits.dtype)
    last = kernels.move_axis_last(logits, axis)
    if not from_logits:
        last = check_unit_interval(checks, last, "probabilities (from_logits=False)", _FN)
    terms: dict[str, Any] = dict(from_logits=from_logits, label_smoothing=label_smoothing, weights=weights)
    terms.update(focal_gamma=focal_gamma, poly_epsilon=poly_epsilon)
    if sparse:
        ids = _squeeze_ids(checks, labels, logits, axis)
        return checks.gate(_sparse_nll(checks, ids, last, ignore_class=ignore_class, **terms))
    return checks.gate(_dense_nll(checks, labels, logits, last, axis=axis, **terms))


@do_not_convert
def softmax_entropy(logits: Any, axis: int = -1) -> Tensor:
    """Entropy of the softmax distribution per example, ``H = -Σ_c p_c log p_c`` with ``p = softmax(z)``.

    Args:
        logits: ``[B, C]`` logits; ``axis`` names the class axis. ``-inf`` logits (masked classes) add 0.

    Returns:
        ``[B]`` entropies in nats, float32 for half-precision inputs.
    """
    logits = as_float(logits)
    log_probs = ops.log_softmax(logits, axis=axis)
    probs = ops.exp(log_probs)
    # A masked class has p = 0 and log p = -inf: it adds 0, and the where keeps its -inf out of the
    # gradient too (a product that skips NaN would give the right value but an inf x 0 = NaN gradient).
    return -ops.sum(probs * ops.where(probs > 0, log_probs, ops.zeros_like(log_probs)), axis=axis)
