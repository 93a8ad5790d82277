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

import json
import os

import tensorflow as tf

__all__ = ["STRATEGIES", "get_strategy", "split_cpu"]

STRATEGIES = ("default", "mirrored", "multiworker")


def split_cpu(num_devices: int) -> list[tf.config.LogicalDevice]:
    """Splits the physical CPU into `num_devices` logical devices (for MirroredStrategy on CPU and tests).

    Must run before TensorFlow initialises its devices (before any op runs).

    Raises:
        ValueError: `num_devices` < 1.
        RuntimeError: TensorFlow's devices are already initialised.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1; got {num_devices}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    return tf.config.list_logical_devices("CPU")


def get_strategy(name: str = "default") -> tf.distribute.Strategy:
    """Returns the `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    Raises:
        ValueError: an unknown name, or ``multiworker`` with a ``TF_CONFIG`` that is not valid JSON.
    """
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
                raise ValueError(f"TF_CONFIG must be JSON like {{'cluster': ..., 'task': ...}}; got {config!r}.") from error
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
