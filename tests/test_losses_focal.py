"""Focal and poly options of kerasce.losses (issue 11), against independent references.

References, each written here in float64 NumPy from its source:
- the docstring formulas of `softmax_cross_entropy` / `sigmoid_cross_entropy` (``log(1 - p_c)`` computed as
  ``logsumexp`` over the other classes minus ``logsumexp`` over all, exact in float64 for any ``p``);
- torchvision ``ops.sigmoid_focal_loss`` (torchvision/ops/focal_loss.py): ``p = σ(x)``,
  ``ce = BCE_with_logits(x, t)``, ``p_t = p t + (1 - p)(1 - t)``, ``loss = ce (1 - p_t)^γ``, times
  ``α_t = α t + (1 - α)(1 - t)`` when ``α >= 0``; ``reduction="mean"`` averages over every element;
- Optax ``poly_loss_cross_entropy`` (optax/losses/_classification.py): ``softmax_cross_entropy(logits,
  labels) + ε Σ_c labels_c (1 - softmax(logits)_c)``, labels smoothed beforehand with ``smooth_labels``;
  Optax ``sigmoid_focal_loss`` is torchvision's formula without the reduction.
Gradients are checked against central finite differences of those references in float64, and Keras's
``CategoricalFocalCrossentropy`` / ``BinaryFocalCrossentropy`` are run as they are where they coincide.

This file is also the tf.distribute job of `test_mirrored_on_two_cpu_devices_equals_one_device`:
``python tests/test_losses_focal.py --task softmax --devices 2`` prints one JSON line.
"""

import argparse
import inspect
import json
import os
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from backends import BACKEND, graph, tensorflow_only, to_numpy
from backends import value_and_grad as grad_of
from covering import covering_cases, product_quick_pairs
from loss_references import ref_mean_over_labels, ref_sigmoid_terms, ref_weighted_labels

from kerasce import losses as L

EPS = 1e-7  # keras.config.epsilon(): the probability clip of from_logits=False


# ------------------------------------------------------------------------------------------------
# float64 references
# ------------------------------------------------------------------------------------------------


