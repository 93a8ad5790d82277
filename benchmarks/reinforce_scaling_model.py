"""What 2 REINFORCE workers can reach on a machine whose cores keep their speed, and how far this one is from it.

    python benchmarks/reinforce_scaling_model.py                 # Acrobot-v1, seeds 0 1 2
    python benchmarks/reinforce_scaling_model.py --seeds 0 --pair-rounds 2

`reinforce_scaling.py` measures 1 against 2 local workers end to end. This script splits that figure into
what the algorithm allows and what the machine gives, each measured on its own:

1. **The collection's own ceiling.** An update collects each sub-env's first episode; with W workers each
   steps its share of the sub-envs, and the update waits for the slowest. One 1-worker training run per
   seed records every update's first-episode lengths (all sub-envs). A worker's collection time is then
   ``sum over its vector steps of (F + c * active sub-envs)``: ``c`` per env step, ``F`` per vector step
   (policy forward pass, sampling, the loop). The ceiling is the 1-worker time over the slowest worker's,
   summed over the updates, with the sub-envs split as the workers split them (first half, second half).
2. **F and c**, timed in this process (thread CPU time) for the global number of sub-envs, half of it and 4,
   on the untrained policy (every Acrobot episode runs to its 500-step limit, so every sub-env stays busy),
   fitted as ``F + n c``.
3. **The machine.** The same collection loop (half the sub-envs, as one of 2 workers has) in one process
   pinned to core 0, then in two processes at once pinned to cores 0 and 1; CPU microseconds per env step of
   each, ``--pair-rounds`` times. Equal figures mean the cores keep their speed when both are busy; the
   ceiling of part 1 assumes that.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import time

from kerasce.cli.runs import HelpFormatter, positive_float, positive_int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--env", default="Acrobot-v1", help="gymnasium id (a sync-vectorized env)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="1-worker training runs")
    parser.add_argument("--max-seconds", type=positive_float, default=120.0, help="training time limit of a run")
    parser.add_argument("--pair-rounds", type=positive_int, default=3, help="alone / pair rounds (part 3)")
    parser.add_argument("--pair-seconds", type=positive_float, default=5.0, help="duration of one collection probe")
    parser.add_argument("--probe", nargs=2, metavar=("ENVS", "SECONDS"), help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

from kerasce.rl import ReinforceAgent  # noqa: E402
from kerasce.rl.envs import make_vector_env  # noqa: E402
from kerasce.rl.presets import preset  # noqa: E402
from kerasce.rl.rollout import collect_episodes, make_policy_sampler, sample_actions  # noqa: E402
from kerasce.rl.trainer import Trainer  # noqa: E402

MAX_STEPS = 200  # rows per timed collection in parts 2 and 3: untrained, no Acrobot episode ends by then


def first_episode_lengths(env_id: str, seed: int, max_seconds: float) -> list[np.ndarray]:
    """Per update of a 1-worker run to the env's reward threshold: each sub-env's first-episode length."""
    lengths: list[np.ndarray] = []
    collect = Trainer.collect

    def recording(self: Trainer, update: int):
        rollout = collect(self, update)
        lengths.append(rollout.valid.sum(axis=0))  # valid marks exactly the first episode's steps
        return rollout

    Trainer.collect = recording  # type: ignore[method-assign]
    try:
        agent = ReinforceAgent.from_env(env_id, seed=seed, **preset(env_id))
        target = gymnasium.spec(env_id).reward_threshold
        agent.learn(env_id, total_timesteps=None, max_seconds=max_seconds, target_return=target)
    finally:
        Trainer.collect = collect  # type: ignore[method-assign]
    return lengths


def worker_time(lengths: np.ndarray, f: float) -> float:
    """Collection time of one worker stepping these sub-envs' first episodes, in units of ``c``."""
    active = (lengths[None, :] > np.arange(lengths.max())[:, None]).sum(axis=1)
    return float((f + active).sum())


def ceiling(updates: list[np.ndarray], f: float, workers: int = 2) -> tuple[float, float]:
    """``(1-worker time / W-worker time, busy share of the W workers)`` for ``F / c = f``."""
    one = sum(worker_time(lengths, f) for lengths in updates)
    split = [[worker_time(part, f) for part in np.array_split(lengths, workers)] for lengths in updates]
    slowest = sum(max(times) for times in split)
    return one / slowest, sum(map(sum, split)) / (workers * slowest)


def untrained_collector(env_id: str, num_envs: int):
    """A function timing one collection of ``num_envs`` sub-envs: ``(thread CPU seconds, rows, env steps)``."""
    agent = ReinforceAgent.from_env(env_id, seed=0, num_envs=num_envs)
    sampler = make_policy_sampler(agent.policy)
    env = make_vector_env(env_id, num_envs, mode="sync")
    rng = np.random.default_rng(0)
    rounds = iter(range(10**9))

    def act(observations, mask=None):
        return sample_actions(sampler.logits(observations), rng, mask)

    def collect_once() -> tuple[float, int, int]:
        observations, _ = env.reset(seed=next(rounds))
        start = time.thread_time()
        rollout, _ = collect_episodes(env, act, observations, MAX_STEPS, first_episodes_only=True)
        return time.thread_time() - start, rollout.actions.shape[0], rollout.env_steps

    return collect_once


