"""The offline TFDS builders: features, splits, pixel mapping, label sets and determinism.

References are computed here from scikit-learn's raw digits (float64 0..16 counts) and the documented
rules, not from the builders' own helpers.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import kerasce.datasets  # noqa: F401  (registers the builders)
from kerasce.datasets.multi_digits import compose_multi_digits


def _as_numpy(data_dir, name, split):
    """All examples of a split as a dict of stacked NumPy arrays, in the order TFDS stores them."""
    examples = list(tfds.as_numpy(tfds.load(name, split=split, data_dir=str(data_dir))))
    return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}


# The tests reading the module's prepared datasets run on one pytest-xdist worker (pyproject: --dist loadgroup),
# which prepares them once.
SHARES_PREPARED = pytest.mark.xdist_group("dataset-builders")


@pytest.fixture(scope="module")
def raw():
    digits = load_digits()
    return digits.images.astype(np.float64), digits.target


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def digits(data_dir):
    return {split: _as_numpy(data_dir, "digits", split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def multi_digits(data_dir):
    return {split: _as_numpy(data_dir, "multi_digits", split) for split in ("train", "test")}


def _uint8_reference(counts):
    """round(v * 255 / 16), halves rounded up, in float64."""
    return np.floor(counts * 255.0 / 16.0 + 0.5).astype(np.uint8)


@SHARES_PREPARED
def test_digits_registered_with_documented_features(data_dir, digits):
    builder = tfds.builder("digits", data_dir=str(data_dir))
    features = builder.info.features
    assert features["image"].shape == (8, 8, 1)
    assert features["image"].tf_dtype == tf.uint8
    assert isinstance(features["label"], tfds.features.ClassLabel)
    assert features["label"].names == [str(d) for d in range(10)]
    assert builder.info.supervised_keys == ("image", "label")
    assert "archive.ics.uci.edu" in builder.info.homepage
    assert "Alpaydin" in builder.info.citation
    assert str(builder.info.version) == "1.0.0"


@SHARES_PREPARED
def test_digits_splits_every_fifth_image_of_each_class_is_test(digits, raw):
    _, target = raw
    counts = np.bincount(target)
    assert len(digits["test"]["label"]) == sum(n // 5 for n in counts) == 355
    assert len(digits["train"]["label"]) == sum(n - n // 5 for n in counts) == 1442
    train_idx, test_idx = digits["train"]["index"], digits["test"]["index"]
    assert not set(train_idx) & set(test_idx)
    assert sorted(np.concatenate([train_idx, test_idx])) == list(range(1797))
    for label in range(10):
        positions = np.flatnonzero(target == label)  # this class, in scikit-learn's order
        assert sorted(test_idx[digits["test"]["label"] == label]) == list(positions[4::5])
        assert 0.18 < np.mean(np.isin(positions, test_idx)) < 0.21


@SHARES_PREPARED
def test_digits_images_and_labels_are_sklearns(digits, raw):
    counts, target = raw
    for split in digits.values():
        assert split["image"].dtype == np.uint8 and split["image"].shape[1:] == (8, 8, 1)
        np.testing.assert_array_equal(split["image"][..., 0], _uint8_reference(counts[split["index"]]))
        np.testing.assert_array_equal(split["label"], target[split["index"]])
        # The mapping keeps 0 and 16 at the ends and is invertible: v = round(p * 16 / 255).
        np.testing.assert_array_equal(np.round(split["image"][..., 0] * 16.0 / 255.0), counts[split["index"]])
    pixels = np.concatenate([s["image"].ravel() for s in digits.values()])
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.slow
@SHARES_PREPARED
def test_multi_digits_features(data_dir, multi_digits):
    builder = tfds.builder("multi_digits", data_dir=str(data_dir))
    features = builder.info.features
    assert features["image"].shape == (16, 16, 1)
    assert features["image"].tf_dtype == tf.uint8
    assert isinstance(features["labels"], tfds.features.Tensor)
    assert features["labels"].shape == (10,) and features["labels"].tf_dtype == tf.bool
    assert builder.info.supervised_keys == ("image", "labels")
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {"train": 4000, "test": 1000}


@pytest.mark.slow
@SHARES_PREPARED
@pytest.mark.parametrize("split", ["train", "test"])
def test_multi_digits_tiles_labels_and_sources_agree(multi_digits, digits, raw, split):
    counts, target = raw
    data = multi_digits[split]
    assert data["image"].dtype == np.uint8 and data["image"].shape == (len(data["labels"]), 16, 16, 1)
    assert data["labels"].dtype == bool and data["labels"].shape[1] == 10
    sources = data["sources"]
    assert np.all((sources >= 0).sum(axis=1) >= 1), "every image shows at least one digit"
    for image, labels, tile_sources in zip(data["image"], data["labels"], sources):
        expected_labels = np.zeros(10, bool)
        for tile, source in enumerate(tile_sources):
            row, col = divmod(tile, 2)
            patch = image[8 * row : 8 * row + 8, 8 * col : 8 * col + 8, 0]
            if source < 0:
                assert not patch.any()
            else:
                np.testing.assert_array_equal(patch, _uint8_reference(counts[source]))
                expected_labels[target[source]] = True
        np.testing.assert_array_equal(labels, expected_labels)
    # Sources come from the same split of `digits` only: train and test share no handwritten digit.
    used = set(sources[sources >= 0].tolist())
    assert used <= set(digits[split]["index"].tolist())
    # P(blank | not all four blank) = (0.25 - 0.25**4) / (1 - 0.25**4) ≈ 0.2481
    assert abs(np.mean(sources < 0) - (0.25 - 0.25**4) / (1 - 0.25**4)) < 0.02


@pytest.mark.slow
@SHARES_PREPARED
def test_multi_digits_splits_use_disjoint_source_digits(multi_digits):
    train, test = (multi_digits[s]["sources"] for s in ("train", "test"))
    assert not set(train[train >= 0].tolist()) & set(test[test >= 0].tolist())


@SHARES_PREPARED
@pytest.mark.slow  # one of the heaviest: kept out of the quick subset (-m "not slow")
def test_preparing_twice_gives_identical_datasets(tmp_path, digits, multi_digits):
    for name, first in (("digits", digits), ("multi_digits", multi_digits)):
        for split, arrays in first.items():
            again = _as_numpy(tmp_path, name, split)  # a second preparation, in another data_dir
            for feature in arrays:
                np.testing.assert_array_equal(arrays[feature], again[feature])


def test_compose_is_deterministic_per_seed():
    images = np.arange(20 * 64, dtype=np.uint8).reshape(20, 8, 8, 1)
    labels = np.arange(20) % 10
    pool = np.arange(5, 15)
    a = compose_multi_digits(images, labels, pool, 50, seed=3)
    b = compose_multi_digits(images, labels, pool, 50, seed=3)
    c = compose_multi_digits(images, labels, pool, 50, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["sources"], c["sources"])
    assert set(a["sources"][a["sources"] >= 0].tolist()) <= set(pool.tolist())
