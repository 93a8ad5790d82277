"""The loader: TFDS datasets (kerasce's offline ones, mocked downloads), image folders, and bad inputs."""

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from kerasce.datasets import image_task, load_image_dataset, load_image_folder

# The tests preparing datasets into the module's data_dir run on one pytest-xdist worker (pyproject:
# --dist loadgroup), which prepares each dataset once.
SHARES_DATA_DIR = pytest.mark.xdist_group("dataset-loader")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _collect(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------------------------------------
# kerasce's offline datasets
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@SHARES_DATA_DIR
def test_digits_pipelines(data_dir):
    data = load_image_dataset("digits", batch_size=100, data_dir=data_dir, seed=1)
    assert (data.input_shape, data.num_classes, data.multilabel) == ((8, 8, 1), 10, False)
    assert data.class_names == tuple("0123456789")
    assert (data.num_train, data.num_test) == (1442, 355)
    spec_images, spec_labels = data.train.element_spec
    assert spec_images.shape.as_list() == [None, 8, 8, 1] and spec_images.dtype == tf.uint8
    assert spec_labels.shape.as_list() == [None] and spec_labels.dtype == tf.int32

    stored = list(tfds.as_numpy(tfds.load("digits", split="test", data_dir=data_dir)))
    images, labels = _collect(data.test)  # test keeps TFDS's order, unshuffled, images as stored
    np.testing.assert_array_equal(images, np.stack([ex["image"] for ex in stored]))
    np.testing.assert_array_equal(labels, [ex["label"] for ex in stored])

    batch_sizes = [len(y) for _, y in data.train]
    assert batch_sizes == [100] * 14 + [42]
    epoch1, epoch2 = (_collect(data.train)[1] for _ in range(2))
    np.testing.assert_array_equal(np.bincount(epoch1), np.bincount(epoch2))  # every example once per epoch
    assert not np.array_equal(epoch1, epoch2), "the training set is reshuffled every epoch"


@SHARES_DATA_DIR
@pytest.mark.slow  # one of the heaviest: kept out of the quick subset (-m "not slow")
def test_multi_digits_labels_are_multi_hot_float(data_dir):
    data = load_image_dataset("multi_digits", batch_size=256, data_dir=data_dir)
    assert (data.input_shape, data.num_classes, data.multilabel) == ((16, 16, 1), 10, True)
    assert (data.num_train, data.num_test) == (4000, 1000)
    images, labels = _collect(data.test)
    assert images.dtype == np.uint8 and labels.dtype == np.float32 and labels.shape == (1000, 10)
    stored = list(tfds.as_numpy(tfds.load("multi_digits", split="test", data_dir=data_dir)))
    np.testing.assert_array_equal(labels, np.stack([ex["labels"] for ex in stored]).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Multi-label detection from features
# ------------------------------------------------------------------------------------------------


def _features(label):
    return tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(4, 4, 3)), "label": label})


@pytest.mark.parametrize(
    "label, multilabel, num_classes, names",
    [
        (tfds.features.ClassLabel(names=["cat", "dog", "eel"]), False, 3, ("cat", "dog", "eel")),
        (tfds.features.Sequence(tfds.features.ClassLabel(names=["a", "b"])), True, 2, ("a", "b")),
        (tfds.features.Tensor(shape=(5,), dtype=np.bool_), True, 5, ("0", "1", "2", "3", "4")),
        (tfds.features.Tensor(shape=(4,), dtype=np.int64), True, 4, ("0", "1", "2", "3")),
    ],
)
def test_image_task_reads_the_kind_of_label(label, multilabel, num_classes, names):
    task = image_task(_features(label))
    assert (task.multilabel, task.num_classes, task.class_names) == (multilabel, num_classes, names)
    assert (task.image_key, task.label_key, task.image_shape) == ("image", "label", (4, 4, 3))


