"""kerasce.cli.logs (training_log.csv) and kerasce.cli.errors (a failed check as the first line), on real fits."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasce import losses
from kerasce.cli.errors import check_failures_first, check_message
from kerasce.cli.logs import TrainingLog

X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, size=32)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), loss=losses.SoftmaxCrossEntropy(), metrics=["accuracy"])
    return model


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


class _Kill(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch` (0-based), as a kill would end the run there."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"killed after epoch {epoch + 1}")


def test_log_counts_from_1_and_has_only_the_logged_columns(tmp_path):
    """Against `fit`'s History and Keras's CSVLogger: the same values, epochs 1.., no all-NA val_ columns.

    Mutations tried: `epoch` instead of `epoch + 1` -> red; Keras's val_ padding kept -> red.
    """
    ours, keras_log = tmp_path / "ours.csv", tmp_path / "keras.csv"
    callbacks = [TrainingLog(ours), keras.callbacks.CSVLogger(str(keras_log))]
    history = _model().fit(X, Y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks)
    header, *rows = _rows(ours)
    assert header == ["epoch", "accuracy", "loss"]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    np.testing.assert_allclose([float(r[2]) for r in rows], history.history["loss"], rtol=1e-7)
    np.testing.assert_allclose([float(r[1]) for r in rows], history.history["accuracy"], rtol=1e-7)
    keras_header, *keras_rows = _rows(keras_log)  # what the log replaces: epochs from 0, empty val_ columns
    assert [r[0] for r in keras_rows] == ["0", "1", "2"] and "val_loss" in keras_header
    assert {r[keras_header.index("val_loss")] for r in keras_rows} == {"NA"}


@pytest.mark.parametrize("row_before_backup", [False, True])
def test_a_resumed_fit_keeps_the_finished_epochs_rows_and_appends(tmp_path, row_before_backup):
    """Killed after epoch 3 (its row written before or after the backup): the resumed log has each epoch once.

    Mutation tried: keeping every row on resume (`<= done` -> `True`) -> red for a row written before its
    backup (epoch 3 twice); truncating the file on resume -> red.
    """
    path, backup = tmp_path / "log.csv", str(tmp_path / "backup")

    def callbacks(kill_at=None):
        restore, log = keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False), TrainingLog(path)
        kill = [] if kill_at is None else [_Kill(kill_at)]
        return [log, *kill, restore] if row_before_backup else [restore, log, *kill]

    with pytest.raises(KeyboardInterrupt):
        _model().fit(X, Y, epochs=5, batch_size=8, verbose=0, callbacks=callbacks(kill_at=2))
    first = [r[0] for r in _rows(path)[1:]]
    assert first == ["1", "2", "3"]
    history = _model().fit(X, Y, epochs=5, batch_size=8, verbose=0, callbacks=callbacks())
    resumed_from = 2 if row_before_backup else 3  # epochs the backup holds
    assert history.epoch == list(range(resumed_from, 5))
    header, *rows = _rows(path)
    assert header == ["epoch", "accuracy", "loss"]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([float(r[2]) for r in rows[resumed_from:]], history.history["loss"], rtol=1e-7)


def _graph_check_failure():
    """The error `fit` raises for a label outside [0, 3): a failed Assert inside the compiled train step."""
    with pytest.raises(tf.errors.InvalidArgumentError) as failure:
        _model().fit(X, np.where(Y == 0, 3, Y), epochs=1, batch_size=8, verbose=0)
    return failure.value


def _eager_check_message():
    """The loss's own message for the same label, called eagerly (no graph, no trace around it)."""
    with pytest.raises(tf.errors.InvalidArgumentError) as failure:
        losses.softmax_cross_entropy(np.array([3]), np.zeros((1, 3), np.float32))
    return str(failure.value)


def test_a_failed_check_in_fit_becomes_a_value_error_with_the_checks_message_first():
    """Mutation tried: returning the whole text instead of the Assert's data -> red (first line)."""
    error = _graph_check_failure()
    assert str(error).splitlines()[0] == "Graph execution error:"  # what the user read first before
    message = check_message(error)
    assert message is not None and "\n" not in message
    eager = _eager_check_message()
    assert message.startswith(eager[: eager.index(" Got ")] if " Got " in eager else eager[:40])
    with pytest.raises(ValueError) as raised, check_failures_first():
        raise error
    assert str(raised.value) == message and raised.value.__context__ is error


def test_other_errors_pass_through_unchanged():
    original = RuntimeError("dataset not prepared")
    with pytest.raises(RuntimeError) as raised, check_failures_first():
        raise original
    assert raised.value is original and check_message(original) is None