def ref_logsumexp(z, axis=-1):
    m = np.max(z, axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def ref_log_softmax(z):
    return z - ref_logsumexp(z)[..., None]


def ref_log1m_softmax(z):
    """log(1 - p_c) = logsumexp of the other classes' logits - logsumexp of all: exact for p_c -> 1."""
    lse = ref_logsumexp(z)
    return np.stack([ref_logsumexp(np.delete(z, c, axis=-1)) - lse for c in range(z.shape[-1])], axis=-1)


def ref_softmax_focal(
    labels, pred, *, sparse, from_logits=True, smoothing=0.0, weights=None, gamma=0.0, epsilon=0.0, ignore=None, axis=-1
):
    """Σ_c w_c ỹ_c [-(1 - p_c)^γ log p_c + ε (1 - p_c)] per example (the docstring), float64."""
    pred = np.moveaxis(np.asarray(pred, np.float64), axis, -1)
    num_classes = pred.shape[-1]
    if from_logits:
        log_p, log1m_p = ref_log_softmax(pred), ref_log1m_softmax(pred)
    else:
        log_p, log1m_p = np.log(np.clip(pred, EPS, 1 - EPS)), np.log(np.clip(1 - pred, EPS, 1 - EPS))
    wy, valid = ref_weighted_labels(
        labels, num_classes, sparse=sparse, smoothing=smoothing, weights=weights, ignore=ignore, axis=axis
    )
    per_class = -np.exp(gamma * log1m_p) * log_p + epsilon * np.exp(log1m_p)
    return np.where(valid, (wy * per_class).sum(-1), 0.0)


def ref_sigmoid_focal(
    labels, pred, *, from_logits=True, label_smoothing=0.0, pos_weight=None, gamma=0.0, alpha=None, axis=-1
):
    """mean over labels of -[α w ỹ (1 - p)^γ log p + (1 - α)(1 - ỹ) p^γ log(1 - p)], float64."""
    y, log_p, log_q, w = ref_sigmoid_terms(
        labels, pred, from_logits=from_logits, smoothing=label_smoothing, pos_weight=pos_weight, axis=axis
    )
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    per_label = -(a_pos * w * y * np.exp(gamma * log_q) * log_p + a_neg * (1 - y) * np.exp(gamma * log_p) * log_q)
    return ref_mean_over_labels(per_label, axis)


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, re-implemented in float64 NumPy from its published source."""
    x, t = np.asarray(inputs, np.float64), np.asarray(targets, np.float64)
    p = 1 / (1 + np.exp(-x))
    ce_loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))  # binary_cross_entropy_with_logits
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def optax_poly_loss_cross_entropy(logits, labels, epsilon=2.0):
    """optax.poly_loss_cross_entropy in float64 NumPy: CE + ε Σ_c labels_c (1 - softmax_c)."""
    log_p = ref_log_softmax(np.asarray(logits, np.float64))
    labels = np.asarray(labels, np.float64)
    return -(labels * log_p).sum(-1) + epsilon * (labels * (1 - np.exp(log_p))).sum(-1)


def optax_smooth_labels(labels, alpha):
    """optax.smooth_labels: (1 - α) labels + α / C."""
    return (1.0 - alpha) * labels + alpha / labels.shape[-1]


def numeric_grad(f, x, h=1e-6, relative=False):
    """Central finite differences of the scalar f at x (float64).

    ``relative``: the step shrinks with |x| (at most h): a probability of 1e-4 needs a step well below it.
    """
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = max(min(h, 1e-3 * abs(x[i])), 1e-10) if relative else h
        x_hi, x_lo = x.copy(), x.copy()
        x_hi[i] += step
        x_lo[i] -= step
        grad[i] = (f(x_hi) - f(x_lo)) / (2 * step)
    return grad


def value_and_grad(fn, logits):
    """fn(logits) and d Σ (fn(logits) · v) / d logits for a fixed random cotangent v."""
    loss = to_numpy(fn(keras.ops.convert_to_tensor(logits)))
    cotangent = np.random.default_rng(99).uniform(0.5, 1.5, loss.shape).astype(loss.dtype)
    _, grad = grad_of(lambda z: keras.ops.sum(fn(z) * keras.ops.convert_to_tensor(cotangent)), logits)
    return loss, grad, cotangent.astype(np.float64)


def grads_of_sums(fns, x):
    """The values of each fn at x and the gradients of their sums with respect to x."""
    results = [grad_of(lambda z, fn=fn: keras.ops.sum(fn(z)), x) for fn in fns]
    return [to_numpy(fn(keras.ops.convert_to_tensor(x))) for fn in fns], [g for _, g in results]


def tensor(values, dtype):
    return keras.ops.convert_to_tensor(np.asarray(values), dtype)


def as_float64(x):
    return to_numpy(x).astype(np.float64)


# Keras on JAX has float64 only with jax_enable_x64 (off by default, as a Keras user has it).
NO_JAX_FLOAT64 = pytest.mark.skipif(BACKEND == "jax", reason="JAX without jax_enable_x64 has no float64")
FLOAT64 = pytest.param("float64", marks=NO_JAX_FLOAT64)
# Float64 inputs keep float64 (TensorFlow, torch) or are computed in float32 (JAX without x64).
FLOAT64_TOL: dict[str, Any] = dict(rtol=1e-5, atol=1e-6) if BACKEND == "jax" else dict(rtol=1e-12)


def representable(x):
    """Float64 values as the backend holds them: rounded to float32 on JAX without x64, so that a reference
    evaluated at them sees the loss's own inputs."""
    return np.asarray(x, np.float32).astype(np.float64) if BACKEND == "jax" else x


def skip_float64_on_jax(dtype):
    """NO_JAX_FLOAT64 for a case of a covering parametrization (whose values cannot carry marks)."""
    if dtype == "float64" and BACKEND == "jax":
        pytest.skip("JAX without jax_enable_x64 has no float64")


# The tf.function variant of a check: TensorFlow's graph mode without XLA (slow: a trace per case).
TF_FUNCTION = pytest.param("tf.function", marks=[pytest.mark.slow, tensorflow_only("tf.function")], id="tf.function")


def random_problem(rng, shape, axis, *, probabilities=False, scale=2.5):
    """Predictions of `shape`, sparse ids and dense soft labels for class axis `axis`."""
    z = rng.normal(size=shape) * scale
    num_classes = shape[axis]
    ids = rng.integers(0, num_classes, size=tuple(np.delete(shape, axis % len(shape))))
    soft = np.moveaxis(rng.dirichlet(np.ones(num_classes), size=ids.shape), -1, axis)
    if probabilities:
        z = np.moveaxis(np.exp(ref_log_softmax(np.moveaxis(z, axis, -1))), -1, axis)
    return z, ids, soft


SHAPES_AXES = [((5,), -1), ((6, 4), -1), ((3, 5, 4), -1), ((2, 3, 2, 5), -1), ((3, 4, 5), 1), ((2, 4, 3, 2), 1)]


# ------------------------------------------------------------------------------------------------
# Softmax: values and gradients against the float64 docstring formula
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    *covering_cases(
        full=[
            ("form", ["sparse", "dense"]),
            ("gamma,epsilon", [(2.0, 0.0), (0.5, 0.0), (0.0, 1.0), (1.5, -0.5), (3.0, 2.0)]),
            ("smoothing,weighted", [(0.0, False), (0.2, True)]),
            ("from_logits", [True, False]),
        ],
        pairwise=[("shape,axis", SHAPES_AXES)],
    )
)
def test_softmax_focal_poly_matches_float64_reference(
    form, gamma, epsilon, smoothing, weighted, from_logits, shape, axis
):
    if len(shape) == 1 and form == "sparse":
        shape = (1,) + shape  # rank-1 predictions with a scalar label: the [B] of a single example
    rng = np.random.default_rng(1)
    pred, ids, soft = random_problem(rng, shape, axis, probabilities=not from_logits)
    weights = rng.uniform(0.2, 3.0, size=shape[axis]) if weighted else None
    labels = ids if form == "sparse" else soft
    kwargs = dict(from_logits=from_logits, label_smoothing=smoothing, class_weight=weights, axis=axis)
    got = L.softmax_cross_entropy(labels, pred.astype(np.float32), focal_gamma=gamma, poly_epsilon=epsilon, **kwargs)
    want = ref_softmax_focal(
        labels,
        pred,
        sparse=form == "sparse",
        from_logits=from_logits,
        smoothing=smoothing,
        weights=weights,
        gamma=gamma,
        epsilon=epsilon,
        axis=axis,
    )
    assert got.shape == want.shape and keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("form", ["sparse", "dense"]),
        ("gamma,epsilon", [(2.0, 0.0), (0.5, 1.0), (0.0, 2.0)]),
        ("smoothing,weighted", [(0.0, False), (0.1, False), (0.1, True)]),
        ("from_logits", [True, False]),
    )
)
def test_softmax_focal_poly_gradient_matches_finite_differences(form, gamma, epsilon, smoothing, weighted, from_logits):
    rng = np.random.default_rng(2)
    pred, ids, soft = random_problem(rng, (4, 5), -1, probabilities=not from_logits)
    weights = rng.uniform(0.5, 2.0, size=5) if weighted else None
    labels = ids if form == "sparse" else soft
    opts = dict(from_logits=from_logits, label_smoothing=smoothing)

    def ours(z):
        return L.softmax_cross_entropy(labels, z, class_weight=weights, focal_gamma=gamma, poly_epsilon=epsilon, **opts)

    _loss, grad, v = value_and_grad(ours, pred)  # float64 in, float64 math
    ref = lambda z: (
        v
        * ref_softmax_focal(
            labels,
            z,
            sparse=form == "sparse",
            smoothing=smoothing,
            from_logits=from_logits,
            weights=weights,
            gamma=gamma,
            epsilon=epsilon,
        )
    ).sum()
    np.testing.assert_allclose(grad, numeric_grad(ref, pred, relative=not from_logits), rtol=1e-5, atol=1e-6)
    # float32 inputs: the same gradient to float32 precision.
    _, grad32, _ = value_and_grad(ours, pred.astype(np.float32))
    np.testing.assert_allclose(grad32, grad, rtol=2e-3, atol=2e-5)


def test_poly_term_is_the_docstring_form_for_labels_that_sum_to_one():
    # ε (1 - Σ_c ỹ_c p_c), the formula, equals the implemented ε Σ_c ỹ_c (1 - p_c) when Σ ỹ = 1.
    rng = np.random.default_rng(3)
    z, ids, soft = random_problem(rng, (8, 6), -1)
    for labels, y in [(ids, np.eye(6)[ids]), (soft, soft)]:
        y = y * 0.8 + 0.2 / 6
        p = np.exp(ref_log_softmax(z))
        want = -(y * np.log(p)).sum(-1) + 1.5 * (1 - (y * p).sum(-1))
        got = L.softmax_cross_entropy(labels, z, label_smoothing=0.2, poly_epsilon=1.5)
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6)


def test_a_class_of_weight_zero_and_an_all_zero_dense_row_add_nothing():
    # The poly term is weighted by w_c ỹ_c like the rest: a class switched off stays off, a masked row is 0.
    z = np.array([[0.3, 2.0, -1.0], [1.0, 0.0, 0.5]], np.float32)
    got = L.softmax_cross_entropy([1, 0], z, class_weight=[1.0, 0.0, 1.0], focal_gamma=2.0, poly_epsilon=2.0)
    assert to_numpy(got)[0] == 0.0 and to_numpy(got)[1] > 0
    dense = L.softmax_cross_entropy([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], z, focal_gamma=2.0, poly_epsilon=2.0)
    assert to_numpy(dense)[0] == 0.0