def test_class_id_sequences_become_multi_hot():
    task = image_task(_features(tfds.features.Sequence(tfds.features.ClassLabel(num_classes=5))))
    np.testing.assert_array_equal(task.to_labels(tf.constant([3, 1, 3], tf.int64)), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(task.to_labels(tf.zeros([0], tf.int64)), [0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "features, match",
    [
        (_features(tfds.features.Tensor(shape=(5,), dtype=np.float32)), "label feature 'label'"),
        (_features(tfds.features.Tensor(shape=(2, 3), dtype=np.bool_)), "label feature 'label'"),
        (_features(tfds.features.Text()), "label feature 'label'"),
        (tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(4, 4, 1)), "y": tf.int64}), "no label"),
        (
            tfds.features.FeaturesDict({"pixels": tf.float32, "label": tfds.features.ClassLabel(num_classes=2)}),
            "not an Image feature",
        ),
        (
            tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(4, 4, 1), dtype=np.uint16),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            "must have uint8 images",
        ),
    ],
)
def test_image_task_rejects_non_classification_features(features, match):
    with pytest.raises(ValueError, match=match):
        image_task(features)


# ------------------------------------------------------------------------------------------------
# Datasets that need a download: the same code path, mocked; offline failures are fast and clear
# ------------------------------------------------------------------------------------------------


def test_mnist_through_the_same_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        data = load_image_dataset("mnist", batch_size=8, download=True)
        images, labels = _collect(data.train)
    assert (data.input_shape, data.num_classes, data.multilabel, data.num_train) == ((28, 28, 1), 10, False, 20)
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10


def test_sequence_class_label_dataset_with_mock_data_is_multilabel():
    with tfds.testing.mock_data(num_examples=6):  # bigearthnet: labels = Sequence(ClassLabel(43))
        data = load_image_dataset("bigearthnet", batch_size=4, download=True)
        _, labels = _collect(data.test)
    assert (data.input_shape, data.num_classes, data.multilabel) == ((120, 120, 3), 43, True)
    assert labels.shape == (6, 43) and set(np.unique(labels)) <= {0.0, 1.0}


def test_images_of_varying_size_need_image_size():
    with pytest.raises(ValueError, match=r"`image_size` must be \(height, width\) for .*whose images vary in size"):
        load_image_dataset("cats_vs_dogs")  # Image(shape=(None, None, 3)); fails before any download
    with tfds.testing.mock_data(num_examples=5):
        data = load_image_dataset("cats_vs_dogs", batch_size=4, download=True, image_size=(32, 24))
        images, _ = _collect(data.train)
    assert data.input_shape == (32, 24, 3) and images.shape == (5, 32, 24, 3) and images.dtype == np.uint8


def test_dataset_that_needs_a_download_fails_fast_offline(tmp_path):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="'mnist' is not prepared in .* needs a download.*download=True"):
        load_image_dataset("mnist", data_dir=tmp_path)
    assert time.perf_counter() - start < 10.0  # no network attempt (TFDS's own retries take minutes)


def test_unknown_dataset_name_suggests_close_matches():
    with pytest.raises(ValueError, match="must be a TFDS dataset .*Received: name='mnistt'.*Close matches: mnist"):
        load_image_dataset("mnistt")


def test_names_with_a_config_go_to_tfds():
    # "bigearthnet/rgb" contains "/" but is a TFDS name (dataset/config), not a folder.
    with tfds.testing.mock_data(num_examples=4):
        data = load_image_dataset("bigearthnet/rgb", batch_size=4, download=True)
    assert (data.name, data.input_shape, data.num_classes, data.multilabel) == (
        "bigearthnet/rgb",
        (120, 120, 3),
        43,
        True,
    )
    with pytest.raises(ValueError, match="starting with ./.*Received: name='digitz/2012'.*Close matches: digits"):
        load_image_dataset("digitz/2012")  # the TFDS error, not "`directory` must be a directory"
    with pytest.raises(ValueError, match="Received: name='photos/cats/2024'"):
        load_image_dataset("photos/cats/2024")  # not even a TFDS name: still the one short message


@pytest.mark.parametrize("name", ["./nowhere", "../nowhere", "/nowhere/at/all", "~/nowhere-kerasce"])
def test_path_prefixes_mean_a_folder(name):
    with pytest.raises(ValueError, match="`directory` must be a directory with one sub-folder .*does not exist"):
        load_image_dataset(name)


def test_non_image_dataset_is_rejected():
    with pytest.raises(ValueError, match="`name` must be an image classification .*Received: name='imdb_reviews'"):
        load_image_dataset("imdb_reviews")


@SHARES_DATA_DIR
def test_unknown_split(data_dir):
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\] of 'digits'\. Received: 'valid'"):
        load_image_dataset("digits", data_dir=data_dir, test_split="valid")


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1. Received: batch_size="):
        load_image_dataset("digits", batch_size=batch_size)


