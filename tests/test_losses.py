"""kerasce.losses against float64 NumPy references written from the docstring formulas, Keras and tf.nn.

Runs on the active Keras backend (KERAS_BACKEND); tests of TensorFlow-only features say so.
"""

import inspect
import math
import re

import keras
import numpy as np
import pytest
from backends import BACKEND, data_error, graph, tensorflow_only, to_numpy, value_and_grad
from covering import covering_cases, product_quick_pairs
from loss_references import (
    EPS,
    random_problem,
    ref_log_softmax,
    ref_sigmoid_ce,
    ref_softmax_ce,
    ref_softmax_ce_grad,
)

from kerasce import losses as L

# The tf.function variant of a check: TensorFlow's graph mode without XLA (slow: a trace per case).
TF_FUNCTION = pytest.param("tf.function", marks=[pytest.mark.slow, tensorflow_only("tf.function")], id="tf.function")


# Keras on JAX has float64 only with jax_enable_x64 (off by default, as a Keras user has it).
NO_JAX_FLOAT64 = pytest.mark.skipif(BACKEND == "jax", reason="JAX without jax_enable_x64 has no float64")
FLOAT64 = pytest.param("float64", marks=NO_JAX_FLOAT64)
NO_JAX_CACHED_LOGITS = pytest.mark.skipif(
    BACKEND == "jax", reason="JAX arrays take no attributes: Keras caches no logits on activation outputs there"
)


def tensor(values, dtype):
    return keras.ops.convert_to_tensor(np.asarray(values), dtype)


SHAPES_AXES = [((6, 4), -1), ((3, 5, 7), -1), ((2, 4, 3, 5), -1), ((3, 5, 7), 1), ((2, 4, 3, 5), 1)]


