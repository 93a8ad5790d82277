"""Choosing a `tf.distribute` strategy by name, for the examples' ``--strategy`` flag.

* ``default``: one device (TensorFlow's default strategy).
* ``mirrored``: `tf.distribute.MirroredStrategy` over every GPU, or, on a machine without GPUs, over every
  logical CPU device (see `split_cpu`); synchronous data parallelism on one machine.
* ``multiworker``: `tf.distribute.MultiWorkerMirroredStrategy`; each process reads its place in the cluster
  from the ``TF_CONFIG`` environment variable. Create it at the very start of the program, before any
  other TensorFlow work.

Build and compile the model inside ``strategy.scope()``. kerasce's losses reduce through Keras ``Loss``,
which scales by ``1 / num_replicas_in_sync``, so a distributed step gives the same loss and the same update
as one device on the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from kerasce import _compat
from kerasce.backend import require_tensorflow

__all__ = ["STRATEGIES", "export_location", "get_strategy", "is_chief", "split_cpu", "worker_path"]

STRATEGIES = ("default", "mirrored", "multiworker")


def split_cpu(num_devices: int) -> list[tf.config.LogicalDevice]:
    """Splits the physical CPU into `num_devices` logical devices (for MirroredStrategy on CPU and tests).

    Must run before TensorFlow initialises its devices (before any op runs).

    Raises:
        ValueError: `num_devices` < 1.
        RuntimeError: TensorFlow's devices are already initialised, or Keras runs on another backend.
    """
    require_tensorflow("kerasce.distribute.split_cpu")
    if num_devices < 1:
        raise ValueError(f"`num_devices` must be >= 1. Received: num_devices={num_devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    return tf.config.list_logical_devices("CPU")


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    Raises:
        ValueError: an unknown name, or ``multiworker`` with a ``TF_CONFIG`` that is not valid JSON.
        RuntimeError: Keras runs on another backend than TensorFlow.
    """
    require_tensorflow("kerasce.distribute.get_strategy")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if config:
            try:
                json.loads(config)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"`TF_CONFIG` must be JSON like {{'cluster': ..., 'task': ...}}. Received: TF_CONFIG={config!r}"
                ) from error
        _compat.patch_keras_fit_for_multiworker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"`name` must be one of {STRATEGIES}. Received: name={name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process keeps the exports: True except on the non-chief workers of a cluster.

    The chief is the task of type ``chief`` if the cluster has one, else worker 0 (TensorFlow's rule).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if resolver is None or not cluster:
        return True
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_path(path: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """`path` on the chief, ``<path>.worker<i>`` on worker ``i`` of a cluster: a place of its own.

    For state every worker writes, such as training backups: Keras's ``BackupAndRestore`` and the agent's
    checkpoints would otherwise race on one directory.
    """
    path = Path(path)
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    return path.with_name(f"{path.name}.{resolver.task_type}{resolver.task_id}")


@contextlib.contextmanager
def export_location(path: str | os.PathLike, strategy: tf.distribute.Strategy) -> Iterator[Path]:
    """Where this process writes an export: `path` on the chief, a throw-away directory elsewhere.

    Every worker of a multi-worker cluster must take part in saving (reading mirrored variables can
    need the other workers), but only the chief's copy is kept; the others write into a temporary
    directory that is deleted afterwards.
    """
    if is_chief(strategy):
        yield Path(path)
        return
    scratch = Path(tempfile.mkdtemp(prefix="kerasce-worker-export-"))
    try:
        yield scratch / Path(path).name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
