"""REINFORCE on several workers (kerasce.rl.trainer over kerasce.rl.collective): the update is the
one-device update on the union of the workers' batches; counts and stop decisions are global. Each run is
its own process (tests/rl/scaling_job.py), as splitting the CPU or joining a cluster must precede TensorFlow's start-up.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.jobs import job_result

from kerasce.launch import tf_configs
from kerasce.rl import Batch
from kerasce.rl.returns import combine_moments

JOB = Path(__file__).with_name("scaling_job.py")
TIMEOUT = 240  # seconds for one job; a worker left waiting in an all-reduce fails the test instead of hanging it
# Tests sharing a module fixture's processes run on one pytest-xdist worker (pyproject: --dist loadgroup),
# which starts them once; spread over two workers, each would start its own.
UPDATES_WORKER = pytest.mark.xdist_group("scaling-updates")
LEARNED_WORKER = pytest.mark.xdist_group("scaling-learned")


def start(zygote, *args: str, config: str | None = None):
    """scaling_job.py in a fresh process, forked from tests/helpers/zygote.py's (no TensorFlow import of its own)."""
    env = dict(os.environ, TF_CONFIG=config) if config else dict(os.environ)
    return zygote.start(JOB, *args, env=env)


def runs(*groups: tuple[str, ...]) -> list[str]:
    """The flags of several runs in one process (a TensorFlow start costs seconds): scaling_job.py's ``--then``."""
    return [arg for i, group in enumerate(groups) for arg in (("--then",) if i else ()) + group]


def cluster(zygote, *groups: tuple[str, ...], per_worker: tuple = ((), ())) -> list:
    """Worker 0's and worker 1's results of the runs `groups` on a 2-worker cluster (one process per worker,
    the runs one after the other); `per_worker` holds flags added to each worker's first run."""
    multiworker = ("--strategy", "multiworker")
    procs = [
        start(
            zygote,
            *runs(groups[0] + extra + multiworker, *(group + multiworker for group in groups[1:])),
            config=config,
        )
        for config, extra in zip(tf_configs(2), per_worker)
    ]
    return [job_result(p) for p in procs]


def ok(run: dict) -> dict:
    """A run of a several-run job, failing the test with its traceback if it raised."""
    if "error" in run:
        raise AssertionError(f"run failed:\n{run['error'][-3000:]}")
    return run


