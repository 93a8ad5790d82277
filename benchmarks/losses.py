"""Forward + backward time of kerasce's losses vs the Keras built-ins vs the fused tf.nn ops, with and without XLA.

Every variant is a `tf.function` computing the mean loss and its gradient with respect to the logits.
kerasce and Keras are timed twice: as plain ``tf.function`` s and compiled with ``jit_compile=True`` (XLA,
what Keras's default ``"auto"`` gives on a GPU). Variants are timed interleaved (round-robin, many
rounds) in one process, and the table reports the median per-call time and the ratios kerasce / Keras and
kerasce / tf.nn, then the XLA times and their ratio kerasce / Keras (target: <= 1.0 in every column).

    python benchmarks/losses.py [--rounds 30] [--calls 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasce import losses  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (median taken over them)")
    parser.add_argument("--calls", type=int, default=50, help="calls per variant per round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random logits and labels")
    return parser.parse_args()


def forward_backward(loss_fn, jit_compile: bool = False):
    """A tf.function (XLA-compiled with `jit_compile`) returning the loss and d loss / d logits."""

    @tf.function(jit_compile=jit_compile)
    def step(labels, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = loss_fn(labels, logits)
        return loss, tape.gradient(loss, logits)

    return step


def cases(rng: np.random.Generator):
    """(name, labels, logits, {variant: loss_fn}) for each benchmarked shape."""
    keras_sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours_softmax = losses.SoftmaxCrossEntropy()
    sparse_variants = {
        "kerasce": ours_softmax,
        "keras": keras_sparse,
        "tf.nn": lambda y, z: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, z)),
    }
    keras_binary = keras.losses.BinaryCrossentropy(from_logits=True)
    ours_sigmoid = losses.SigmoidCrossEntropy()
    sigmoid_variants = {
        "kerasce": ours_sigmoid,
        "keras": keras_binary,
        "tf.nn": lambda y, z: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, z)),
    }
    for batch, classes in [(4096, 10), (1024, 1000)]:
        labels = tf.constant(rng.integers(0, classes, size=batch), tf.int32)
        logits = tf.constant(rng.normal(size=(batch, classes)), tf.float32)
        yield f"sparse softmax {batch}x{classes}", labels, logits, sparse_variants
    labels = tf.constant(rng.uniform(size=(4096, 80)) < 0.1, tf.float32)
    logits = tf.constant(rng.normal(size=(4096, 80)), tf.float32)
    yield "multi-label sigmoid 4096x80", labels, logits, sigmoid_variants


def time_interleaved(steps: dict, labels, logits, rounds: int, calls: int) -> dict[str, float]:
    """Median over rounds of the mean per-call time (ms) of each step, variants interleaved."""
    for step in steps.values():  # trace and warm up
        for _ in range(5):
            step(labels, logits)[1].numpy()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = step(labels, logits)
            out[1].numpy()  # wait for the last call
            samples[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; rounds={args.rounds}, calls={args.calls}")
    header = (f"{'case':<30} {'kerasce ms':>10} {'keras ms':>9} {'tf.nn ms':>9} {'kerasce/keras':>14} "
              f"{'kerasce/tf.nn':>14} {'XLA kerasce ms':>15} {'XLA keras ms':>13} {'XLA kerasce/keras':>18}")
    print(header)
    print("-" * len(header))
    for name, labels, logits, variants in cases(rng):
        steps = {variant: forward_backward(fn) for variant, fn in variants.items()}
        steps.update({f"xla {v}": forward_backward(variants[v], jit_compile=True) for v in ("kerasce", "keras")})
        # Same numbers from each variant, or the timing compares different work.
        ref = steps["tf.nn"](labels, logits)[0].numpy()
        for variant, step in steps.items():
            np.testing.assert_allclose(step(labels, logits)[0].numpy(), ref, rtol=2e-5, err_msg=variant)
        ms = time_interleaved(steps, labels, logits, args.rounds, args.calls)
        print(f"{name:<30} {ms['kerasce']:>10.3f} {ms['keras']:>9.3f} {ms['tf.nn']:>9.3f} "
              f"{ms['kerasce'] / ms['keras']:>14.2f} {ms['kerasce'] / ms['tf.nn']:>14.2f} "
              f"{ms['xla kerasce']:>15.3f} {ms['xla keras']:>13.3f} {ms['xla kerasce'] / ms['xla keras']:>18.2f}")


if __name__ == "__main__":
    main()
