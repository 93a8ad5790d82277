"""keras.distribution.DataParallel on JAX: a step on 2 devices gives the same loss and update as one device.

The training runs in its own process (tests/distributed_jax_job.py): JAX fixes its device count when it
starts, so ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before it is imported. The
job trains each loss on one device and under ``DataParallel`` over both, on the same global batches with
sample weights; the comparison is to 1e-6. A negative control, a loss divided by the per-replica batch size,
must differ: it shows the comparison would catch a loss scaled per replica.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasce

JOB = Path(__file__).with_name("distributed_jax_job.py")
KERASCE_ROOT = Path(kerasce.__file__).resolve().parents[1]  # the job imports the kerasce these tests import
GLOBAL_BATCH = 16  # distributed_jax_job.GLOBAL_BATCH

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("distribute_jax"),  # one worker starts the job once for every test here
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason=f"keras.distribution on JAX: runs with KERAS_BACKEND=jax (active: {keras.backend.backend()})",
    ),
]


@pytest.fixture(scope="module")
def trained():
    """``{"devices": 2, "single": {task: result}, "data_parallel": {task: result}}`` from one job process."""
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.pathsep.join([str(KERASCE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    done = subprocess.run([sys.executable, str(JOB)], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"job failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_training(got: dict, want: dict) -> None:
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-6)
    for g, w in zip(got["weights"], want["weights"]):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def assert_split_over_two_devices(got: dict, want: dict) -> None:
    """The weights live on both devices and each device holds half of every batch (one device: all of it)."""
    assert (got["replicas"], got["rows_per_device"]) == (2, [GLOBAL_BATCH // 2])
    assert (want["replicas"], want["rows_per_device"]) == (1, [GLOBAL_BATCH])


@pytest.mark.parametrize("task", ["softmax", "sigmoid", "policy_gradient"])
def test_data_parallel_on_two_devices_equals_one_device(task, trained):
    assert trained["devices"] == 2
    assert_split_over_two_devices(trained["data_parallel"][task], trained["single"][task])
    assert_same_training(trained["data_parallel"][task], trained["single"][task])


def test_the_comparison_catches_a_loss_scaled_per_replica(trained):
    naive, single = trained["data_parallel"]["naive_softmax"], trained["single"]["naive_softmax"]
    assert_split_over_two_devices(naive, single)
    np.testing.assert_allclose(naive["losses"][0], 2 * single["losses"][0], rtol=1e-6)  # the same weights, 2x
    with pytest.raises(AssertionError):
        assert_same_training(naive, single)
