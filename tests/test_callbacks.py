"""kerasce.callbacks.RaiseOnNonFiniteLoss: a diverging fit fails loudly and keeps the last good backup."""

import keras
import numpy as np
import pytest

from kerasce.callbacks import RaiseOnNonFiniteLoss
from kerasce.losses import SoftmaxCrossEntropy


def make_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), loss=SoftmaxCrossEntropy())
    return model


def test_nan_loss_raises_naming_the_step_and_the_backup_survives(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    backup = tmp_path / "backup"
    model = make_model()
    # Two clean epochs with a backup, then data with a NaN in the 3rd batch of the next run.
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)],
    )
    good = [w.copy() for w in model.get_weights()]
    bad_x = x.copy()
    bad_x[40] = np.nan
    with pytest.raises(FloatingPointError, match=r"Received: loss=nan at epoch 3, batch 3 \(optimizer step 11\)"):
        model.fit(
            bad_x,
            y,
            batch_size=16,
            epochs=4,
            verbose=0,
            shuffle=False,
            callbacks=[RaiseOnNonFiniteLoss(), keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)],
        )
    # A fresh model restored from the backup holds the last good (finite) weights of epoch 2.
    restored = make_model()
    restored.fit(
        x[:0], y[:0], epochs=2, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)]
    )
    for w_restored, w_good in zip(restored.get_weights(), good):
        np.testing.assert_allclose(w_restored, w_good)
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_finite_training_is_untouched():
    rng = np.random.default_rng(1)
    model = make_model()
    history = model.fit(
        rng.normal(size=(32, 4)), rng.integers(0, 3, size=32), epochs=2, verbose=0, callbacks=[RaiseOnNonFiniteLoss()]
    )
    assert len(history.history["loss"]) == 2
