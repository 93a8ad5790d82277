"""tf.distribute: a distributed step gives the same loss and update as one device on the same global batch.

Each run is its own process (tests/distributed_job.py): splitting the CPU into logical devices and joining
a multi-worker cluster must happen before TensorFlow initialises.
"""

import os
from pathlib import Path

import pytest
from helpers.jobs import assert_same_training, job_result

from kerasce import distribute
from kerasce.launch import tf_configs

JOB = Path(__file__).with_name("distributed_job.py")
pytestmark = pytest.mark.slow


def run_job(
    zygote,
    tasks: tuple[str, ...],
    strategies: tuple[str, ...] = ("default",),
    devices: int = 1,
    env: dict | None = None,
):
    """Starts distributed_job.py in a fresh process, forked from tests/helpers/zygote.py's (no TensorFlow import of its
    own: TensorFlow's devices and cluster are set up in the child)."""
    args = ["--task", *tasks, "--strategy", *strategies, "--devices", str(devices)]
    return zygote.start(JOB, *args, env={**os.environ, **(env or {})})


# The tests below share three processes, started once (a TensorFlow start costs seconds): one on a CPU split
# into 2 devices trains every task on one device (the references, TensorFlow's default strategy) and then
# mirrored on both; two workers of a local cluster train the multi-worker tasks. They run on one pytest-xdist
# worker (pyproject: --dist loadgroup), which starts them once.
SHARED = pytest.mark.xdist_group("distribute")
TASKS = (
    *("softmax", "sigmoid", "naive_softmax", "agent", "agent_learn", "agent_normalized"),
    *("classifier", "multilabel_classifier"),
)
MULTIWORKER_TASKS = ("softmax", "classifier", "multilabel_classifier")


@pytest.fixture(scope="module")
def local(zygote):
    """``{"default": {task: result}, "mirrored": {task: result}}``."""
    return job_result(run_job(zygote, TASKS, ("default", "mirrored"), devices=2))


@pytest.fixture(scope="module")
def one_device(local):
    return local["default"]


@pytest.fixture(scope="module")
def two_workers(zygote):
    """Each worker's ``{task: result}``."""
    workers = [
        run_job(zygote, MULTIWORKER_TASKS, ("multiworker",), env={"TF_CONFIG": config}) for config in tf_configs(2)
    ]
    return [job_result(w)["multiworker"] for w in workers]


@SHARED
@pytest.mark.parametrize(
    "task", ["softmax", "sigmoid", "agent", "agent_learn", "agent_normalized", "classifier", "multilabel_classifier"]
)
def test_mirrored_on_two_cpu_devices_equals_one_device(task, local, one_device):
    """Mutation tried (agent_normalized): `normalize_advantage`'s moments per replica, not summed over replicas
    (`_sum_over_replicas` returning its input) -> red."""
    mirrored = local["mirrored"][task]
    assert mirrored["replicas"] == 2
    assert one_device[task]["replicas"] == 1
    assert_same_training(mirrored, one_device[task])


@SHARED
def test_the_comparison_catches_the_per_replica_mean_bug(local, one_device):
    # A train_step reducing with tf.reduce_mean instead of a Keras Loss gets 2x gradients on 2 replicas.
    naive = local["mirrored"]["naive_softmax"]
    assert naive["replicas"] == 2
    with pytest.raises(AssertionError):
        assert_same_training(naive, one_device["naive_softmax"])


@SHARED
@pytest.mark.parametrize("task", MULTIWORKER_TASKS)
def test_two_worker_processes_equal_one_device(task, two_workers, one_device):
    for worker in two_workers:
        assert worker[task]["replicas"] == 2
        assert_same_training(worker[task], one_device[task])


def test_unknown_strategy_and_bad_tf_config_are_clear_errors(monkeypatch):
    with pytest.raises(
        ValueError, match=r"`name` must be one of \('default', 'mirrored', 'multiworker'\)\. Received: name='tpu'"
    ):
        distribute.get_strategy("tpu")
    monkeypatch.setenv("TF_CONFIG", "{cluster: oops")
    with pytest.raises(ValueError, match="`TF_CONFIG` must be JSON"):
        distribute.get_strategy("multiworker")
