"""Train steps on JAX, on one device and under ``keras.distribution.DataParallel``, run as its own process by
test_distribute_jax.py (JAX fixes its device count when it starts: the parent sets
``XLA_FLAGS=--xla_force_host_platform_device_count=2``).

Prints one JSON line: for each setting and task, the losses of `STEPS` train steps, the final weights, on
how many devices the weights lived, and how many examples of a batch each device held in the step. The same
global batches, initial weights and optimizer are used in both settings, so a correct loss gives the same
numbers.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax python tests/distributed_jax_job.py

Output: ``{"devices": 2, "single": {task: result}, "data_parallel": {task: result}}`` with
``result = {"replicas": ..., "rows_per_device": [...], "losses": [...], "weights": [...]}``.
"""

from __future__ import annotations

import contextlib
import json

import jax
import keras
import numpy as np

from kerasce import losses

GLOBAL_BATCH = 16
STEPS = 2
FEATURES, CLASSES = 6, 4
# naive_softmax: a loss that divides its sum by the per-replica batch size, as code written for
# tf.distribute's per-replica view does; under DataParallel the sum is global, so its gradients are
# `replicas` times too large. The tests expect it to differ from one device: the comparison catches that bug.
TASKS = ("softmax", "sigmoid", "policy_gradient", "naive_softmax")


class PerReplicaMeanCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy summed and divided by the per-replica batch (the bug the control stands for)."""

    def __init__(self, replicas: int):
        super().__init__(reduction="sum", name="per_replica_mean")
        self.replicas = replicas

    def call(self, y_true, y_pred):
        return losses.softmax_cross_entropy(y_true, y_pred) / (GLOBAL_BATCH // self.replicas)


class BatchShardProbe(keras.layers.Layer):
    """Identity layer that records how many examples of the batch each device holds inside the compiled step
    (``jax.debug.inspect_array_sharding`` reports the sharding XLA chose when it compiles)."""

    def __init__(self):
        super().__init__()
        self.rows_per_device: list[int] = []

    def call(self, x):
        shape = tuple(x.shape)
        jax.debug.inspect_array_sharding(x, callback=lambda s: self.rows_per_device.append(s.shard_shape(shape)[0]))
        return x


def make_data(task: str, rng: np.random.Generator):
    """Fixed global batches: (x, y, sample_weight) for `STEPS` steps; for policy_gradient the sample weights
    are the returns (any sign)."""
    n = GLOBAL_BATCH * STEPS
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    if task == "sigmoid":
        y = (rng.uniform(size=(n, CLASSES)) < 0.3).astype(np.float32)
    else:
        y = rng.integers(0, CLASSES, size=n).astype(np.int32)
    if task == "policy_gradient":
        return x, y, rng.normal(size=n).astype(np.float32)
    return x, y, rng.uniform(0.5, 1.5, size=n).astype(np.float32)


def make_loss(task: str, replicas: int) -> keras.losses.Loss:
    if task == "softmax":
        return losses.SoftmaxCrossEntropy(label_smoothing=0.1)
    if task == "sigmoid":
        return losses.SigmoidCrossEntropy()
    if task == "policy_gradient":
        return losses.PolicyGradientLoss()
    return PerReplicaMeanCrossEntropy(replicas)


def train(task: str, replicas: int) -> dict:
    """`STEPS` train steps of a fresh model (the same initial weights every time), inside the current
    distribution."""
    keras.utils.set_random_seed(0)
    probe = BatchShardProbe()
    layers = [keras.Input((FEATURES,)), probe, keras.layers.Dense(8, "tanh"), keras.layers.Dense(CLASSES)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=make_loss(task, replicas), jit_compile=True)
    x, y, w = make_data(task, np.random.default_rng(1))
    step_losses = []
    for step in range(STEPS):
        batch = slice(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH)
        step_losses.append(float(model.train_on_batch(x[batch], y[batch], sample_weight=w[batch])))
    kernel = model.trainable_variables[0].value
    return {
        "replicas": len(kernel.sharding.device_set),
        "rows_per_device": sorted(set(probe.rows_per_device)),
        "losses": step_losses,
        "weights": [np.asarray(v).tolist() for v in model.get_weights()],
    }


def main() -> None:
    devices = jax.devices()
    results: dict = {"devices": len(devices)}
    settings = {
        "single": (contextlib.nullcontext, 1),
        "data_parallel": (keras.distribution.DataParallel(devices=devices).scope, len(devices)),
    }
    for setting, (scope, replicas) in settings.items():
        with scope():
            results[setting] = {task: train(task, replicas) for task in TASKS}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
