"""Cross-entropy losses for Keras 3, and the policy gradient as the same loss weighted by the return.

Shape letters used below: ``B`` the batch (any number of leading dimensions, e.g. ``[B, H, W]`` for
per-pixel losses), ``C`` the classes (softmax) or labels (sigmoid).

Each loss is a pure function that returns one value per example (the class axis reduced), plus a thin
``keras.losses.Loss`` class of the matching name that stores the options and lets Keras apply
``sample_weight``, the reduction, masks and the ``1 / num_replicas`` scaling under ``tf.distribute``.

Numerics shared by all functions:

* Half-precision inputs (float16, bfloat16) are computed in float32 and the result is float32; other
  float dtypes are kept.
* ``from_logits=True`` uses log-sum-exp / softplus forms, finite for logits of any magnitude.
* ``from_logits=False`` clips probabilities to ``[eps, 1 - eps]`` (``eps = keras.config.epsilon()``)
  for the *value* only. The gradient is passed straight through the clip, so a confidently wrong
  probability of exactly 0 still gets the (large, finite) gradient ``-1 / eps`` instead of the zero that a
  plain ``clip`` gives. When the probabilities come from a Keras ``softmax``/``sigmoid`` activation, the
  logits Keras caches on that tensor are used instead (as Keras's own losses do), which is exact.
* Bad input is reported and never reaches the weights. Shapes: ``ValueError`` when traced. Values (and
  shapes known only at run time): ``tf.errors.InvalidArgumentError``, eagerly or inside ``tf.function``,
  and the returned loss *and its gradient* depend on the check, so Keras's ``fit`` raises before
  ``apply_gradients``. Under XLA (``jit_compile=True``; Keras's default ``"auto"`` on a GPU) nothing can
  raise: the loss and its gradients are NaN for that batch instead; `kerasce.training` skips such updates
  in kerasce's own models and says what a model of your own gets (the stock optimizer applies the NaN).
* The label form of `softmax_cross_entropy` (class ids or one-hot / soft) is read from the shapes, at run
  time where the traced shapes fit both (``[None, None]`` labels for ``[None, C]`` predictions), or stated
  with ``label_form``.
* Every loss and option compiles under XLA (no string ops) and gives the non-XLA values; under XLA the
  fused TF cross-entropy ops are used where they compile faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # the XLA-context test has no public API

from kerasce import _focal

__all__ = [
    "PolicyGradientLoss",
    "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy",
    "policy_gradient_loss",
    "sigmoid_cross_entropy",
    "softmax_cross_entropy",
    "softmax_entropy",
]

# Slack for probabilities a hair above 1 after rounding (a float32 softmax can sum to 1 + 1e-7).
_PROBABILITY_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _as_float_tensor(x: Any) -> tf.Tensor:
    """Converts to a float tensor; half precision is promoted to float32 (the math runs in it)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating or x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    return x


def _cached_logits(pred: Any) -> tf.Tensor | None:
    """The logits a Keras softmax/sigmoid activation caches on its output, if any."""
    return getattr(pred, "_keras_logits", None)


def _check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got label_smoothing={label_smoothing}.")


def _weights_vector(
    weights: Sequence[float] | np.ndarray | tf.Tensor | None, num: int, name: str, dtype: tf.DType
) -> tf.Tensor | None:
    """Checks a per-class / per-label weight vector against the number of classes."""
    if weights is None:
        return None
    vector = tf.convert_to_tensor(weights, dtype=dtype)
    if vector.shape.rank != 1 or vector.shape[0] != num:
        raise ValueError(
            f"{name} must have one weight per class: expected shape ({num},), got {vector.shape.as_list()}."
        )
    return vector


def _check_nonnegative_weights(weights: Sequence[float] | float | None, name: str) -> list[float] | None:
    """Normalises constructor weights to a list (for get_config) and rejects negative ones."""
    if weights is None:
        return None
    values = [float(w) for w in np.asarray(weights, np.float64).reshape(-1)]
    if any(w < 0 for w in values):
        raise ValueError(f"{name} must be non-negative; got {values}.")
    return values


# The losses hold no Python control flow on tensors, so AutoGraph has nothing to rewrite in them; left to it,
# the first trace of a train step that calls one spends seconds of CPU converting this module's code
# (measured: 4.4 s for softmax_cross_entropy). Keras and TensorFlow exempt their own code the same way.
_not_autograph = tf.autograph.experimental.do_not_convert


