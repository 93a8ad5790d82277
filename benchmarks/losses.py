"""Forward + backward time of kerasce's losses vs the Keras built-ins vs the fused tf.nn ops, with and without XLA.

Every variant is a `tf.function` computing the mean loss and its gradient with respect to the logits.
kerasce and Keras are timed twice: as plain ``tf.function`` s and compiled with ``jit_compile=True`` (XLA,
what Keras's default ``"auto"`` gives on a GPU). Variants are timed interleaved (round-robin, many
rounds, order alternating) in one process, and the table reports the median per-call time and the ratios
kerasce / Keras and kerasce / tf.nn, then the XLA times and their ratio kerasce / Keras (target: <= 1.0 in
every column). A ratio is the median of the per-round ratios (pairing cancels the machine's slow drifts).

A second table times the focal loss (γ = 2) against Keras's focal built-ins (one-hot labels for Keras,
made outside the timed step), and a third gives the peak memory of one per-pixel step, [8, 128, 128] ids
and 21 classes, each variant in its own process (see `measure_peak_memory`).

    python benchmarks/losses.py [--rounds 30] [--calls 50] [--skip-plain] [--skip-focal]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=30, help="interleaved rounds (median taken over them)")
    parser.add_argument("--calls", type=positive_int, default=50, help="calls per variant per round")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random logits and labels")
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain cross-entropy table")
    parser.add_argument("--skip-focal", action="store_true", help="skip the focal tables")
    parser.add_argument("--memory-variant", help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import paired_ratio, time_interleaved  # noqa: E402

from kerasce import losses  # noqa: E402


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


def time_steps(steps: dict, labels, logits, rounds: int, calls: int) -> dict[str, list[float]]:
    """Per-round mean time per call (ms) of each ``step(labels, logits)``, interleaved (`_timing`)."""
    bound = {name: functools.partial(step, labels, logits) for name, step in steps.items()}
    return time_interleaved(bound, rounds, calls, wait=lambda out: out[1].numpy())


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    args = parse_args()
    if args.memory_variant:
        measure_peak_memory(args.memory_variant, args.seed)
        return
    rng = np.random.default_rng(args.seed)
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; rounds={args.rounds}, calls={args.calls}"
    )
    if not args.skip_plain:
        plain_table(args, rng)
    if not args.skip_focal:
        focal_table(args, rng)
        memory_table(args)


def plain_table(args: argparse.Namespace, rng: np.random.Generator) -> None:
    header = (
        f"{'case':<30} {'kerasce ms':>10} {'keras ms':>9} {'tf.nn ms':>9} {'kerasce/keras':>14} "
        f"{'kerasce/tf.nn':>14} {'XLA kerasce ms':>15} {'XLA keras ms':>13} {'XLA kerasce/keras':>18}"
    )
    print(header)
    print("-" * len(header))
    for name, labels, logits, variants in cases(rng):
        steps = {variant: forward_backward(fn) for variant, fn in variants.items()}
        steps.update({f"xla {v}": forward_backward(variants[v], jit_compile=True) for v in ("kerasce", "keras")})
        # Same numbers from each variant, or the timing compares different work.
        ref = steps["tf.nn"](labels, logits)[0].numpy()
        for variant, step in steps.items():
            np.testing.assert_allclose(step(labels, logits)[0].numpy(), ref, rtol=2e-5, err_msg=variant)
        samples = time_steps(steps, labels, logits, args.rounds, args.calls)
        ms = medians(samples)
        ratio = {
            "keras": paired_ratio(samples["kerasce"], samples["keras"])[0],
            "tf.nn": paired_ratio(samples["kerasce"], samples["tf.nn"])[0],
            "xla": paired_ratio(samples["xla kerasce"], samples["xla keras"])[0],
        }
        print(
            f"{name:<30} {ms['kerasce']:>10.3f} {ms['keras']:>9.3f} {ms['tf.nn']:>9.3f} "
            f"{ratio['keras']:>14.3f} {ratio['tf.nn']:>14.3f} "
            f"{ms['xla kerasce']:>15.3f} {ms['xla keras']:>13.3f} {ratio['xla']:>18.3f}"
        )


# --------------------------------------------------------------------------------------------------
# Focal and poly losses (issue 11): time vs Keras's focal built-ins, per-pixel peak memory
# --------------------------------------------------------------------------------------------------

GAMMA = 2.0


def focal_cases(rng: np.random.Generator):
    """(name, kerasce labels, Keras labels, logits, {variant: loss_fn}) for each focal case.

    "kerasce" takes the class ids, "keras" the one-hot labels (CategoricalFocalCrossentropy has no sparse
    form; alpha=1 is no class weighting, like kerasce without class_weight), "plain" is kerasce's
    cross-entropy on the same ids: the cost of the focal factor itself.
    """
    keras_focal = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=GAMMA, from_logits=True)
    for batch, classes in [(4096, 10), (1024, 1000)]:
        ids = rng.integers(0, classes, size=batch)
        logits = tf.constant(rng.normal(size=(batch, classes)) * 2, tf.float32)
        variants = {
            "kerasce": (losses.SoftmaxCrossEntropy(focal_gamma=GAMMA), tf.constant(ids, tf.int32)),
            "keras": (keras_focal, tf.one_hot(ids, classes)),
            "plain": (losses.SoftmaxCrossEntropy(), tf.constant(ids, tf.int32)),
        }
        yield f"focal sparse {batch}x{classes}", logits, variants
    labels = tf.constant(rng.uniform(size=(4096, 80)) < 0.1, tf.float32)
    logits = tf.constant(rng.normal(size=(4096, 80)) * 2, tf.float32)
    variants = {
        "kerasce": (losses.SigmoidCrossEntropy(focal_gamma=GAMMA, alpha=0.25), labels),
        "keras": (
            keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=GAMMA, from_logits=True),
            labels,
        ),
        "plain": (losses.SigmoidCrossEntropy(), labels),
    }
    yield "sigmoid focal 4096x80", logits, variants


def focal_table(args: argparse.Namespace, rng: np.random.Generator) -> None:
    header = (
        f"{'case (gamma=2)':<30} {'kerasce ms':>10} {'keras ms':>9} {'plain CE ms':>11} "
        f"{'kerasce/keras':>14} {'kerasce/plain':>14}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, logits, variants in focal_cases(rng):
        # Each step gets its own labels; time_interleaved passes (labels, logits), so bind them here.
        steps = {}
        for variant, (fn, labels) in variants.items():
            step = forward_backward(fn)
            steps[variant] = functools.partial(lambda step, labels, _, z: step(labels, z), step, labels)
        ref = steps["keras"](None, logits)[0].numpy()
        np.testing.assert_allclose(steps["kerasce"](None, logits)[0].numpy(), ref, rtol=1e-4, err_msg=name)
        samples = time_steps(steps, None, logits, args.rounds, args.calls)
        ms = medians(samples)
        print(
            f"{name:<30} {ms['kerasce']:>10.3f} {ms['keras']:>9.3f} {ms['plain']:>11.3f} "
            f"{paired_ratio(samples['kerasce'], samples['keras'])[0]:>14.3f} "
            f"{paired_ratio(samples['kerasce'], samples['plain'])[0]:>14.3f}"
        )


PIXEL_SHAPE, PIXEL_CLASSES = (8, 128, 128), 21
# name -> (loss, whether the labels go in as a one-hot tensor made inside the step)
MEMORY_VARIANTS = {
    "kerasce focal, ids": (lambda: losses.SoftmaxCrossEntropy(focal_gamma=GAMMA), False),
    "keras CategoricalFocal, one-hot": (
        lambda: keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=GAMMA, from_logits=True),
        True,
    ),
    "kerasce focal, one-hot": (lambda: losses.SoftmaxCrossEntropy(focal_gamma=GAMMA), True),
    "kerasce plain CE, ids": (lambda: losses.SoftmaxCrossEntropy(), False),
}


def _pixel_problem(seed: int):
    rng = np.random.default_rng(seed)
    ids = tf.constant(rng.integers(0, PIXEL_CLASSES, size=PIXEL_SHAPE), tf.int32)
    logits = tf.constant(rng.normal(size=PIXEL_SHAPE + (PIXEL_CLASSES,)) * 2, tf.float32)
    return ids, logits


def _pixel_step(variant: str):
    make_loss, one_hot = MEMORY_VARIANTS[variant]
    loss_fn = make_loss()
    # The one-hot route makes its [8, 128, 128, 21] labels inside the step, as a model fed ids would.
    return forward_backward(lambda y, z: loss_fn(tf.one_hot(y, PIXEL_CLASSES) if one_hot else y, z))


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak_memory(variant: str, seed: int) -> None:
    """Child process: peak resident memory added by one forward + backward step, in MiB (prints JSON).

    Method (Linux): the step is traced and run once, then the process's peak-RSS mark is reset
    (``echo 5 > /proc/self/clear_refs``) and the step run 3 times; the result is the peak (VmHWM) minus the
    resident size before those runs (VmRSS). The parent starts the child with ``MALLOC_MMAP_THRESHOLD_``
    fixed at 64 KiB, so every tensor buffer is its own mmap, returned to the system when freed: the peak is
    what the step holds at once, not what malloc kept from earlier. On CPU, TensorFlow's
    ``get_memory_info`` is not available (it is for GPUs).
    """
    ids, logits = _pixel_problem(seed)
    step = _pixel_step(variant)
    step(ids, logits)[1].numpy()
    before = _proc_status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    for _ in range(3):
        step(ids, logits)[1].numpy()
    peak = _proc_status_kb("VmHWM")
    print(json.dumps({"variant": variant, "peak_mib": (peak - before) / 1024}))


def memory_table(args: argparse.Namespace) -> None:
    ids, logits = _pixel_problem(args.seed)
    logits_mib = logits.numpy().nbytes / 2**20
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": os.pathsep.join(sys.path)}
    peaks = {}
    for variant in MEMORY_VARIANTS:
        samples = []
        for _ in range(3):  # three processes per variant, the median reported
            out = subprocess.run(
                [sys.executable, __file__, "--memory-variant", variant, "--seed", str(args.seed)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            samples.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
        peaks[variant] = statistics.median(samples)
    steps = {variant: (lambda step: lambda y, z: step(y, z))(_pixel_step(variant)) for variant in MEMORY_VARIANTS}
    ms = medians(time_steps(steps, ids, logits, max(3, args.rounds // 3), max(3, args.calls // 10)))
    keras_peak = peaks["keras CategoricalFocal, one-hot"]
    print()
    print(
        f"per-pixel focal (gamma=2), ids {list(PIXEL_SHAPE)}, {PIXEL_CLASSES} classes: one [8, 128, 128, 21] "
        f"float32 tensor is {logits_mib:.1f} MiB; peak = resident memory added during forward + backward"
    )
    header = f"{'variant':<34} {'ms':>8} {'peak MiB':>9} {'peak / keras':>13}"
    print(header)
    print("-" * len(header))
    for variant in MEMORY_VARIANTS:
        print(f"{variant:<34} {ms[variant]:>8.2f} {peaks[variant]:>9.1f} {peaks[variant] / keras_peak:>13.2f}")


if __name__ == "__main__":
    main()