@pytest.mark.parametrize("form", ["sparse", "dense"])
@pytest.mark.parametrize("gamma,epsilon", [(2.0, 0.0), (0.5, 1.0)])
def test_masked_logits_add_nothing_and_keep_a_finite_gradient(form, gamma, epsilon):
    # Action masking / impossible classes: a logit of -inf with label 0 is the loss over the other classes.
    z = np.array([[1.0, 2.0, -np.inf, 0.5], [0.3, -np.inf, -1.0, 2.5]], np.float32)
    ids = np.array([1, 3])
    labels = ids if form == "sparse" else np.eye(4)[ids]
    loss, grad, v = value_and_grad(
        lambda q: L.softmax_cross_entropy(labels, q, focal_gamma=gamma, poly_epsilon=epsilon), z
    )
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    kept = [np.array([1.0, 2.0, 0.5]), np.array([0.3, -1.0, 2.5])]
    kept_ids = [1, 2]
    want = [
        ref_softmax_focal([k], z_row[None], sparse=True, gamma=gamma, epsilon=epsilon)[0]
        for k, z_row in zip(kept_ids, kept)
    ]
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert grad[0, 2] == 0 and grad[1, 1] == 0
    for row, (k, z_row, cols) in enumerate(zip(kept_ids, kept, [[0, 1, 3], [0, 2, 3]])):
        ref = lambda q: (
            v[row]
            * ref_softmax_focal(
                [k],
                q[None],
                sparse=True,
                gamma=gamma,
                epsilon=epsilon,
            )[0]
        )
        np.testing.assert_allclose(grad[row, cols], numeric_grad(ref, z_row), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------

PLAIN_CASES = [
    dict(),
    dict(label_smoothing=0.1),
    dict(class_weight=[0.5, 2.0, 1.0, 1.5]),
    dict(label_smoothing=0.3, class_weight=[0.5, 2.0, 1.0, 1.5]),
    dict(from_logits=False),
    dict(from_logits=False, label_smoothing=0.2, class_weight=[0.5, 2.0, 1.0, 1.5]),
]


# Every option set with every label form; the three (mode, scale) runs rotate over those pairs so that each
# option set and each form meets each of them (a covering set: 18 cases instead of the 54 of the product).
BIT_FOR_BIT_RUNS = [("eager", 2.5), ("tf.function", 2.5), ("eager", 12.0)]
BIT_FOR_BIT_CASES = [
    pytest.param(
        options,
        form,
        mode,
        scale,
        marks=[pytest.mark.slow, tensorflow_only("tf.function")] if mode == "tf.function" else [],
    )
    for i, options in enumerate(PLAIN_CASES)
    for j, form in enumerate(["sparse", "dense", "ignore_class"])
    for mode, scale in [BIT_FOR_BIT_RUNS[(i + j) % 3]]
]


@pytest.mark.parametrize("options,form,mode,scale", BIT_FOR_BIT_CASES)
def test_gamma_0_and_epsilon_0_is_the_plain_loss_bit_for_bit(options, form, mode, scale):
    # scale 12: confident predictions, where another formula for log p (e.g. -log1p of the other classes' sum)
    # differs from the plain loss's log-softmax in the last bits.
    rng = np.random.default_rng(4)
    pred, ids, soft = random_problem(rng, (3, 5, 4), -1, probabilities=options.get("from_logits") is False, scale=scale)
    pred = pred.astype(np.float32)
    if form == "ignore_class":
        options = {**options, "ignore_class": 255}
        ids = np.where(rng.uniform(size=ids.shape) < 0.3, 255, ids)
    labels = soft if form == "dense" else ids

    def both(z):
        return (
            L.softmax_cross_entropy(labels, z, **options),
            L.softmax_cross_entropy(labels, z, focal_gamma=0.0, poly_epsilon=0.0, **options),
        )

    run = both if mode == "eager" else graph(both)
    (plain, zeroed), (plain_grad, zeroed_grad) = grads_of_sums([lambda z: run(z)[0], lambda z: run(z)[1]], pred)
    np.testing.assert_array_equal(zeroed, plain)
    np.testing.assert_array_equal(zeroed_grad, plain_grad)
    sigmoid_options = {k: v for k, v in options.items() if k in ("from_logits", "label_smoothing")}
    plain = L.sigmoid_cross_entropy(soft, pred, pos_weight=2.0, **sigmoid_options)
    zeroed = L.sigmoid_cross_entropy(soft, pred, pos_weight=2.0, focal_gamma=0.0, alpha=None, **sigmoid_options)
    np.testing.assert_array_equal(to_numpy(zeroed), to_numpy(plain))


@pytest.mark.parametrize("scale", [2.5, 12.0])
def test_the_default_is_the_plain_formula(scale):
    # The defaults (γ = 0, ε = 0, alpha=None) are the plain losses: -log softmax(z)[k] (times w_k),
    # -Σ y log_softmax(z), softplus(z) - y z. Ids use each backend's fastest form (a fused op, or
    # logsumexp(z) - z_k), so they match a float64 reference to float32 rounding; the dense form is
    # log_softmax's, bit for bit.
    rng = np.random.default_rng(20)
    z64, ids, soft = random_problem(rng, (6, 5), -1, scale=scale)
    z = keras.ops.convert_to_tensor(z64.astype(np.float32))
    w = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    z32 = z64.astype(np.float32).astype(np.float64)
    picked = np.take_along_axis(ref_log_softmax(z32), ids[:, None], -1)[:, 0]
    tight: dict[str, Any] = dict(rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(to_numpy(L.softmax_cross_entropy(ids, z)), -picked, **tight)
    np.testing.assert_allclose(to_numpy(L.softmax_cross_entropy(ids, z, class_weight=w)), -picked * w[ids], **tight)
    np.testing.assert_array_equal(
        to_numpy(L.softmax_cross_entropy(soft.astype(np.float32), z)),
        -to_numpy(keras.ops.sum(keras.ops.log_softmax(z) * soft.astype(np.float32), -1)),
    )
    y = (soft > 0.2).astype(np.float64)
    sigmoid64 = np.mean(np.logaddexp(0.0, z32) - y * z32, -1)
    np.testing.assert_allclose(
        to_numpy(L.sigmoid_cross_entropy(keras.ops.convert_to_tensor(y.astype(np.float32)), z)), sigmoid64, **tight
    )


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("gamma,epsilon", [(2.0, 0.0), (0.5, 1.0)]),
        ("smoothing", [0.0, 0.3]),
        ("weighted", [False, True]),
        ("from_logits", [True, False]),
    )
)
def test_integer_labels_equal_one_hot_labels(gamma, epsilon, smoothing, weighted, from_logits):
    rng = np.random.default_rng(5)
    pred, ids, _ = random_problem(rng, (16, 9), -1, probabilities=not from_logits)
    pred = pred.astype(np.float32)
    opts = dict(
        from_logits=from_logits,
        label_smoothing=smoothing,
        focal_gamma=gamma,
        poly_epsilon=epsilon,
        class_weight=rng.uniform(0.5, 2.0, size=9) if weighted else None,
    )
    (sparse, dense), (sparse_grad, dense_grad) = grads_of_sums(
        [
            lambda z: L.softmax_cross_entropy(ids, z, **opts),
            lambda z: L.softmax_cross_entropy(np.eye(9)[ids], z, **opts),
        ],
        pred,
    )
    np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sparse_grad, dense_grad, rtol=1e-5, atol=1e-7)