# ------------------------------------------------------------------------------------------------
# Softmax cross-entropy: values
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    *covering_cases(
        full=[
            ("form", ["sparse", "sparse_trailing_1", "dense"]),
            ("from_logits", [True, False]),
            ("smoothing", [0.0, 0.2]),
            ("weighted", [False, True]),
        ],
        pairwise=[("shape,axis", SHAPES_AXES)],
    )
)
def test_softmax_matches_float64_reference(form, from_logits, smoothing, weighted, shape, axis):
    rng = np.random.default_rng(1)
    pred, ids, soft = random_problem(rng, shape, axis, probabilities=not from_logits)
    weights = rng.uniform(0.2, 3.0, size=shape[axis]) if weighted else None
    if form == "dense":
        labels, ref_labels = soft, soft
    elif form == "sparse":
        labels, ref_labels = ids, ids
    else:
        labels, ref_labels = np.expand_dims(ids, axis), ids
    got = L.softmax_cross_entropy(
        labels, pred, from_logits=from_logits, label_smoothing=smoothing, class_weight=weights, axis=axis
    )
    want, _ = ref_softmax_ce(
        ref_labels,
        pred,
        sparse=form != "dense",
        from_logits=from_logits,
        smoothing=smoothing,
        weights=weights,
        axis=axis,
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_labels_equal_one_hot_labels(smoothing, weighted):
    rng = np.random.default_rng(2)
    logits, ids, _ = random_problem(rng, (16, 9), -1)
    weights = rng.uniform(0.5, 2.0, size=9) if weighted else None
    sparse = L.softmax_cross_entropy(ids, logits, label_smoothing=smoothing, class_weight=weights)
    dense = L.softmax_cross_entropy(np.eye(9)[ids], logits, label_smoothing=smoothing, class_weight=weights)
    np.testing.assert_allclose(to_numpy(sparse), to_numpy(dense), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["sparse", "dense"])
def test_moving_the_class_axis_changes_nothing(form):
    rng = np.random.default_rng(3)
    logits, ids, soft = random_problem(rng, (2, 3, 4, 6), -1)
    labels = ids if form == "sparse" else soft
    last = L.softmax_cross_entropy(labels, logits)
    moved_labels = labels if form == "sparse" else np.moveaxis(labels, -1, 1)
    first = L.softmax_cross_entropy(moved_labels, np.moveaxis(logits, -1, 1), axis=1)
    np.testing.assert_allclose(to_numpy(first), to_numpy(last), rtol=1e-6)


def test_worked_example_three_classes_by_hand():
    # logits (2, 1, 0), true class 0: p_0 = e^2 / (e^2 + e + 1), loss = log(e^2 + e + 1) - 2 ≈ 0.40761.
    by_hand = math.log(math.e**2 + math.e + 1) - 2
    got = L.softmax_cross_entropy([0], [[2.0, 1.0, 0.0]])
    np.testing.assert_allclose(to_numpy(got), [by_hand], rtol=1e-6)
    assert abs(by_hand - 0.40761) < 1e-5
    # Label smoothing 0.3 spreads 0.1 onto each class: loss = 0.8 * 0.40761 + 0.1 * (1.40761 + 2.40761).
    smoothed = 0.8 * by_hand + 0.1 * (by_hand + 1) + 0.1 * (by_hand + 2)
    got = L.softmax_cross_entropy([0], [[2.0, 1.0, 0.0]], label_smoothing=0.3)
    np.testing.assert_allclose(to_numpy(got), [smoothed], rtol=1e-6)


def test_worked_example_three_labels_sigmoid_by_hand():
    # logits (2, -1, 0), labels (1, 0, 1): terms log(1 + e^-2), log(1 + e^-1), log 2; their mean ≈ 0.37778.
    by_hand = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    got = L.sigmoid_cross_entropy([[1.0, 0.0, 1.0]], [[2.0, -1.0, 0.0]])
    np.testing.assert_allclose(to_numpy(got), [by_hand], rtol=1e-6)
    assert abs(by_hand - 0.377779) < 1e-6


# ------------------------------------------------------------------------------------------------
# Numerics: extreme logits, low precision, gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", FLOAT64])
def test_softmax_extreme_logits_are_finite_and_exact(dtype):
    logits = tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], dtype)
    big = float(to_numpy(keras.ops.cast(keras.ops.cast(1e4, dtype), "float32")))  # 1e4 rounds to 9984 in bfloat16
    labels = [1, 0, 2]
    got = L.softmax_cross_entropy(labels, logits)
    # Exact: z_max - z_label (+ log 2 for the tie in row 2), log 3 for the uniform row.
    want = [2 * big, 2 * big + math.log(2), math.log(3)]
    assert np.all(np.isfinite(to_numpy(got)))
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6)
    assert keras.backend.standardize_dtype(got.dtype) == ("float64" if dtype == "float64" else "float32")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_sigmoid_extreme_logits_are_finite_and_exact(dtype):
    logits = tensor([[1e4, -1e4, 1e4, -1e4]], dtype)
    labels = [[1.0, 0.0, 0.0, 1.0]]
    big = float(to_numpy(keras.ops.cast(keras.ops.cast(1e4, dtype), "float32")))  # 1e4 rounds to 9984 in bfloat16
    got = L.sigmoid_cross_entropy(labels, logits)
    np.testing.assert_allclose(to_numpy(got), [(0 + 0 + big + big) / 4], rtol=1e-6)
    _, grad = value_and_grad(
        lambda z: keras.ops.sum(L.sigmoid_cross_entropy(labels, z)), to_numpy(keras.ops.cast(logits, "float32"))
    )
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.25, -0.25]], atol=1e-7)  # (σ(z) - y) / C


@pytest.mark.parametrize(
    "dtype,tol", [("float16", 2e-3), ("bfloat16", 2e-2), pytest.param("float64", 1e-12, marks=NO_JAX_FLOAT64)]
)
def test_low_and_high_precision_inputs_match_reference_of_the_rounded_inputs(dtype, tol):
    rng = np.random.default_rng(4)
    logits, ids, _ = random_problem(rng, (32, 10), -1)
    rounded = tensor(logits, dtype)
    got = L.softmax_cross_entropy(ids, rounded)
    want, _ = ref_softmax_ce(ids, to_numpy(keras.ops.cast(rounded, "float64")), sparse=True)
    # The math runs in float32 (float64 kept), so only the input rounding differs from the reference.
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6 if dtype != "float64" else tol, atol=1e-6)