class _Checks:
    """The run-time checks of one loss call, and the gate that ties the loss value to them.

    Each check is a scalar boolean ``ok`` plus a message. What a failed check does depends on the path:

    * eagerly, `require` raises ``InvalidArgumentError`` at once;
    * inside ``tf.function`` (no XLA), one ``Assert`` op per check fails the call. `gate` makes the loss
      value *and its gradient* depend on those asserts (through a control dependency on the factor the
      values are multiplied by), so Keras's ``fit`` raises before ``apply_gradients``: a check with no data
      dependency on the loss was measured to fire only after the optimizer had changed the weights;
    * under XLA (``jit_compile=True``) asserts are compiled out and nothing can raise, so `gate` multiplies
      the values by NaN when a check fails (or, for elementwise checks, the failing entries: fused into the
      loss's own pass): the loss and its gradients are NaN, and a train step that skips
      non-finite updates (`kerasce.training.apply_gradients_if_finite`) leaves the weights untouched.

    Assert data are the message and numeric tensors only: XLA has no kernel for string formatting
    (``tf.strings.as_string``), which would make every ``jit_compile=True`` step fail to compile.
    """

    def __init__(self) -> None:
        self._ok: list[tf.Tensor] = []
        self._asserts: list[tf.Operation] = []
        self._factors: list[tf.Tensor] = []  # XLA: elementwise 1 / NaN factors of the result
        # Traced for XLA: asserts would be compiled out, and their guarding conditionals still cost time.
        self._xla = _in_xla()

    def require(self, ok: tf.Tensor, message: str, *data: tf.Tensor) -> None:
        """Records the check `ok` (scalar bool); `data` are numeric tensors reported after `message`."""
        if tf.executing_eagerly():
            if not bool(ok):
                details = " ".join(_format_value(d) for d in data)
                raise tf.errors.InvalidArgumentError(None, None, f"{message} {details}".strip())
            return
        self._ok.append(ok)
        if not self._xla:
            # The raw op: tf.debugging.Assert wraps it in a conditional (an If op, a function call per step) when
            # its data are not all strings / int32, which only pays where copying the data is costly (a GPU).
            self._asserts.append(tf.raw_ops.Assert(condition=ok, data=[message, *data], summarize=8))

    def require_range(
        self,
        values: tf.Tensor,
        high: float,
        message: str,
        *,
        high_inclusive: bool = True,
        integral: bool = False,
        poison: bool = False,
        per_example: bool = False,
        constant: bool = False,
    ) -> tf.Tensor:
        """Checks ``0 <= values <= high`` (``< high``), and that they are integers if `integral`; the message
        reports min and max.

        Min and max (and all, if integral). NaN propagates through min / max and fails the comparison,
        so NaN is rejected too. Returns `values`. Under XLA there is no message to report, and the check
        becomes elementwise and fuses into the loss's own passes instead of a separate reduction: with
        `poison`, `values` come back NaN where out of range (the NaN reaches the loss and its gradients
        through the math); with `per_example` (`values` of the per-example result's shape, e.g. sparse ids),
        `gate` multiplies those entries of the result by NaN. With `poison`, `constant` says that no gradient
        with respect to `values` is wanted (labels): a select instead of a product with a 1 / NaN factor,
        one op less per entry (the product also makes that gradient NaN, which predictions need).
        """
        if self._xla and (poison or per_example):
            # In range iff clamping changes nothing (NaN: never equal), two ops per entry instead of three; for
            # integer ids in [0, high), iff the id clamped *as an integer* equals the value, which also rules out
            # fractions. Entries are recomputed in every fused consumer (each class of a row): cheap matters.
            if integral:
                top = math.floor(high) if high_inclusive else math.ceil(high) - 1
                clamped = tf.cast(tf.clip_by_value(tf.cast(values, tf.int32), 0, top), values.dtype)
            elif high_inclusive:
                clamped = tf.clip_by_value(values, tf.zeros([], values.dtype), tf.cast(high, values.dtype))
            else:
                raise ValueError("require_range: an exclusive bound needs integral values under XLA.")
            good = tf.equal(clamped, values)
            if poison and constant:
                return tf.where(good, values, tf.constant(float("nan"), values.dtype))
            dtype = values.dtype if values.dtype.is_floating else tf.float32
            factor = tf.where(good, tf.ones([], dtype), tf.constant(float("nan"), dtype))
            if poison:
                return values * factor
            self._factors.append(factor)
            return values
        low, top = tf.reduce_min(values), tf.reduce_max(values)
        ok = (low >= 0) & ((top <= high) if high_inclusive else (top < high))
        if integral and values.dtype.is_floating:
            # Keras's Loss.__call__ hands integer class ids over as floats: they must still be integers.
            ok &= tf.reduce_all(tf.equal(values, tf.round(values)))
        if self._xla:
            self.require(ok, message)
        else:
            self.require(ok, message, "Got values from", low, "to", top)
        return values

    def require_same_shape(self, labels: tf.Tensor, predictions: tf.Tensor, message: str) -> tf.Tensor:
        """Run-time shape equality, for shapes not fully known when the graph is traced; returns `labels`.

        The returned labels wait for the check (no copy): the math that uses them would otherwise fail first
        with its own broadcasting error.
        """
        if labels.shape.is_fully_defined() and predictions.shape.is_fully_defined():
            return labels  # already checked statically by the caller
        got, want = tf.shape(labels), tf.shape(predictions)
        self.require(tf.reduce_all(tf.equal(got, want)), message, "Got labels of shape", got, "predictions", want)
        if not self._asserts:
            return labels
        with tf.control_dependencies(self._asserts[-1:]):
            return tf.identity(labels)

    def gate(self, values: tf.Tensor) -> tf.Tensor:
        """`values` after every check has passed; NaN (value and gradient) where a check fails under XLA."""
        if not (self._ok or self._factors):
            return values
        gated = values
        for factor in self._factors:
            gated = gated * tf.cast(factor, values.dtype)
        if self._ok:
            ok = tf.reduce_all(tf.stack(self._ok))
            with tf.control_dependencies(self._asserts):
                # The gradient of values * factor is upstream * factor: it waits for the asserts too.
                factor = tf.where(ok, tf.ones([], values.dtype), tf.constant(float("nan"), values.dtype))
            gated = gated * factor
        mask = getattr(values, "_keras_mask", None)
        if mask is not None:
            gated._keras_mask = mask
        return gated


def _in_xla() -> bool:
    """Whether the code is being traced for XLA (``tf.function(jit_compile=True)``, Keras's ``jit_compile``)."""
    return not tf.executing_eagerly() and control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _true_class_nll(log_probs: tf.Tensor, logits: tf.Tensor, ids: tf.Tensor, from_logits: bool) -> tf.Tensor:
    """``-log p[id]`` per example (class axis last). Under XLA, from logits, the fused
    ``sparse_softmax_cross_entropy_with_logits`` (XLA compiles it better than log_softmax + gather: measured
    in benchmarks/losses.py); elsewhere the gather, which the fused op does not beat on CPU."""
    if from_logits and _in_xla():
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits)
    return -_take_class(log_probs, ids)


@tf.custom_gradient
def _take_class(values: tf.Tensor, ids: tf.Tensor) -> Any:
    """``values[..., id]`` per example (``tf.gather`` with ``batch_dims``), whose gradient is
    ``upstream * one_hot(ids)``: the same numbers as the gather's own gradient, in 3 graph ops instead of
    about 30 (ranges, tiles, transposes and a segment sum for the batch dimensions), which is what a small
    batch's train step pays for (measured: Keras's fused sparse op needs one)."""
    taken = tf.gather(values, ids, batch_dims=ids.shape.rank)

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        return upstream[..., None] * tf.one_hot(ids, tf.shape(values)[-1], dtype=values.dtype), None

    return taken, grad