def test_moving_the_class_axis_changes_nothing():
    rng = np.random.default_rng(6)
    z, ids, soft = random_problem(rng, (2, 3, 4, 6), -1)
    for labels, moved in [(ids, ids), (soft, np.moveaxis(soft, -1, 1))]:
        last = L.softmax_cross_entropy(labels, z, focal_gamma=2.0, poly_epsilon=1.0, label_smoothing=0.1)
        first = L.softmax_cross_entropy(
            moved, np.moveaxis(z, -1, 1), axis=1, focal_gamma=2.0, poly_epsilon=1.0, label_smoothing=0.1
        )
        np.testing.assert_allclose(to_numpy(first), to_numpy(last), rtol=1e-6)


@tensorflow_only("tf.function graph introspection")
def test_sparse_labels_build_no_tensor_of_the_one_hot_shape():
    import tensorflow as tf

    # [B, H, W] ids with C = 1000 must not allocate [B, H, W, C] labels: nothing computed from the labels
    # (forward pass) may have the predictions' shape. The log-probabilities themselves may.
    shape = (2, 3, 4, 1000)

    def loss(labels, logits):
        return L.softmax_cross_entropy(
            labels,
            logits,
            focal_gamma=2.0,
            poly_epsilon=1.0,
            label_smoothing=0.1,
            class_weight=np.ones(1000),
            ignore_class=255,
        )

    graph = (
        tf.function(loss)
        .get_concrete_function(tf.TensorSpec(shape[:-1], tf.int32), tf.TensorSpec(shape, tf.float32))
        .graph
    )
    # Tensors computed from the labels. IdentityN (a custom gradient's pass-through) forwards each input to
    # its own output: only the outputs whose input came from the labels count.
    derived, frontier, seen = {graph.inputs[0].ref()}, [graph.inputs[0].op], set()
    while frontier:
        op = frontier.pop()
        if op.type == "IdentityN":
            outs = [out for out, inp in zip(op.outputs, op.inputs, strict=False) if inp.ref() in derived]
        else:
            outs = list(op.outputs)
        for out in outs:
            assert out.shape.as_list()[-1:] != [1000] or out.shape.rank < 4, f"{op.type} {op.name}: {out.shape}"
            derived.add(out.ref())
            for consumer in out.consumers():
                if consumer.name not in seen:
                    seen.add(consumer.name)
                    frontier.append(consumer)
    assert len(seen) > 10  # the walk reached the loss
    assert not any(op.type == "OneHot" for op in graph.get_operations())


@pytest.mark.parametrize("gamma,epsilon", [(2.0, 1.0), (0.5, 0.0)])
def test_ignore_class_equals_dense_labels_with_those_positions_removed(gamma, epsilon):
    rng = np.random.default_rng(7)
    z, ids, _ = random_problem(rng, (3, 4, 5, 6), -1)
    ids = np.where(rng.uniform(size=ids.shape) < 0.3, 255, ids)
    valid = ids != 255
    opts = dict(focal_gamma=gamma, poly_epsilon=epsilon, label_smoothing=0.1, class_weight=[1, 2, 1, 0.5, 1, 3])
    z_all = z.astype(np.float32)
    sparse, grad_sparse = grad_of(lambda q: L.SoftmaxCrossEntropy(ignore_class=255, **opts)(ids, q), z_all)
    dense, grad_kept = grad_of(lambda q: L.SoftmaxCrossEntropy(**opts)(np.eye(6)[ids[valid]], q), z_all[valid])
    grad_dense = np.zeros_like(grad_sparse)
    grad_dense[valid] = grad_kept
    np.testing.assert_allclose(sparse, dense, rtol=1e-6)
    per_position = to_numpy(L.softmax_cross_entropy(ids, z_all, ignore_class=255, **opts))
    assert np.all(per_position[~valid] == 0) and np.all(per_position[valid] > 0)
    np.testing.assert_allclose(grad_sparse, grad_dense, rtol=1e-5, atol=1e-8)
    assert np.all(grad_sparse[~valid] == 0)


