"""Training-step time of the kerasce image classifier vs the same network on the Keras built-in loss.

Both models come from `build_image_classifier` with the same weights; the "keras" one is recompiled with
``SparseCategoricalCrossentropy(from_logits=True)`` (multi-class) or ``BinaryCrossentropy(from_logits=True)``
(multi-label), the same optimizer settings and the same metrics, and trained by Keras's stock train step,
while the kerasce one runs `ImageClassifier.train_step` (the update gated on a finite loss and finite
gradients, `kerasce.training.apply_gradients_if_finite`). A step is the train step in a
``tf.function`` (forward, loss, backward, Adam update, metric updates) on a fixed batch, so input-pipeline
time is left out. Variants are timed interleaved (round-robin, order alternating, many rounds) in one
process; the table reports the median per-step time, the median of the per-round ratios kerasce / keras
(target: <= 1.02) with its interquartile range, and the same ratio between two identical Keras models
(the noise floor of this machine at this moment). The figures go to benchmarks/results/classifier-step/.

    python benchmarks/classifier.py [--rounds 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_int

# (case, input shape, classes, multi-label, batch): the example's two datasets and a CIFAR-sized input.
CASES = [
    ("digits", (8, 8, 1), 10, False, 64),
    ("multi_digits", (16, 16, 1), 10, True, 64),
    ("cifar-like", (32, 32, 3), 10, False, 64),
]
CASE_NAMES = [case[0] for case in CASES]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=20, help="interleaved rounds (median taken over them)")
    parser.add_argument("--steps", type=positive_int, default=10, help="training steps per variant per round")
    parser.add_argument(
        "--cases", nargs="+", choices=CASE_NAMES, default=CASE_NAMES, help="cases to run (default: all)"
    )
    parser.add_argument("--instances", type=positive_int, default=3, help="models per kind, pooled per round")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the random batch")
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _results import save_result  # noqa: E402
from _timing import paired_ratio, pooled, start, time_interleaved  # noqa: E402

from kerasce.classifiers import ImageClassifier, build_image_classifier, classifier_metrics  # noqa: E402

TARGET_RATIO = 1.02


KINDS = ("kerasce", "keras", "keras copy")


def models(input_shape, num_classes: int, multilabel: bool, instances: int) -> dict[tuple[str, int], keras.Model]:
    """``instances`` kerasce-compiled classifiers and as many of the same network, same weights, on the Keras
    built-in loss, keyed ``(kind, instance)``.

    A second Keras kind ("keras copy") measures the noise floor: its ratio to "keras" differs from 1 only by
    chance.
    """
    # The weights' source is timed as neither kind: no timed instance differs from the others by being built first.
    template = build_image_classifier(input_shape, num_classes, multilabel)
    builtin = keras.losses.BinaryCrossentropy if multilabel else keras.losses.SparseCategoricalCrossentropy
    variants = {}
    for i in range(instances):
        for kind in KINDS:
            model = build_image_classifier(input_shape, num_classes, multilabel)
            model.set_weights(template.get_weights())
            if kind != "kerasce":
                model.compile(
                    optimizer=keras.optimizers.Adam(float(template.optimizer.learning_rate)),
                    loss=builtin(from_logits=True),
                    metrics=classifier_metrics(num_classes, multilabel),
                )
            variants[kind, i] = model
    return variants


def batch(rng: np.random.Generator, input_shape, num_classes: int, multilabel: bool, size: int):
    images = tf.constant(rng.integers(0, 256, (size, *input_shape)), tf.uint8)
    if multilabel:
        labels = tf.constant(rng.uniform(size=(size, num_classes)) < 0.3, tf.float32)
    else:
        labels = tf.constant(rng.integers(0, num_classes, size), tf.int32)
    return images, labels


def main() -> None:
    args = parse_args()
    rng = start(args)
    header = (
        f"{'case':<32} {'batch':>5} {'kerasce ms':>10} {'keras ms':>9} {'kerasce/keras (IQR)':>22} "
        f"{'<= ' + str(TARGET_RATIO):>7} {'noise: keras/keras':>19}"
    )
    print(header)
    print("-" * len(header))
    figures = {}
    for name, input_shape, num_classes, multilabel, size in CASES:
        if name not in args.cases:
            continue
        label = f"{name} {'x'.join(map(str, input_shape))}, {num_classes} {'labels' if multilabel else 'classes'}"
        variants = models(input_shape, num_classes, multilabel, args.instances)
        data = batch(rng, input_shape, num_classes, multilabel, size)
        # Same starting weights and the same loss value, or the timing compares different work.
        first = {k: float(m.compute_loss(*data, y_pred=m(data[0], training=False))) for k, m in variants.items()}
        np.testing.assert_allclose(list(first.values()), first["kerasce", 0], rtol=1e-5)
        # kerasce: its own gated train_step; keras: the stock Keras step that ImageClassifier overrides.
        steps = {
            k: functools.partial(
                tf.function(m.train_step if k[0] == "kerasce" else super(ImageClassifier, m).train_step), data
            )
            for k, m in variants.items()
        }
        samples = time_interleaved(steps, args.rounds, args.steps, wait=lambda logs: float(logs["loss"]))
        kinds = {kind: pooled(samples, [k for k in samples if k[0] == kind]) for kind in KINDS}
        ratio, q1, q3 = paired_ratio(kinds["kerasce"], kinds["keras"])
        noise, _, _ = paired_ratio(kinds["keras copy"], kinds["keras"])
        ms = {kind: statistics.median(v) for kind, v in kinds.items()}
        print(
            f"{label:<32} {size:>5} {ms['kerasce']:>10.3f} {ms['keras']:>9.3f} "
            f"{f'{ratio:.3f} ({q1:.3f}-{q3:.3f})':>22} {'yes' if ratio <= TARGET_RATIO else 'NO':>7} {noise:>19.3f}"
        )
        figures[name] = {
            "batch": size,
            "kerasce_ms": ms["kerasce"],
            "keras_ms": ms["keras"],
            "ratio": ratio,
            "ratio_iqr": [q1, q3],
            "noise_ratio": noise,
            "target_ratio": TARGET_RATIO,
        }
    settings = {"rounds": args.rounds, "steps": args.steps, "instances": args.instances, "seed": args.seed}
    print(f"saved {save_result('classifier-step', {'settings': settings, 'cases': figures})}")


if __name__ == "__main__":
    main()
