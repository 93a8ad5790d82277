"""``multi_digits``: a multi-label image task made of real handwritten digits (no download).

Each example is a 16×16 ``uint8`` image of 2×2 tiles of 8×8. Every tile is, independently, blank (all
zeros) with probability `BLANK_PROBABILITY` or one of the ``digits`` images drawn uniformly with
replacement; an example with four blank tiles is drawn again, so every image shows 1 to 4 digits.
``labels`` is the multi-hot set of digits present, ``bool [10]`` (a digit that appears twice is one
label); ``sources`` gives, per tile in row-major order, the scikit-learn index of the digit image used
(``-1`` for blank).

The ``train`` split is built only from the ``digits`` train images and the ``test`` split only from the
``digits`` test images, so no handwritten digit is shared between them. Generation is deterministic:
NumPy's legacy ``RandomState`` (whose stream NumPy keeps fixed across versions) with one fixed seed per
split.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from kerasce.datasets.digits import (
    DIGIT_NAMES,
    UCI_CITATION,
    UCI_HOMEPAGE,
    digits_split_indices,
    digits_uint8,
)

__all__ = ["BLANK_PROBABILITY", "GRID", "SPLIT_SEEDS", "SPLIT_SIZES", "MultiDigits", "compose_multi_digits"]

GRID = 2  # tiles per side
TILE = 8  # pixels per tile side (the digits are 8×8)
BLANK_PROBABILITY = 0.25
SPLIT_SIZES = {"train": 4000, "test": 1000}
SPLIT_SEEDS = {"train": 1, "test": 2}


def compose_multi_digits(
    images: np.ndarray, labels: np.ndarray, pool: np.ndarray, num_examples: int, seed: int
) -> dict[str, np.ndarray]:
    """Tiles digits from `pool` into ``GRID × GRID`` multi-label images.

    Args:
        images: ``uint8 [N, 8, 8, 1]`` digit images.
        labels: ``int [N]`` their classes in ``0..9``.
        pool: ``int [P]`` indices into `images` that may be used (one split's digits).
        num_examples: How many composite images to make.
        seed: Seed of the ``RandomState`` that picks blanks and digits.

    Returns:
        ``{"image": uint8 [num_examples, 16, 16, 1], "labels": bool [num_examples, 10],
        "sources": int32 [num_examples, 4]}`` (``sources`` row-major, ``-1`` for a blank tile).
    """
    rng = np.random.RandomState(seed)
    tiles = GRID * GRID
    out_images = np.zeros((num_examples, GRID * TILE, GRID * TILE, 1), np.uint8)
    out_labels = np.zeros((num_examples, len(DIGIT_NAMES)), bool)
    sources = np.full((num_examples, tiles), -1, np.int32)
    for i in range(num_examples):
        blank = rng.random_sample(tiles) < BLANK_PROBABILITY
        while blank.all():  # at least one digit per image
            blank = rng.random_sample(tiles) < BLANK_PROBABILITY
        picks = pool[rng.randint(0, len(pool), size=tiles)]
        for tile in np.flatnonzero(~blank):
            row, col = divmod(int(tile), GRID)
            source = picks[tile]
            out_images[i, row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE] = images[source]
            out_labels[i, labels[source]] = True
            sources[i, tile] = source
    return {"image": out_images, "labels": out_labels, "sources": sources}


class MultiDigits(tfds.core.GeneratorBasedBuilder):
    """2×2 tiles of real handwritten digits (or blanks); the labels are the set of digits shown."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 4,000 train / 1,000 test images from disjoint digits."}  # noqa: RUF012  (the TFDS builder convention)

    def _info(self) -> tfds.core.DatasetInfo:
        side = GRID * TILE
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(side, side, 1), dtype=np.uint8),
                    # Multi-hot: the loader reads a rank-1 bool/integer Tensor label as multi-label.
                    "labels": tfds.features.Tensor(shape=(len(DIGIT_NAMES),), dtype=np.bool_),
                    "sources": tfds.features.Tensor(shape=(GRID * GRID,), dtype=np.int32),
                }
            ),
            supervised_keys=("image", "labels"),
            homepage=UCI_HOMEPAGE,
            citation=UCI_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        images, labels = digits_uint8()
        pools = digits_split_indices(labels)
        return {
            split: self._generate_examples(
                compose_multi_digits(images, labels, pools[split], SPLIT_SIZES[split], SPLIT_SEEDS[split])
            )
            for split in SPLIT_SIZES
        }

    def _generate_examples(self, examples: dict[str, np.ndarray]):
        for i in range(len(examples["image"])):
            yield i, {key: value[i] for key, value in examples.items()}