@pytest.mark.parametrize("form", ["sparse", "dense"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_gradient_matches_analytic(form, smoothing, weighted):
    rng = np.random.default_rng(5)
    logits, ids, soft = random_problem(rng, (8, 5), -1)
    labels = ids if form == "sparse" else soft
    weights = rng.uniform(0.5, 2.0, size=5) if weighted else None
    _, got = value_and_grad(
        lambda z: keras.ops.sum(L.softmax_cross_entropy(labels, z, label_smoothing=smoothing, class_weight=weights)),
        logits,
    )
    want = ref_softmax_ce_grad(labels, logits, sparse=form == "sparse", smoothing=smoothing, weights=weights)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sigmoid_gradient_matches_analytic_with_pos_weight():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 4)).astype(np.float32) * 3
    y = (rng.uniform(size=(6, 4)) > 0.5).astype(np.float32)
    w = np.array([1.0, 2.0, 0.5, 4.0])
    _, got = value_and_grad(lambda z: keras.ops.sum(L.sigmoid_cross_entropy(y, z, pos_weight=w)), x)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    # d/dz of (1 + (w-1) y) softplus(z) - w y z, divided by C for the mean.
    want = ((1 + (w - 1) * y) * s - w * y) / 4
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_probability_gradient_does_not_vanish_at_the_clip():
    # The true class has probability exactly 0: a plain clip gives zero gradient; ours gives -1/eps.
    p = np.array([[0.0, 1.0, 0.0]], np.float32)
    loss, grad = value_and_grad(lambda q: keras.ops.sum(L.softmax_cross_entropy([0], q, from_logits=False)), p)
    np.testing.assert_allclose(loss, -math.log(EPS), rtol=1e-5)
    np.testing.assert_allclose(grad, [[-1 / EPS, 0.0, 0.0]], rtol=1e-5)
    _, naive = value_and_grad(lambda q: -keras.ops.sum(keras.ops.log(keras.ops.clip(q[:, 0], EPS, 1 - EPS))), p)
    assert naive[0, 0] == 0.0  # what the straight-through form avoids


@NO_JAX_CACHED_LOGITS
def test_softmax_activation_output_uses_the_cached_logits():
    # A saturated softmax output: probabilities are 0/1 in float32, but the logits Keras caches are exact.
    def loss_of(logits):
        return keras.ops.sum(L.softmax_cross_entropy([1], keras.activations.softmax(logits), from_logits=False))

    loss, grad = value_and_grad(loss_of, np.array([[30.0, -30.0, 0.0]], np.float32))
    np.testing.assert_allclose(loss, 60.0 + math.log1p(math.exp(-30)), rtol=1e-6)
    np.testing.assert_allclose(grad, ref_softmax_ce_grad([1], [[30.0, -30.0, 0.0]], sparse=True), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Sigmoid cross-entropy: values
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    *product_quick_pairs(
        ("shape,axis", [((7, 5), -1), ((3, 4, 6), -1), ((3, 4, 6), 1), ((9,), -1)]),
        ("from_logits", [True, False]),
        ("smoothing", [0.0, 0.1]),
        ("pos_weight", ["none", "scalar", "vector"]),
    )
)
def test_sigmoid_matches_float64_reference(shape, axis, from_logits, smoothing, pos_weight):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape).astype(np.float32) * 3
    if not from_logits:
        x = (1 / (1 + np.exp(-x))).astype(np.float32)
    y = (rng.uniform(size=shape) > 0.6).astype(np.float32)
    num_labels = shape[axis] if len(shape) > 1 else 1  # rank 1: each entry is its own binary example
    weight = {"none": None, "scalar": 2.5, "vector": rng.uniform(0.5, 3, size=num_labels)}[pos_weight]
    got = L.sigmoid_cross_entropy(
        y, x, from_logits=from_logits, label_smoothing=smoothing, pos_weight=weight, axis=axis
    )
    want = ref_sigmoid_ce(y, x, from_logits=from_logits, smoothing=smoothing, pos_weight=weight, axis=axis)
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-6, atol=2e-6)