# ------------------------------------------------------------------------------------------------
# Numerics: extreme logits, p -> 1 with 0 < γ < 1, half precision
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("dtype", ["float16", "bfloat16", "float32", "float64"]),
        ("form", ["sparse", "dense"]),
        ("gamma,epsilon,smoothing", [(2.0, 0.0, 0.0), (0.5, 1.0, 0.0), (0.25, 0.0, 0.1), (1.0, 2.0, 0.2)]),
    )
)
def test_softmax_extreme_logits_give_finite_exact_values_and_gradients(dtype, form, gamma, epsilon, smoothing):
    skip_float64_on_jax(dtype)
    logits = tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0], [1e4, -1e4, -1e4]], dtype)
    ids = np.array([1, 0, 2, 0])
    labels = ids if form == "sparse" else np.eye(3)[ids]
    rounded = as_float64(logits)  # 1e4 is 9984 in bfloat16
    loss, grad, v = value_and_grad(
        lambda z: L.softmax_cross_entropy(
            labels, z, focal_gamma=gamma, poly_epsilon=epsilon, label_smoothing=smoothing
        ),
        logits,
    )
    assert loss.dtype == (np.float64 if dtype == "float64" else np.float32)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    ref = lambda z: (
        v
        * ref_softmax_focal(
            ids,
            z,
            sparse=True,
            gamma=gamma,
            epsilon=epsilon,
            smoothing=smoothing,
        )
    ).sum()
    np.testing.assert_allclose(
        loss,
        ref_softmax_focal(ids, rounded, sparse=True, gamma=gamma, epsilon=epsilon, smoothing=smoothing),
        rtol=1e-6,
        atol=1e-30,
    )
    # The gradient comes back in the input dtype: rounded to float16 / bfloat16 there.
    tol = {"float16": 1e-3, "bfloat16": 8e-3}.get(dtype, 1e-5)
    np.testing.assert_allclose(grad, numeric_grad(ref, rounded, h=1e-3), rtol=tol, atol=1e-6)


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("gamma", [0.1, 0.5, 0.9, 2.0]), ("form", ["sparse", "dense"]), ("dtype", ["float32", "float64"])
    )
)
def test_softmax_focal_gradient_as_p_tends_to_1_is_the_finite_exact_limit(gamma, form, dtype):
    skip_float64_on_jax(dtype)
    # z = (a, 0, -1) with class 0 true: 1 - p_0 ≈ e^-a from 1e-2 down to 1e-40, past float32's resolution of
    # p near 1. d(1 - p)^γ/dp is infinite at p = 1 for γ < 1, yet the loss gradient w.r.t. the logits tends to 0.
    a = np.array([4.6, 13.8, 27.6, 50.0, 92.0])
    z64 = np.stack([a, np.zeros_like(a), -np.ones_like(a)], -1)
    labels = np.zeros(len(a), np.int64) if form == "sparse" else np.eye(3)[np.zeros(len(a), int)]
    loss, grad, v = value_and_grad(lambda z: L.softmax_cross_entropy(labels, z, focal_gamma=gamma), z64.astype(dtype))
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # Analytic: L = -(1 - p)^γ log p, dL/dp = γ (1 - p)^(γ-1) log p - (1 - p)^γ / p, dp/dz_j = p (δ_j0 - p_j).
    # In float64 too, log p_0 = z_0 - logsumexp(z) rounds to 0 below 1 - p = 1e-16: use S = Σ_{c>0} e^(z_c - z_0).
    rest = np.exp(z64[:, 1] - a) + np.exp(z64[:, 2] - a)
    log_p0 = -np.log1p(rest)
    log1m0, p0, log_p = np.log(rest) + log_p0, np.exp(log_p0), ref_log_softmax(z64)
    dl_dp = gamma * np.exp((gamma - 1) * log1m0) * log_p0 - np.exp(gamma * log1m0) / p0
    dp0_dz = p0[:, None] * np.concatenate([np.exp(log1m0)[:, None], -np.exp(log_p[:, 1:])], -1)  # 1 - p_0, exact
    want = v[:, None] * dl_dp[:, None] * dp0_dz
    np.testing.assert_allclose(loss, -np.exp(gamma * log1m0) * log_p0, rtol=1e-5, atol=1e-30)
    rtol, atol = (2e-5, 1e-37) if dtype == "float32" else (1e-9, 1e-30)
    np.testing.assert_allclose(grad, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("gamma,epsilon", [(2.0, 0.0), (0.5, 1.0)])
def test_softmax_focal_with_tied_top_logits_is_the_float64_reference(gamma, epsilon):
    # Two classes share the largest logit and the others are far below: each top class has p = 1/2, not the
    # near-one case even though the classes off the top hold almost no probability.
    z64 = np.array([[30.0, 30.0, -30.0, -30.0], [5.0, 1.0, 5.0, 5.0], [0.0, 40.0, 40.0, -40.0]])
    ids = np.array([0, 2, 2])
    fn = lambda z: L.softmax_cross_entropy(ids, z, focal_gamma=gamma, poly_epsilon=epsilon)
    loss, grad, v = value_and_grad(fn, z64.astype(np.float32))
    ref = lambda z: ref_softmax_focal(ids, z, sparse=True, gamma=gamma, epsilon=epsilon)
    np.testing.assert_allclose(loss, ref(z64), rtol=1e-5)
    np.testing.assert_allclose(grad, numeric_grad(lambda z: np.sum(ref(z) * v), z64), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", FLOAT64])
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, None), (0.1, 0.75)])
def test_sigmoid_extreme_logits_give_finite_exact_values_and_gradients(dtype, gamma, alpha):
    logits = tensor([[1e4, -1e4, 1e4, -1e4, 0.0, 30.0]], dtype)
    labels = np.array([[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    rounded = as_float64(logits)
    loss, grad, v = value_and_grad(lambda z: L.sigmoid_cross_entropy(labels, z, focal_gamma=gamma, alpha=alpha), logits)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    ref = lambda z: (v * ref_sigmoid_focal(labels, z, gamma=gamma, alpha=alpha)).sum()
    np.testing.assert_allclose(loss, ref_sigmoid_focal(labels, rounded, gamma=gamma, alpha=alpha), rtol=1e-6)
    tol = {"float16": 1e-3, "bfloat16": 8e-3}.get(dtype, 1e-5)  # the gradient is rounded to the input dtype
    np.testing.assert_allclose(grad, numeric_grad(ref, rounded, h=1e-4), rtol=tol, atol=1e-9)


def test_beyond_16_keras_binary_focal_saturates_where_the_sigmoid_focal_loss_does_not():
    """The trade the losses guide names for Keras's faster sigmoid focal loss on JAX (and torch), its log of a
    clipped sigmoid: labels (0, 1), logits (20, -20), γ = 2, α = 0.25 give the exact loss, 10.0, and its gradient,
    (0.375, -0.125); Keras's loss is 7.99 and its gradient 0 there (TensorFlow: exact)."""
    labels, z64 = np.array([[0.0, 1.0]]), np.array([[20.0, -20.0]])
    ours = L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25)
    loss, grad, v = value_and_grad(lambda z: ours(labels, z), tensor(z64, "float32"))
    ref = lambda z: (v * ref_sigmoid_focal(labels, z, gamma=2.0, alpha=0.25)).sum()
    np.testing.assert_allclose(loss, 10.0, rtol=1e-6)
    np.testing.assert_allclose(grad, numeric_grad(ref, z64, h=1e-4), rtol=1e-5)
    keras_focal = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True
    )
    keras_loss, keras_grad, _ = value_and_grad(lambda z: keras_focal(labels, z), tensor(z64, "float32"))
    if BACKEND == "tensorflow":  # Keras's TF backend takes the log-sigmoid of the logits the sigmoid cached
        np.testing.assert_allclose([keras_loss, *keras_grad[0]], [10.0, *grad[0]], rtol=1e-5)
    else:
        np.testing.assert_allclose(keras_loss, 7.9932, rtol=1e-4)
        np.testing.assert_allclose(keras_grad, 0.0, atol=1e-6)  # no signal for the confident mistakes


@pytest.mark.parametrize("dtype,tol", [("float16", 1e-5), ("bfloat16", 1e-5)])
def test_half_precision_inputs_are_computed_in_float32(dtype, tol):
    rng = np.random.default_rng(8)
    z, ids, soft = random_problem(rng, (8, 6), -1)
    rounded = tensor(z, dtype)
    z64 = as_float64(rounded)
    got = L.softmax_cross_entropy(ids, rounded, focal_gamma=2.0, poly_epsilon=1.0)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    want = ref_softmax_focal(ids, z64, sparse=True, gamma=2.0, epsilon=1.0)
    np.testing.assert_allclose(to_numpy(got), want, rtol=tol, atol=tol)
    got = L.sigmoid_cross_entropy(soft, rounded, focal_gamma=2.0, alpha=0.25)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(got), ref_sigmoid_focal(soft, z64, gamma=2.0, alpha=0.25), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------
# Sigmoid: values and gradients against the float64 docstring formula
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    *covering_cases(
        full=[
            ("gamma,alpha", [(2.0, 0.25), (0.5, None), (0.0, 0.75), (1.0, 0.0), (3.0, 1.0)]),
            ("pos_weight", ["none", "scalar", "vector"]),
            ("smoothing,from_logits", [(0.0, True), (0.1, True), (0.0, False)]),
        ],
        pairwise=[("shape,axis", [((9,), -1), ((7, 5), -1), ((3, 4, 6), -1), ((3, 4, 6), 1), ((2, 3, 2, 4), 2)])],
    )
)
def test_sigmoid_focal_matches_float64_reference(gamma, alpha, pos_weight, smoothing, from_logits, shape, axis):
    rng = np.random.default_rng(9)
    z = rng.normal(size=shape) * 3
    pred = representable(1 / (1 + np.exp(-z)) if not from_logits else z)
    labels = rng.uniform(size=shape)  # soft labels
    labels[rng.uniform(size=shape) < 0.5] = 1.0
    labels = representable(labels)
    num_labels = shape[axis] if len(shape) > 1 else 1
    w = {"none": None, "scalar": 2.5, "vector": rng.uniform(0.5, 3.0, size=num_labels)}[pos_weight]
    opts = dict(from_logits=from_logits, label_smoothing=smoothing, pos_weight=w, axis=axis)

    def ours(x):
        return L.sigmoid_cross_entropy(labels, x, focal_gamma=gamma, alpha=alpha, **opts)

    want = ref_sigmoid_focal(labels, pred, gamma=gamma, alpha=alpha, **opts)
    np.testing.assert_allclose(to_numpy(ours(pred.astype(np.float32))), want, rtol=1e-5, atol=1e-6)
    loss, grad, v = value_and_grad(ours, pred)
    np.testing.assert_allclose(loss, want, **FLOAT64_TOL)
    ref = lambda x: (v * ref_sigmoid_focal(labels, x, gamma=gamma, alpha=alpha, **opts)).sum()
    np.testing.assert_allclose(grad, numeric_grad(ref, pred, relative=not from_logits), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Published formulas: torchvision, Optax, Keras
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torchvision_sigmoid_focal_loss_alpha_025_gamma_2(reduction):
    # Hard 0/1 targets, [B, C]. torchvision reduces over every element: "mean" is kerasce's default
    # (mean over labels, then sum_over_batch_size), "sum" is C x kerasce's "sum", "none" is per element.
    rng = np.random.default_rng(10)
    x = rng.normal(size=(16, 5)) * 3
    t = (rng.uniform(size=(16, 5)) < 0.3).astype(np.float64)
    want = torchvision_sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction=reduction)
    ours = L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25, reduction="sum" if reduction == "sum" else None)
    if reduction == "none":  # per element: rank-1 inputs are not averaged
        got = np.stack([L.sigmoid_cross_entropy(t[:, j], x[:, j], focal_gamma=2.0, alpha=0.25) for j in range(5)], 1)
    elif reduction == "sum":
        got = 5 * to_numpy(ours(t, x))
    else:
        got = to_numpy(L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25)(t, x))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # Optax's sigmoid_focal_loss is the same formula, elementwise.
    np.testing.assert_allclose(
        to_numpy(L.sigmoid_cross_entropy(t, x, focal_gamma=2.0, alpha=0.25)),
        torchvision_sigmoid_focal_loss(x, t).mean(-1),
        **FLOAT64_TOL,
    )


