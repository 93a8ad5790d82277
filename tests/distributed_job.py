"""A few training steps under a tf.distribute strategy, run as its own process by test_distribute.py.

Prints one JSON line: for each task, the per-step losses Keras logged and the final weights. The same
global batches, initial weights and optimizer are used whatever the strategy, so the results must equal a
one-device run. Several tasks (and strategies) share one process, as a TensorFlow start costs seconds: each
task builds its own model; each strategy is created once.

    python tests/distributed_job.py --task softmax --strategy mirrored --devices 2
    python tests/distributed_job.py --task softmax sigmoid --strategy default mirrored --devices 2
    TF_CONFIG=... python tests/distributed_job.py --task sigmoid --strategy multiworker

Output: ``{strategy: {task: {"replicas": ..., "losses": [...], "weights": [...]}}}``.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from helpers.jobs import fit_and_record

from kerasce import distribute

GLOBAL_BATCH = 16
STEPS = 3
# naive_softmax: a custom train_step reducing with a bare tf.reduce_mean (the classic per-replica bug);
# the tests expect it to differ from one device, which shows the comparison can catch that bug.
# agent: ReinforceAgent.train_step (policy-gradient + entropy + value terms) through fit(); agent_learn:
# the same update the way learn() runs it (its own split of each batch across replicas), uneven sizes;
# agent_normalized: agent_learn with normalize_advantage (mean and std over the global batch, every replica's).
# classifier / multilabel_classifier: build_image_classifier's models and their compiled losses.
TASKS = (
    *("softmax", "sigmoid", "naive_softmax", "agent", "agent_learn", "agent_normalized"),
    *("classifier", "multilabel_classifier"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, nargs="+", choices=TASKS, help="what to train (each in turn)")
    parser.add_argument("--strategy", default=["default"], nargs="+", choices=distribute.STRATEGIES)
    parser.add_argument("--devices", type=int, default=1, help="logical CPU devices to split the CPU into")
    return parser.parse_args()


def make_data(task: str, rng: np.random.Generator):
    """Fixed global batches: (x, y, sample_weight) for STEPS steps."""
    n = GLOBAL_BATCH * STEPS
    if task in ("classifier", "multilabel_classifier"):
        images = rng.integers(0, 256, size=(n, 8, 8, 1)).astype(np.uint8)
        if task == "classifier":
            return images, rng.integers(0, 10, size=n), np.ones(n, np.float32)
        return images, (rng.uniform(size=(n, 10)) < 0.2).astype(np.float32), np.ones(n, np.float32)
    if task in ("agent", "agent_learn", "agent_normalized"):
        obs = rng.normal(size=(n, 4)).astype(np.float32)
        return obs, rng.integers(0, 2, size=n), rng.normal(size=n).astype(np.float32)
    if task in TASKS:
        x = rng.normal(size=(n, 6)).astype(np.float32)
        if task != "sigmoid":
            y = rng.integers(0, 4, size=n)
        else:
            y = (rng.uniform(size=(n, 4)) < 0.3).astype(np.float32)
        return x, y, rng.uniform(0.5, 1.5, size=n).astype(np.float32)
    raise ValueError(f"unknown task {task!r}")


def build(task: str):
    import keras

    from kerasce import losses

    class NaiveMeanModel(keras.Sequential):
        def train_step(self, data):
            x, y, w = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(w * losses.softmax_cross_entropy(y, self(x, training=True), label_smoothing=0.1))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(0)  # same initial weights in every process
    if task in ("classifier", "multilabel_classifier"):
        from kerasce.classifiers import build_image_classifier

        # dropout=0: dropout draws different random numbers per replica than on one device.
        model = build_image_classifier((8, 8, 1), 10, multilabel=task == "multilabel_classifier", dropout=0.0)
        # SGD, not the built-in Adam: Adam's first steps are scale-invariant (about lr * sign(g)), so a
        # gradient off by the number of replicas would not show in the weights.
        model.compile(keras.optimizers.SGD(0.1), loss=model.loss)
        return model
    if task in ("agent", "agent_learn", "agent_normalized"):
        from kerasce.rl import ReinforceAgent

        normalized = task == "agent_normalized"
        agent = ReinforceAgent((4,), 2, baseline=True, ent_coef=0.05, normalize_advantage=normalized, seed=0)
        agent.compile(keras.optimizers.SGD(0.5))
        return agent
    layers = [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)]
    model = NaiveMeanModel(layers) if task == "naive_softmax" else keras.Sequential(layers)
    loss = (
        losses.SigmoidCrossEntropy(pos_weight=2.0)
        if task == "sigmoid"
        else losses.SoftmaxCrossEntropy(label_smoothing=0.1)
    )
    model.compile(keras.optimizers.SGD(0.5), loss=loss)
    return model


def train(task: str, strategy: tf.distribute.Strategy, multiworker: bool) -> dict:
    """Trains `task` under `strategy`; returns its replicas, per-step losses and final weights."""
    x, y, w = make_data(task, np.random.default_rng(0))
    with strategy.scope():
        model = build(task)
    if task in ("agent_learn", "agent_normalized"):
        # learn()'s path: one call per update, batch sizes that are not multiples of GLOBAL_BATCH.
        batch_losses, start = [], 0
        for size in (10, 14, 24):
            from kerasce.rl import Batch

            logs = model.update(Batch(x[start : start + size], y[start : start + size], w[start : start + size]))
            batch_losses += [logs[k] for k in sorted(logs)]
            start += size
        weights = [v.tolist() for v in model.get_weights()]
        return {"replicas": strategy.num_replicas_in_sync, "losses": batch_losses, "weights": weights}
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(GLOBAL_BATCH)
    if multiworker:
        # Each worker reads the whole global batch and keeps its own half (sharding by DATA).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    return fit_and_record(model, dataset, strategy.num_replicas_in_sync)


def main() -> None:
    args = parse_args()
    if args.devices > 1:
        distribute.split_cpu(args.devices)
    results: dict = {}
    for name in args.strategy:
        strategy = distribute.get_strategy(name)
        results[name] = {task: train(task, strategy, name == "multiworker") for task in args.task}
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
