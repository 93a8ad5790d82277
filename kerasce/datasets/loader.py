"""One loader for image classification data: any TFDS image dataset, or a folder of images.

Both paths give the same `ImageDataset`: batched, prefetched ``tf.data`` pipelines of

* images ``uint8 [B, H, W, C]`` exactly as stored (rescaling belongs to the model), and
* labels ``int32 [B]`` (multi-class class ids) or ``float32 [B, K]`` (multi-label, multi-hot),

plus what a model needs to know (input shape, number of classes, multi-label or not, class names).

Whether a TFDS dataset is multi-label is read from its features (the label is ``supervised_keys[1]``,
or the feature called ``label``/``labels``):

=================================================  ==============  =============================
label feature                                      task            labels yielded
=================================================  ==============  =============================
``ClassLabel`` (scalar)                            multi-class     ``int32 []`` class id
``Sequence(ClassLabel)`` (e.g. voc, bigearthnet)   multi-label     ``float32 [K]`` multi-hot
``Tensor(shape=(K,), dtype=bool or integer)``      multi-label     ``float32 [K]`` (``multi_digits``)
=================================================  ==============  =============================
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kerasce.datasets.digits import Digits
from kerasce.datasets.multi_digits import MultiDigits

__all__ = ["ImageDataset", "ImageTask", "image_task", "is_folder_name", "load_image_dataset", "load_image_folder"]

# Builders that prepare from files already on this machine (kerasce's own): never a download.
OFFLINE_BUILDERS = (Digits, MultiDigits)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_CHANNELS_OF_PIL_MODE = {"L": 1, "RGB": 3, "RGBA": 4}  # any other mode is read as RGB


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Batched train/test pipelines of one image classification dataset, and its description.

    Attributes:
        name: The TFDS name or the folder path it was loaded from.
        train: Shuffled (reshuffled every epoch), batched, prefetched ``(images, labels)``.
        test: Batched, prefetched ``(images, labels)`` in a fixed order.
        input_shape: ``(H, W, C)`` of the ``uint8`` images.
        num_classes: Number of classes (multi-class) or labels (multi-label), ``K``.
        multilabel: True when labels are multi-hot ``float32 [B, K]``; False for ids ``int32 [B]``.
        class_names: ``K`` names, index ``i`` naming class / label ``i``.
        num_train: Number of training examples.
        num_test: Number of test examples.
    """

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    multilabel: bool
    class_names: tuple[str, ...]
    num_train: int
    num_test: int


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What `image_task` reads from a TFDS ``FeaturesDict``.

    Attributes:
        image_key: Name of the image feature.
        label_key: Name of the label feature.
        image_shape: ``(H, W, C)``; ``H``/``W`` may be None (images of varying size).
        num_classes: ``K``.
        multilabel: Whether the label is a set of classes.
        class_names: ``K`` names.
        to_labels: Maps one example's label value to ``int32 []`` or ``float32 [K]``.
    """

    image_key: str
    label_key: str
    image_shape: tuple[int | None, int | None, int]
    num_classes: int
    multilabel: bool
    class_names: tuple[str, ...]
    to_labels: Callable[[tf.Tensor], tf.Tensor]


def _multi_hot_from_ids(num_classes: int) -> Callable[[tf.Tensor], tf.Tensor]:
    def to_labels(ids: tf.Tensor) -> tf.Tensor:  # ids [n], n >= 0 (an empty set gives all zeros)
        return tf.minimum(tf.reduce_sum(tf.one_hot(ids, num_classes, dtype=tf.float32), axis=0), 1.0)

    return to_labels


def image_task(features: tfds.features.FeaturesDict, supervised_keys=None, name: str = "dataset") -> ImageTask:
    """Reads the image feature and the kind of label from a dataset's features (see the module table).

    Args:
        features: ``builder.info.features``.
        supervised_keys: ``builder.info.supervised_keys`` (``(image_key, label_key)``) or None, in which
            case the features called ``image`` and ``label`` / ``labels`` are used.
        name: Dataset name, for error messages.

    Returns:
        The `ImageTask`.

    Raises:
        ValueError: No image feature, an image that is not ``uint8`` with a known number of channels,
            or a label feature of another kind than the three in the module table.
    """
    keys = list(features.keys())
    if supervised_keys is not None and len(supervised_keys) == 2 and all(isinstance(k, str) for k in supervised_keys):
        image_key, label_key = supervised_keys
    else:
        image_key = "image"
        label_key = next((k for k in ("label", "labels") if k in keys), "label")
    expected = (
        "`name` must be an image classification dataset: an Image feature and a ClassLabel, "
        f"Sequence(ClassLabel) or multi-hot Tensor label. Received: name={name!r} with"
    )
    if image_key not in keys or not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(f"{expected} {image_key!r} not an Image feature (features: {keys})")
    if label_key not in keys:
        raise ValueError(f"{expected} no label feature {label_key!r} (features: {keys})")

    image = features[image_key]
    if image.tf_dtype != tf.uint8 or len(image.shape) != 3 or image.shape[-1] is None:
        raise ValueError(
            f"`name` must have uint8 images of shape (H, W, C) with a known C. Received: name={name!r} with "
            f"{image.tf_dtype.name} images of shape {image.shape}"
        )
    image_shape = tuple(image.shape)

    label = features[label_key]
    if isinstance(label, tfds.features.ClassLabel):
        num_classes, multilabel = label.num_classes, False
        names = tuple(label.names)
        to_labels = lambda value: tf.cast(value, tf.int32)  # noqa: E731
    elif isinstance(label, tfds.features.Sequence) and isinstance(label.feature, tfds.features.ClassLabel):
        num_classes, multilabel = label.feature.num_classes, True
        names = tuple(label.feature.names)
        to_labels = _multi_hot_from_ids(num_classes)
    elif (
        isinstance(label, tfds.features.Tensor)
        and len(label.shape) == 1
        and label.shape[0] is not None
        and (label.tf_dtype.is_bool or label.tf_dtype.is_integer)
    ):
        num_classes, multilabel = label.shape[0], True
        names = tuple(str(i) for i in range(num_classes))
        to_labels = lambda value: tf.cast(value, tf.float32)  # noqa: E731
    else:
        raise ValueError(f"{expected} label feature {label_key!r} = {label!r}")
    return ImageTask(image_key, label_key, image_shape, num_classes, multilabel, names, to_labels)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 1)


def _check_batch_size(batch_size: int) -> None:
    if not _is_positive_int(batch_size):
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")


def _check_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        size = tuple(image_size)
    except TypeError:  # not a sequence, e.g. a single number
        size = ()
    if len(size) != 2 or not all(_is_positive_int(s) for s in size):
        raise ValueError(
            f"`image_size` must be (height, width) of positive integers. Received: image_size={image_size!r}"
        )
    return (int(size[0]), int(size[1]))


def _resize_uint8(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear resize of a uint8 image ``[H, W, C]`` to ``size``, rounded back to uint8 (no-op if equal)."""
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], size))
    resized = tf.cond(
        same,
        lambda: image,
        lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(image, size), 0.0, 255.0)), tf.uint8),
    )
    return tf.ensure_shape(resized, [size[0], size[1], image.shape[-1]])


