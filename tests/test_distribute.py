"""tf.distribute: a distributed step gives the same loss and update as one device on the same global batch.

Each run is its own process (tests/distributed_job.py): splitting the CPU into logical devices and joining
a multi-worker cluster must happen before TensorFlow initialises.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster import tf_configs

from kerasce import distribute

JOB = Path(__file__).with_name("distributed_job.py")
pytestmark = pytest.mark.slow


def run_job(task: str, strategy: str = "default", devices: int = 1, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(JOB), "--task", task, "--strategy", strategy, "--devices", str(devices)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=240)
    if proc.returncode != 0:
        raise AssertionError(f"job failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def assert_same_training(got: dict, want: dict) -> None:
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-5)
    for g, w in zip(got["weights"], want["weights"]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def one_device():
    """One-device reference runs, started together."""
    procs = {
        task: run_job(task)
        for task in (
            "softmax",
            "sigmoid",
            "naive_softmax",
            "agent",
            "agent_learn",
            "classifier",
            "multilabel_classifier",
        )
    }
    return {task: result(proc) for task, proc in procs.items()}


@pytest.mark.parametrize("task", ["softmax", "sigmoid", "agent", "agent_learn", "classifier", "multilabel_classifier"])
def test_mirrored_on_two_cpu_devices_equals_one_device(task, one_device):
    mirrored = result(run_job(task, "mirrored", devices=2))
    assert mirrored["replicas"] == 2
    assert_same_training(mirrored, one_device[task])


def test_the_comparison_catches_the_per_replica_mean_bug(one_device):
    # A train_step reducing with tf.reduce_mean instead of a Keras Loss gets 2x gradients on 2 replicas.
    naive = result(run_job("naive_softmax", "mirrored", devices=2))
    with pytest.raises(AssertionError):
        assert_same_training(naive, one_device["naive_softmax"])


@pytest.mark.parametrize("task", ["softmax", "classifier", "multilabel_classifier"])
def test_two_worker_processes_equal_one_device(task, one_device):
    workers = [run_job(task, "multiworker", env={"TF_CONFIG": config}) for config in tf_configs(2)]
    results = [result(w) for w in workers]
    for worker in results:
        assert worker["replicas"] == 2
        assert_same_training(worker, one_device[task])


def test_unknown_strategy_and_bad_tf_config_are_clear_errors(monkeypatch):
    with pytest.raises(
        ValueError, match=r"Unknown strategy 'tpu'; expected one of \('default', 'mirrored', 'multiworker'\)"
    ):
        distribute.get_strategy("tpu")
    monkeypatch.setenv("TF_CONFIG", "{cluster: oops")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        distribute.get_strategy("multiworker")
