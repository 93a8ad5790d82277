"""Time until the greedy evaluation reaches the target, per env and seed: kerasce REINFORCE and SB3 PPO.

    python benchmarks/reinforce_solve_time.py --envs CartPole-v1 Acrobot-v1 --seeds 0 1 2
    python benchmarks/reinforce_solve_time.py --envs LunarLander-v3 --seeds 0 --max-seconds 900
    python benchmarks/reinforce_solve_time.py --algos sb3 --sb3-python ../sb3venv/bin/python

kerasce REINFORCE: each (env, seed) calls the library, `solve` below: `ReinforceAgent.from_env` with the
env's preset (kerasce/rl/presets.py) and `learn` with an `EvalCallback` (greedy evaluation of 20 episodes
every 10 updates and whenever the training mean reaches the target), as `python -m kerasce.cli.reinforce`
does, without its checkpoints and export. It runs in a fresh process of its own ("spawn"), and that is
the point: every run then starts cold, with its own TensorFlow start-up, as each SB3 run does (those must
be separate processes anyway: torch working after TensorFlow in one process crashes). "solved" means both
the 100-episode training mean and the best greedy evaluation reached the target; "wall s" is the whole
`learn` call including the evaluations; "batch share" is the fraction of collected env steps that entered
a training batch (first episodes only; the rest are autoreset steps and later episodes that a vector env
steps anyway).

SB3 PPO (optional: stable-baselines3 is a benchmark dependency, not a kerasce one): each (env, seed)
runs benchmarks/sb3_ppo_solve_time.py in a fresh process of --sb3-python (default: this interpreter), so
the kerasce rows can come from a venv without SB3 and torch. RL Zoo's ppo.yml settings per env, greedy
evaluation of 20 episodes on fresh seeds every --sb3-eval-freq env steps, stopping at the first one >=
the target ("solved" is that greedy evaluation; the training mean is shown, not required). "batch share"
is 1 but for a last rollout cut short. When --sb3-python cannot import stable_baselines3, the SB3 rows
are skipped with one line that says so. Both use the same --max-seconds budget and the same greedy target,
`target_return`: TARGETS[env] where the env's spec has no reward threshold, else `env.spec.reward_threshold`.

Dict observations: `kerasce/MiniGrid-Empty-Random-5x5-v0` (kerasce.rl.registration: minigrid's env without
its `mission` text) on the kerasce side; the SB3 rows play minigrid's own id (SB3_ENV_IDS) with RL Zoo's
setting for it, `minigrid.wrappers.FlatObsWrapper` (the image and the mission's characters one-hot, one
flat vector; no direction) and VecNormalize; the rewards, hence the target, are the same.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from kerasce.cli.reinforce import finite_or_none
from kerasce.cli.runs import HelpFormatter, quiet_tensorflow_startup

SB3_RUNNER = Path(__file__).resolve().parent / "sb3_ppo_solve_time.py"
ALGOS = {"kerasce": "kerasce REINFORCE", "sb3": "SB3 PPO"}
# Greedy targets for envs whose spec has no reward_threshold: Pendulum-v1's is the usual "solved" mark (RL Zoo's
# tuned A2C/PPO reach about -150 to -200), which both sides must reach.
TARGETS: dict[str, float] = {"Pendulum-v1": -200.0}
# The SB3 rows of an env the kerasce side plays through a kerasce id: the package's own id, with RL Zoo's wrapper.
SB3_ENV_IDS: dict[str, str] = {"kerasce/MiniGrid-Empty-Random-5x5-v0": "MiniGrid-Empty-Random-5x5-v0"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"], help="gymnasium env ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds per env")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="training budget per run")
    parser.add_argument(
        "--algos", nargs="+", choices=sorted(ALGOS), default=sorted(ALGOS), help="kerasce REINFORCE and/or SB3 PPO"
    )
    parser.add_argument(
        "--sb3-python", default=sys.executable, help="interpreter with stable-baselines3 for the SB3 PPO rows"
    )
    parser.add_argument("--sb3-eval-freq", type=int, default=10_000, help="env steps between SB3 greedy evaluations")
    return parser.parse_args(argv)


def sb3_missing(python: str) -> str | None:
    """Why ``python`` cannot run the SB3 rows (one line), or None when it imports stable_baselines3."""
    try:
        result = subprocess.run([python, "-c", "import stable_baselines3"], capture_output=True, text=True)
    except OSError as error:
        return f"cannot start {python}: {error}"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{python} cannot import stable_baselines3 ({last})"
    return None


def target_return(env_id: str) -> float:
    """The greedy target of ``env_id``: ``TARGETS[env_id]``, else its spec's ``reward_threshold``.

    Raises:
      ValueError: for an env with neither.
    """
    if env_id in TARGETS:
        return TARGETS[env_id]
    import gymnasium

    import kerasce.rl.registration  # noqa: F401  (the kerasce/... ids)

    threshold = gymnasium.spec(env_id).reward_threshold
    if threshold is None:
        raise ValueError(f"`env_id` must have a reward_threshold or an entry in TARGETS. Received: env_id={env_id!r}")
    return float(threshold)


def solve(env_id: str, seed: int, max_seconds: float) -> dict:
    """One kerasce REINFORCE run to the env's reward threshold: the preset, greedy evaluations, the figures."""
    import time

    with quiet_tensorflow_startup():  # TensorFlow's start-up lines, filtered as the command does
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()
    from kerasce.rl import EvalCallback, ReinforceAgent
    from kerasce.rl.presets import preset

    target = target_return(env_id)
    keras.utils.set_random_seed(seed)
    agent = ReinforceAgent.from_env(env_id, **preset(env_id), seed=seed)
    evaluation = EvalCallback(env_id, episodes=20, eval_every=10, target_return=target)
    start = time.perf_counter()
    agent.learn(env_id, total_timesteps=None, max_seconds=max_seconds, target_return=target, callbacks=[evaluation])
    wall_seconds = time.perf_counter() - start
    figures = run_figures(agent, evaluation.best, target, wall_seconds, evaluation.evaluations)
    return {"algo": ALGOS["kerasce"], "env": env_id, "seed": seed, **figures}