@pytest.mark.parametrize("epsilon", [2.0, -1.0, 0.5])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("form", ["sparse", "dense"])
def test_optax_poly_loss_cross_entropy(epsilon, smoothing, form):
    rng = np.random.default_rng(11)
    z, ids, soft = random_problem(rng, (12, 7), -1)
    labels, dense = (ids, np.eye(7)[ids]) if form == "sparse" else (soft, soft)
    want = optax_poly_loss_cross_entropy(z, optax_smooth_labels(dense, smoothing), epsilon=epsilon)
    got = L.softmax_cross_entropy(labels, z, poly_epsilon=epsilon, label_smoothing=smoothing)
    np.testing.assert_allclose(to_numpy(got), want, **FLOAT64_TOL)


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("gamma", [0.5, 2.0, 4.0]),
        ("smoothing", [0.0, 0.1]),
        ("alpha", [0.25, 1.0, "per_class"]),
        ("form", ["sparse", "dense"]),
    )
)
def test_keras_categorical_focal_crossentropy_values_and_gradients(gamma, smoothing, alpha, form):
    # Keras's α (a scalar, default 0.25, or one per class) is kerasce's class_weight; label_smoothing is the
    # same ỹ. Keras needs one-hot labels; kerasce takes the ids too.
    rng = np.random.default_rng(12)
    z, ids, _ = random_problem(rng, (3, 4, 6), -1, scale=2.0)  # moderate logits: Keras clips p to [eps, 1-eps]
    alpha = rng.uniform(0.2, 2.0, size=6) if alpha == "per_class" else alpha
    one_hot = np.eye(6)[ids].astype(np.float32)
    z = z.astype(np.float32)
    (want, got), (want_grad, got_grad) = grads_of_sums(
        [
            lambda q: keras.losses.categorical_focal_crossentropy(
                one_hot, q, alpha=alpha, gamma=gamma, from_logits=True, label_smoothing=smoothing
            ),
            lambda q: L.softmax_cross_entropy(
                ids if form == "sparse" else one_hot,
                q,
                focal_gamma=gamma,
                label_smoothing=smoothing,
                class_weight=np.broadcast_to(alpha, (6,)),
            ),
        ],
        z,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    if not isinstance(alpha, np.ndarray):  # the class, with its reduction
        keras_loss = keras.losses.CategoricalFocalCrossentropy(
            alpha=alpha, gamma=gamma, from_logits=True, label_smoothing=smoothing
        )
        ours = L.SoftmaxCrossEntropy(focal_gamma=gamma, label_smoothing=smoothing, class_weight=[alpha] * 6)
        np.testing.assert_allclose(to_numpy(ours(ids, z)), to_numpy(keras_loss(one_hot, z)), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, 0.6, None])
def test_keras_binary_focal_crossentropy_values_and_gradients(gamma, alpha):
    # Keras's alpha applies only with apply_class_balancing=True; kerasce's alpha=None is Keras's default
    # apply_class_balancing=False. They coincide for hard 0/1 labels.
    rng = np.random.default_rng(13)
    z = (rng.normal(size=(10, 4)) * 2).astype(np.float32)
    y = (rng.uniform(size=(10, 4)) < 0.4).astype(np.float32)
    balancing = dict(apply_class_balancing=True, alpha=alpha) if alpha is not None else {}
    (want, got), (want_grad, got_grad) = grads_of_sums(
        [
            lambda q: keras.losses.binary_focal_crossentropy(y, q, gamma=gamma, from_logits=True, **balancing),
            lambda q: L.sigmoid_cross_entropy(y, q, focal_gamma=gamma, alpha=alpha),
        ],
        z,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-7)
    keras_loss = keras.losses.BinaryFocalCrossentropy(gamma=gamma, from_logits=True, **balancing)
    np.testing.assert_allclose(
        to_numpy(L.SigmoidCrossEntropy(focal_gamma=gamma, alpha=alpha)(y, z)), to_numpy(keras_loss(y, z)), rtol=1e-5
    )


