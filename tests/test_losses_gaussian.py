"""gaussian_nll, gaussian_entropy and GaussianNLL against float64 NumPy references, on the active backend."""

import inspect
import math

import keras
import numpy as np
import pytest
from backends import BACKEND, to_numpy, value_and_grad

from kerasce import losses as L

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def ref_gaussian_nll(actions, mean, log_std, axis=-1):
    """-Σ_axis log N(a; μ, σ²) from the density itself: -log( exp(-(a-μ)²/(2σ²)) / (σ √(2π)) ), float64."""
    a, mu = np.asarray(actions, np.float64), np.asarray(mean, np.float64)
    sigma = np.exp(np.broadcast_to(np.asarray(log_std, np.float64), mu.shape))
    density = np.exp(-((a - mu) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    return -np.log(density).sum(axis=axis)


def random_gaussian(rng, shape):
    mean = rng.normal(size=shape)
    log_std = rng.uniform(-1.0, 0.7, size=shape)
    actions = mean + np.exp(log_std) * rng.normal(size=shape)
    return actions.astype(np.float32), mean.astype(np.float32), log_std.astype(np.float32)


@pytest.mark.parametrize(
    "shape,axis,log_std_shape",
    [((6, 3), -1, "full"), ((6, 3), -1, "vector"), ((6, 3), -1, "scalar"), ((4, 5, 2), 1, "full"), ((7,), -1, "full")],
)
def test_gaussian_nll_matches_the_density(shape, axis, log_std_shape):
    rng = np.random.default_rng(0)
    actions, mean, log_std = random_gaussian(rng, shape)
    log_std = {"full": log_std, "vector": log_std[0], "scalar": np.float32(0.3)}[log_std_shape]
    got = L.gaussian_nll(actions, mean, log_std, axis=axis)
    want = ref_gaussian_nll(actions, mean, log_std, axis=axis)
    assert got.shape == want.shape
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_gaussian_nll_worked_example_by_hand():
    # a = (1, 0), μ = (0, 0), σ = (1, e): 0.5 + 0 + ½ log 2π, and 0 + 1 + ½ log 2π.
    got = L.gaussian_nll([[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]])
    np.testing.assert_allclose(to_numpy(got), [0.5 + 1.0 + 2 * HALF_LOG_2PI], rtol=1e-6)


def test_gaussian_nll_gradients_are_the_closed_forms():
    # d/dμ = -(a - μ) / σ², d/d log σ = 1 - (a - μ)² / σ², d/da = (a - μ) / σ².
    rng = np.random.default_rng(1)
    actions, mean, log_std = random_gaussian(rng, (5, 3))
    _, (d_actions, d_mean, d_log_std) = value_and_grad(
        lambda a, m, s: keras.ops.sum(L.gaussian_nll(a, m, s)), actions, mean, log_std
    )
    diff, var = actions.astype(np.float64) - mean, np.exp(2 * log_std.astype(np.float64))
    np.testing.assert_allclose(d_mean, -diff / var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_actions, diff / var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_log_std, 1 - diff**2 / var, rtol=1e-5, atol=1e-6)


def test_a_state_independent_log_std_gets_the_summed_gradient():
    rng = np.random.default_rng(2)
    actions, mean, log_std = random_gaussian(rng, (8, 3))
    vector = log_std[0]
    _, grad = value_and_grad(lambda s: keras.ops.sum(L.gaussian_nll(actions, mean, s)), vector)
    diff, var = actions.astype(np.float64) - mean, np.exp(2 * vector.astype(np.float64))
    np.testing.assert_allclose(grad, (1 - diff**2 / var).sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gaussian_half_precision_is_computed_in_float32(dtype):
    rng = np.random.default_rng(3)
    actions, mean, log_std = random_gaussian(rng, (4, 3))
    rounded = [keras.ops.cast(x, dtype) for x in (actions, mean, log_std)]
    got = L.gaussian_nll(*rounded)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    want = ref_gaussian_nll(*[to_numpy(x).astype(np.float64) for x in rounded])
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_gaussian_entropy_matches_numerical_integration():
    # H = -∫ p log p for one dimension, by the trapezoid rule on a wide grid; summed over D.
    log_std = np.array([[-0.5, 0.0, 0.8]], np.float32)
    grid = np.linspace(-30, 30, 600_001)
    want = 0.0
    for s in log_std[0].astype(np.float64):
        p = np.exp(-(grid**2) / (2 * np.exp(2 * s))) / (np.exp(s) * math.sqrt(2 * math.pi))
        want += -np.trapezoid(p * np.log(np.where(p > 0, p, 1.0)), grid)
    np.testing.assert_allclose(to_numpy(L.gaussian_entropy(log_std)), [want], rtol=1e-6)
    _, grad = value_and_grad(lambda s: keras.ops.sum(L.gaussian_entropy(s)), log_std)
    np.testing.assert_array_equal(grad, np.ones_like(log_std))
    assert to_numpy(L.gaussian_entropy(log_std[0])).shape == ()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: L.gaussian_nll(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(4)), "`actions` must have the shape"),
        (lambda: L.gaussian_nll(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(4)), "`log_std` must be broadcastable"),
        (lambda: L.gaussian_nll(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((5, 3))), "Received: log_std of shape"),
        (lambda: L.gaussian_nll(np.zeros((2, 3)), np.zeros((2, 3)), 0.0, axis=2), "`axis` must be in range"),
        (lambda: L.gaussian_entropy(0.0), "known rank >= 1"),
        (lambda: L.GaussianNLL()(np.zeros((2, 3)), np.zeros((2, 5))), "mean and the log standard deviation"),
    ],
)
def test_bad_shapes_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_gaussian_nll_class_splits_mean_and_log_std_and_reduces(reduction):
    rng = np.random.default_rng(4)
    actions, mean, log_std = random_gaussian(rng, (6, 2))
    weights = rng.normal(size=6)  # returns, any sign
    got = L.GaussianNLL(reduction=reduction)(actions, np.concatenate([mean, log_std], -1), sample_weight=weights)
    per_example = ref_gaussian_nll(actions, mean, log_std) * weights
    want = {"sum_over_batch_size": per_example.mean(), "sum": per_example.sum(), "none": per_example}[reduction]
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_gaussian_nll_class_config_is_the_constructor_arguments_and_revives():
    loss = L.GaussianNLL(reduction="sum", name="pg_box", dtype="float32")
    config = loss.get_config()
    assert set(config) == set(inspect.signature(L.GaussianNLL.__init__).parameters) - {"self"}
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(revived) is L.GaussianNLL and revived.get_config() == config
    assert keras.saving.get_registered_name(L.GaussianNLL) == "kerasce>GaussianNLL"


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_regression_with_a_learned_variance_fits(jit_compile):
    # y = 2x + noise of std 0.5: the fitted log σ approaches log 0.5 and the mean 2x.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(512, 1)).astype(np.float32)
    y = (2 * x + 0.5 * rng.normal(size=(512, 1))).astype(np.float32)
    inputs = keras.Input((1,))
    mean = keras.layers.Dense(1)(inputs)
    log_std = keras.layers.Dense(1, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([mean, log_std]))
    model.compile(keras.optimizers.Adam(0.05), L.GaussianNLL(), jit_compile=jit_compile)
    model.fit(x, y, epochs=40, batch_size=128, verbose=0)
    out = to_numpy(model.predict(np.array([[1.0]], np.float32), verbose=0))[0]
    assert abs(out[0] - 2.0) < 0.15 and abs(out[1] - math.log(0.5)) < 0.15, (BACKEND, out)
    want = ref_gaussian_nll(y, *np.split(to_numpy(model.predict(x, verbose=0)).astype(np.float64), 2, -1)).mean()
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), want, rtol=1e-4)
