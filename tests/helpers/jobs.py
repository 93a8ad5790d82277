"""Training in processes of its own: the job's side and the test's side.

Splitting the CPU into logical devices or joining a multi-worker cluster must happen before TensorFlow
starts, so such a training runs as a job script in a fresh process (forked from tests/helpers/zygote.py's, which
has imported TensorFlow already) and prints one JSON line; the test reads it and compares.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import numpy as np

TIMEOUT = 240  # seconds for one job: a worker left waiting in an all-reduce fails the test instead of hanging it


def job_result(proc, timeout: float = TIMEOUT) -> Any:
    """The last line of a job's stdout, as JSON; an AssertionError with its stderr's tail if it failed or hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"job did not finish in {timeout} s (a worker waiting forever?):\n{err[-2000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def fit_and_record(model, dataset, replicas: int) -> dict[str, Any]:
    """One epoch of ``model.fit(dataset)``: ``{"replicas", "losses": per batch, "weights": final}``, as JSON."""
    import keras

    losses: list[float] = []

    class RecordLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    model.fit(dataset, epochs=1, verbose=0, callbacks=[RecordLoss()])
    return {"replicas": replicas, "losses": losses, "weights": [w.tolist() for w in model.get_weights()]}


def assert_same_training(got: dict, want: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Two recorded trainings agree: the same per-batch losses and final weights, up to float32 reordering."""
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=rtol)
    assert len(got["weights"]) == len(want["weights"])
    for g, w in zip(got["weights"], want["weights"]):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
