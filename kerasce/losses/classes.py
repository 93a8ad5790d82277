"""Keras ``Loss`` classes: thin wrappers that store the options of the loss functions and let Keras apply
``sample_weight``, the reduction, masks and the ``1 / num_replicas`` scaling under ``tf.distribute``.

The registered names (``kerasce>SoftmaxCrossEntropy``, ...) are those of kerasce 0.2: its ``.keras`` files load.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from kerasce.losses.checks import (
    check_focal_options,
    check_label_form,
    check_nonnegative_weights,
    check_smoothing,
)
from kerasce.losses.gaussian import gaussian_nll
from kerasce.losses.policy_gradient import policy_gradient_loss
from kerasce.losses.sigmoid import sigmoid_cross_entropy
from kerasce.losses.softmax import softmax_cross_entropy

from ._backend import (  # the backend seam: framework internals live there
    cached_logits,
    keras_mask,
    mean_is_plain,
    set_cached_logits,
    set_keras_mask,
)

Tensor = Any


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

    fn: Callable[..., Tensor]

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

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Tensor:
        logits = None if self._options.get("from_logits", True) else cached_logits(y_pred)
        if logits is not None and keras.backend.standardize_dtype(y_pred.dtype) != self.dtype:
            # Keras's Loss.__call__ casts y_pred to the loss dtype (float16 outputs under mixed_float16):
            # cast here instead and carry over the logits a softmax / sigmoid activation cached on it, and
            # the Keras mask (padded positions), which the cast would otherwise drop.
            cast = keras.ops.cast(y_pred, self.dtype)
            set_cached_logits(cast, logits)
            mask = keras_mask(y_pred)
            if mask is not None:
                set_keras_mask(cast, mask)
            y_pred = cast
        if self._plain_mean(y_true, y_pred, sample_weight):
            return self._mean_of_call(y_true, y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def _plain_mean(self, y_true: Any, y_pred: Any, sample_weight: Any) -> bool:
        """Whether Keras's ``Loss.__call__`` would reduce to a plain (or masked) mean of ``call``'s values: no
        sample weight, no input mask, one label tensor, a mean reduction over a known, non-empty shape, a
        backend without ``tf.distribute``'s 1 / replicas scaling. (Its dozen small ops cost more than a small
        loss itself on torch.)"""
        if sample_weight is not None or isinstance(y_true, (dict, list, tuple)):
            return False
        if self.reduction not in ("sum_over_batch_size", "mean"):
            return False
        if not mean_is_plain() or not keras.ops.is_tensor(y_pred) or keras_mask(y_pred) is not None:
            return False
        dims = tuple(y_pred.shape)
        return None not in dims and 0 not in dims and keras.backend.standardize_dtype(y_pred.dtype) == self.dtype

    def _mean_of_call(self, y_true: Any, y_pred: Tensor) -> Tensor:
        """``mean(call(y_true, y_pred))`` (over the unmasked values where ``call`` masks some), as Keras reduces
        it. Integer labels stay integers (Keras would hand them over as floats); float ones take the loss dtype."""
        y_true = keras.ops.convert_to_tensor(y_true)
        if "float" in keras.backend.standardize_dtype(y_true.dtype):
            y_true = keras.ops.cast(y_true, self.dtype)
        values = self.call(y_true, y_pred)
        mask = keras_mask(values)  # read before the cast, which drops it
        values = keras.ops.cast(values, self.dtype)
        if mask is None:  # a sum over the (known) count, as Keras's reduction does: fewer ops than `ops.mean`
            return keras.ops.sum(values) / math.prod(values.shape)
        weights = keras.ops.cast(mask, self.dtype)
        return keras.ops.divide_no_nan(keras.ops.sum(values * weights), keras.ops.sum(weights))

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
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
        check_smoothing(label_smoothing)
        check_focal_options(focal_gamma, poly_epsilon)
        check_label_form(label_form)
        options = {
            "from_logits": bool(from_logits),
            "label_smoothing": float(label_smoothing),
            "class_weight": check_nonnegative_weights(class_weight, "class_weight"),
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
        check_smoothing(label_smoothing)
        check_focal_options(focal_gamma, alpha=alpha)
        weights = check_nonnegative_weights(pos_weight, "pos_weight")
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
                "`reduction` of PolicyGradientLoss must be 'sum_over_batch_size' (default), 'mean', 'sum' or "
                "'none', not 'mean_with_sample_weight': it divides by the sum of the returns, about 0 for "
                f"normalised returns. Received: reduction={reduction!r}"
            )
        super().__init__({}, reduction, name, dtype)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Tensor:
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

    def call(self, y_true: tuple[Tensor, Tensor], y_pred: Tensor) -> Tensor:
        actions, returns = y_true
        return policy_gradient_loss(actions, y_pred, returns)


@keras.saving.register_keras_serializable(package="kerasce")
class GaussianNLL(_FunctionLoss):
    """Negative log-likelihood of a diagonal Gaussian (see `gaussian_nll`), for ``Box`` actions or regression
    with a learned variance.

    ``y_true`` are the actions (targets) ``[B, D]``; ``y_pred`` is the mean and the log standard deviation
    concatenated on the last axis, ``[B, 2D]``: ``y_pred[..., :D]`` is ``μ``, ``y_pred[..., D:]`` is
    ``log σ`` (a model ends in ``keras.layers.Concatenate()([mean, log_std])``). As a policy-gradient loss,
    pass the returns as ``sample_weight``.

    Args:
        reduction: A Keras reduction (see `SoftmaxCrossEntropy`).
        name: Name of the loss.
        dtype: Dtype of the loss computation (``None``: ``keras.config.floatx()``).
    """

    fn = staticmethod(gaussian_nll)

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str = "gaussian_nll", dtype: Any = None):
        super().__init__({}, reduction, name, dtype)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        size, dims = y_pred.shape[-1], y_true.shape[-1]
        if size is None or dims is None or size != 2 * dims:
            raise ValueError(
                "GaussianNLL: `y_pred` must be the mean and the log standard deviation concatenated on the last "
                f"axis, {2 * dims if dims else '2D'} values for actions of size {dims}. Received: y_pred of shape "
                f"{tuple(y_pred.shape)}"
            )
        mean, log_std = keras.ops.split(y_pred, 2, axis=-1)
        return gaussian_nll(y_true, mean, log_std)
