"""Interleaved timing shared by the benchmarks: variants measured side by side in one process.

Why interleaved and paired: on a shared 2-core VM the speed of a core drifts by tens of percent within
seconds. Timing variant A for a minute and then B for a minute compares two machines; timing them in
short turns (a *round* runs each variant ``calls`` times) and taking the median of the per-round ratios
A / B cancels drifts slower than a round. The order is reversed every round, so no variant always runs
right after the same other one (caches, frequency ramps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def time_interleaved(
    steps: Mapping[str, Callable[[], Any]],
    rounds: int,
    calls: int,
    wait: Callable[[Any], Any] = lambda out: out,
    warmup: int = 5,
) -> dict[str, list[float]]:
    """Per-round mean time per call (ms) of each variant; variants interleaved, their order alternating.

    Args:
        steps: name -> a function of no arguments (one call of the variant).
        rounds: number of rounds; every variant runs once per round.
        calls: calls per variant per round (the round's time is divided by it).
        wait: applied to the last call's result of a turn before the clock stops, to wait for asynchronous
            work (e.g. ``lambda out: out[1].numpy()``).
        warmup: untimed calls per variant first (tracing, compilation, caches).

    Returns:
        name -> ``rounds`` times in milliseconds.
    """
    for step in steps.values():
        for _ in range(warmup):
            wait(step())
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for _ in range(rounds):
        order.reverse()
        for name in order:
            step = steps[name]
            start = time.perf_counter()
            for _ in range(calls):
                out = step()
            wait(out)
            samples[name].append((time.perf_counter() - start) / calls * 1e3)
    return samples


def paired_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range of the per-round ratios ``a / b`` (pairing cancels slow drifts)."""
    ratios = np.asarray(a) / np.asarray(b)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return float(median), float(q1), float(q3)


def pooled(samples: Mapping[str, list[float]], names: list[str]) -> list[float]:
    """Per-round mean over several variants (instances of one kind): what one kind cost in each round."""
    return [float(v) for v in np.mean([samples[name] for name in names], axis=0)]


def start(args: Any) -> np.random.Generator:
    """Seeds Keras and returns the data generator, after printing the versions, the machine and the settings
    (``args.seed``, ``args.rounds``, ``args.steps``, ``args.instances``): a TensorFlow benchmark's first line."""
    import os
    import platform

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    print(
        f"tensorflow {tf.__version__}, keras {keras.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; rounds={args.rounds}, steps={args.steps}, instances={args.instances}"
    )
    return np.random.default_rng(args.seed)
