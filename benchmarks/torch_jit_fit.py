"""Keras's ``jit_compile=True`` on PyTorch (``torch.compile`` of the train step) with a kerasce loss, against eager.

Two copies of one model (an MLP 32 -> 64 -> 10, the same weights) compiled with
``SoftmaxCrossEntropy(label_smoothing=0.1, focal_gamma=2.0)`` and SGD, ``jit_compile`` off and on. The table
reports the first ``train_on_batch`` call of each (for the compiled one: tracing and compilation), then the
median ms per step over interleaved rounds (order alternating) and the median of the per-round ratios
compiled / eager, and the two models' losses after the same steps (they must agree).

    KERAS_BACKEND=torch python benchmarks/torch_jit_fit.py [--rounds 15] [--steps 20] [--batch 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=15, help="interleaved rounds (median taken over them)")
    parser.add_argument("--steps", type=positive_int, default=20, help="training steps per variant per round")
    parser.add_argument("--batch", type=positive_int, default=256, help="examples per step")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (1: see docs/benchmarks.md)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the batch")
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND") != "torch":
        parser.error(f"`KERAS_BACKEND` must be torch. Received: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}")
    return args


if __name__ == "__main__":
    ARGS = parse_args()  # --help and bad flags answer here, before the framework imports below
    # OpenMP's default spin-wait makes calls many times slower when the other core is busy (a shared machine).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import save_result  # noqa: E402
from _timing import paired_ratio, time_interleaved  # noqa: E402

from kerasce.losses import SoftmaxCrossEntropy  # noqa: E402


def build(jit_compile: bool, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    loss = SoftmaxCrossEntropy(label_smoothing=0.1, focal_gamma=2.0)
    model.compile(keras.optimizers.SGD(0.01), loss=loss, jit_compile=jit_compile)
    return model


def main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({args.threads} threads), keras {keras.__version__}; {vars(args)}")
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=args.batch).astype(np.int32)
    models = {"eager": build(False, args.seed), "compiled": build(True, args.seed)}
    first = {}
    for name, model in models.items():
        began = time.perf_counter()
        model.train_on_batch(x, y)
        first[name] = time.perf_counter() - began
    losses = {name: float(model.train_on_batch(x, y)) for name, model in models.items()}
    steps = {name: (lambda m=model: m.train_on_batch(x, y)) for name, model in models.items()}
    samples = time_interleaved(steps, args.rounds, args.steps)
    median, q1, q3 = paired_ratio(samples["compiled"], samples["eager"])
    ratio = {"median": median, "q1": q1, "q3": q3}
    figures = {
        "first_call_s": first,
        "ms_per_step": {name: float(np.median(samples[name])) for name in models},
        "compiled/eager": ratio,
        "loss_after_two_steps": losses,
        "threads": args.threads,
    }
    print(f"first call: eager {first['eager']:.2f} s, compiled {first['compiled']:.2f} s")
    for name in models:
        print(f"{name:9s} {figures['ms_per_step'][name]:8.3f} ms/step")
    print(f"compiled / eager {ratio['median']:.3f} (q1 {ratio['q1']:.3f}, q3 {ratio['q3']:.3f})")
    print(f"loss after two steps: eager {losses['eager']:.6f}, compiled {losses['compiled']:.6f}")
    np.testing.assert_allclose(losses["compiled"], losses["eager"], rtol=1e-4)
    print(f"saved {save_result('torch-jit-fit', figures)}")


if __name__ == "__main__":
    main(ARGS)
