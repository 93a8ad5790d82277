"""Train-step time of ImageClassifier's own non-finite gate vs Keras's stock step with `SkipNonFinite(Adam)`.

Both kinds are the same classifier (`build_image_classifier`, same weights, same loss and metrics):

* "gate": `ImageClassifier.train_step`, which checks the loss and the gradients and applies Adam only when they
  are finite (`kerasce.training.apply_gradients_if_finite`);
* "wrapper": Keras's stock TensorFlow train step (the one ImageClassifier overrides) with the optimizer wrapped in
  `kerasce.optimizers.SkipNonFinite`, which checks the gradients.

A step is the train step in a ``tf.function`` (XLA off and on) on a fixed batch. Variants run interleaved (order
alternating) in one process; the table reports median ms per step and the median of the per-round ratios
wrapper / gate (the switch is worth it at <= 1.02) with its interquartile range, and gate copy / gate (the noise
floor of this machine at this moment).

    python benchmarks/skip_nonfinite.py [--rounds 20] [--steps 10] [--instances 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.runs import HelpFormatter, non_negative_int, positive_int

# (case, input shape, classes, batch): the example's 8x8 digits and a 16x16 input.
CASES = [("digits", (8, 8, 1), 10, 64), ("16x16", (16, 16, 1), 10, 64)]
KINDS = ("gate", "wrapper", "gate copy")
TARGET_RATIO = 1.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=20, help="interleaved rounds (median taken over them)")
    parser.add_argument("--steps", type=positive_int, default=10, help="training steps per variant per round")
    parser.add_argument("--instances", type=positive_int, default=2, help="models per kind, pooled per round")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the random batch")
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _results import save_result  # noqa: E402
from _timing import paired_ratio, pooled, time_interleaved  # noqa: E402

from kerasce.classifiers import ImageClassifier, build_image_classifier  # noqa: E402
from kerasce.optimizers import SkipNonFinite  # noqa: E402


def steps(input_shape, num_classes: int, instances: int, data, jit: bool) -> dict:
    """``(kind, instance) -> step`` for every kind, the models built from one template's weights."""
    template = build_image_classifier(input_shape, num_classes)
    out = {}
    for i in range(instances):
        for kind in KINDS:
            model = build_image_classifier(input_shape, num_classes)
            model.set_weights(template.get_weights())
            if kind == "wrapper":
                model.compile(
                    optimizer=SkipNonFinite(keras.optimizers.Adam(float(template.optimizer.learning_rate))),
                    loss=template.loss,
                    metrics=[keras.metrics.SparseCategoricalAccuracy("accuracy")],
                )
                step = super(ImageClassifier, model).train_step  # Keras's stock step
            else:
                step = model.train_step
            out[kind, i] = functools.partial(tf.function(step, jit_compile=jit), data)
    return out


def main() -> None:
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; rounds={args.rounds}, steps={args.steps}, instances={args.instances}"
    )
    header = f"{'case':<22} {'xla':>5} {'gate ms':>8} {'wrapper ms':>10} {'wrapper/gate (IQR)':>21} {'noise':>6}"
    print(header + "\n" + "-" * len(header))
    figures = {}
    for name, input_shape, num_classes, size in CASES:
        images = tf.constant(rng.integers(0, 256, (size, *input_shape)), tf.uint8)
        data = (images, tf.constant(rng.integers(0, num_classes, size), tf.int32))
        for jit in (False, True):
            samples = time_interleaved(
                steps(input_shape, num_classes, args.instances, data, jit),
                args.rounds,
                args.steps,
                wait=lambda logs: float(logs["loss"]),
            )
            kinds = {kind: pooled(samples, [k for k in samples if k[0] == kind]) for kind in KINDS}
            ratio, q1, q3 = paired_ratio(kinds["wrapper"], kinds["gate"])
            noise, _, _ = paired_ratio(kinds["gate copy"], kinds["gate"])
            ms = {kind: statistics.median(v) for kind, v in kinds.items()}
            print(
                f"{name:<22} {jit!s:>5} {ms['gate']:>8.3f} {ms['wrapper']:>10.3f} "
                f"{f'{ratio:.3f} ({q1:.3f}-{q3:.3f})':>21} {noise:>6.3f}"
            )
            figures[f"{name} xla={jit}"] = {
                "gate_ms": ms["gate"],
                "wrapper_ms": ms["wrapper"],
                "wrapper_over_gate": ratio,
                "wrapper_over_gate_iqr": [q1, q3],
                "noise_gate_copy_over_gate": noise,
                "batch": size,
            }
    save_result("skip_nonfinite", figures)


if __name__ == "__main__":
    main()
