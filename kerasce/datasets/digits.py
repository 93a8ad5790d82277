"""``digits``: the 8×8 handwritten digits that ship inside scikit-learn, as a TFDS dataset.

The images are scikit-learn's copy of the test part of the UCI "Optical Recognition of Handwritten
Digits" data (1,797 images of 10 classes, no download). Each pixel there counts the "on" pixels of a 4×4
block of a 32×32 bitmap, an integer in ``0..16``. Here it is stored as a ``uint8`` image:

    pixel_uint8 = (v * 255 + 8) // 16          # v in 0..16 -> 0..255, i.e. round(v * 255 / 16)

so 0 stays 0 and 16 becomes 255; the map is one-to-one and ``v = round(pixel * 16 / 255)`` recovers the
original count exactly.

Split (deterministic, no random numbers): within each class, in scikit-learn's order, every fifth image
(position 4, 9, 14, ... of that class) goes to ``test`` and the rest to ``train``: 1,442 train and 355
test images, about 80/20 in every class.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["DIGIT_NAMES", "TEST_EVERY", "Digits", "digits_split_indices", "digits_uint8"]

DIGIT_NAMES = tuple(str(d) for d in range(10))
TEST_EVERY = 5  # every 5th image of each class goes to the test split

UCI_HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
UCI_CITATION = """\
@misc{alpaydin1998optdigits,
  author       = {Alpaydin, E. and Kaynak, C.},
  title        = {Optical Recognition of Handwritten Digits},
  year         = {1998},
  howpublished = {UCI Machine Learning Repository},
  note         = {DOI: https://doi.org/10.24432/C50P49}
}
"""


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 images.

    Returns:
        ``(images, labels)``: images ``uint8 [1797, 8, 8, 1]`` with ``(v * 255 + 8) // 16`` for the
        original counts ``v`` in ``0..16``; labels ``int64 [1797]`` in ``0..9``.
    """
    from sklearn.datasets import load_digits  # scikit-learn ships the data: no download

    data = load_digits()
    counts = data.images.astype(np.int64)  # float64 0..16 in scikit-learn, integral values
    images = ((counts * 255 + 8) // 16).astype(np.uint8)[..., np.newaxis]
    return images, data.target.astype(np.int64)


def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed train/test split of the digits: every `TEST_EVERY`-th image of each class is test.

    Args:
        labels: ``int [N]`` class of every image, in scikit-learn's order.

    Returns:
        ``{"train": int64 [N_train], "test": int64 [N_test]}``, sorted indices into `labels`, disjoint,
        together covering ``0..N-1``.
    """
    labels = np.asarray(labels)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        (positions,) = np.nonzero(labels == label)
        is_test[positions[TEST_EVERY - 1 :: TEST_EVERY]] = True
    return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


class Digits(tfds.core.GeneratorBasedBuilder):
    """The 8×8 handwritten digits of scikit-learn (UCI optdigits), prepared offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: scikit-learn's 1,797 digits, 80/20 split per class."}  # noqa: RUF012  (the TFDS builder convention)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=DIGIT_NAMES),
                    # Row of the image in sklearn.datasets.load_digits(), for tracing an example back.
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=UCI_HOMEPAGE,
            citation=UCI_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        images, labels = digits_uint8()
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in digits_split_indices(labels).items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        for index in indices:
            yield int(index), {"image": images[index], "label": labels[index], "index": index}
