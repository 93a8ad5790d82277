"""`kerasce.rl.normalization` against NumPy's mean / variance of the whole data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasce.rl.normalization import NormalizeObservations, ObservationNormalizer, with_normalization


def _batches(shape=(3, 2), sizes=(1, 7, 50, 2, 300)):
    rng = np.random.default_rng(0)
    # different means and scales per batch: a naive mean of batch variances would be far off
    return [rng.normal(loc=i, scale=1 + 3 * i, size=(n, *shape)) for i, n in enumerate(sizes)]


def _reference(data, clip, epsilon):
    mean, var = data.mean(axis=0), data.var(axis=0)  # population variance, float64
    return lambda x: np.clip((x - mean) / np.sqrt(var + epsilon), -clip, clip)


def test_merged_batches_equal_the_whole_data():
    """Mutations tried: `RunningScale.merge` without the `delta**2 * count * n / total` term -> red; `var`
    as `m2 / (count - 1)` -> red."""
    normalizer = ObservationNormalizer((3, 2))
    batches = _batches()
    for batch in batches:
        normalizer.update(batch)
    data = np.concatenate(batches)
    assert normalizer.count == len(data)
    np.testing.assert_allclose(normalizer.mean, data.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(normalizer.var, data.var(axis=0), rtol=1e-10)


def test_normalize_is_clipped_and_float32():
    """Mutation tried: `np.clip` left out of `normalize` -> red (the outliers)."""
    normalizer = ObservationNormalizer((3, 2), clip=2.5, epsilon=1e-3)
    batches = _batches()
    for batch in batches:
        normalizer.update(batch)
    probe = np.concatenate([batches[1], 1e4 * np.ones((2, 3, 2)), -1e4 * np.ones((2, 3, 2))])
    got = normalizer.normalize(probe)
    assert got.dtype == np.float32 and np.abs(got).max() == 2.5
    np.testing.assert_allclose(got, _reference(np.concatenate(batches), 2.5, 1e-3)(probe), rtol=1e-6, atol=1e-6)


def test_before_any_data_it_is_the_identity_up_to_clipping():
    normalizer = ObservationNormalizer((2,), clip=3.0)
    x = np.array([[0.5, -7.0]])
    np.testing.assert_allclose(normalizer.normalize(x), [[0.5, -3.0]], rtol=1e-6)
    normalizer.update(np.zeros((0, 2)))
    assert normalizer.count == 0


def test_state_is_plain_arrays_and_round_trips():
    normalizer = ObservationNormalizer((3, 2), clip=4.0)
    for batch in _batches():
        normalizer.update(batch)
    state = normalizer.get_state()
    assert {type(state[k]) for k in ("mean", "m2")} == {np.ndarray} and isinstance(state["count"], float)
    restored = ObservationNormalizer.from_state(
        {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    )
    probe = _batches()[2]
    np.testing.assert_array_equal(restored.normalize(probe), normalizer.normalize(probe))
    restored.update(probe)
    normalizer.update(probe)
    np.testing.assert_allclose(restored.var, normalizer.var, rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`clip` must be > 0. Received: clip=0"):
        ObservationNormalizer((2,), clip=0)
    with pytest.raises(ValueError, match=r"`observations` must have shape \[N, \(2,\)\]"):
        ObservationNormalizer((2,)).update(np.zeros((4, 3)))


def test_layer_equals_the_numpy_normalization_and_survives_save_and_export(tmp_path):
    """The frozen layer inside a model of raw observations: the same numbers as `normalize` followed by the
    model, after a `.keras` round trip and in a SavedModel loaded with plain TensorFlow.

    Mutation tried: `NormalizeObservations.call` without `+ self.epsilon` (with a large epsilon) -> red.
    """
    normalizer = ObservationNormalizer((4,), clip=3.0, epsilon=0.5)
    data = np.random.default_rng(1).normal(loc=[0, 5, -3, 100], scale=[1, 10, 0.1, 50], size=(500, 4))
    normalizer.update(data)
    policy = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(0))]
    )
    raw_model = with_normalization(policy, normalizer)
    probe = data[:16].astype(np.float32) * 1.5
    want = np.asarray(policy(normalizer.normalize(probe)))
    np.testing.assert_allclose(np.asarray(normalizer.layer()(probe)), normalizer.normalize(probe), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(raw_model(probe)), want, rtol=1e-5, atol=1e-5)
    raw_model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert any(isinstance(layer, NormalizeObservations) for layer in loaded.layers)
    np.testing.assert_allclose(np.asarray(loaded(probe)), want, rtol=1e-5, atol=1e-5)
    raw_model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    saved = tf.saved_model.load(str(tmp_path / "saved"))  # kept: its functions reference its variables
    served = saved.serve(tf.constant(probe))
    np.testing.assert_allclose(served.numpy(), want, rtol=1e-5, atol=1e-5)