def _softplus_minus_product(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """``softplus(z) - y z``, the unweighted sigmoid cross-entropy; under XLA the fused TF op's form
    (``max(z, 0) - y z + log1p(exp(-|z|))``), which XLA compiles faster than its softplus, with a
    closed-form gradient (`_sigmoid_xent_closed_form`)."""
    if _in_xla():
        return _sigmoid_xent_closed_form(labels, logits)
    return tf.nn.softplus(logits) - labels * logits


@tf.custom_gradient
def _sigmoid_xent_closed_form(labels: tf.Tensor, logits: tf.Tensor) -> Any:
    """``max(z, 0) - y z + log1p(e)`` with ``e = exp(-|z|)``, and the gradients ``d/dz = sigmoid(z) - y``,
    ``d/dy = -z``, where ``sigmoid(z)`` is ``1 / (1 + e)`` (``z >= 0``) or ``e / (1 + e)``: the forward's
    ``e`` serves both, and XLA's fused gradient loop has fewer ops per entry than autodiff's (measured
    kerasce / Keras under XLA, sigmoid 4096x80: 1.059 -> 1.003 and 1.047 -> 1.041 in two A/B runs).
    """
    e = tf.exp(-tf.abs(logits))
    loss = tf.nn.relu(logits) - logits * labels + tf.math.log1p(e)

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        r = 1.0 / (1.0 + e)
        return -upstream * logits, upstream * (tf.where(logits >= 0, r, e * r) - labels)

    return loss, grad


def _format_value(value: Any) -> str:
    """One datum of a check's message, eagerly: strings as they are, numbers with 6 significant digits."""
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return f"{array.item():.6g}" if array.dtype.kind == "f" else str(array.item())
    return str(array.tolist())


def _check_unit_interval(checks: _Checks, x: tf.Tensor, what: str, fn: str, *, labels: bool = False) -> tf.Tensor:
    """Run-time check that every entry of `x` lies in [0, 1]; returns `x` (NaN where not, under XLA).

    ``labels=True``: `x` are labels, whose gradient no one takes (see `_Checks.require_range`'s `constant`).
    """
    return checks.require_range(
        x, 1.0 + _PROBABILITY_TOLERANCE, f"{fn}: {what} must be in [0, 1].", poison=True, constant=labels
    )


def _log_clipped(p: tf.Tensor) -> tf.Tensor:
    """log(clip(p, eps, 1 - eps)) whose gradient passes straight through the clip.

    A plain clip has zero gradient outside [eps, 1 - eps]: a model that outputs a probability of exactly
    0 for the true class would get no signal at all. Here d/dp = 1 / clip(p): finite and never zero.
    """
    eps = keras.config.epsilon()
    clipped = tf.clip_by_value(p, eps, 1.0 - eps)
    return tf.math.log(p + tf.stop_gradient(clipped - p))


def _move_axis_last(x: tf.Tensor, axis: int) -> tf.Tensor:
    rank = x.shape.rank
    axis = axis % rank
    if axis == rank - 1:
        return x
    perm = [i for i in range(rank) if i != axis] + [axis]
    return tf.transpose(x, perm)


def _class_axis(pred: tf.Tensor, axis: int, fn: str) -> int:
    """Validates `axis` against the prediction's rank and returns it as a non-negative index."""
    rank = pred.shape.rank
    if rank is None or rank == 0:
        raise ValueError(f"{fn}: predictions need a known rank >= 1 (a class axis); got shape {pred.shape}.")
    if not -rank <= axis < rank:
        raise ValueError(f"{fn}: axis={axis} is out of range for predictions of rank {rank}.")
    return axis % rank


# --------------------------------------------------------------------------------------------------
# Softmax cross-entropy
# --------------------------------------------------------------------------------------------------


def _sparse_class_ids(
    checks: _Checks, labels: tf.Tensor, num_classes: int, ignore_class: int | None
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Checks sparse labels and returns (int32 ids safe to gather, valid mask or None)."""
    valid = None
    if ignore_class is not None:
        valid = tf.not_equal(labels, tf.cast(ignore_class, labels.dtype))
        labels = tf.where(valid, labels, tf.zeros_like(labels))
    ignored = "" if ignore_class is None else f" (or ignore_class={ignore_class})"
    checks.require_range(
        labels,
        num_classes,
        f"softmax_cross_entropy: sparse labels must be integer class ids in [0, {num_classes}){ignored}. "
        "(Soft labels need the same shape as the predictions.)",
        high_inclusive=False,
        integral=True,
        per_example=True,
    )
    # Clipped, so that a bad id never reaches the gather (on CPU it would raise its own error before the
    # check's; under XLA the check cannot raise and the gated value is NaN anyway).
    return tf.clip_by_value(tf.cast(labels, tf.int32), 0, num_classes - 1), valid


_LABEL_FORMS = ("auto", "sparse", "dense")


def _softmax_label_form(
    labels: tf.Tensor,
    logits: tf.Tensor,
    class_axis: int,
    label_form: str,
    ignore_class: int | None,
    checks: _Checks,
    fn: str,
) -> tuple[bool | None, tf.Tensor]:
    """Decides sparse (True) or dense (False) labels from the shapes, or None: only the run time can tell.

    Sparse: the predictions' shape without the class axis, or with a size-1 class axis (returned squeezed).
    Dense: the predictions' shape. Labels of the predictions' rank whose class axis has an unknown size
    (``[None, None]`` for ``[None, C]`` predictions: a ``from_generator`` dataset, a ``tf.function`` with a
    ``TensorSpec([None, None])``) fit both; ``label_form="auto"`` then returns None and the caller decides on
    the run-time size of that axis (1: ids), unless ``ignore_class`` is set (it only works with ids).
    """
    if label_form not in _LABEL_FORMS:
        raise ValueError(f"{fn}: expected label_form in {_LABEL_FORMS}; got label_form={label_form!r}.")
    pred_dims = logits.shape.as_list()
    sparse_dims = pred_dims[:class_axis] + pred_dims[class_axis + 1 :]
    shape = labels.shape
    dims = shape.as_list()
    same_rank = shape.rank == len(pred_dims)
    # Same rank, and every axis but the class axis compatible with the predictions'.
    squeezable = same_rank and tf.TensorShape(dims[:class_axis] + dims[class_axis + 1 :]).is_compatible_with(
        sparse_dims
    )
    sparse_ok = shape.is_compatible_with(sparse_dims) or (squeezable and dims[class_axis] in (1, None))
    dense_ok = shape.is_compatible_with(pred_dims)
    expected = (
        f"integer class ids of shape {sparse_dims} (or with a size-1 class axis) or one-hot / soft labels of "
        f"shape {pred_dims}"
    )
    if (label_form == "sparse" and not sparse_ok) or (label_form == "dense" and not dense_ok):
        wanted = expected.split(" or one-hot")[0] if label_form == "sparse" else f"labels of shape {pred_dims}"
        raise ValueError(
            f"{fn}: label_form={label_form!r} expects {wanted}; got labels of shape {shape} for predictions of "
            f"shape {logits.shape} (class axis {class_axis})."
        )
    if not (sparse_ok or dense_ok):
        raise ValueError(
            f"{fn}: labels of shape {shape} match predictions of shape {logits.shape} (class axis "
            f"{class_axis}) in neither form: expected {expected}."
        )
    if label_form == "auto" and sparse_ok and dense_ok and same_rank and ignore_class is None:
        return None, labels  # [B, ?] for [B, C]: size 1 or C, known at run time only
    if label_form == "dense" or not sparse_ok:
        return False, labels
    if not same_rank:
        return True, labels
    if dims[class_axis] is None:
        size = tf.shape(labels)[class_axis]
        checks.require(tf.equal(size, 1), f"{fn}: sparse labels need a class axis of size 1.", "Got size", size)
    # A gather rather than a squeeze: it also compiles for a size other than 1 (the branch of a run-time
    # decision that is not taken), and the check above rejects that size where it would be used.
    return True, tf.gather(labels, 0, axis=class_axis)


@_not_autograph
def softmax_cross_entropy(
    labels: Any,
    logits: Any,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    class_weight: Sequence[float] | np.ndarray | tf.Tensor | None = None,
    ignore_class: int | None = None,
    axis: int = -1,
    label_form: str = "auto",
    focal_gamma: float = 0.0,
    poly_epsilon: float = 0.0,
) -> tf.Tensor:
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
        inputs, else the dtype of ``logits``. Under XLA, where nothing can raise at run time, bad values make
        the result NaN instead (the examples with a bad class id, or all of it; so the mean loss and its
        gradients are NaN: see the module docstring).

    Raises:
        ValueError: ``C < 2`` or unknown, label and prediction shapes that match neither form, a
            ``class_weight`` of the wrong length, ``label_smoothing`` outside ``[0, 1]``, ``ignore_class``
            with dense labels, an unknown `label_form` or labels that do not have its shape, ``focal_gamma``
            negative or not finite, ``poly_epsilon`` not finite.
        tf.errors.InvalidArgumentError: sparse labels outside ``[0, C)`` (other than ``ignore_class``) or
            not integers; dense labels outside ``[0, 1]`` or (shapes known at run time only) not of the
            predictions' shape; probabilities outside ``[0, 1]``.

    References:
        Goodfellow, Bengio & Courville, *Deep Learning* (2016), §6.2.2.3; Szegedy et al., *Rethinking the
        Inception Architecture* (2016), §7, for label smoothing; Lin et al., *Focal Loss for Dense Object
        Detection* (2017), eq. 5; Leng et al., *PolyLoss* (ICLR 2022), eq. 3 (Poly-1).
    """
    fn = "softmax_cross_entropy"
    _check_smoothing(label_smoothing)
    _check_focal_options(focal_gamma, poly_epsilon)
    focal_poly = bool(focal_gamma or poly_epsilon)
    cached = None if from_logits else _cached_logits(logits)
    if cached is not None:
        logits, from_logits = cached, True
    logits = _as_float_tensor(logits)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank is None:
        raise ValueError(f"{fn}: labels need a known rank (their form is read from the shape); got {labels.shape}.")
    class_axis = _class_axis(logits, axis, fn)
    num_classes = logits.shape[class_axis]
    if num_classes is None:
        raise ValueError(f"{fn}: the class axis (axis={axis}) of the predictions must have a static size.")
    if num_classes < 2:
        raise ValueError(
            f"{fn}: a softmax over a single class is always 1 (loss 0, no gradient); got {num_classes} class "
            f"on axis {axis} of predictions with shape {logits.shape}. For a binary task use "
            "SigmoidCrossEntropy with one logit, or two softmax logits."
        )

    checks = _Checks()
    sparse, labels = _softmax_label_form(labels, logits, class_axis, label_form, ignore_class, checks, fn)
    if sparse is None:

        def with_form(form: str) -> Callable[[], tf.Tensor]:
            return lambda: softmax_cross_entropy(
                labels,
                logits,
                from_logits=from_logits,
                label_smoothing=label_smoothing,
                class_weight=class_weight,
                axis=axis,
                label_form=form,
                focal_gamma=focal_gamma,
                poly_epsilon=poly_epsilon,
            )

        is_sparse = tf.equal(tf.shape(labels)[class_axis], 1)
        return tf.cond(is_sparse, with_form("sparse"), with_form("dense"))
    label_shape = labels.shape

    weights = _weights_vector(class_weight, num_classes, "class_weight", logits.dtype)
    logits_in = logits
    logits = _move_axis_last(logits, class_axis)
    if not from_logits:
        logits = _check_unit_interval(checks, logits, "probabilities (from_logits=False)", fn)
    log_probs = tf.nn.log_softmax(logits) if from_logits else _log_clipped(logits)

    if sparse:
        ids, valid = _sparse_class_ids(checks, labels, num_classes, ignore_class)
        if focal_poly:
            nll = _softmax_focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon, ids)
        else:
            nll = _true_class_nll(log_probs, logits, ids, from_logits)
        if weights is not None:
            nll *= tf.gather(weights, ids)
        if label_smoothing:
            if focal_poly:  # Σ_c over [B, C] terms from the log-probabilities: still no one-hot labels.
                terms = _softmax_focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon)
                uniform_nll = tf.reduce_mean(terms if weights is None else terms * weights, axis=-1)
            else:
                uniform_nll = -tf.reduce_mean(log_probs if weights is None else log_probs * weights, axis=-1)
            nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform_nll
        if valid is not None:
            nll = tf.where(valid, nll, tf.zeros_like(nll))
            # Keras's Loss.__call__ reads this attribute and averages over the unmasked positions only
            # (what its own sparse_categorical_crossentropy does for ignore_class).
            nll._keras_mask = valid
        return checks.gate(nll)

    if ignore_class is not None:
        raise ValueError(
            f"{fn}: ignore_class={ignore_class} needs integer class ids; got one-hot / soft labels of shape "
            f"{label_shape}. Mask dense labels with sample_weight instead."
        )
    labels = _as_float_tensor(labels)
    labels = checks.require_same_shape(
        labels, logits_in, f"{fn}: one-hot / soft labels must have the predictions' shape."
    )
    labels = tf.cast(_move_axis_last(labels, class_axis), log_probs.dtype)
    labels = _check_unit_interval(checks, labels, "one-hot / soft labels", fn, labels=True)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
    if weights is not None:
        labels *= weights
    if focal_poly:
        terms = _softmax_focal_poly(log_probs, logits, from_logits, focal_gamma, poly_epsilon)
        return checks.gate(tf.reduce_sum(tf.math.multiply_no_nan(terms, labels), axis=-1))
    # A class with label 0 adds 0 even where its log-probability is -inf (a masked logit), not NaN.
    return checks.gate(-tf.reduce_sum(tf.math.multiply_no_nan(log_probs, labels), axis=-1))


