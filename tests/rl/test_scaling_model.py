"""benchmarks/reinforce_scaling_model.py's collection model, against closed forms.

Mutations tried: the slowest worker's time replaced by the mean of the workers' -> the unequal-lengths case
red; F left out of a worker's time -> the equal-lengths case with F > 0 red.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "reinforce_scaling_model.py"


@pytest.fixture(scope="module")
def model():
    spec = importlib.util.spec_from_file_location("reinforce_scaling_model", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reinforce_scaling_model"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("f", [0.0, 1.5, 10.0])
@pytest.mark.parametrize("num_envs, length", [(32, 500), (8, 37)])
def test_equal_lengths_give_the_per_vector_step_ratio(model, f, num_envs, length):
    # Every sub-env runs `length` steps: 1 worker pays length (F + N c), each of 2 pays length (F + N/2 c).
    ratio, busy = model.ceiling([np.full(num_envs, length)], f)
    assert ratio == pytest.approx((f + num_envs) / (f + num_envs / 2))
    assert busy == pytest.approx(1.0)


def test_the_update_waits_for_the_slowest_worker(model):
    # Worker 1 gets lengths [4, 4], worker 2 [1, 1]; F = 0. One worker: 10 steps; two: max(8, 2) = 8.
    ratio, busy = model.ceiling([np.array([4, 4, 1, 1])], 0.0)
    assert ratio == pytest.approx(10 / 8)
    assert busy == pytest.approx(10 / (2 * 8))


def test_a_worker_pays_f_for_every_vector_step_until_its_longest_episode_ends(model):
    # Lengths [3, 1]: 3 vector steps with 1, 2... active = [2, 1, 1] -> 4 env steps + 3 F.
    assert model.worker_time(np.array([3, 1]), 2.0) == pytest.approx(4 + 3 * 2.0)
