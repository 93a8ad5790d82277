"""Taxi-v4 with and without invalid-action masks: time to the reward threshold, and both curves.

    python benchmarks/reinforce_taxi_masks.py --seed 0 --max-seconds 400 --plot taxi_masks.png

Both runs use the Taxi-v4 preset of kerasce/rl/presets.py (a linear policy on the one-hot state, 32 envs,
Adam 0.05, normalised returns) and differ only in `use_action_mask` (masks from `info["action_mask"]`).
Each stops when the 100-episode training mean AND a greedy evaluation (20 episodes, fresh seeds) reach 8,
or after --max-seconds of training. The table shows the time (training, and wall including evaluations),
env steps and the final figures; the plot shows both training curves and their greedy evaluations.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from kerasce.cli.runs import HelpFormatter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGET = 8.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="seed of both runs")
    parser.add_argument("--max-seconds", type=float, default=400.0, help="training budget per run")
    parser.add_argument("--plot", default=None, help="write both curves to this PNG")
    return parser.parse_args(argv)


def run(masks: bool, seed: int, max_seconds: float):
    from kerasce.rl import EvalCallback, ReinforceAgent
    from kerasce.rl.presets import preset

    agent = ReinforceAgent.from_env("Taxi-v4", **{**preset("Taxi-v4"), "use_action_mask": masks}, seed=seed)
    evaluation = EvalCallback("Taxi-v4", episodes=20, eval_every=50, target_return=TARGET)  # updates take ~30 ms
    start = time.perf_counter()
    agent.learn("Taxi-v4", target_return=TARGET, max_seconds=max_seconds, total_timesteps=None, callbacks=[evaluation])
    wall = time.perf_counter() - start
    solved = agent.mean_return(100) >= TARGET and evaluation.best is not None and evaluation.best["mean"] >= TARGET
    return agent, evaluation, wall, solved


def taxi_figures(runs: dict) -> dict:
    """The result file's figures: train seconds with and without masks, and one row per run."""
    rows = []
    for masks, (agent, evaluation, wall, solved) in runs.items():
        rows.append(
            {
                "action_masks": masks,
                "solved": bool(solved),
                "train_s": round(agent.train_seconds, 1),
                "wall_s": round(wall, 1),
                "env_steps": int(agent.env_steps),
                "updates": int(agent.updates),
                "mean_return_100": round(agent.mean_return(100), 2),
                "best_greedy_mean": round(evaluation.best["mean"], 2),
                "best_greedy_std": round(evaluation.best["std"], 2),
            }
        )
    by_masks = {row["action_masks"]: row for row in rows}
    return {
        "train s with masks": by_masks[True]["train_s"],
        "train s without masks": by_masks[False]["train_s"],
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import keras
    from _results import save_result  # benchmarks/ is on sys.path when run as a script

    print(
        f"python {platform.python_version()}, keras {keras.__version__}, seed {args.seed}, "
        f"budget {args.max_seconds:.0f} s per run"
    )
    runs = {masks: run(masks, args.seed, args.max_seconds) for masks in (True, False)}
    print(
        "\n| action masks | solved | train s | wall s | env steps | updates | mean_return_100 | best greedy eval (20) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for masks, (agent, evaluation, wall, solved) in runs.items():
        best = evaluation.best
        print(
            f"| {'yes' if masks else 'no'} | {'yes' if solved else 'no'} | {agent.train_seconds:.1f} | {wall:.1f} | "
            f"{agent.env_steps:,} | {agent.updates} | {agent.mean_return(100):.2f} | "
            f"{best['mean']:.2f} ± {best['std']:.2f} (update {best['update']}) |"
        )
    save_result("reinforce-taxi-masks", taxi_figures(runs))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for (masks, (agent, _, _, _)), color in zip(runs.items(), ("C0", "C1")):
            log = agent.training_log
            label = "with masks" if masks else "without masks"
            ax.plot(
                [r["train_seconds"] for r in log],
                [r["mean_return_100"] for r in log],
                "-",
                color=color,
                label=f"{label}: mean return, last 100 episodes",
            )
            evaluated = [r for r in log if r.get("evaluated")]
            ax.plot(
                [r["train_seconds"] for r in evaluated],
                [r["eval_return_mean"] for r in evaluated],
                "o",
                ms=3,
                color=color,
                label=f"{label}: greedy evaluation (20 episodes)",
            )
        ax.axhline(TARGET, color="gray", ls="--", lw=1, label=f"target {TARGET:g}")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("episode return")
        ax.set_ylim(-250, 15)
        ax.set_title(f"REINFORCE (kerasce) on Taxi-v4, seed {args.seed}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
