"""The cost of skipping non-finite updates: kerasce's gate function vs the `SkipNonFinite` optimizer wrapper.

Two ways to protect the weights from a bad batch, timed on the same models (same weights, same batch):

* "gate": `kerasce.training.apply_gradients_if_finite` with a bare Adam (checks the loss and the gradients;
  what `ReinforceAgent` runs, and what `ImageClassifier`'s own train step ran before it switched);
* "wrapper": ``optimizer.apply`` of a `kerasce.optimizers.SkipNonFinite(Adam)` (checks the gradients).

Cases: `build_image_classifier` on the example's 8x8 digits and on 16x16 inputs, and the agent's default policy
network (an MLP 4 -> 32 -> 32 -> 2 on a 512-row batch). A step is forward, the compiled loss, backward and the
gated update in a ``tf.function``, XLA off and on. Variants run interleaved (order alternating) in one process;
the table reports median ms per step and the median of the per-round ratios wrapper / gate (the switch is worth
it at <= 1.02) with its interquartile range, and gate copy / gate (the noise floor of this machine at this
moment).

    python benchmarks/skip_nonfinite.py [--rounds 20] [--steps 10] [--instances 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_int

# (case, input shape, classes, batch): the example's 8x8 digits and a 16x16 input.
CASES = [("digits", (8, 8, 1), 10, 64), ("16x16", (16, 16, 1), 10, 64)]
CASE_NAMES = [case[0] for case in CASES] + ["agent MLP"]
KINDS = ("gate", "wrapper", "gate copy")
TARGET_RATIO = 1.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=20, help="interleaved rounds (median taken over them)")
    parser.add_argument("--steps", type=positive_int, default=10, help="training steps per variant per round")
    parser.add_argument("--instances", type=positive_int, default=2, help="models per kind, pooled per round")
    parser.add_argument(
        "--cases", nargs="+", choices=CASE_NAMES, default=CASE_NAMES, help="cases to run (default: all)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the random batch")
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _results import save_result  # noqa: E402
from _timing import paired_ratio, pooled, start, time_interleaved  # noqa: E402

from kerasce.classifiers import build_image_classifier  # noqa: E402
from kerasce.optimizers import SkipNonFinite  # noqa: E402
from kerasce.training import apply_gradients_if_finite  # noqa: E402


def step(model: keras.Model, data, kind: str, jit: bool):
    """One train step of `model` (compiled with a `SkipNonFinite`): forward, compiled loss, backward, update.

    "wrapper": ``model.optimizer.apply`` (the `SkipNonFinite`); "gate", "gate copy": its inner Adam through
    `apply_gradients_if_finite`. Everything but the gate is the same work.
    """
    x, y = data

    def train_step():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        if kind == "wrapper":
            model.optimizer.apply(grads, model.trainable_variables)
        else:
            apply_gradients_if_finite(model.optimizer.inner_optimizer, grads, model.trainable_variables, loss)
        return loss

    return tf.function(train_step, jit_compile=jit)


def classifier(input_shape, num_classes: int, template: keras.Model | None) -> keras.Model:
    model = build_image_classifier(input_shape, num_classes)
    if template is not None:
        model.set_weights(template.get_weights())
    return model


def mlp(sizes: tuple[int, ...], template: keras.Model | None) -> keras.Model:
    """The agent's policy network shape: tanh hidden layers, a linear head; mean squared error."""
    model = keras.Sequential([keras.Input((sizes[0],))] + [keras.layers.Dense(u, "tanh") for u in sizes[1:-1]])
    model.add(keras.layers.Dense(sizes[-1]))
    model.compile(optimizer=SkipNonFinite(keras.optimizers.Adam(1e-3)), loss="mse")
    if template is not None:
        model.set_weights(template.get_weights())
    return model


def measure(make, data, jit: bool, args: argparse.Namespace) -> dict:
    """The figures of one case: every kind's instances built from one template's weights, timed interleaved."""
    template = make(None)
    steps = {}
    for i in range(args.instances):
        for kind in KINDS:
            model = make(template)
            model.optimizer.build(model.trainable_variables)
            steps[kind, i] = step(model, data, kind, jit)
    samples = time_interleaved(steps, args.rounds, args.steps, wait=float)
    kinds = {kind: pooled(samples, [k for k in samples if k[0] == kind]) for kind in KINDS}
    ratio, q1, q3 = paired_ratio(kinds["wrapper"], kinds["gate"])
    noise, _, _ = paired_ratio(kinds["gate copy"], kinds["gate"])
    ms = {kind: statistics.median(v) for kind, v in kinds.items()}
    return {
        "gate_ms": ms["gate"],
        "wrapper_ms": ms["wrapper"],
        "wrapper_over_gate": ratio,
        "wrapper_over_gate_iqr": [q1, q3],
        "noise_gate_copy_over_gate": noise,
    }


def main() -> None:
    args = parse_args()
    rng = start(args)
    header = f"{'case':<22} {'xla':>5} {'gate ms':>8} {'wrapper ms':>10} {'wrapper/gate (IQR)':>21} {'noise':>6}"
    print(header + "\n" + "-" * len(header))
    cases = {}
    for name, input_shape, num_classes, size in CASES:
        images = tf.constant(rng.integers(0, 256, (size, *input_shape)), tf.uint8)
        data = (images, tf.constant(rng.integers(0, num_classes, size), tf.int32))
        cases[name] = (functools.partial(classifier, input_shape, num_classes), data)
    # The agent's update: CartPole's default policy (4 -> 32 -> 32 -> 2) on 16 envs x 32 steps.
    observations = tf.constant(rng.normal(size=(512, 4)), tf.float32)
    cases["agent MLP"] = (functools.partial(mlp, (4, 32, 32, 2)), (observations, tf.zeros((512, 2))))
    figures = {}
    for name, (make, data) in cases.items():
        if name not in args.cases:
            continue
        for jit in (False, True):
            got = figures[f"{name} xla={jit}"] = measure(make, data, jit, args)
            ratio = "{:.3f} ({:.3f}-{:.3f})".format(got["wrapper_over_gate"], *got["wrapper_over_gate_iqr"])
            print(
                f"{name:<22} {jit!s:>5} {got['gate_ms']:>8.3f} {got['wrapper_ms']:>10.3f} {ratio:>21} "
                f"{got['noise_gate_copy_over_gate']:>6.3f}"
            )
    save_result("skip_nonfinite", figures)


if __name__ == "__main__":
    main()