def assert_same_weights(got: dict, want: dict) -> None:
    for g, w in zip(got["weights"], want["weights"]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# --- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(5, 3), (1, 9, 4), (0, 6), (7,)])
def test_combine_moments_equals_moments_of_the_union(sizes):
    rng = np.random.default_rng(len(sizes))
    groups = [rng.normal(3.0, 2.0, size=n) for n in sizes]
    counts = np.array([g.size for g in groups])
    means = np.array([g.mean() if g.size else 0.0 for g in groups])
    m2s = np.array([np.sum((g - g.mean()) ** 2) if g.size else 0.0 for g in groups])
    union = np.concatenate(groups)
    mean, std = combine_moments(counts, means, m2s)
    np.testing.assert_allclose([mean, std], [union.mean(), union.std()], rtol=1e-12)


def test_combine_moments_of_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one value"):
        combine_moments(np.zeros(2), np.zeros(2), np.zeros(2))


def test_gathered_counts_sum_steps_and_cpu_time_and_take_the_slowest_collection(monkeypatch):
    """A cluster's update counts: env steps and collection CPU time summed over the workers, the slowest
    worker's collection wall time, the chief's update time, every worker's episodes in worker order
    (mutations tried: CPU time maxed instead of summed -> red; wall time summed -> red)."""
    from kerasce.rl.collective import Collective
    from kerasce.rl.rollout import Rollout
    from kerasce.rl.trainer import Trainer, UpdateTimes

    ones = np.ones((2, 1), bool)
    rollout = Rollout(  # one sub-env, one 2-step episode of return 3
        observations=np.zeros((2, 1, 2), np.float32),
        actions=np.zeros((2, 1), np.int64),
        rewards=np.array([[1.0], [2.0]]),
        terminated=np.array([[False], [True]]),
        truncated=~ones,
        valid=ones,
    )
    # Worker 1's row: 7 env steps, 0.5 s collecting (0.4 s CPU), 9 s update, 2 episodes (returns 1.5, -2).
    other = np.array([7.0, 0.5, 0.4, 9.0, 2.0, 1.5, -2.0])

    class TwoWorkers(Collective):
        workers = 2

        def all_gather(self, row):
            return np.stack([row, other])

    learner = object.__new__(Trainer)  # gather_counts needs only these two
    learner.collective, learner.episode_capacity = TwoWorkers(), 2
    episodes, env_steps, times = learner.gather_counts(rollout, UpdateTimes(0.25, 0.2, 1.0))
    np.testing.assert_array_equal(episodes, [3.0, 1.5, -2.0])
    assert env_steps == 2 + 7
    assert times == UpdateTimes(collect_seconds=0.5, collect_cpu_seconds=0.2 + 0.4, update_seconds=1.0)


@pytest.mark.parametrize("kept", [0, 1, 5])
@pytest.mark.parametrize("with_masks", [False, True])
def test_pad_batch_adds_zero_weight_rows(kept, with_masks):
    rng = np.random.default_rng(kept)
    batch = Batch(
        rng.normal(size=(kept, 3)).astype(np.float32),
        np.ones(kept, np.int32),
        rng.normal(size=kept).astype(np.float32),
        np.zeros((kept, 2), bool) if with_masks else None,
    )
    padded = batch.padded(6, 2.5)
    obs, actions, returns, masks, weights = (
        padded.observations,
        padded.actions,
        padded.returns,
        padded.action_masks,
        padded.step_weights,
    )
    assert weights is not None
    assert obs.shape == (6, 3) and actions.shape == returns.shape == weights.shape == (6,)
    np.testing.assert_array_equal(weights, [2.5] * kept + [0.0] * (6 - kept))
    np.testing.assert_array_equal(obs[:kept], batch.observations)
    assert not obs[kept:].any() and not actions[kept:].any() and not returns[kept:].any()
    if with_masks:
        assert masks[kept:].all() and not masks[:kept].any()  # type: ignore[index]  # padding: every action valid, finite logits
    else:
        assert masks is None
    with pytest.raises(ValueError, match=r"at least the batch size, 7. Received: rows=6"):
        Batch(np.zeros((7, 3)), np.zeros(7), np.zeros(7)).padded(6, 1.0)


# --- one update ------------------------------------------------------------------------------------


# One process (split into 2 CPU devices) holds every one-device and mirrored update: the one-device
# references (all 13 kept steps; 1 kept step) are default-strategy runs, on one device, as before.
UPDATES = {
    "one_device": ("--task", "update"),
    "one_kept": ("--task", "update", "--kept", "1"),
    "mirrored": ("--task", "update", "--strategy", "mirrored"),
    "mirrored_one_kept": ("--task", "update", "--kept", "1", "--strategy", "mirrored"),
    "mirrored_none_kept": ("--task", "update", "--kept", "0", "--strategy", "mirrored"),
}


@pytest.fixture(scope="module")
def updates(zygote):
    return dict(zip(UPDATES, job_result(start(zygote, "--devices", "2", *runs(*UPDATES.values())))))


@pytest.fixture(scope="module")
def one_device(updates):
    return ok(updates["one_device"])


@UPDATES_WORKER
@pytest.mark.slow
def test_mirrored_uneven_replicas_equal_one_device(updates, one_device):
    # 13 kept steps over 2 replicas: 7 and 6 real rows, padded to 7.
    mirrored = ok(updates["mirrored"])
    assert mirrored["replicas"] == 2 and one_device["kept"] == 13
    assert_same_weights(mirrored, one_device)
    np.testing.assert_allclose(list(mirrored["metrics"].values()), list(one_device["metrics"].values()), rtol=1e-5)


# One 2-worker cluster runs every multi-worker update, one after the other (each with a new agent).
CLUSTER_UPDATES = {
    9: ("--task", "update", "--split", "9"),  # 9 + 4 kept steps
    13: ("--task", "update", "--split", "13"),  # 13 + 0 (worker 1 has no step at all)
    "per_worker_mean": ("--task", "update", "--split", "9", "--mutation", "per_worker_mean"),
    "local_count": ("--task", "update", "--split", "9", "--mutation", "local_count"),
}


@pytest.fixture(scope="module")
def cluster_updates(zygote):
    """{run: [worker 0's result, worker 1's]}."""
    workers = cluster(zygote, *CLUSTER_UPDATES.values())
    return {name: [w[i] for w in workers] for i, name in enumerate(CLUSTER_UPDATES)}


@UPDATES_WORKER
@pytest.mark.slow
@pytest.mark.parametrize("split", [9, 13])
def test_two_workers_with_different_batch_sizes_equal_one_device_on_the_union(split, cluster_updates, one_device):
    workers = [ok(w) for w in cluster_updates[split]]
    assert [w["kept"] for w in workers] == [split, 13 - split]
    for worker in workers:
        assert worker["replicas"] == 2
        assert_same_weights(worker, one_device)
        np.testing.assert_allclose(worker["metrics"]["loss"], one_device["metrics"]["loss"], rtol=1e-5)


@UPDATES_WORKER
@pytest.mark.slow
@pytest.mark.parametrize("mutation", ["per_worker_mean", "local_count"])
def test_the_comparison_catches_per_worker_scaling(mutation, cluster_updates, one_device):
    # Negative control: averaging each worker's own mean (or scaling by its own count) is not the union's mean.
    workers = [ok(w) for w in cluster_updates[mutation]]
    with pytest.raises(AssertionError):
        assert_same_weights(workers[0], one_device)


# --- learn on two workers -------------------------------------------------------------------------

NUM_ENVS = 4  # per worker (scaling_job.build_agent)


# One 2-worker cluster runs these learn() runs one after the other, each with a new agent:
LEARN = {
    # three updates; worker 1's clock runs 1000x fast (its max_seconds would pass at once): per_worker below
    # (and a greedy evaluation of 5 episodes after every update, shared out 2 + 3 between the workers)
    "three_updates": ("--task", "learn", "--max-updates", "3", "--max-seconds", "60", "--eval-episodes", "5"),
    "total_timesteps": ("--task", "learn", "--total-timesteps", "300", "--max-updates", "50"),
    # only the chief's callback says stop (as an EarlyStopping on the chief would)
    "chief_stops": ("--task", "learn", "--max-updates", "6", "--chief-stops-at", "2"),
}


@pytest.fixture(scope="module")
def learned(zygote):
    """{run: [worker 0's result, worker 1's]}."""
    workers = cluster(zygote, *LEARN.values(), per_worker=((), ("--clock-scale", "1000")))  # the first run's clocks
    return {name: [ok(w[i]) for w in workers] for i, name in enumerate(LEARN)}


@pytest.fixture(scope="module")
def three_updates(learned):
    return learned["three_updates"]


@LEARNED_WORKER
@pytest.mark.slow
def test_disagreeing_clocks_stop_every_worker_at_the_same_update(three_updates):
    # Deciding max_seconds on worker 1's own clock would stop it after update 1 and leave the chief waiting.
    chief, other = three_updates
    assert chief["updates"] == other["updates"] == 3
    assert_same_weights(other, chief)


@LEARNED_WORKER
@pytest.mark.slow
def test_workers_collect_their_own_episodes_and_count_all_of_them(three_updates):
    chief, other = three_updates
    for key in ("env_steps", "episodes", "episode_returns", "log"):
        assert chief[key] == other[key], key
    # First episodes only: one per sub-env and update, on both workers.
    assert chief["episodes"] == 3 * 2 * NUM_ENVS
    assert [row["episodes"] for row in chief["log"]] == [2.0 * NUM_ENVS * u for u in (1, 2, 3)]
    assert chief["log"][-1]["env_steps"] == chief["env_steps"]
    # The chief's episodes come first, then worker 1's: different seeds, different episodes.
    first = chief["episode_returns"][: 2 * NUM_ENVS]
    assert first[:NUM_ENVS] != first[NUM_ENVS:]


@LEARNED_WORKER
@pytest.mark.slow
def test_workers_share_out_the_evaluation_episodes_and_get_the_one_worker_evaluation(three_updates):
    # Each worker plays its share of the episodes (seeds base + i kept); the gathered evaluation equals all
    # the episodes played on one worker. Mutation tried: each worker's share reset from `base` -> red.
    for worker in three_updates:
        replay = worker["reevaluated"]
        assert replay["count"] == 3 and replay["last"]["episodes"] == 5
        assert replay["last"]["mean"] == replay["mean"] and replay["last"]["std"] == replay["std"]
    assert three_updates[0]["reevaluated"] == three_updates[1]["reevaluated"]


@LEARNED_WORKER
@pytest.mark.slow
def test_total_timesteps_counts_every_workers_steps(learned):
    workers = learned["total_timesteps"]
    log = workers[0]["log"]
    assert workers[0]["updates"] == workers[1]["updates"] == len(log)
    assert log[-1]["env_steps"] >= 300 and (len(log) == 1 or log[-2]["env_steps"] < 300)


@LEARNED_WORKER
@pytest.mark.slow
def test_a_crashed_worker_fails_the_launch_and_a_rerun_resumes_the_cluster(tmp_path, three_updates):
    backup = str(tmp_path / "backup")
    cmd = [
        sys.executable,
        "-m",
        "kerasce.launch",
        "--workers",
        "2",
        "--grace",
        "30",
        str(JOB),
        "--task",
        "learn",
        "--strategy",
        "multiworker",
        "--max-updates",
        "3",
        "--checkpoint-dir",
        backup,
    ]
    crashed = subprocess.run(cmd + ["--die-at-update", "2"], capture_output=True, text=True, timeout=TIMEOUT)
    assert crashed.returncode == 7, crashed.stderr[-2000:]
    assert "worker 1" in crashed.stderr and "exited with code 7" in crashed.stderr
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    lines = [line for line in resumed.stdout.splitlines() if line.startswith("[w0] {")]
    chief = json.loads(lines[-1][len("[w0] ") :])
    # The same run as the uninterrupted one: same episodes, same weights.
    assert chief["updates"] == 3
    assert chief["episode_returns"] == three_updates[0]["episode_returns"]
    assert_same_weights(chief, three_updates[0])


@pytest.mark.slow
def test_without_the_launcher_a_dead_worker_fails_the_survivor_with_an_error_naming_it(zygote):
    # Across machines no launcher watches the workers: TensorFlow's coordination service (heartbeats) must.
    procs = [
        start(
            zygote,
            "--task",
            "learn",
            "--strategy",
            "multiworker",
            "--max-updates",
            "6",
            "--die-at-update",
            "2",
            config=config,
        )
        for config in tf_configs(2)
    ]
    _, err = procs[0].communicate(timeout=TIMEOUT)
    procs[1].communicate(timeout=TIMEOUT)
    assert procs[1].returncode == 7
    assert procs[0].returncode != 0
    assert "task:1" in err and ("unhealthy" in err or "UNAVAILABLE" in err), err[-2000:]


@UPDATES_WORKER
@pytest.mark.slow
def test_a_replica_without_steps_contributes_zeros_and_no_steps_anywhere_is_a_clear_error(updates):
    # One kept step on two replicas: replica 1 holds only padding.
    assert_same_weights(ok(updates["mirrored_one_kept"]), ok(updates["one_kept"]))
    err = updates["mirrored_none_kept"].get("error", "")  # the run's traceback, as stderr would show it
    assert err, "no kept step at all should fail"
    assert "must hold a complete episode. Received: none within max_rollout_steps" in err
    assert "zero-size array" not in err


@LEARNED_WORKER
@pytest.mark.slow
def test_a_callback_stopping_the_chief_stops_every_worker_at_the_same_update(learned):
    # Only the chief's callback says stop (as an EarlyStopping on the chief would): worker 1 must follow.
    workers = learned["chief_stops"]
    assert [w["updates"] for w in workers] == [2, 2]
    assert_same_weights(workers[1], workers[0])
