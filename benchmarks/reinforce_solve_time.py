"""Time until the greedy evaluation reaches the target, per env and seed, with the example's settings.

    python benchmarks/reinforce_solve_time.py --envs CartPole-v1 Acrobot-v1 --seeds 0 1 2
    python benchmarks/reinforce_solve_time.py --envs LunarLander-v3 --seeds 0 --max-seconds 900

Each (env, seed) runs `examples/reinforce_cartpole.py` in a fresh process (its presets, greedy evaluation
of 20 episodes every 10 updates and whenever the training mean reaches the target) and reads the
export's metrics.json and training_log.csv. "solved" means both the 100-episode training mean and a
greedy evaluation reached the target; "wall s" is the whole `learn` call including the evaluations;
"batch share" is the fraction of collected env steps that entered a training batch (first episodes
only; the rest are autoreset steps and later episodes that a vector env steps anyway).

Stable-Baselines3 PPO is not run here (not installed on the machine these figures come from); its
reference times measured on the same machine are quoted in the README.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "reinforce_cartpole.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"], help="gymnasium env ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per env")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="training budget per run")
    return parser.parse_args(argv)


def run_example(env_id: str, seed: int, max_seconds: float, directory: Path) -> dict:
    export_dir = directory / f"{env_id}-{seed}"
    command = [
        sys.executable,
        str(EXAMPLE),
        "--env",
        env_id,
        "--seed",
        str(seed),
        "--quiet",
        "--max-seconds",
        str(max_seconds),
        "--export-dir",
        str(export_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((export_dir / "metrics.json").read_text())
    with open(export_dir / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    metrics["batch_share"] = sum(float(r["batch_steps"]) for r in rows) / max(metrics["env_steps"], 1)
    return metrics


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            for seed in args.seeds:
                metrics = run_example(env_id, seed, args.max_seconds, Path(tmp))
                results.append(metrics)
                print(
                    f"{env_id} seed {seed}: solved={metrics['solved']} wall {metrics['wall_seconds']:.1f} s", flush=True
                )
    print("\n| env | seed | solved | wall s | train s | env steps | mean_return_100 | greedy eval (20) | batch share |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m in results:
        mean100 = "–" if m["mean_return_100"] is None else f"{m['mean_return_100']:.1f}"
        print(
            f"| {m['env']} | {m['seed']} | {'yes' if m['solved'] else 'no'} | {m['wall_seconds']:.1f} | "
            f"{m['train_seconds']:.1f} | {m['env_steps']:,} | {mean100} | "
            f"{m['eval_return_mean']:.1f} ± {m['eval_return_std']:.1f} | {m['batch_share']:.2f} |"
        )
    return results


if __name__ == "__main__":
    main()