def _pipelines(
    train: tf.data.Dataset, test: tf.data.Dataset, batch_size: int, seed: int, cache: bool
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Cache, shuffle (train only), batch and prefetch ``(image, label)`` datasets."""
    if cache:
        train, test = train.cache(), test.cache()
    size = int(train.cardinality())
    buffer = size if 0 < size <= 50_000 else 10_000
    train = train.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Under MultiWorkerMirroredStrategy each worker reads the whole (identically seeded) stream and keeps
    # its share: TFDS datasets often have fewer files than workers, so file-based sharding would fail.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (
        train.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options),
        test.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options),
    )


_PATH_PREFIXES = ("./", "../", "/", "~", "." + os.sep, ".." + os.sep, os.sep)


def is_folder_name(name: str | os.PathLike) -> bool:
    """Whether `load_image_dataset` reads `name` as a folder of images rather than a TFDS name.

    A folder is a ``Path``, a name starting with ``./``, ``../``, ``/`` or ``~``, or a directory that
    exists; anything else is a TFDS name, including ``"voc/2012"`` and ``"bigearthnet/rgb"``
    (dataset/config).

    Raises:
        ValueError: `name` is both an existing directory and a registered TFDS dataset (``mnist`` in a
            folder that has an ``mnist/`` directory): ambiguous, so neither is picked silently.
    """
    if isinstance(name, os.PathLike) or str(name).startswith(_PATH_PREFIXES):
        return True
    if not Path(name).expanduser().is_dir():
        return False
    if name.split("/")[0].split(":")[0] in tfds.list_builders(with_community_datasets=False):
        raise ValueError(
            f"`name` must name either a TFDS dataset or a folder: './{name}' for the folder, or run from another "
            f"directory for the TFDS dataset. Received: name={name!r}, a registered TFDS dataset and a directory here"
        )
    return True


def load_image_dataset(
    name: str,
    *,
    batch_size: int = 64,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: tuple[int, int] | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    seed: int = 0,
    cache: bool = True,
) -> ImageDataset:
    """Loads a TFDS image classification dataset (or a folder of images) as batched pipelines.

    kerasce's own datasets (``digits``, ``multi_digits``) are prepared offline on first use. Any other
    TFDS dataset must already be prepared in `data_dir`, or `download` must be True (which needs network).

    Args:
        name: A TFDS name (``"digits"``, ``"multi_digits"``, ``"mnist"``, ``"cifar10:3.0.2"``,
            ``"bigearthnet/rgb"``, ...) or a folder of images with one sub-folder per class (a directory
            that exists, or a path starting with ``./``, ``../``, ``/`` or ``~``; see `is_folder_name` and
            `load_image_folder`).
        batch_size: Examples per batch, ``B``.
        data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
        download: Allow TFDS to download a dataset that is not prepared yet. Off by default: offline,
            TFDS's retries take minutes before failing.
        image_size: ``(H, W)`` to resize every image to; needed for datasets whose images vary in size.
        train_split: TFDS split to train on.
        test_split: TFDS split to evaluate on; default ``"test"``, or ``"validation"`` if there is no test.
        seed: Seed of the training-set shuffle.
        cache: Keep decoded examples in memory after the first epoch.

    Returns:
        The `ImageDataset`.

    Raises:
        ValueError: Unknown dataset name, a dataset that is not an image classification dataset, images
            of varying size without `image_size`, a missing split, or a bad `batch_size`/`image_size`.
        RuntimeError: The dataset is not prepared and `download` is False, or the download failed.
    """
    _check_batch_size(batch_size)
    size = _check_image_size(image_size)
    if is_folder_name(name):
        return load_image_folder(name, batch_size=batch_size, image_size=size, seed=seed, cache=cache)

    builder = _tfds_builder(name, data_dir)
    task = image_task(builder.info.features, builder.info.supervised_keys, name)
    if size is None and None in task.image_shape[:2]:
        raise ValueError(
            f"`image_size` must be (height, width) for {name!r}, whose images vary in size (shape "
            f"{task.image_shape}). Received: image_size=None"
        )
    _prepare(builder, name, download)

    known_splits = list(builder.info.splits.keys())  # empty when the split names are not known yet
    if test_split is None:
        test_split = "validation" if known_splits and "test" not in known_splits else "test"
    for split in (train_split, test_split):
        if known_splits and split not in known_splits:
            raise ValueError(f"The split must be one of {known_splits} of {name!r}. Received: {split!r}")

    def to_pair(example):
        image = example[task.image_key]
        if size is not None:
            image = _resize_uint8(image, size)
        return image, task.to_labels(example[task.label_key])

    splits = [
        builder.as_dataset(split=split, shuffle_files=False).map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
        for split in (train_split, test_split)
    ]
    num_train, num_test = (int(ds.cardinality()) for ds in splits)
    train, test = _pipelines(splits[0], splits[1], batch_size=batch_size, seed=seed, cache=cache)
    height, width = size or task.image_shape[:2]
    if height is None or width is None:  # ruled out above (image_size is required for images of varying size)
        raise ValueError(f"`image_size` must be (height, width) for {name!r}. Received: image_size=None")
    input_shape = (int(height), int(width), int(task.image_shape[2]))
    return ImageDataset(
        name=name,
        train=train,
        test=test,
        input_shape=input_shape,
        num_classes=task.num_classes,
        multilabel=task.multilabel,
        class_names=task.class_names,
        num_train=num_train,
        num_test=num_test,
    )


def _tfds_builder(name: str, data_dir) -> tfds.core.DatasetBuilder:
    """``tfds.builder`` with a short message (and close matches) for an unknown name."""
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except ValueError as error:
        # DatasetNotFoundError (a ValueError), or TFDS failing to parse the name (e.g. "a/b/c"); other
        # ValueErrors (e.g. an unknown config of a known dataset) already say what is wrong.
        unknown = isinstance(error, tfds.core.registered.DatasetNotFoundError)
        if not (unknown or str(error).startswith("Parsing builder name string")):
            raise
    base = name.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False), n=5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(
        f"`name` must be a TFDS dataset name (kerasce's offline 'digits' and 'multi_digits', or any of "
        f"tfds.list_builders(), e.g. 'mnist', 'cifar10') or a folder of images with one sub-folder per class (an "
        f"existing directory, or a path starting with ./, ../, / or ~). Received: name={name!r}.{hint}"
    )


def _prepare(builder: tfds.core.DatasetBuilder, name: str, download: bool) -> None:
    """Prepares `builder` if needed: always for kerasce's offline builders, otherwise only if `download`."""
    if builder.is_prepared():
        return
    if not (download or isinstance(builder, OFFLINE_BUILDERS)):
        raise RuntimeError(
            f"dataset {name!r} is not prepared in {builder.data_dir} and needs a download, which is off by "
            f"default: run once with network and download=True (examples: --download), or pass "
            f"data_dir=<a TFDS data directory where {name!r} is already prepared>."
        )
    try:
        builder.download_and_prepare()
    except Exception as error:
        raise RuntimeError(
            f"could not download and prepare dataset {name!r} into {builder.data_dir} "
            f"({type(error).__name__}: {error}). It needs network once; or pass data_dir=<a TFDS data "
            f"directory where {name!r} is already prepared>."
        ) from error


def load_image_folder(
    directory: str | os.PathLike,
    *,
    batch_size: int = 64,
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache: bool = True,
) -> ImageDataset:
    """Loads a folder of images with one sub-folder per class (``root/<class>/<image>.png``).

    Class ids follow the sorted sub-folder names. Files with other extensions than
    ``IMAGE_EXTENSIONS`` are ignored. The number of channels comes from the first image (grayscale 1,
    RGB 3, RGBA 4; other modes are read as RGB), and so does the size unless `image_size` is given; images
    of another size are resized (bilinear). The split is stratified and deterministic: in every class,
    ``round(n * test_fraction)`` images (at least one) picked with ``RandomState(seed)`` are test.

    Args:
        directory: The root folder.
        batch_size: Examples per batch.
        image_size: ``(H, W)``; default: the first image's size.
        test_fraction: Share of each class held out for testing, in ``(0, 1)``.
        seed: Seed of the split and of the training-set shuffle.
        cache: Keep decoded images in memory after the first epoch.

    Returns:
        An `ImageDataset` with multi-class labels ``int32 [B]``.

    Raises:
        ValueError: Not a directory, fewer than two class folders, a class without images (or with a
            single one), `test_fraction` outside ``(0, 1)``, or a bad `batch_size`/`image_size`.
    """
    from PIL import Image as PILImage

    _check_batch_size(batch_size)
    size = _check_image_size(image_size)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction!r}")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ValueError(
            "`directory` must be a directory with one sub-folder of images per class. Received: "
            f"directory={str(directory)!r} ({'not a directory' if root.exists() else 'does not exist'})"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ValueError(
            f"`directory` must hold at least 2 class sub-folders. Received: directory={str(root)!r} with "
            f"{len(class_dirs)}: {[p.name for p in class_dirs]}"
        )
    rng = np.random.RandomState(seed)
    files: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, class_dir in enumerate(class_dirs):
        paths = sorted(
            str(p) for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if len(paths) < 2:
            raise ValueError(
                f"Each class folder must hold at least 2 images ({', '.join(IMAGE_EXTENSIONS)}): one to train "
                f"on, one to test. Received: {len(paths)} in {str(class_dir)!r}"
            )
        num_test = min(max(1, round(len(paths) * test_fraction)), len(paths) - 1)
        order = rng.permutation(len(paths))
        for rank, index in enumerate(order):
            files["test" if rank < num_test else "train"].append((paths[index], label))

    with PILImage.open(files["train"][0][0]) as first:
        channels = _CHANNELS_OF_PIL_MODE.get(first.mode, 3)
        size = size or (first.height, first.width)

    def decode(path: tf.Tensor, label: tf.Tensor):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        return _resize_uint8(image, size), label

    splits = []
    for split in ("train", "test"):
        split_paths, split_labels = zip(*sorted(files[split]))
        ds = tf.data.Dataset.from_tensor_slices((list(split_paths), np.asarray(split_labels, np.int32)))
        splits.append(ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE))
    train, test = _pipelines(splits[0], splits[1], batch_size=batch_size, seed=seed, cache=cache)
    return ImageDataset(
        name=str(directory),
        train=train,
        test=test,
        input_shape=(size[0], size[1], channels),
        num_classes=len(class_dirs),
        multilabel=False,
        class_names=tuple(p.name for p in class_dirs),
        num_train=len(files["train"]),
        num_test=len(files["test"]),
    )