def run_figures(
    agent: Any, best: dict | None, target: float | None, wall_seconds: float, evaluations: Sequence[dict] = ()
) -> dict:
    """A trained agent's figures. "solved": a full 100-episode training mean and the best greedy evaluation
    (``best``, ``EvalCallback.best``) both reached ``target``, the command's rule. "greedy_train_seconds" and
    "greedy_env_steps": the training time (evaluations left out) and env steps of the update whose greedy
    evaluation (``EvalCallback.evaluations``) first reached ``target`` -- SB3's rule, where the training mean
    is not required -- or None."""
    first = next((e for e in evaluations if target is not None and e["mean"] >= target), None)
    at = None if first is None else agent.training_log[int(first["epoch"])]
    best = best or {"mean": math.nan, "std": math.nan}
    mean_100 = agent.mean_return(100) if len(agent.episode_returns) >= 100 else math.nan
    return {
        "solved": target is not None and mean_100 >= target and best["mean"] >= target,
        "wall_seconds": wall_seconds,
        "train_seconds": agent.train_seconds,
        "env_steps": agent.env_steps,
        "updates": agent.updates,
        "mean_return_100": finite_or_none(agent.mean_return(100)),
        "eval_return_mean": finite_or_none(best["mean"]),
        "eval_return_std": finite_or_none(best["std"]),
        "batch_share": sum(row["batch_steps"] for row in agent.training_log) / max(agent.env_steps, 1),
        "greedy_train_seconds": None if at is None else at["train_seconds"],
        "greedy_env_steps": None if at is None else int(at["env_steps"]),
    }


