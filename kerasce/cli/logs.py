"""``training_log.csv``: one row per epoch (or update), counted as the console counts them.

Keras's ``CSVLogger`` numbers epochs from 0 where its progress bar says ``Epoch 1/15``, and, when ``fit``
has no validation data, adds a ``val_<name>`` column of ``NA`` for every metric. :class:`TrainingLog`
writes the first column from 1 and only the columns the logs hold.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

import keras

__all__ = ["TrainingLog"]


def _cell(value: Any) -> Any:
    """A log value as its CSV cell: numbers as Python numbers (NumPy scalars and 0-d arrays included)."""
    try:
        return value.item()  # NumPy scalars and 0-d arrays
    except (AttributeError, ValueError):
        return value


class TrainingLog(keras.callbacks.Callback):
    """Writes the logs of each epoch (or update) to a CSV file, counting from 1.

    The columns are `count` (1 for the first epoch) and the keys of the first epoch's logs, sorted; a key
    missing from a later epoch's logs is written ``NA``, and a key that first appears later is not written.
    Each row is flushed when written. A resumed run (``fit`` continuing from a backup at epoch ``k``, or
    ``learn`` from a checkpoint at update ``k``) keeps the file's rows ``1..k`` and appends; a run from the
    start replaces the file.

    Args:
        filename: The CSV file.
        count: The first column's name (``"epoch"``; ``"update"`` for an agent's ``learn``).
        separator: The CSV delimiter.
    """

    def __init__(self, filename: str | os.PathLike, count: str = "epoch", separator: str = ",") -> None:
        super().__init__()
        self.filename = os.fspath(filename)
        self.count = count
        self.separator = separator
        self.columns: list[str] | None = None
        self._first_epoch = True

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.columns = None
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._first_epoch:
            self._first_epoch = False
            self.columns = self._keep_rows(done=epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        header = self.columns is None
        if self.columns is None:  # the first row of a run from the start: the file is replaced
            self.columns = [self.count, *sorted(logs)]
        row = [epoch + 1, *(_cell(logs.get(key, "NA")) for key in self.columns[1:])]
        self._write([self.columns, row] if header else [row], mode="w" if header else "a")

    def _keep_rows(self, done: int) -> list[str] | None:
        """Keeps the header and the rows of the `done` finished epochs; returns the header (None: no file kept)."""
        if done == 0 or not os.path.isfile(self.filename):
            return None
        with open(self.filename, newline="") as f:
            rows = list(csv.reader(f, delimiter=self.separator))
        if not rows:
            return None
        kept = [row for row in rows[1:] if row and int(float(row[0])) <= done]
        self._write([rows[0], *kept], mode="w")
        return rows[0]

    def _write(self, rows: list[list[Any]], mode: str) -> None:
        with open(self.filename, mode, newline="") as f:
            csv.writer(f, delimiter=self.separator, lineterminator="\n").writerows(rows)
