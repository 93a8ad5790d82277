"""REINFORCE on 1 vs 2 local workers (kerasce.launch + MultiWorkerMirroredStrategy), in one invocation.

    python benchmarks/reinforce_scaling.py            # Acrobot-v1 (+ LunarLander-v3), seeds 0 1 2
    python benchmarks/reinforce_scaling.py --envs Acrobot-v1 --seeds 0 --max-seconds 60     # a short run

For each env and seed, runs examples/reinforce_cartpole.py through ``python -m kerasce.launch --workers W``
for W = 1 and W = 2, interleaved, with the same GLOBAL number of envs (the env's preset, as the example
uses, or ``--num-envs``; split across the workers), one thread per worker (TensorFlow intra/inter-op,
OpenMP, BLAS: ``--threads 1``), each worker pinned to a core of its own (``--pin``; the 1-worker run too)
and the env's one-process vectorization (native or ``sync``), so that the figures measure the workers, not
the env's own parallelism. A seed fixes a run (its updates and env steps), so ``--repeats`` runs each
(seed, workers) pair again for more timing samples; the per-seed figure is the median of its repeats.

Reads each run's metrics.json: aggregate collection env steps/s (all workers' steps over the slowest
worker's collection time), time per update, time to the target (the training stops when the 100-episode
mean and the greedy evaluation reach the env's reward threshold); and from its training log, the CPU time
per env step while collecting (``collect_cpu_seconds``, all workers): the same code costs more CPU time per
step only when the CPU itself runs slower, so this column tells a slower CPU from time spent waiting.
Prints a table and the ratios 2 workers / 1 worker (medians over seeds), and the uptime load average:
timings taken while other work runs on the machine are not the machine's.

The machine's own ceiling, measured in the same run (the "plain processes" rows): W plain Python processes,
pinned like the workers, each stepping its share of the envs with random actions and no TensorFlow, for
``--probe-seconds`` at a time, 1 and 2 processes alternating ``--probe-rounds`` times before every seed
(median). On a virtual machine two busy cores can each be slower than one busy core (the host shares
them): their CPU time per env step goes up. The ratio of these rows is what any W-process scheme can reach
here.

Targets on a 2-core machine: steps/s ratio >= 1.7, time-to-target ratio (Acrobot-v1) <= 0.65.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kerasce.cli.runs import HelpFormatter, positive_float, positive_int

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "reinforce_cartpole.py"
TARGETS = {"steps_per_second_ratio": 1.7, "time_to_target_ratio": 0.65}
STEADY_FROM = 5  # the steady-state columns leave out the first updates


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    default_envs = ["Acrobot-v1"] + (["LunarLander-v3"] if importlib.util.find_spec("Box2D") else [])
    parser.add_argument("--envs", nargs="+", default=default_envs, help="gymnasium ids")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--num-envs",
        type=positive_int,
        default=None,
        help="global envs, split across the workers (default: the preset's)",
    )
    parser.add_argument("--max-seconds", type=float, default=180.0, help="training time limit of one run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument(
        "--repeats", type=positive_int, default=1, help="runs of each (seed, workers) pair; median taken"
    )
    parser.add_argument("--probe-seconds", type=positive_float, default=2.0, help="duration of one plain-process probe")
    parser.add_argument(
        "--probe-rounds", type=positive_int, default=3, help="alternating probe rounds per seed (median)"
    )
    return parser.parse_args()


def global_envs(env: str, args: argparse.Namespace) -> int:
    """``--num-envs``, else the env's preset (what the example runs), else the agent's default."""
    if args.num_envs is not None:
        return args.num_envs
    from kerasce.rl.agent import ReinforceAgent  # not at the top: --help answers without TensorFlow
    from kerasce.rl.presets import preset

    default = inspect.signature(ReinforceAgent.__init__).parameters["num_envs"].default
    return int(preset(env).get("num_envs", default))


PROBE = """
import sys, time
import gymnasium
import numpy as np
env_id, num_envs, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:  # the example's choice (kerasce.rl.envs.make_vector_env "auto"), without importing TensorFlow
    env = gymnasium.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point")
except gymnasium.error.Error:
    env = gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync")
env.reset(seed=0)
rng = np.random.default_rng(0)
n = env.single_action_space.n
for _ in range(20):
    env.step(rng.integers(0, n, num_envs))
steps, start, cpu = 0, time.perf_counter(), time.process_time()
while time.perf_counter() - start < seconds:
    env.step(rng.integers(0, n, num_envs))
    steps += num_envs