def run_kerasce(env_id: str, seed: int, max_seconds: float) -> dict:
    """`solve` in a fresh process: every run starts cold, as the SB3 ones do."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(solve, env_id, seed, max_seconds).result()


def zoo_envs() -> list[str]:
    """The envs with RL Zoo PPO settings in the SB3 runner (read without importing SB3)."""
    spec = importlib.util.spec_from_file_location("sb3_ppo_solve_time", SB3_RUNNER)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SB3_RUNNER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return sorted(module.ZOO_PPO)


def sb3_command(env_id: str, seed: int, max_seconds: float, eval_freq: int, python: str, metrics_json: Path) -> list:
    """The runner's command line for the SB3 row of ``env_id``: its SB3 id (SB3_ENV_IDS) and this benchmark's
    target."""
    return [
        python,
        str(SB3_RUNNER),
        "--env",
        SB3_ENV_IDS.get(env_id, env_id),
        "--target",
        repr(target_return(env_id)),
        "--seed",
        str(seed),
        "--max-seconds",
        str(max_seconds),
        "--eval-freq",
        str(eval_freq),
        "--metrics-json",
        str(metrics_json),
    ]


def run_sb3(env_id: str, seed: int, max_seconds: float, eval_freq: int, python: str, directory: Path) -> dict:
    metrics_json = directory / f"sb3-{seed}-{env_id.replace('/', '_')}.json"
    command = sb3_command(env_id, seed, max_seconds, eval_freq, python, metrics_json)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return {**json.loads(metrics_json.read_text()), "env": env_id}  # the row of this benchmark's env id


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    from _results import save_result  # benchmarks/ is on sys.path when run as a script

    algos = list(dict.fromkeys(args.algos))
    if "sb3" in algos:
        missing = sb3_missing(args.sb3_python)
        if missing is not None:
            print(
                f'SB3 PPO rows skipped: {missing}; install it (pip install -e ".[sb3]", best in a venv of its '
                "own: it brings torch) and pass that interpreter as --sb3-python",
                flush=True,
            )
            algos.remove("sb3")
    sb3_envs = zoo_envs() if "sb3" in algos else []
    no_zoo = [env_id for env_id in args.envs if SB3_ENV_IDS.get(env_id, env_id) not in sb3_envs]
    for env_id in no_zoo if "sb3" in algos else []:
        print(f"SB3 PPO rows skipped for {env_id}: no RL Zoo settings for it in {SB3_RUNNER.name} ({sb3_envs})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            for seed in args.seeds:
                for algo in algos:
                    if algo == "sb3" and env_id in no_zoo:
                        continue
                    if algo == "kerasce":
                        metrics = run_kerasce(env_id, seed, args.max_seconds)
                    else:
                        metrics = run_sb3(
                            env_id, seed, args.max_seconds, args.sb3_eval_freq, args.sb3_python, Path(tmp)
                        )
                    results.append(metrics)
                    print(
                        f"{metrics['algo']} {env_id} seed {seed}: solved={metrics['solved']} "
                        f"wall {metrics['wall_seconds']:.1f} s",
                        flush=True,
                    )
    if not results:
        return results
    print(
        "\n| algo | env | seed | solved | wall s | train s | env steps | mean_return_100 | greedy eval (20) "
        "| batch share | greedy >= target at train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for m in results:
        greedy = "–" if m["eval_return_mean"] is None else f"{m['eval_return_mean']:.1f} ± {m['eval_return_std']:.1f}"
        print(
            f"| {m['algo']} | {m['env']} | {m['seed']} | {'yes' if m['solved'] else 'no'} | {m['wall_seconds']:.1f} | "
            f"{m['train_seconds']:.1f} | {m['env_steps']:,} | {fmt(m['mean_return_100'], '.1f')} | {greedy} | "
            f"{m['batch_share']:.2f} | {fmt(m['greedy_train_seconds'], '.1f')} |"
        )
    save_result("reinforce-solve-time", solve_time_figures(results))
    return results


def solve_time_figures(results: list[dict]) -> dict:
    """The result file's figures: per algorithm and env, the seeds solved and the median wall time; one row per run."""
    keys = (
        *("algo", "env", "seed", "solved", "wall_seconds", "train_seconds", "env_steps", "mean_return_100"),
        *("greedy_train_seconds", "greedy_env_steps"),
    )
    rows = [
        {key: m[key] for key in keys} | {"eval_mean": m["eval_return_mean"], "eval_std": m["eval_return_std"]}
        for m in results
    ]
    summary: dict[str, object] = {}
    for algo, env in dict.fromkeys((m["algo"], m["env"]) for m in results):
        runs = [m for m in results if (m["algo"], m["env"]) == (algo, env)]
        summary[f"{algo} {env}: solved"] = f"{sum(bool(m['solved']) for m in runs)}/{len(runs)}"
        summary[f"{algo} {env}: median wall s"] = round(statistics.median(m["wall_seconds"] for m in runs), 1)
    return {**summary, "runs": rows}


if __name__ == "__main__":
    main()
