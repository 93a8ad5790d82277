"""Collection speed of the vector env modes for envs without a native vector implementation.

    python benchmarks/reinforce_collection.py --envs Acrobot-v1 LunarLander-v3 --num-envs 16 --rounds 5

For each env, "sync" (sub-envs stepped in turn in this process) and "async" (one process per sub-env,
gymnasium's AsyncVectorEnv) step the same number of vector steps with actions from the agent's NumPy
policy (as `learn` samples them), interleaved round by round; the table shows env steps per second
(median over rounds) and the ratio async / sync measured side by side.

A second table measures what `learn` collects each update (each sub-env's first episode,
`collect_episodes`) on the sync vector env, side by side per round on the same reset seeds and action
draws: every sub-env stepped until the slowest first episode ends ("all") against sub-envs left alone once
their first episode has ended ("first only", `first_episodes_only=True`, what `learn` does): env steps
taken, the share of them that enter the batch, and the collection time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from kerasce.cli.runs import HelpFormatter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Acrobot-v1", "LunarLander-v3"], help="gymnasium env ids")
    parser.add_argument("--num-envs", type=int, default=16, help="sub-envs per vector env")
    parser.add_argument("--steps", type=int, default=300, help="vector steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode")
    return parser.parse_args(argv)


def steps_per_second(env, sampler, rng, steps: int) -> float:
    from kerasce.rl.rollout import sample_actions

    observations, _ = env.reset(seed=int(rng.integers(2**31)))
    start = time.perf_counter()
    for _ in range(steps):
        observations, *_ = env.step(sample_actions(sampler.logits(observations), rng))
    return steps * env.num_envs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    import numpy as np
    from _results import save_result  # benchmarks/ is on sys.path when run as a script

    from kerasce.rl import ReinforceAgent, make_vector_env

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; num_envs={args.num_envs}, "
        f"{args.steps} vector steps x {args.rounds} rounds"
    )
    rows = []
    for env_id in args.envs:
        agent = ReinforceAgent.from_env(env_id, seed=0)
        sampler = agent.policy_sampler()
        envs = {mode: make_vector_env(env_id, args.num_envs, mode=mode) for mode in ("sync", "async")}
        rng = np.random.default_rng(0)
        measured: dict[str, list[float]] = {mode: [] for mode in envs}
        try:
            for _ in range(args.rounds):
                for mode, env in envs.items():
                    measured[mode].append(steps_per_second(env, sampler, rng, args.steps))
        finally:
            for env in envs.values():
                env.close()
        ratios = [a / s for a, s in zip(measured["async"], measured["sync"])]
        rows.append(
            {
                "env": env_id,
                "sync": float(np.median(measured["sync"])),
                "async": float(np.median(measured["async"])),
                "ratio": float(np.median(ratios)),
            }
        )
    print("\n| env | sync env steps/s | async env steps/s | async / sync (median of rounds) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['env']} | {row['sync']:,.0f} | {row['async']:,.0f} | {row['ratio']:.2f} |")
    first_only = first_episode_table(args)
    summary = {f"{row['env']}: async / sync": round(row["ratio"], 2) for row in rows}
    summary |= {f"{row['env']}: first only / all": round(row["ratio"], 2) for row in first_only}
    save_result("reinforce-collection", {**summary, "sync_vs_async": rows, "first_only_vs_all": first_only})
    return rows


def first_episode_table(args: argparse.Namespace) -> list[dict]:
    """The second table: one `collect_episodes` per round and variant (see the module docstring)."""
    import numpy as np

    from kerasce.rl import ReinforceAgent, make_vector_env
    from kerasce.rl.returns import first_episode_mask
    from kerasce.rl.rollout import collect_episodes, sample_actions

    rows = []
    for env_id in args.envs:
        agent = ReinforceAgent.from_env(env_id, seed=0)
        sampler = agent.policy_sampler()
        env = make_vector_env(env_id, args.num_envs, mode="sync")
        measured: dict[bool, list[tuple[float, int, int]]] = {False: [], True: []}
        try:
            for round_ in range(args.rounds):
                for only in (False, True):
                    rng = np.random.default_rng(round_)  # the same action draws for both variants
                    observations, _ = env.reset(seed=1000 + round_)
                    start = time.perf_counter()
                    rollout, _ = collect_episodes(
                        env,
                        lambda o: sample_actions(sampler.logits(o), rng),  # noqa: B023  (called right here)
                        observations,
                        agent.max_rollout_steps,
                        first_episodes_only=only,
                    )
                    seconds = time.perf_counter() - start
                    first = first_episode_mask(rollout.terminated, rollout.truncated, rollout.valid)
                    measured[only].append((seconds, rollout.env_steps, int(first.sum())))
        finally:
            env.close()
        full, lean = measured[False], measured[True]
        rows.append(
            {
                "env": env_id,
                "steps_all": int(np.median([m[1] for m in full])),
                "steps_first": int(np.median([m[1] for m in lean])),
                "share_all": float(np.median([m[2] / m[1] for m in full])),
                "share_first": float(np.median([m[2] / m[1] for m in lean])),
                "ms_all": float(np.median([m[0] for m in full])) * 1e3,
                "ms_first": float(np.median([m[0] for m in lean])) * 1e3,
                "ratio": float(np.median([b[0] / a[0] for a, b in zip(full, lean)])),
            }
        )
    print(
        "\n| env | env steps: all / first only | batch share: all / first only "
        "| ms per collection: all / first only | first only / all (median of rounds) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['env']} | {row['steps_all']:,} / {row['steps_first']:,} | {row['share_all']:.2f} / "
            f"{row['share_first']:.2f} | {row['ms_all']:.1f} / {row['ms_first']:.1f} | {row['ratio']:.2f} |"
        )
    return rows


if __name__ == "__main__":
    main()