def test_keras_binary_focal_label_smoothing_differs_as_documented():
    # Keras applies one focal factor (1 - p_t)^γ with p_t mixed from the smoothed label; kerasce keeps one factor
    # per side (the formula for soft labels). Same ỹ, different loss: the README says not to map this one.
    z = np.array([[2.0, -1.0, 0.5]], np.float32)
    y = np.array([[1.0, 0.0, 1.0]], np.float32)
    keras_value = keras.losses.binary_focal_crossentropy(y, z, gamma=2.0, from_logits=True, label_smoothing=0.2)
    ours = L.sigmoid_cross_entropy(y, z, focal_gamma=2.0, label_smoothing=0.2)
    np.testing.assert_allclose(to_numpy(ours), ref_sigmoid_focal(y, z, gamma=2.0, label_smoothing=0.2), rtol=1e-6)
    assert abs(float(ours[0]) - float(keras_value[0])) > 1e-3


# ------------------------------------------------------------------------------------------------
# Bad options
# ------------------------------------------------------------------------------------------------

Z = np.zeros((2, 3), np.float32)
BAD_OPTIONS = [
    (lambda: L.softmax_cross_entropy([0, 1], Z, focal_gamma=-0.5), r"`focal_gamma` must be a finite number >= 0.*-0.5"),
    (lambda: L.softmax_cross_entropy([0, 1], Z, focal_gamma=float("nan")), r"`focal_gamma` must be .*nan"),
    (lambda: L.softmax_cross_entropy([0, 1], Z, focal_gamma=float("inf")), r"`focal_gamma` must be .*inf"),
    (lambda: L.softmax_cross_entropy([0, 1], Z, poly_epsilon=float("nan")), r"`poly_epsilon` must be a finite.*nan"),
    (lambda: L.softmax_cross_entropy([0, 1], Z, poly_epsilon=-float("inf")), r"`poly_epsilon` must be a finite.*-inf"),
    (lambda: L.sigmoid_cross_entropy(Z, Z, focal_gamma=-1.0), r"`focal_gamma` must be a finite number >= 0"),
    (lambda: L.sigmoid_cross_entropy(Z, Z, alpha=1.5), r"`alpha` must be in \[0, 1\].*alpha=1.5"),
    (lambda: L.sigmoid_cross_entropy(Z, Z, alpha=-0.25), r"`alpha` must be in \[0, 1\].*alpha=-0.25"),
    (lambda: L.sigmoid_cross_entropy(Z, Z, alpha=float("nan")), r"`alpha` must be in \[0, 1\].*nan"),
    (lambda: L.SoftmaxCrossEntropy(focal_gamma=-2.0), r"`focal_gamma` must be"),
    (lambda: L.SoftmaxCrossEntropy(poly_epsilon=float("inf")), r"`poly_epsilon` must be"),
    (lambda: L.SigmoidCrossEntropy(focal_gamma=float("nan")), r"`focal_gamma` must be"),
    (lambda: L.SigmoidCrossEntropy(alpha=2.0), r"`alpha` must be in \[0, 1\]"),
]


@pytest.mark.parametrize("call,message", BAD_OPTIONS)
@pytest.mark.parametrize("mode", ["eager", TF_FUNCTION])
def test_bad_focal_options_raise_clear_errors(call, message, mode):
    run = call if mode == "eager" else graph(call)
    with pytest.raises(ValueError, match=message):
        run()


# ------------------------------------------------------------------------------------------------
# Keras: get_config, .keras, masks, unknown shapes, XLA, mixed precision, tf.distribute
# ------------------------------------------------------------------------------------------------

FOCAL = [
    L.SoftmaxCrossEntropy(
        focal_gamma=2.0,
        poly_epsilon=-0.5,
        label_smoothing=0.1,
        class_weight=[1.0, 2.0, 0.5],
        ignore_class=255,
        name="focal_poly",
    ),
    L.SigmoidCrossEntropy(focal_gamma=1.5, alpha=0.25, pos_weight=[1.0, 3.0], reduction="sum", name="sig_focal"),
]


@pytest.mark.parametrize("loss", FOCAL, ids=lambda l: type(l).__name__)
def test_get_config_holds_the_focal_options_and_revives(loss):
    config = loss.get_config()
    assert set(config) == set(inspect.signature(type(loss).__init__).parameters) - {"self"}
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert revived.get_config() == config and revived.focal_gamma == loss.focal_gamma
    with pytest.raises(AttributeError, match="fixed at construction"):
        loss.focal_gamma = 0.0


@pytest.mark.slow
@pytest.mark.parametrize("multilabel", [False, True])
def test_compile_fit_save_load_round_trip(tmp_path, multilabel):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y: np.ndarray  # multi-hot float32, or int64 class ids
    if multilabel:
        y = (x[:, :3] > 0).astype(np.float32)
        loss = L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25)
    else:
        y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
        loss = L.SoftmaxCrossEntropy(focal_gamma=2.0, poly_epsilon=1.0, class_weight=[1.0, 1.5, 1.0])
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(0.05), loss=loss)
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)


def test_keras_masks_of_padded_sequences_are_respected():
    # Padded steps (token 0) are left out of the mean, with a softmax head and from_logits=False (cached logits).
    keras.utils.set_random_seed(0)
    embed = keras.layers.Embedding(
        10, 4, mask_zero=True, embeddings_initializer=keras.initializers.RandomNormal(stddev=3.0)
    )
    model = keras.Sequential([keras.Input((5,)), embed, keras.layers.Dense(3, activation="softmax")])
    tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    valid = tokens != 0
    z = np.log(to_numpy(model(tokens)).astype(np.float64))  # log-probabilities: logits of the same softmax
    # Valid steps: their least likely class (large loss); padded steps: their most likely (small loss).
    labels = np.where(valid, z.argmin(-1), z.argmax(-1))
    per_step = ref_softmax_focal(labels, z, sparse=True, gamma=2.0, epsilon=1.0)
    assert per_step[valid].mean() > 1.5 * per_step.mean()  # the check below can tell the two means apart
    model.compile(loss=L.SoftmaxCrossEntropy(from_logits=False, focal_gamma=2.0, poly_epsilon=1.0))
    np.testing.assert_allclose(model.evaluate(tokens, labels, verbose=0), per_step[valid].mean(), rtol=1e-5)


