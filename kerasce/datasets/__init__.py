"""Image classification data for kerasce: offline TFDS datasets and one loader for any image dataset.

Importing this package registers two TFDS datasets that are built from data already on the machine
(scikit-learn ships the digits), so they work offline:

* ``digits``: 1,797 real 8×8 handwritten digits, ``image`` uint8 ``[8, 8, 1]``, ``label`` (10 classes).
* ``multi_digits``: 16×16 images of 2×2 tiles of those digits (or blanks), ``labels`` multi-hot bool
  ``[10]``: the set of digits present.

>>> import kerasce.datasets, tensorflow_datasets as tfds
>>> test = tfds.load("digits", split="test")                     # prepared on first use, no network
>>> data = kerasce.datasets.load_image_dataset("multi_digits", batch_size=64)
>>> data.multilabel, data.input_shape, data.num_classes
(True, (16, 16, 1), 10)
"""

from kerasce.datasets.digits import Digits
from kerasce.datasets.loader import (
    ImageDataset,
    ImageTask,
    image_task,
    is_folder_name,
    load_image_dataset,
    load_image_folder,
)
from kerasce.datasets.multi_digits import MultiDigits

__all__ = [
    "Digits",
    "ImageDataset",
    "ImageTask",
    "MultiDigits",
    "image_task",
    "is_folder_name",
    "load_image_dataset",
    "load_image_folder",
]