print(steps / (time.perf_counter() - start), (time.process_time() - cpu) / steps)
"""


def probe(env: str, num_envs: int, workers: int, seconds: float) -> tuple[float, float]:
    """``(aggregate env steps/s, mean CPU seconds per env step)`` of ``workers`` plain processes, pinned to a
    core each, stepping ``num_envs // workers`` envs each with random actions, all at once (no TensorFlow,
    no policy, no synchronisation)."""
    cpus = sorted(os.sched_getaffinity(0))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, env, str(num_envs // workers), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
            preexec_fn=functools.partial(os.sched_setaffinity, 0, {cpus[i % len(cpus)]}),
        )
        for i in range(workers)
    ]
    rates, cpu = [], []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"probe process failed ({proc.returncode})")
        rate, cpu_per_step = (float(x) for x in out.strip().splitlines()[-1].split())
        rates.append(rate)
        cpu.append(cpu_per_step)
    return sum(rates), statistics.mean(cpu)


def run(env: str, seed: int, workers: int, num_envs: int, args: argparse.Namespace, export: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "kerasce.launch",
        "--workers",
        str(workers),
        "--threads",
        "1",
        "--pin",
        str(EXAMPLE),
        "--strategy",
        "multiworker",
        "--env",
        env,
        "--seed",
        str(seed),
        "--num-envs",
        str(num_envs // workers),
        "--max-seconds",
        str(args.max_seconds),
        "--quiet",
        "--export-dir",
        str(export),
    ]
    start = time.perf_counter()
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=args.max_seconds * 3 + 300,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    metrics = json.loads((export / "metrics.json").read_text())
    # Past the start-up (traces, first all-gathers and evaluations): updates from STEADY_FROM on.
    with open(export / "training_log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    seconds = [float(row["train_seconds"]) for row in log]
    later = log[STEADY_FROM:]
    steady = len(later) >= 3
    # CPU time per env step while collecting, all workers, all updates: the same code on a slower CPU costs
    # more of it (collection has no start-up cost: the first update's trace is not part of it).
    cpu = sum(float(row["collect_cpu_seconds"]) for row in log)
    return {
        "cpu_us_per_step": 1e6 * cpu / metrics["env_steps"],
        "steady_seconds_per_update": (seconds[-1] - seconds[STEADY_FROM - 1]) / len(later) if steady else float("nan"),
        "steady_steps_per_second": statistics.median(float(r["steps_per_second"]) for r in later)
        if steady
        else float("nan"),
        "steps_per_second": metrics["collect_steps_per_second"],
        "seconds_per_update": metrics["train_seconds"] / max(metrics["updates"], 1),
        "time_to_target": metrics["train_seconds"] if metrics["solved"] else float("inf"),
        "train_seconds": metrics["train_seconds"],
        "updates": metrics["updates"],
        "env_steps": metrics["env_steps"],
        "workers": metrics["workers"],
        "solved": metrics["solved"],
        "wall": wall,
    }


KEYS = (
    "cpu_us_per_step",
    "steps_per_second",
    "seconds_per_update",
    "time_to_target",
    "steady_steps_per_second",
    "steady_seconds_per_update",
)


def seed_medians(rows: list[dict], env: str, workers: int, seeds: list[int]) -> list[dict]:
    """One row per seed: the median of each timing over its repeats (a seed fixes everything else)."""
    out = []
    for seed in seeds:
        mine = [r for r in rows if (r["env"], r["workers"], r["seed"]) == (env, workers, seed)]
        out.append({k: statistics.median(r[k] for r in mine) for k in KEYS} | {"solved": mine[0]["solved"]})
    return out


def main() -> None:
    args = parse_args()
    from _results import save_result  # benchmarks/ is on sys.path when run as a script

    envs = {env: global_envs(env, args) for env in args.envs}
    for env, num_envs in envs.items():
        if any(num_envs % w for w in args.workers):
            sys.exit(f"error: {env}: {num_envs} envs must split evenly across {args.workers} workers")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"load average before: {os.getloadavg()}"
    )
    print(
        f"envs in all {envs}, seeds {args.seeds}, {args.repeats} repeat(s), max {args.max_seconds:g} s per run, "
        f"plain-process probes of {args.probe_seconds:g} s x {args.probe_rounds} per seed"
    )
    rows, probes = [], []
    with tempfile.TemporaryDirectory(prefix="kerasce-scaling-") as scratch:
        for env, num_envs in envs.items():
            for seed in args.seeds:
                for _ in range(args.probe_rounds):  # short and alternating: this VM's speed drifts by 2x in seconds
                    for workers in args.workers:
                        rate, cpu = probe(env, num_envs, workers, args.probe_seconds)
                        probes.append(
                            {"env": env, "workers": workers, "steps_per_second": rate, "cpu_us_per_step": 1e6 * cpu}
                        )
                        print(
                            f"  {env:15s} plain processes {workers}: {rate:9,.0f} steps/s  "
                            f"{1e6 * cpu:6.1f} CPU us/step",
                            flush=True,
                        )
                for repeat in range(args.repeats):
                    for workers in args.workers:  # interleaved: both counts see the same load
                        export = Path(scratch) / f"{env}-{seed}-{workers}-{repeat}"
                        result = run(env, seed, workers, num_envs, args, export)
                        if result["workers"] != workers:
                            raise RuntimeError(f"expected a run of {workers} workers, got {result['workers']}")
                        rows.append({"env": env, "seed": seed, **result})
                        print(
                            f"  {env:15s} seed {seed} workers {workers}: {result['steps_per_second']:9,.0f} steps/s  "
                            f"{result['seconds_per_update'] * 1e3:7.1f} ms/update  "
                            f"train {result['train_seconds']:6.1f} s "
                            f"({'solved' if result['solved'] else 'not solved'}, {result['updates']} updates, "
                            f"{result['env_steps']:,} steps)  {result['cpu_us_per_step']:6.1f} CPU us/step  "
                            f"wall {result['wall']:.0f} s",
                            flush=True,
                        )
    print(f"load average after: {os.getloadavg()}")
    base = args.workers[0]
    print(
        "\n| env | workers | env steps/s | ratio | ms/update | ratio | time to target (s) | ratio | solved "
        f"| from update {STEADY_FROM}: env steps/s | ratio | ms/update | ratio | CPU µs per env step | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for env in envs:
        med, plain = {}, {}
        for workers in args.workers:
            per_seed = seed_medians(rows, env, workers, args.seeds)
            med[workers] = {k: statistics.median(r[k] for r in per_seed) for k in KEYS}
            med[workers]["solved"] = sum(r["solved"] for r in per_seed)
            plain[workers] = {
                key: statistics.median(p[key] for p in probes if (p["env"], p["workers"]) == (env, workers))
                for key in ("steps_per_second", "cpu_us_per_step")
            }
        for workers in args.workers:
            m, b = med[workers], med[base]
            ttt = m["time_to_target"]
            ratio = ttt / b["time_to_target"] if b["time_to_target"] not in (0, float("inf")) else float("nan")
            print(
                f"| {env} | {workers} | {m['steps_per_second']:,.0f} "
                f"| {m['steps_per_second'] / b['steps_per_second']:.2f} "
                f"| {m['seconds_per_update'] * 1e3:.1f} | {m['seconds_per_update'] / b['seconds_per_update']:.2f} "
                f"| {ttt:.1f} | {ratio:.2f} | {m['solved']}/{len(args.seeds)} "
                f"| {m['steady_steps_per_second']:,.0f} "
                f"| {m['steady_steps_per_second'] / b['steady_steps_per_second']:.2f} "
                f"| {m['steady_seconds_per_update'] * 1e3:.1f} "
                f"| {m['steady_seconds_per_update'] / b['steady_seconds_per_update']:.2f} "
                f"| {m['cpu_us_per_step']:.1f} | {m['cpu_us_per_step'] / b['cpu_us_per_step']:.2f} |"
            )
            summary[(env, workers)] = {
                "steps": m["steps_per_second"] / b["steps_per_second"],
                "time_to_target": ratio,
                "cpu": m["cpu_us_per_step"] / b["cpu_us_per_step"],
                "plain_steps": plain[workers]["steps_per_second"] / plain[base]["steps_per_second"],
                "plain_cpu": plain[workers]["cpu_us_per_step"] / plain[base]["cpu_us_per_step"],
            }
        for workers in args.workers:
            p, b = plain[workers], plain[base]
            print(
                f"| {env}, plain processes | {workers} | {p['steps_per_second']:,.0f} "
                f"| {p['steps_per_second'] / b['steps_per_second']:.2f} | | | | | | | | | "
                f"| {p['cpu_us_per_step']:.1f} | {p['cpu_us_per_step'] / b['cpu_us_per_step']:.2f} |"
            )
    if 2 in args.workers and base == 1:
        for env in envs:
            r = summary[(env, 2)]
            verdict = "meets" if r["steps"] >= TARGETS["steps_per_second_ratio"] else "misses"
            print(
                f"{env}: 2 workers collect {r['steps']:.2f}x the env steps/s of one ({verdict} the "
                f">= {TARGETS['steps_per_second_ratio']}x target; two plain processes step {r['plain_steps']:.2f}x "
                f"one here); an env step costs the workers {r['cpu']:.2f}x the CPU time it costs one worker "
                f"(plain processes: {r['plain_cpu']:.2f}x)"
                + (
                    f"; time to target {r['time_to_target']:.2f}x (target <= {TARGETS['time_to_target_ratio']}x)"
                    if env == "Acrobot-v1"
                    else ""
                )
            )
    save_result("reinforce-scaling", scaling_figures(summary))


def scaling_figures(summary: dict) -> dict:
    """The result file's figures: per env and worker count, the ratios to the first worker count."""

    def finite(x: float) -> float | None:
        return round(x, 2) if x == x and abs(x) != float("inf") else None

    rows = [
        {"env": env, "workers": workers, **{key: finite(value) for key, value in ratios.items()}}
        for (env, workers), ratios in summary.items()
    ]
    headline = {
        f"{row['env']} x{row['workers']}: env steps/s ratio": row["steps"] for row in rows if row["workers"] != 1
    }
    return {**headline, "ratios": rows}


if __name__ == "__main__":
    main()