@tensorflow_only("tf.TensorSpec with unknown dimensions")
def test_unknown_shapes_in_tf_function():
    import tensorflow as tf

    rng = np.random.default_rng(15)
    z, ids, soft = random_problem(rng, (2, 3, 5), -1)
    z = z.astype(np.float32)
    sparse = tf.function(
        lambda y, x: L.softmax_cross_entropy(y, x, focal_gamma=2.0, poly_epsilon=1.0),
        input_signature=[tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None, 5])],
    )
    dense = tf.function(
        lambda y, x: L.sigmoid_cross_entropy(y, x, focal_gamma=2.0, alpha=0.25),
        input_signature=[tf.TensorSpec([None, None, 5]), tf.TensorSpec([None, None, 5])],
    )
    np.testing.assert_allclose(
        to_numpy(sparse(ids, z)), ref_softmax_focal(ids, z, sparse=True, gamma=2.0, epsilon=1.0), rtol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(dense(soft.astype(np.float32), z)),
        ref_sigmoid_focal(soft, z, gamma=2.0, alpha=0.25),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.slow  # one compilation, seconds: the quick subset's jit checks are in test_losses_backends.py
def test_focal_math_compiles_under_jit():
    # The focal / poly forms (sparse and dense softmax, sigmoid) under the backend's jit: the same values and
    # gradients as eagerly, finite for a saturated row.
    rng = np.random.default_rng(16)
    z, ids, _soft = random_problem(rng, (6, 5), -1)
    z = np.concatenate([z, [[1e4, -1e4, 0, 0, 0]]]).astype(np.float32)
    ids = np.concatenate([ids, [0]]).astype(np.int32)
    one_hot = np.eye(5, dtype=np.float32)[ids]

    def total(z):
        sparse = L.softmax_cross_entropy(ids, z, focal_gamma=0.5, poly_epsilon=1.0)
        dense = L.softmax_cross_entropy(one_hot, z, focal_gamma=2.0, poly_epsilon=-1.0)
        sig = L.sigmoid_cross_entropy(one_hot, z, focal_gamma=2.0, alpha=0.25, pos_weight=2.0)
        return keras.ops.sum(sparse) + keras.ops.sum(dense) + keras.ops.sum(sig)

    eager_total, eager_grad = grad_of(total, z)
    jit_total, jit_grad = grad_of(total, z, compiled=True)
    assert np.isfinite(jit_total) and np.all(np.isfinite(jit_grad))
    np.testing.assert_allclose(jit_total, eager_total, rtol=1e-5)
    np.testing.assert_allclose(jit_grad, eager_grad, rtol=1e-4, atol=1e-6)


def _fit_weights(loss, y, jit_compile):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(17).normal(size=(32, 6)).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)])
    model.compile(keras.optimizers.SGD(0.5), loss=loss, jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    return model.get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["softmax", "sigmoid"])
def test_fit_step_under_jit_compile_equals_the_plain_step(task):
    rng = np.random.default_rng(18)
    if task == "softmax":
        loss = L.SoftmaxCrossEntropy(focal_gamma=2.0, poly_epsilon=1.0, label_smoothing=0.1, ignore_class=255)
        y = np.where(rng.uniform(size=32) < 0.2, 255, rng.integers(0, 4, size=32))
    else:
        loss = L.SigmoidCrossEntropy(focal_gamma=2.0, alpha=0.25)
        y = (rng.uniform(size=(32, 4)) < 0.3).astype(np.float32)
    for got, want in zip(_fit_weights(loss, y, True), _fit_weights(loss, y, False)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("loss_cls", [L.SoftmaxCrossEntropy, L.SigmoidCrossEntropy])
def test_mixed_float16_policy_trains_finitely(loss_cls):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        rng = np.random.default_rng(19)
        x = rng.normal(size=(64, 8)).astype(np.float32)
        if loss_cls is L.SoftmaxCrossEntropy:
            y, loss = (x[:, 0] > 0).astype(np.int64), L.SoftmaxCrossEntropy(focal_gamma=0.5, poly_epsilon=1.0)
        else:
            y, loss = (x[:, :2] > 0).astype(np.float32), L.SigmoidCrossEntropy(focal_gamma=0.5, alpha=0.25)
        # Large initial weights: saturated float16 logits (p -> 1 and 0) from the first step.
        big = keras.initializers.RandomNormal(stddev=50.0)
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(2, kernel_initializer=big),
            ]
        )
        model.compile(keras.optimizers.Adam(0.01), loss=loss)
        assert model.layers[-1].compute_dtype == "float16"
        history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def run_distributed_job(zygote, devices: int) -> dict:
    """Both focal tasks trained on `devices` CPU devices, in a fresh process (the split needs one; forked from
    tests/zygote.py's, so without a TensorFlow import of its own)."""
    proc = zygote.run(__file__, "--devices", str(devices), timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored_focal_runs(zygote):
    """Both tasks under MirroredStrategy on 2 CPU devices: one process for the two."""
    return run_distributed_job(zygote, 2)


@pytest.mark.slow
@tensorflow_only("tf.distribute")
@pytest.mark.xdist_group("focal-mirrored")  # both tasks on one xdist worker: the fixture's process starts once
@pytest.mark.parametrize("task", ["softmax", "sigmoid"])
def test_mirrored_on_two_cpu_devices_equals_one_device(task, mirrored_focal_runs):
    import tensorflow as tf

    # The one-device reference runs here, in the test's own process (default strategy).
    one, mirrored = train_focal_task(task, tf.distribute.get_strategy()), mirrored_focal_runs[task]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    np.testing.assert_allclose(mirrored["losses"], one["losses"], rtol=1e-5)
    for got, want in zip(mirrored["weights"], one["weights"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def train_focal_task(task: str, strategy) -> dict:
    """A few fit steps with a focal loss under `strategy` (a tf.distribute.Strategy): the per-batch losses and
    the final weights."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, size=48).astype(np.float32)
    if task == "softmax":
        y = rng.integers(0, 4, size=48)
        loss = L.SoftmaxCrossEntropy(
            focal_gamma=2.0, poly_epsilon=1.0, label_smoothing=0.1, class_weight=[1, 2, 1, 0.5]
        )
    else:
        y = (rng.uniform(size=(48, 4)) < 0.3).astype(np.float32)
        loss = L.SigmoidCrossEntropy(focal_gamma=1.5, alpha=0.25, pos_weight=2.0)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)])
        model.compile(keras.optimizers.SGD(0.5), loss=loss)
    batch_losses = []

    class RecordLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batch_losses.append(float(logs["loss"]))

    model.fit(tf.data.Dataset.from_tensor_slices((x, y, w)).batch(16), epochs=1, verbose=0, callbacks=[RecordLoss()])
    return {
        "replicas": strategy.num_replicas_in_sync,
        "losses": batch_losses,
        "weights": [v.tolist() for v in model.get_weights()],
    }


def _distributed_job_main() -> None:
    """Both focal tasks under MirroredStrategy on --devices CPU devices; prints one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    from kerasce import distribute

    distribute.split_cpu(args.devices)
    strategy = distribute.get_strategy("mirrored")
    print(json.dumps({task: train_focal_task(task, strategy) for task in ("softmax", "sigmoid")}))


if __name__ == "__main__":
    _distributed_job_main()