# Focal / poly terms (issue 11). Kept apart from the function above so that its check code stays as it is.


def _check_focal_options(focal_gamma: float, poly_epsilon: float = 0.0, alpha: float | None = None) -> None:
    """Rejects a negative or non-finite ``focal_gamma``, a non-finite ``poly_epsilon``, ``alpha`` outside [0, 1]."""
    if not (math.isfinite(float(focal_gamma)) and float(focal_gamma) >= 0.0):
        raise ValueError(f"focal_gamma must be a finite number >= 0 (0 turns the focal term off); got {focal_gamma}.")
    if not math.isfinite(float(poly_epsilon)):
        raise ValueError(f"poly_epsilon must be a finite number (0 turns the poly term off); got {poly_epsilon}.")
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (or None for no balancing); got alpha={alpha}.")


def _softmax_log_p_and_log1m_p(log_probs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(log p, log(1 - p))`` for ``p = exp(log_probs)`` (a log-softmax, class axis last), accurate as ``p -> 1``.

    ``log1p(-p)`` is accurate only while ``1 - p`` is not tiny: near ``p = 1`` it rounds to ``log(0)``
    (value -inf, gradient NaN), and a float32 log-softmax rounds ``log p`` to 0 once ``1 - p < 6e-8``.
    Only the top class (``argmax``) can have ``p > 1/2``, so the other classes use ``log p`` as given and
    ``log1p(-p)``, and the top class uses ``S = Σ_{c ≠ top} p_c / p_top``, summed from the other classes
    instead of subtracted from 1: ``log p = -log1p(S)``, ``log(1 - p) = log S - log1p(S)``. One class is
    the top even among tied logits (the others count 1 each in ``S``, with their gradients). ``S`` is
    floored at the dtype's smallest normal number (``1 - p`` below about 1e-38 in float32), which keeps
    values and gradients finite for logits of any size; the focal term is 0 there either way.

    Args:
        log_probs: ``[B, C]`` log-probabilities.

    Returns:
        Two ``[B, C]`` tensors.
    """
    top = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    is_top = tf.equal(tf.range(tf.shape(log_probs)[-1]), top[..., None])
    log_p_top = _take_class(log_probs, top)
    ratios = tf.where(is_top, tf.zeros_like(log_probs), tf.exp(log_probs - log_p_top[..., None]))
    rest = tf.maximum(tf.reduce_sum(ratios, axis=-1), np.finfo(log_probs.dtype.as_numpy_dtype).tiny)
    log_p_top = -tf.math.log1p(rest)[..., None]
    log1m_top = tf.math.log(rest)[..., None] + log_p_top
    # The top entries get a dummy p in log1p: the unused branch of a where must not produce inf / NaN gradients.
    p = tf.exp(tf.where(is_top, -tf.ones_like(log_probs), log_probs))
    return tf.where(is_top, log_p_top, log_probs), tf.where(is_top, log1m_top, tf.math.log1p(-p))


def _focal_poly_terms(log_p: tf.Tensor, log1m_p: tf.Tensor, focal_gamma: float, poly_epsilon: float) -> tf.Tensor:
    """Per class ``-(1 - p)^γ log p + ε (1 - p)``, with ``(1 - p)^γ = exp(γ log(1 - p))``."""
    if focal_gamma == 0:
        focal = log_p
    else:
        # A masked class (logit -inf, so log p = -inf) keeps its -inf value, which a label of 0 multiplies
        # away; the inner where keeps -inf out of the product, whose gradient would be 0 x inf = NaN.
        finite = tf.math.is_finite(log_p)
        safe = tf.where(finite, log_p, tf.zeros_like(log_p))
        focal = tf.where(finite, tf.exp(focal_gamma * log1m_p) * safe, log_p)
    return poly_epsilon * tf.exp(log1m_p) - focal if poly_epsilon else -focal


def _softmax_focal_poly(
    log_probs: tf.Tensor,
    predictions: tf.Tensor,
    from_logits: bool,
    focal_gamma: float,
    poly_epsilon: float,
    ids: tf.Tensor | None = None,
) -> tf.Tensor:
    """The focal / poly per-class terms of `softmax_cross_entropy`, for every class or at the ids.

    Args:
        log_probs: ``[B, C]`` log-probabilities.
        predictions: ``[B, C]`` logits, or probabilities when ``from_logits=False``.
        from_logits: Which of the two `predictions` are.
        ids: Optional ``[B]`` class ids: the terms of those classes only (gathered, no one-hot).

    Returns:
        ``[B, C]`` terms, or ``[B]`` with `ids`.
    """
    if from_logits and ids is not None:  # the common case: one kernel with a closed-form gradient
        return _focal.sparse_focal_poly(predictions, ids, focal_gamma, poly_epsilon)
    if from_logits:
        log_p, log1m_p = _softmax_log_p_and_log1m_p(log_probs)
    else:
        # Probabilities as given: 1 - p is as accurate as the input; clipped like log p (value only).
        gather = (lambda x: x) if ids is None else (lambda x: _take_class(x, ids))
        log_p, log1m_p = gather(log_probs), _log_clipped(1.0 - gather(predictions))
    return _focal_poly_terms(log_p, log1m_p, focal_gamma, poly_epsilon)


@_not_autograph
def softmax_entropy(logits: Any, axis: int = -1) -> tf.Tensor:
    """Entropy of the softmax distribution per example, ``H = -Σ_c p_c log p_c`` with ``p = softmax(z)``.

    Args:
        logits: ``[B, C]`` logits; ``axis`` names the class axis. ``-inf`` logits (masked classes) add 0.

    Returns:
        ``[B]`` entropies in nats, float32 for half-precision inputs.
    """
    logits = _as_float_tensor(logits)
    log_probs = tf.nn.log_softmax(logits, axis=axis)
    probs = tf.exp(log_probs)
    # A masked class has p = 0 and log p = -inf: it adds 0, and the where keeps its -inf out of the
    # gradient too (multiply_no_nan would give the right value but an inf x 0 = NaN gradient).
    return -tf.reduce_sum(probs * tf.where(probs > 0, log_probs, tf.zeros_like(log_probs)), axis=axis)


def _per_step(returns: Any, cross_entropy: tf.Tensor) -> tf.Tensor:
    """`returns` shaped like the per-step losses: a trailing size-1 axis is dropped, other shapes rejected."""
    returns = tf.convert_to_tensor(returns)
    if returns.shape.rank == cross_entropy.shape.rank + 1 and returns.shape[-1] == 1:
        returns = tf.squeeze(returns, -1)
    if returns.shape.rank != cross_entropy.shape.rank or not returns.shape.is_compatible_with(cross_entropy.shape):
        raise ValueError(
            f"policy_gradient_loss: expected returns of shape {cross_entropy.shape.as_list()} (one per step), "
            f"got {returns.shape.as_list()}."
        )
    return returns


@_not_autograph
def policy_gradient_loss(actions: Any, logits: Any, returns: Any) -> tf.Tensor:
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
    returns = _per_step(returns, cross_entropy)
    return tf.stop_gradient(tf.cast(returns, cross_entropy.dtype)) * cross_entropy  # G_t is a constant weight


# --------------------------------------------------------------------------------------------------
# Sigmoid cross-entropy
# --------------------------------------------------------------------------------------------------


@_not_autograph
def sigmoid_cross_entropy(
    labels: Any,
    logits: Any,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    pos_weight: Sequence[float] | np.ndarray | tf.Tensor | float | None = None,
    axis: int = -1,
    focal_gamma: float = 0.0,
    alpha: float | None = None,
) -> tf.Tensor:
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
        tf.errors.InvalidArgumentError: labels or probabilities outside ``[0, 1]``; label and prediction
            shapes that differ at run time (when not known statically). Under XLA the result is NaN instead.

    References:
        Bishop, *Pattern Recognition and Machine Learning* (2006), §4.3.2;
        ``tf.nn.weighted_cross_entropy_with_logits`` for the stable weighted form; Lin et al., *Focal Loss
        for Dense Object Detection* (2017).
    """
    fn = "sigmoid_cross_entropy"
    _check_smoothing(label_smoothing)
    _check_focal_options(focal_gamma, alpha=alpha)
    cached = None if from_logits else _cached_logits(logits)
    if cached is not None:
        logits, from_logits = cached, True
    logits = _as_float_tensor(logits)
    labels = _as_float_tensor(labels)
    _class_axis(logits, axis, fn)
    # [B] labels with [B, 1] predictions (or the reverse): the usual binary-classifier shapes.
    if labels.shape.rank == logits.shape.rank - 1 and logits.shape[-1] == 1:
        logits = tf.squeeze(logits, -1)
    elif logits.shape.rank == labels.shape.rank - 1 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if not labels.shape.is_compatible_with(logits.shape):
        raise ValueError(
            f"{fn}: labels must have the predictions' shape; got labels {labels.shape} and predictions {logits.shape}."
        )
    rank = logits.shape.rank
    label_axis = axis % rank
    labels = tf.cast(labels, logits.dtype)
    checks = _Checks()
    labels = checks.require_same_shape(labels, logits, f"{fn}: labels must have the predictions' shape.")
    labels = _check_unit_interval(checks, labels, "labels", fn, labels=True)
    if not from_logits:
        logits = _check_unit_interval(checks, logits, "probabilities (from_logits=False)", fn)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing

    weights = None
    if pos_weight is not None:
        pos_weight_tensor = tf.convert_to_tensor(pos_weight, logits.dtype)
        if pos_weight_tensor.shape.rank == 0:
            weights = pos_weight_tensor
        else:
            num_labels = logits.shape[label_axis] if rank > 1 else 1
            weights = _weights_vector(pos_weight_tensor, num_labels, "pos_weight", logits.dtype)
            # Broadcast a [C] vector along a label axis that is not the last one.
            weights = tf.reshape(weights, [-1] + [1] * (rank - 1 - label_axis))

    if focal_gamma or alpha is not None:
        per_label = _sigmoid_focal(labels, logits, from_logits, weights, focal_gamma, alpha)
    elif from_logits:
        if weights is None:
            per_label = _softplus_minus_product(labels, logits)
        else:
            per_label = (1.0 + (weights - 1.0) * labels) * tf.nn.softplus(logits) - weights * labels * logits
    else:
        positive = labels * _log_clipped(logits)
        if weights is not None:
            positive *= weights
        per_label = -(positive + (1.0 - labels) * _log_clipped(1.0 - logits))
    if rank == 1:
        return checks.gate(per_label)
    return checks.gate(tf.reduce_mean(per_label, axis=axis))


def _sigmoid_focal(
    labels: tf.Tensor,
    logits: tf.Tensor,
    from_logits: bool,
    pos_weight: tf.Tensor | None,
    focal_gamma: float,
    alpha: float | None,
) -> tf.Tensor:
    """Per label ``-[α w y (1 - p)^γ log p + (1 - α)(1 - y) p^γ log(1 - p)]`` (see `sigmoid_cross_entropy`)."""
    positive_weight = pos_weight if alpha is None else alpha * (1.0 if pos_weight is None else pos_weight)
    negative_weight = None if alpha is None else 1.0 - alpha
    if from_logits:  # stable forms with a closed-form gradient
        return _focal.sigmoid_focal(labels, logits, focal_gamma, positive_weight, negative_weight)
    log_p, log_q = _log_clipped(logits), _log_clipped(1.0 - logits)
    positive, negative = labels * log_p, (1.0 - labels) * log_q
    if focal_gamma:
        positive *= tf.exp(focal_gamma * log_q)
        negative *= tf.exp(focal_gamma * log_p)
    if positive_weight is not None:
        positive *= positive_weight
    if negative_weight is not None:
        negative *= negative_weight
    return -(positive + negative)


# --------------------------------------------------------------------------------------------------
# Keras Loss classes: thin wrappers that store the options
# --------------------------------------------------------------------------------------------------


def _dtype_config(dtype: Any) -> Any:
    """The constructor's `dtype` argument in a JSON-friendly form."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    return keras.dtype_policies.serialize(dtype)


class _FunctionLoss(keras.losses.Loss):
    """A Keras ``Loss`` around one of the pure functions above.

    Subclasses name the function (`fn`) and hand their options to ``__init__`` as `options`, which are
    exactly the function's keyword arguments. ``call`` passes them through, ``get_config`` returns them
    with ``reduction``, ``name`` and ``dtype``: the constructor's arguments, nothing more or less.
    """

    fn: Callable[..., tf.Tensor]

    def __init__(self, options: dict[str, Any], reduction: str | None, name: str, dtype: Any):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._options = options
        self._dtype_arg = _dtype_config(dtype)

    def __getattr__(self, key: str) -> Any:
        # Read-only views of the options (loss.from_logits, loss.axis, ...): they are fixed at construction.
        options = self.__dict__.get("_options", {})
        if key in options:
            return options[key]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__.get("_options", {}):
            raise AttributeError(f"{key} is fixed at construction; create a new {type(self).__name__} instead.")
        super().__setattr__(key, value)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        logits = None if self._options.get("from_logits", True) else _cached_logits(y_pred)
        if logits is not None and y_pred.dtype != self.dtype:
            # Keras's Loss.__call__ casts y_pred to the loss dtype (float16 outputs under mixed_float16):
            # cast here instead and carry over the logits a softmax / sigmoid activation cached on it, and
            # the Keras mask (padded positions), which the cast would otherwise drop.
            cast = tf.cast(y_pred, self.dtype)
            cast._keras_logits = logits
            mask = getattr(y_pred, "_keras_mask", None)
            if mask is not None:
                cast._keras_mask = mask
            y_pred = cast
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return type(self).fn(y_true, y_pred, **self._options)

    def get_config(self) -> dict[str, Any]:
        return {**self._options, "reduction": self.reduction, "name": self.name, "dtype": self._dtype_arg}


@keras.saving.register_keras_serializable(package="kerasce")
class SoftmaxCrossEntropy(_FunctionLoss):
    """Softmax cross-entropy for integer class ids or one-hot / soft labels (see `softmax_cross_entropy`).

    The label form is read from the shapes, so one loss serves ``SparseCategoricalCrossentropy`` and
    ``CategoricalCrossentropy`` use, with label smoothing, class weights and ``ignore_class`` for both
    where they make sense, at any rank (per-pixel segmentation losses included).

    Example:
        >>> model.compile(optimizer="adam", loss=kerasce.losses.SoftmaxCrossEntropy(label_smoothing=0.1))

    Args:
        from_logits: Whether predictions are logits (default) or probabilities.
        label_smoothing: ``ε`` in ``[0, 1]``.
        class_weight: Optional list of ``C`` non-negative weights, one per class.
        ignore_class: Optional class id masked out of the loss and of the mean.
        axis: The class axis.
        focal_gamma: Focal exponent ``γ >= 0`` (0: off). With ``class_weight`` as the per-class ``α``, this
            is Keras's ``CategoricalFocalCrossentropy`` for integer ids too, without a one-hot tensor.
        poly_epsilon: Poly-1 coefficient ``ε₁`` (0: off).
        reduction: A Keras reduction: ``"sum_over_batch_size"`` (default), ``"sum"``, ``"mean"``,
            ``"mean_with_sample_weight"``, ``"none"`` or ``None``.
        name: Name of the loss.
        dtype: Dtype of the loss computation (``None``: ``keras.config.floatx()``).
        label_form: ``"auto"`` (from the shapes, at run time where they fit both forms), ``"sparse"`` (class
            ids) or ``"dense"`` (one-hot / soft labels).
    """

    fn = staticmethod(softmax_cross_entropy)

    def __init__(
        self,
        from_logits: bool = True,
        label_smoothing: float = 0.0,
        class_weight: Sequence[float] | None = None,
        ignore_class: int | None = None,
        axis: int = -1,
        focal_gamma: float = 0.0,
        poly_epsilon: float = 0.0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "softmax_cross_entropy",
        dtype: Any = None,
        label_form: str = "auto",
    ):
        _check_smoothing(label_smoothing)
        _check_focal_options(focal_gamma, poly_epsilon)
        if label_form not in _LABEL_FORMS:
            raise ValueError(f"Expected label_form in {_LABEL_FORMS}; got label_form={label_form!r}.")
        options = {
            "from_logits": bool(from_logits),
            "label_smoothing": float(label_smoothing),
            "class_weight": _check_nonnegative_weights(class_weight, "class_weight"),
            "ignore_class": None if ignore_class is None else int(ignore_class),
            "axis": int(axis),
            "label_form": label_form,
            "focal_gamma": float(focal_gamma),
            "poly_epsilon": float(poly_epsilon),
        }
        super().__init__(options, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="kerasce")
class SigmoidCrossEntropy(_FunctionLoss):
    """Binary / multi-label sigmoid cross-entropy, mean over labels then over the batch.

    See `sigmoid_cross_entropy` for the formula. ``pos_weight`` (one per label) re-weights positives of
    imbalanced labels, which Keras's ``BinaryCrossentropy`` cannot.

    Args:
        from_logits: Whether predictions are logits (default) or probabilities.
        label_smoothing: ``ε`` in ``[0, 1]``.
        pos_weight: Optional non-negative scalar or list of ``C`` weights for the positive term.
        axis: The label axis.
        focal_gamma: Focal exponent ``γ >= 0`` (0: off).
        alpha: Optional ``α`` in ``[0, 1]``: positives weighted ``α``, negatives ``1 - α`` (None: no balancing;
            Keras's ``BinaryFocalCrossentropy(apply_class_balancing=True, alpha=α)``).
        reduction: A Keras reduction (see `SoftmaxCrossEntropy`).
        name: Name of the loss.
        dtype: Dtype of the loss computation (``None``: ``keras.config.floatx()``).
    """

    fn = staticmethod(sigmoid_cross_entropy)

    def __init__(
        self,
        from_logits: bool = True,
        label_smoothing: float = 0.0,
        pos_weight: Sequence[float] | float | None = None,
        axis: int = -1,
        focal_gamma: float = 0.0,
        alpha: float | None = None,
        reduction: str | None = "sum_over_batch_size",
        name: str = "sigmoid_cross_entropy",
        dtype: Any = None,
    ):
        _check_smoothing(label_smoothing)
        _check_focal_options(focal_gamma, alpha=alpha)
        weights = _check_nonnegative_weights(pos_weight, "pos_weight")
        scalar_weight = pos_weight is not None and np.ndim(pos_weight) == 0
        options = {
            "from_logits": bool(from_logits),
            "label_smoothing": float(label_smoothing),
            "pos_weight": weights[0] if weights is not None and scalar_weight else weights,
            "axis": int(axis),
            "focal_gamma": float(focal_gamma),
            "alpha": None if alpha is None else float(alpha),
        }
        super().__init__(options, reduction, name, dtype)


@keras.saving.register_keras_serializable(package="kerasce")
class PolicyGradientLoss(_FunctionLoss):
    """The REINFORCE loss: sparse softmax cross-entropy of the taken actions, weighted by the returns.

    ``loss(actions, logits, returns)`` is `policy_gradient_loss` (the per-step values come from that one
    function) reduced by Keras's own ``Loss.__call__``: masks, reductions and the ``1 / num_replicas`` scaling
    under ``tf.distribute`` are Keras's. The returns come in as the sample weight, so a policy compiled with
    this loss learns by REINFORCE from ``model.fit(observations, actions, sample_weight=returns)``.

    Args:
        reduction: A Keras reduction (see `SoftmaxCrossEntropy`).
        name: Name of the loss.
        dtype: Dtype of the loss computation (``None``: ``keras.config.floatx()``).
    """

    fn = staticmethod(policy_gradient_loss)

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str = "policy_gradient_loss",
        dtype: Any = None,
    ):
        if reduction == "mean_with_sample_weight":
            raise ValueError(
                "PolicyGradientLoss cannot use reduction='mean_with_sample_weight': it divides by the sum of "
                "the returns, about 0 for normalised returns. Expected 'sum_over_batch_size' (default), "
                "'mean', 'sum' or 'none'."
            )
        super().__init__({}, reduction, name, dtype)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        """Args: ``y_true`` the actions ``[B]``, ``y_pred`` the logits ``[B, A]``, ``sample_weight`` the
        returns ``[B]`` (required)."""
        if sample_weight is None:
            raise ValueError(
                "PolicyGradientLoss needs the returns: call loss(actions, logits, returns), or pass "
                "sample_weight=returns to fit(). Without them it is plain cross-entropy (use "
                "SoftmaxCrossEntropy for behaviour cloning)."
            )
        # The returns travel with the actions as y_true (Keras converts both to the loss dtype); no sample
        # weight is left for Keras to multiply by, so the returns weigh each step once, in `call`.
        return super().__call__((y_true, sample_weight), y_pred)

    def call(self, y_true: tuple[tf.Tensor, tf.Tensor], y_pred: tf.Tensor) -> tf.Tensor:
        actions, returns = y_true
        return policy_gradient_loss(actions, y_pred, returns)


# --------------------------------------------------------------------------------------------------
# Gaussian negative log-likelihood (diagonal covariance), in keras.ops
# --------------------------------------------------------------------------------------------------

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_nll(actions: Any, mean: Any, log_std: Any, axis: int = -1) -> Any:
    r"""Negative log-density of a diagonal Gaussian, summed over ``axis``.

    With ``σ = exp(log_std)``::

        loss = Σ_axis [(a - μ)² / (2 σ²) + log σ + ½ log 2π]

    computed as ``½ ((a - μ) e^{-log σ})² + log σ + ½ log 2π`` (no division, no ``exp`` of ``2 log σ``).

    Args:
        actions: ``[B, D]`` values ``a``.
        mean: ``[B, D]`` means ``μ``.
        log_std: ``[B, D]`` or ``[D]`` log standard deviations (broadcast against ``mean``).
        axis: the axis summed over.

    Returns:
        ``[B]`` negative log-densities, in the dtype of ``mean``.
    """
    mean = keras.ops.convert_to_tensor(mean)
    actions = keras.ops.cast(actions, mean.dtype)
    log_std = keras.ops.cast(log_std, mean.dtype)
    z = (actions - mean) * keras.ops.exp(-log_std)
    return keras.ops.sum(0.5 * keras.ops.square(z) + log_std + _HALF_LOG_2PI, axis=axis)


def gaussian_entropy(log_std: Any, axis: int = -1) -> Any:
    r"""Entropy of a diagonal Gaussian, ``H = Σ_axis [log σ + ½ (1 + log 2π)]``, in nats.

    Args:
        log_std: ``[B, D]`` (or ``[D]``) log standard deviations.
        axis: the axis summed over.

    Returns:
        ``[B]`` entropies (a scalar for ``[D]``).
    """
    log_std = keras.ops.convert_to_tensor(log_std)
    return keras.ops.sum(log_std + (0.5 + _HALF_LOG_2PI), axis=axis)