@pytest.mark.parametrize("image_size", [(32,), (0, 4), (4, 4, 3), ("a", 2), (True, 4), 32, "ab"])
def test_bad_image_size(image_size):
    with pytest.raises(ValueError, match=r"`image_size` must be \(height, width\) of positive integers\. Received"):
        load_image_dataset("digits", image_size=image_size)


# ------------------------------------------------------------------------------------------------
# A folder of images, one sub-folder per class
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path):
    """``tmp_path/photos``: 3 classes × 5 RGB PNGs of 6×5 (one 9×7 image to be resized), files to ignore."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    arrays = {}
    for name in ("cat", "dog", "eel"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            shape = (9, 7, 3) if (name, i) == ("eel", 4) else (6, 5, 3)
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            path = root / name / f"{i}.png"
            Image.fromarray(array).save(path)
            arrays[str(path)] = array
        (root / name / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root, arrays


def test_image_folder(folder):
    root, arrays = folder
    data = load_image_dataset(str(root), batch_size=4, seed=0)  # a path goes to load_image_folder
    assert (data.input_shape, data.num_classes, data.multilabel) == ((6, 5, 3), 3, False)
    assert data.class_names == ("cat", "dog", "eel")
    assert (data.num_train, data.num_test) == (12, 3)  # round(5 * 0.2) = 1 test image per class
    train_images, train_labels = _collect(data.train)
    test_images, test_labels = _collect(data.test)
    assert sorted(test_labels.tolist()) == [0, 1, 2]
    assert np.bincount(train_labels).tolist() == [4, 4, 4]

    expected = {}  # image bytes -> label, for every image of the expected size
    for path, array in arrays.items():
        if array.shape == (6, 5, 3):
            expected[array.tobytes()] = ("cat", "dog", "eel").index(path.split("/")[-2])
    seen = 0
    for image, label in zip(np.concatenate([train_images, test_images]), np.concatenate([train_labels, test_labels])):
        if image.tobytes() in expected:  # decoded exactly, with the right label
            assert expected[image.tobytes()] == label
            seen += 1
    assert seen == 14  # all but the one 9×7 image, which was resized to 6×5
    big = next(a for a in arrays.values() if a.shape == (9, 7, 3))
    resized = tf.cast(tf.round(tf.image.resize(big, (6, 5))), tf.uint8).numpy()
    assert any(np.array_equal(image, resized) for image in np.concatenate([train_images, test_images]))


@pytest.mark.parametrize("relative", ["photos", "photos/"])
def test_an_existing_folder_without_a_path_prefix_is_a_folder(folder, monkeypatch, relative):
    root, _ = folder
    monkeypatch.chdir(root.parent)  # root is ./photos
    data = load_image_dataset(relative, batch_size=4)
    assert (data.name, data.class_names) == (relative, ("cat", "dog", "eel"))


def test_image_folder_split_is_deterministic(folder):
    root, _ = folder
    first, second = (_collect(load_image_folder(root, seed=3).test)[0] for _ in range(2))
    np.testing.assert_array_equal(first, second)


def test_image_folder_bad_inputs(tmp_path, folder):
    root, _ = folder
    with pytest.raises(
        ValueError, match="`directory` must be a directory with one sub-folder of images per class.*does not exist"
    ):
        load_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \(0, 1\)\. Received: test_fraction=1.0"):
        load_image_folder(root, test_fraction=1.0)
    lonely = tmp_path / "lonely"
    (lonely / "only").mkdir(parents=True)
    with pytest.raises(ValueError, match="`directory` must hold at least 2 class sub-folders.*with 1:"):
        load_image_folder(lonely)
    (lonely / "empty").mkdir()
    with pytest.raises(ValueError, match="Each class folder must hold at least 2 images .* Received: 0 in"):
        load_image_folder(lonely)


def test_a_directory_named_like_a_tfds_dataset_is_ambiguous(tmp_path, monkeypatch):
    from pathlib import Path

    from kerasce.datasets import is_folder_name

    (tmp_path / "mnist").mkdir()
    (tmp_path / "my_photos").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"must name either a TFDS dataset or a folder: './mnist'.*name='mnist'"):
        is_folder_name("mnist")
    assert is_folder_name("./mnist") and is_folder_name(Path("mnist")) and is_folder_name("my_photos")
    assert not is_folder_name("cifar10")