def per_vector_step_costs(env_id: str, num_envs: int, rounds: int = 12) -> tuple[float, float]:
    """``(F, c)`` in microseconds: per vector step and per env step, least squares over 3 sizes."""
    sizes = sorted({4, num_envs // 2, num_envs})
    collectors = {n: untrained_collector(env_id, n) for n in sizes}
    samples: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(rounds):  # interleaved: the core's speed drifts
        for n, collect_once in collectors.items():
            seconds, rows, _ = collect_once()
            samples[n].append(1e6 * seconds / rows)
    per_row = [statistics.median(samples[n]) for n in sizes]
    c, f = np.polyfit(sizes, per_row, 1)
    return float(f), float(c)


def probe(num_envs: int, seconds: float, env_id: str) -> None:
    """Child process: CPU microseconds per env step of the collection loop for ``seconds`` (prints it)."""
    collect_once = untrained_collector(env_id, num_envs)
    collect_once()  # warm
    cpu, steps, start = 0.0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        spent, _, taken = collect_once()
        cpu, steps = cpu + spent, steps + taken
    print(1e6 * cpu / steps)


def probes(env_id: str, num_envs: int, cores: list[int], seconds: float) -> list[float]:
    """CPU microseconds per env step of one collection process per core in ``cores``, all at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--env", env_id, "--probe", str(num_envs), str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3"),
            preexec_fn=functools.partial(os.sched_setaffinity, 0, {core}),
        )
        for core in cores
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 300)
        if proc.returncode != 0:
            raise RuntimeError(f"collection probe failed ({proc.returncode})")
        results.append(float(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    args = parse_args()
    from _results import save_result  # benchmarks/ is on sys.path when run as a script

    if args.probe:
        probe(int(args.probe[0]), float(args.probe[1]), args.env)
        return
    num_envs = int(preset(args.env).get("num_envs", 32))
    print(f"{args.env}, {num_envs} sub-envs (the preset), {os.cpu_count()} CPUs, python {platform.python_version()}")

    updates = [lengths for seed in args.seeds for lengths in first_episode_lengths(args.env, seed, args.max_seconds)]
    steps = int(sum(lengths.sum() for lengths in updates))
    spread = statistics.median(float(lengths.max() / lengths.mean()) for lengths in updates)
    print(f"\n1. seeds {args.seeds}: {len(updates)} updates, {steps} env steps; per update, longest / mean first")
    print(f"   episode: median {spread:.2f}")

    f, c = per_vector_step_costs(args.env, num_envs)
    print(f"2. per vector step F = {f:.1f} us, per env step c = {c:.1f} us: F / c = {f / c:.2f}")

    print("\n   2 workers / 1, collection env steps per second, if both cores ran at the speed of one:")
    print(f"   {'F / c':>12} {'ratio':>7} {'busy share':>11}")
    figures: dict = {"updates": len(updates), "env steps": steps, "F us": round(f, 1), "c us": round(c, 1)}
    ceilings = []
    for label, ratio_f in [("0 (free)", 0.0), (f"{f / c:.2f} (here)", f / c), (f"{2 * f / c:.2f} (2x)", 2 * f / c)]:
        ratio, busy = ceiling(updates, ratio_f)
        print(f"   {label:>12} {ratio:>7.3f} {busy:>11.2f}")
        ceilings.append({"F / c": label, "ceiling": round(ratio, 3), "busy share": round(busy, 2)})
    figures["ceiling, 2 workers / 1"] = ceilings[1]["ceiling"]
    figures["ceilings"] = ceilings

    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        print("\n3. skipped: fewer than 2 cores available")
        save_result("reinforce-scaling-model", figures)
        return
    half = num_envs // 2
    print(f"\n3. CPU us per env step of the collection loop, {half} sub-envs a process, {args.pair_seconds:g} s:")
    print(
        f"   {'round':>5} {'alone, core ' + str(cores[0]):>15} {'pair, core ' + str(cores[0]):>14} "
        f"{'pair, core ' + str(cores[1]):>14} {'slowest / alone':>16}"
    )
    pairs = []
    for round_ in range(args.pair_rounds):
        (alone,) = probes(args.env, half, cores[:1], args.pair_seconds)
        pair = probes(args.env, half, cores, args.pair_seconds)
        print(f"   {round_:>5} {alone:>15.1f} {pair[0]:>14.1f} {pair[1]:>14.1f} {max(pair) / alone:>16.2f}")
        pairs.append(
            {
                "alone us": round(alone, 1),
                "pair us": [round(p, 1) for p in pair],
                "slowest / alone": round(max(pair) / alone, 2),
            }
        )
    print("   (the ceiling above holds where 'slowest / alone' is 1; 2 workers get about ceiling / that factor)")
    save_result("reinforce-scaling-model", {**figures, "pair rounds": pairs})


if __name__ == "__main__":
    main()