def test_binary_shapes_b_and_b1_are_interchangeable():
    x = np.array([[0.3], [-1.2], [2.0]], np.float32)
    y = np.array([1.0, 0.0, 0.0], np.float32)
    a = L.sigmoid_cross_entropy(y, x)
    b = L.sigmoid_cross_entropy(y[:, None], x)
    c = L.sigmoid_cross_entropy(y, x[:, 0])
    np.testing.assert_allclose(to_numpy(a), to_numpy(b))
    np.testing.assert_allclose(to_numpy(c), to_numpy(b))
    np.testing.assert_allclose(to_numpy(b), ref_sigmoid_ce(y[:, None], x), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Parity with Keras and tf.nn where they overlap
# ------------------------------------------------------------------------------------------------


def test_parity_with_keras_and_tf_nn_softmax():
    rng = np.random.default_rng(8)
    logits, ids, soft = random_problem(rng, (64, 10), -1)
    ours = L.SoftmaxCrossEntropy()
    np.testing.assert_allclose(
        to_numpy(ours(ids, logits)),
        to_numpy(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(ids, logits)),
        rtol=1e-6,
    )
    if BACKEND == "tensorflow":
        import tensorflow as tf

        np.testing.assert_allclose(
            to_numpy(L.softmax_cross_entropy(ids, logits)),
            to_numpy(tf.nn.sparse_softmax_cross_entropy_with_logits(ids, logits)),
            rtol=1e-6,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        to_numpy(L.SoftmaxCrossEntropy(label_smoothing=0.1)(soft, logits)),
        to_numpy(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(soft, logits)),
        rtol=1e-6,
    )
    probs = np.exp(ref_log_softmax(logits.astype(np.float64))).astype(np.float32)
    np.testing.assert_allclose(
        to_numpy(L.SoftmaxCrossEntropy(from_logits=False)(ids, probs)),
        to_numpy(keras.losses.SparseCategoricalCrossentropy()(ids, probs)),
        rtol=1e-5,
    )
    seg_logits, seg_ids, _ = random_problem(rng, (2, 5, 5, 4), -1)
    seg_ids[0, :2] = 255
    np.testing.assert_allclose(
        to_numpy(L.SoftmaxCrossEntropy(ignore_class=255)(seg_ids, seg_logits)),
        to_numpy(keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(seg_ids, seg_logits)),
        rtol=1e-6,
    )


def test_parity_with_keras_and_tf_nn_sigmoid():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(32, 6)).astype(np.float32) * 4
    y = (rng.uniform(size=(32, 6)) > 0.5).astype(np.float32)
    np.testing.assert_allclose(
        to_numpy(L.SigmoidCrossEntropy(label_smoothing=0.2)(y, x)),
        to_numpy(keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2)(y, x)),
        rtol=1e-6,
    )
    # tf.nn.weighted_cross_entropy_with_logits's formula: (1 - y) z + (1 + (w - 1) y) log(1 + e^-z), float64.
    z64 = x.astype(np.float64)
    weighted = (1 - y) * z64 + (1 + 2.0 * y) * np.logaddexp(0, -z64)
    np.testing.assert_allclose(to_numpy(L.sigmoid_cross_entropy(y, x, pos_weight=3.0)), weighted.mean(-1), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# ignore_class, sample weights, reductions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore", [-1, 0, 255])
def test_ignore_class_masks_positions_out_of_the_mean(ignore):
    rng = np.random.default_rng(10)
    logits, ids, _ = random_problem(rng, (3, 4, 4, 5), -1)
    ids[:, 0, :] = ignore
    got = to_numpy(L.SoftmaxCrossEntropy(ignore_class=ignore)(ids, logits))
    per_pixel, valid = ref_softmax_ce(ids, logits, sparse=True, ignore=ignore)
    np.testing.assert_allclose(got, per_pixel[valid].mean(), rtol=1e-6)
    raw = to_numpy(L.softmax_cross_entropy(ids, logits, ignore_class=ignore))
    assert np.all(raw[~valid] == 0)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"])
def test_reductions_and_negative_sample_weights(reduction):
    rng = np.random.default_rng(11)
    logits, ids, _ = random_problem(rng, (12, 4), -1)
    weights = rng.normal(size=12)  # returns can be negative
    got = to_numpy(L.SoftmaxCrossEntropy(reduction=reduction)(ids, logits, sample_weight=weights))
    per_example = ref_softmax_ce(ids, logits, sparse=True)[0] * weights
    want = {
        "sum_over_batch_size": per_example.sum() / 12,
        "sum": per_example.sum(),
        "mean_with_sample_weight": per_example.sum() / weights.sum(),
        "none": per_example,
    }[reduction]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Policy gradient and entropy
# ------------------------------------------------------------------------------------------------


def test_policy_gradient_loss_is_return_weighted_cross_entropy():
    rng = np.random.default_rng(12)
    logits, actions, _ = random_problem(rng, (10, 3), -1)
    returns = rng.normal(size=10)
    per_step = to_numpy(L.policy_gradient_loss(actions, logits, returns))
    np.testing.assert_allclose(per_step, returns * ref_softmax_ce(actions, logits, sparse=True)[0], rtol=1e-5)
    reduced = to_numpy(L.PolicyGradientLoss()(actions, logits, returns))
    np.testing.assert_allclose(reduced, per_step.mean(), rtol=1e-5, atol=1e-7)


def test_policy_gradient_is_the_reinforce_estimator():
    # ∇_z mean_t(-G_t log π(a_t)) = mean_t G_t (softmax(z_t) - onehot(a_t)), returns held constant.
    rng = np.random.default_rng(13)
    logits, actions, _ = random_problem(rng, (6, 4), -1)
    returns = rng.normal(size=6).astype(np.float32)
    _, (grad, grad_returns) = value_and_grad(lambda z, g: L.PolicyGradientLoss()(actions, z, g), logits, returns)
    want = returns[:, None].astype(np.float64) * ref_softmax_ce_grad(actions, logits, sparse=True) / 6
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    assert np.all(grad_returns == 0)  # the return is a constant weight


def test_policy_gradient_loss_needs_returns():
    with pytest.raises(ValueError, match="needs the returns"):
        L.PolicyGradientLoss()([0, 1], [[0.0, 1.0], [1.0, 0.0]])


def test_softmax_entropy_matches_reference_and_handles_masked_actions():
    rng = np.random.default_rng(14)
    logits = rng.normal(size=(5, 7)) * 2
    p = np.exp(ref_log_softmax(logits))
    np.testing.assert_allclose(
        to_numpy(L.softmax_entropy(logits.astype(np.float32))), -(p * np.log(p)).sum(-1), rtol=1e-5
    )
    masked = L.softmax_entropy([[0.0, 0.0, -np.inf]])
    np.testing.assert_allclose(to_numpy(masked), [math.log(2)], rtol=1e-6)


@pytest.mark.parametrize("logits", [[[0.3, -1.2, 2.0, 0.0]], [[0.3, -1.2, -np.inf, 0.0]]])
def test_softmax_entropy_gradient_matches_analytic_and_is_finite_for_masked_actions(logits):
    # dH/dz_k = -p_k (log p_k + H); a masked class (p = 0) gets 0.
    z64 = np.asarray(logits, np.float64)
    log_p = ref_log_softmax(z64)
    p = np.exp(log_p)
    entropy = -(p * np.where(p > 0, log_p, 0)).sum(-1, keepdims=True)
    want = -p * (np.where(p > 0, log_p, 0) + entropy)
    _, got = value_and_grad(lambda z: keras.ops.sum(L.softmax_entropy(z)), np.asarray(logits, np.float32))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_masked_logits_with_dense_labels_stay_finite():
    # A class that cannot happen (logit -inf) and has label 0 adds nothing: loss = -log softmax over the rest.
    got = L.softmax_cross_entropy([[0.0, 1.0, 0.0]], [[1.0, 2.0, -np.inf]])
    np.testing.assert_allclose(to_numpy(got), [math.log(math.e + math.e**2) - 2.0], rtol=1e-6)


@NO_JAX_CACHED_LOGITS
def test_cached_logits_survive_the_cast_under_mixed_float16():
    # Saturated softmax output, from_logits=False: exact only if the loss reaches the cached logits,
    # which Keras's float16 -> float32 cast in Loss.__call__ would otherwise drop.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax", use_bias=False)])
        model.layers[0].kernel.assign([[30.0, -30.0]])
        probs = model(np.ones((1, 1), np.float32))
        assert keras.backend.standardize_dtype(probs.dtype) == "float16"
        loss = L.SoftmaxCrossEntropy(from_logits=False)([1], probs)
        np.testing.assert_allclose(to_numpy(loss), 60.0, rtol=1e-3)  # clipped probabilities would give 16.1
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors, eager (every backend) and inside tf.function
# ------------------------------------------------------------------------------------------------

LOGITS = np.zeros((2, 3), np.float32)

RUNTIME_ERRORS = [
    (lambda: L.softmax_cross_entropy([0, 3], LOGITS), r"integer class ids in \[0, 3\)\..*Got values from.*0.*to.*3"),
    (lambda: L.softmax_cross_entropy([0, -1], LOGITS), r"integer class ids in \[0, 3\)\..*Got values from.*-1.*to.*0"),
    (lambda: L.SoftmaxCrossEntropy()([0.0, 1.5], LOGITS), r"integer class ids in \[0, 3\).*to.*1.5"),
    (lambda: L.SoftmaxCrossEntropy(ignore_class=255)([255, 7], LOGITS), r"\[0, 3\) \(or ignore_class=255\)"),
    (lambda: L.softmax_cross_entropy([[0.5, 0.7, -0.2]] * 2, LOGITS), r"soft labels must be in \[0, 1\].*-0.2"),
    (
        lambda: L.softmax_cross_entropy([0, 1], [[0.2, 1.3, 0.1]] * 2, from_logits=False),
        r"probabilities \(from_logits=False\) must be in \[0, 1\].*to.*1.3",
    ),
    (lambda: L.softmax_cross_entropy([0, 1], [[-0.2, 1.0, 0.2]] * 2, from_logits=False), r"must be in \[0, 1\].*-0.2"),
    (lambda: L.sigmoid_cross_entropy([[0.0, 2.0, 1.0]] * 2, LOGITS), r"labels must be in \[0, 1\].*to.*2"),
    (lambda: L.sigmoid_cross_entropy([[0.0, np.nan, 1.0]] * 2, LOGITS), r"labels must be in \[0, 1\].*nan"),
    (lambda: L.softmax_cross_entropy([0.0, np.nan], LOGITS), r"integer class ids in \[0, 3\)"),
    (lambda: L.softmax_cross_entropy([0, 1], [[0.5, np.nan, 0.5]] * 2, from_logits=False), r"probabilities.*nan"),
    (
        lambda: L.sigmoid_cross_entropy([[0.0, 1.0, 1.0]] * 2, [[0.5, 1.5, 0.0]] * 2, from_logits=False),
        r"probabilities.*must be in \[0, 1\].*1.5",
    ),
]

STATIC_ERRORS = [
    (lambda: L.softmax_cross_entropy([0, 1], np.zeros((2, 1), np.float32)), "single class"),
    (lambda: L.softmax_cross_entropy([0, 1, 2], LOGITS), "in neither form"),
    (lambda: L.softmax_cross_entropy(np.zeros((2, 4)), LOGITS), "in neither form"),
    (lambda: L.softmax_cross_entropy([0, 1], LOGITS, class_weight=[1.0, 2.0]), r"expected shape \(3,\)"),
    (lambda: L.softmax_cross_entropy([0, 1], LOGITS, label_smoothing=1.5), "`label_smoothing` must be in"),
    (lambda: L.softmax_cross_entropy(np.eye(3)[:2], LOGITS, ignore_class=0), "needs integer class ids"),
    (lambda: L.softmax_cross_entropy([0, 1], LOGITS, axis=2), "out of range"),
    (lambda: L.sigmoid_cross_entropy(np.zeros((2, 4)), LOGITS), "must have the predictions' shape"),
    (lambda: L.sigmoid_cross_entropy(np.zeros((2, 3)), LOGITS, pos_weight=[1.0, 2.0]), r"expected shape \(3,\)"),
    (lambda: L.SoftmaxCrossEntropy(class_weight=[1.0, -1.0, 1.0]), "must be non-negative"),
    (lambda: L.SigmoidCrossEntropy(label_smoothing=-0.1), "`label_smoothing` must be in"),
    (lambda: L.SoftmaxCrossEntropy(reduction="average"), "Expected one of"),
    (lambda: L.PolicyGradientLoss(reduction="mean_with_sample_weight"), "sum of the returns"),
]


@pytest.mark.parametrize("call,message", RUNTIME_ERRORS)
@pytest.mark.parametrize("mode", ["eager", TF_FUNCTION])
def test_bad_values_raise_clear_errors(call, message, mode):
    run = call if mode == "eager" else graph(call)
    with pytest.raises(data_error(), match=re.compile(message, re.S)):
        run()


@pytest.mark.parametrize("call,message", STATIC_ERRORS)
@pytest.mark.parametrize("mode", ["eager", TF_FUNCTION])
def test_bad_shapes_and_options_raise_clear_errors(call, message, mode):
    run = call if mode == "eager" else graph(call)
    with pytest.raises(ValueError, match=message):
        run()


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_keras_masks_of_padded_sequences_are_respected_with_probabilities(policy):
    # Padded steps (token 0) are masked out of the mean by Keras, with a softmax head and from_logits=False.
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        # Large embeddings: confident predictions, so masked and unmasked means differ clearly.
        embed = keras.layers.Embedding(
            10, 4, mask_zero=True, embeddings_initializer=keras.initializers.RandomNormal(stddev=4.0)
        )
        model = keras.Sequential([keras.Input((5,)), embed, keras.layers.Dense(3, activation="softmax")])
        tokens = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
        valid = tokens != 0
        probs = to_numpy(model(tokens)).astype(np.float64)
        # Valid steps: their most likely class (small loss); padded steps: their least likely (large loss).
        labels = np.where(valid, probs.argmax(-1), probs.argmin(-1))
        nll = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
        masked, unmasked = nll[valid].mean(), nll.mean()
        assert unmasked > 2 * masked  # the check below can tell the two apart
        model.compile(loss=L.SoftmaxCrossEntropy(from_logits=False))
        np.testing.assert_allclose(
            model.evaluate(tokens, labels, verbose=0), masked, rtol=1e-2 if policy != "float32" else 1e-5
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_options_are_read_only():
    loss = L.SoftmaxCrossEntropy(label_smoothing=0.1)
    assert loss.label_smoothing == 0.1 and loss.from_logits is True
    with pytest.raises(AttributeError, match="fixed at construction"):
        loss.label_smoothing = 0.5
    assert loss.get_config()["label_smoothing"] == 0.1


@tensorflow_only("tf.TensorSpec of unknown rank")
def test_labels_of_unknown_rank_are_a_clear_error():
    import tensorflow as tf

    run = tf.function(L.softmax_cross_entropy, input_signature=[tf.TensorSpec(None), tf.TensorSpec([None, 3])])
    with pytest.raises(ValueError, match="labels must have a known rank"):
        run.get_concrete_function()


def test_out_of_range_label_fails_inside_fit():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", L.SoftmaxCrossEntropy(), jit_compile=False)  # jit: NaN instead (test_losses_backends.py)
    x, y = np.zeros((8, 4), np.float32), np.array([0, 1, 2, 3, 0, 1, 2, 0])
    with pytest.raises(data_error(), match=r"class ids in \[0, 3\)"):
        model.fit(x, y, epochs=1, verbose=0)


# ------------------------------------------------------------------------------------------------
# Serialization, compile / fit / save / load, mixed precision
# ------------------------------------------------------------------------------------------------

NON_DEFAULT = [
    L.SoftmaxCrossEntropy(
        from_logits=False,
        label_smoothing=0.1,
        class_weight=[1.0, 2.0, 0.5],
        ignore_class=255,
        axis=1,
        reduction="sum",
        name="seg",
        dtype="float64",
    ),
    L.SigmoidCrossEntropy(
        from_logits=False, label_smoothing=0.05, pos_weight=[1.0, 3.0], axis=1, reduction="none", name="ml"
    ),
    L.SigmoidCrossEntropy(pos_weight=2.0),
    L.PolicyGradientLoss(reduction="sum", name="pg", dtype="float32"),
]


@pytest.mark.parametrize("loss", NON_DEFAULT, ids=lambda l: type(l).__name__)
def test_get_config_is_exactly_the_constructor_arguments_and_revives(loss):
    config = loss.get_config()
    params = set(inspect.signature(type(loss).__init__).parameters) - {"self"}
    assert set(config) == params
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(revived) is type(loss)
    assert revived.get_config() == config


@pytest.mark.slow
def test_compile_fit_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    loss = L.SoftmaxCrossEntropy(label_smoothing=0.05, class_weight=[1.0, 1.5, 1.0])
    model.compile(keras.optimizers.Adam(0.05), loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the loss is registered
    assert isinstance(loaded.loss, L.SoftmaxCrossEntropy)
    assert loaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0)[0], model.evaluate(x, y, verbose=0)[0], rtol=1e-6)


def test_reinforce_is_fit_with_returns_as_sample_weight():
    # A one-state bandit: action 2 pays +1, the others -1. fit(obs, actions, sample_weight=returns) learns it.
    rng = np.random.default_rng(16)
    actions = rng.integers(0, 3, size=256)
    returns = np.where(actions == 2, 1.0, -1.0)
    obs = np.ones((256, 1), np.float32)
    policy = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3, use_bias=False, kernel_initializer="zeros")])
    policy.compile(keras.optimizers.SGD(0.5), loss=L.PolicyGradientLoss())
    policy.fit(obs, actions, sample_weight=returns, epochs=5, batch_size=64, verbose=0)
    probs = to_numpy(keras.ops.softmax(policy(obs[:1])))[0]
    assert probs[2] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("loss_cls", [L.SoftmaxCrossEntropy, L.SigmoidCrossEntropy])
def test_mixed_float16_policy_trains_finitely(loss_cls):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        rng = np.random.default_rng(17)
        x = rng.normal(size=(64, 8)).astype(np.float32)
        if loss_cls is L.SoftmaxCrossEntropy:
            y = (x[:, 0] > 0).astype(np.int64)
        else:
            y = (x[:, :2] > 0).astype(np.float32)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
        model.compile(keras.optimizers.Adam(0.01), loss=loss_cls())
        assert model.layers[-1].compute_dtype == "float16"
        history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
        losses = history.history["loss"]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_sigmoid_gradient_with_respect_to_soft_labels_is_minus_the_logits_over_c():
    # d/dy of mean_c (softplus(z) - y z) is -z / C: the labels of a distillation target get their gradient too.
    rng = np.random.default_rng(31)
    z = rng.normal(size=(4, 5)) * 3
    y = rng.uniform(size=(4, 5)).astype(np.float32)
    logits = keras.ops.convert_to_tensor(z.astype(np.float32))
    _, grad = value_and_grad(lambda labels: keras.ops.sum(L.sigmoid_cross_entropy(labels, logits)), y)
    np.testing.assert_allclose(grad, -z.astype(np.float32) / 5, rtol=1e-5, atol=1e-7)
