"""Stable-Baselines3 PPO with RL Zoo's settings: time until a greedy evaluation reaches the env's target.

    python benchmarks/sb3_ppo_solve_time.py --env CartPole-v1 --seed 0 --max-seconds 300 --metrics-json m.json

The runner behind the "SB3 PPO" rows of benchmarks/reinforce_solve_time.py, which starts it once per
(env, seed) in a fresh process with an interpreter that has stable-baselines3 (`--sb3-python`); the
kerasce side never imports SB3 or torch. Only this file's `main` needs them: the RL Zoo table and its
translation (`ppo_settings`) are plain Python, tested without SB3 (tests/test_sb3_benchmark.py).

Settings: RL Zoo's `hyperparams/ppo.yml` (DLR-RM/rl-baselines3-zoo at ZOO_COMMIT), translated as its
`ExperimentManager` does: "lin_<x>" is `SimpleLinearSchedule(x)` (x × progress_remaining, from x to 0
over `n_timesteps`, which is therefore the `learn` budget too), `normalize: true` wraps the training env
in `VecNormalize(gamma=gamma)` and the evaluation env in one with `training=False, norm_reward=False`
(SB3's `EvalCallback` copies the observation statistics before each evaluation), DummyVecEnv, MlpPolicy.

Evaluation: SB3's `EvalCallback` every --eval-freq env steps (divided by n_envs, as RL Zoo does) on a
separate vector env of --eval-episodes sub-envs, one deterministic (greedy) episode each; before every
evaluation the sub-envs are reset with fresh seeds `seed + EVAL_SEED_OFFSET + k * episodes + i`
(evaluation k, episode i), never a training seed. `StopTrainingOnRewardThreshold` stops at the first
evaluation whose mean is >= --target (default `env.spec.reward_threshold`); a time callback stops after
--max-seconds.
"solved" means that greedy evaluation reached the target (RL Zoo has no training-mean criterion; the
100-episode training mean is reported beside it). "wall s" is the `learn` call, evaluations included;
"train s" leaves the evaluations out.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# RL Zoo's hyperparams/ppo.yml, copied verbatim for the envs of the benchmark (the commit they come from:
# https://github.com/DLR-RM/rl-baselines3-zoo/blob/<ZOO_COMMIT>/hyperparams/ppo.yml).
ZOO_COMMIT = "22e3ff2450fd92033f7f032915e1f64894a09584"
ZOO_PPO: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "n_envs": 8,
        "n_timesteps": 1e5,
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": "lin_0.001",
        "clip_range": "lin_0.2",
    },
    "Acrobot-v1": {
        "normalize": True,
        "n_envs": 16,
        "n_timesteps": 1e6,
        "policy": "MlpPolicy",
        "n_steps": 256,
        "gae_lambda": 0.94,
        "gamma": 0.99,
        "n_epochs": 4,
        "ent_coef": 0.0,
    },
    "LunarLander-v3": {
        "n_envs": 16,
        "n_timesteps": 1e6,
        "policy": "MlpPolicy",
        "n_steps": 1024,
        "batch_size": 64,
        "gae_lambda": 0.98,
        "gamma": 0.999,
        "n_epochs": 4,
        "ent_coef": 0.01,
    },
    "Pendulum-v1": {
        "n_envs": 4,
        "n_timesteps": 1e5,
        "policy": "MlpPolicy",
        "n_steps": 1024,
        "gae_lambda": 0.95,
        "gamma": 0.9,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
        "use_sde": True,
        "sde_sample_freq": 4,
    },
    # RL Zoo tunes InvertedPendulum-v2 (MuJoCo); v5 is the same task in gymnasium 1.x's MuJoCo bindings.
    "InvertedPendulum-v5": {
        "normalize": True,
        "n_envs": 1,
        "policy": "MlpPolicy",
        "n_timesteps": 1e6,
        "batch_size": 64,
        "n_steps": 32,
        "gamma": 0.999,
        "learning_rate": 0.000222425,
        "ent_coef": 1.37976e-07,
        "clip_range": 0.4,
        "n_epochs": 5,
        "gae_lambda": 0.9,
        "max_grad_norm": 0.3,
        "vf_coef": 0.19816,
    },
    # minigrid's Dict observations (image, direction, mission text) flattened by RL Zoo's wrapper choice.
    "MiniGrid-Empty-Random-5x5-v0": {
        "env_wrapper": "minigrid.wrappers.FlatObsWrapper",
        "normalize": True,
        "n_envs": 8,
        "n_timesteps": 1e5,
        "policy": "MlpPolicy",
        "n_steps": 128,
        "batch_size": 64,
        "gae_lambda": 0.95,
        "gamma": 0.99,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 2.5e-4,
        "clip_range": 0.2,
    },
}
ZOO_PPO["LunarLanderContinuous-v3"] = dict(ZOO_PPO["LunarLander-v3"])  # RL Zoo gives both the same entry
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")  # the PPO keys RL Zoo turns into schedules
EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds start here (past the run seed): never a training seed


class SimpleLinearSchedule:
    """RL Zoo's "lin_<x>": ``x * progress_remaining``, from x at the start to 0 at ``total_timesteps``.

    SB3 calls it with ``progress_remaining = 1 - num_timesteps / total_timesteps`` (rl_zoo3/utils.py).
    """

    def __init__(self, initial_value: float | str) -> None:
        self.initial_value = float(initial_value)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial_value

    def __repr__(self) -> str:
        return f"SimpleLinearSchedule(initial_value={self.initial_value})"


@dataclass
class PPOSettings:
    """One env's RL Zoo entry, split the way RL Zoo's ExperimentManager uses it."""

    n_envs: int
    n_timesteps: int
    normalize: dict[str, Any] | None  # VecNormalize kwargs of the training env, None: no normalisation
    ppo_kwargs: dict[str, Any]  # PPO(...) arguments, "policy" included
    env_wrappers: list[tuple[str, dict[str, Any]]]  # gymnasium wrappers (dotted class name, kwargs), in order


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, defaults in --help (kerasce.cli.runs.HelpFormatter: this file also runs in
    an SB3 interpreter that need not have kerasce installed)."""


def ppo_settings(env_id: str, table: dict[str, dict[str, Any]] = ZOO_PPO) -> PPOSettings:
    """Translate ``table[env_id]`` as ``rl_zoo3.exp_manager.ExperimentManager`` does.

    Schedules: a "lin_<x>" string becomes ``SimpleLinearSchedule(x)``; a number stays a number (RL Zoo's
    ``ConstantSchedule`` returns it at every progress); a negative number is left as it is (RL Zoo: "ignore,
    ex: for clipping"). ``normalize``: True gives ``{"gamma": gamma}`` (RL Zoo passes the algorithm's
    discount to ``VecNormalize``), a dict or a ``"dict(...)"`` string adds its keys. ``env_wrapper``: a
    dotted class name, a ``{name: kwargs}`` dict or a list of those (RL Zoo's ``get_wrapper_class``),
    applied to every training and evaluation sub-env in that order. ``n_envs`` (default 1), ``n_timesteps``
    and ``env_wrapper`` leave the PPO arguments; the rest (``use_sde``, ``sde_sample_freq``, ...) are PPO's.

    Raises:
      ValueError: for an env without an entry, a schedule string other than "lin_<number>", or a wrapper
        that is not a dotted name.
    """
    if env_id not in table:
        raise ValueError(f"No RL Zoo PPO settings for {env_id!r}. Expected one of {sorted(table)}.")
    params = dict(table[env_id])
    n_envs = int(params.pop("n_envs", 1))
    n_timesteps = int(float(params.pop("n_timesteps")))
    for key in SCHEDULED:
        value = params.get(key)
        if isinstance(value, str):
            kind, _, initial = value.partition("_")
            if kind != "lin" or not initial:
                raise ValueError(f"Expected a schedule 'lin_<number>' for {key}. Received: {key}={value!r}")
            params[key] = SimpleLinearSchedule(initial)
    env_wrappers = wrapper_specs(params.pop("env_wrapper", []))
    normalize = params.pop("normalize", False)
    if isinstance(normalize, str):  # RL Zoo evaluates strings such as "dict(norm_obs=False, norm_reward=True)"
        normalize = _parse_dict_call(normalize)
    normalize_kwargs: dict[str, Any] | None = None
    if normalize:
        normalize_kwargs = dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in params:
            normalize_kwargs["gamma"] = params["gamma"]
    return PPOSettings(
        n_envs=n_envs, n_timesteps=n_timesteps, normalize=normalize_kwargs, ppo_kwargs=params, env_wrappers=env_wrappers
    )


def wrapper_specs(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """RL Zoo's ``env_wrapper`` as ``[(dotted class name, kwargs), ...]``: one name, one ``{name: kwargs}``,
    or a list of them (``get_wrapper_class``). Only names are read here; ``load_wrappers`` imports them."""
    items = value if isinstance(value, list) else [value]
    specs = []
    for item in items:
        name, kwargs = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else (item, {})
        module, _, attribute = name.rpartition(".") if isinstance(name, str) else ("", "", "")
        if not (module and attribute.isidentifier() and all(part.isidentifier() for part in module.split("."))):
            raise ValueError(
                f"`env_wrapper` must be a dotted class name 'package.Class'. Received: env_wrapper={item!r}"
            )
        specs.append((name, dict(kwargs or {})))
    return specs


def load_wrappers(specs: list[tuple[str, dict[str, Any]]]) -> Any:
    """``wrapper_class`` for SB3's ``make_vec_env``: imports each wrapper class and applies them in order (None
    without wrappers). Importing a gymnasium plugin's wrappers also registers its envs (``minigrid``)."""
    import importlib

    if not specs:
        return None
    classes = []
    for name, kwargs in specs:
        module, _, attribute = name.rpartition(".")
        classes.append((getattr(importlib.import_module(module), attribute), kwargs))

    def wrap(env: Any) -> Any:
        for wrapper, kwargs in classes:
            env = wrapper(env, **kwargs)
        return env

    return wrap


def _parse_dict_call(text: str) -> dict[str, Any]:
    # RL Zoo eval()s these strings; only literal keyword arguments are accepted here.
    import ast

    node = ast.parse(text.strip(), mode="eval").body
    if not (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args
    ):
        raise ValueError(f"Expected normalize as 'dict(key=value, ...)'. Received: normalize={text!r}")
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--env", required=True, choices=sorted(ZOO_PPO), help="gymnasium env id")
    parser.add_argument("--seed", type=int, default=0, help="run seed (training sub-env i is reset with seed + i)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="training budget of the learn call")
    parser.add_argument(
        "--target", type=float, default=None, help="greedy return to stop at (default: env.spec.reward_threshold)"
    )
    parser.add_argument("--eval-freq", type=int, default=10_000, help="env steps between greedy evaluations")
    parser.add_argument("--eval-episodes", type=int, default=20, help="greedy episodes per evaluation")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (RL Zoo: 1 is faster)")
    parser.add_argument("--metrics-json", default=None, help="write the run's metrics here")
    args = parser.parse_args(argv)
    if args.eval_freq < 1 or args.eval_episodes < 1 or args.torch_threads < 1:
        parser.error("--eval-freq, --eval-episodes and --torch-threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import gymnasium
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class SeededTimedEval(EvalCallback):
        """EvalCallback whose evaluation k resets sub-env i with seed ``base + k * episodes + i``, timed."""

        def __init__(self, *args: Any, seed_base: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.seed_base = seed_base
            self.records: list[dict[str, Any]] = []
            self.eval_seconds = 0.0

        def _on_step(self) -> bool:
            if not (self.eval_freq > 0 and self.n_calls % self.eval_freq == 0):
                return super()._on_step()
            seed = self.seed_base + len(self.records) * self.n_eval_episodes
            self.eval_env.seed(seed)  # used by the reset that evaluate_policy starts with
            start = time.perf_counter()
            continue_training = super()._on_step()
            self.eval_seconds += time.perf_counter() - start
            rewards = np.asarray(self.evaluations_results[-1], dtype=np.float64)
            self.records.append(
                {
                    "env_steps": self.num_timesteps,
                    "mean": float(rewards.mean()),
                    "std": float(rewards.std()),
                    "seed": seed,
                }
            )
            return continue_training

    class StopAfterSeconds(BaseCallback):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds = seconds
            self.start = 0.0
            self.timed_out = False

        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            self.timed_out = time.perf_counter() - self.start >= self.seconds
            return not self.timed_out

    torch.set_num_threads(args.torch_threads)
    settings = ppo_settings(args.env)
    wrapper_class = load_wrappers(settings.env_wrappers)  # before the env is made: it may register the env's id
    threshold = gymnasium.spec(args.env).reward_threshold if args.target is None else args.target
    if threshold is None:
        raise ValueError(
            f"`--target` must be a number for {args.env}, which has no env.spec.reward_threshold. "
            "Received: --target=None"
        )
    target = float(threshold)
    print(
        f"SB3 PPO on {args.env}: seed={args.seed} RL Zoo ppo.yml@{ZOO_COMMIT[:8]} n_envs={settings.n_envs} "
        f"n_timesteps={settings.n_timesteps} normalize={settings.normalize} wrappers={settings.env_wrappers} "
        f"{settings.ppo_kwargs} target={target} "
        f"eval every {args.eval_freq} steps x {args.eval_episodes} greedy episodes, max_seconds={args.max_seconds}"
    )
    print(
        f"python {platform.python_version()}, stable-baselines3 {stable_baselines3.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), gymnasium {gymnasium.__version__}, numpy "
        f"{np.__version__}",
        flush=True,
    )

    env = make_vec_env(args.env, n_envs=settings.n_envs, seed=args.seed, wrapper_class=wrapper_class)
    eval_env = make_vec_env(
        args.env, n_envs=args.eval_episodes, seed=args.seed + EVAL_SEED_OFFSET, wrapper_class=wrapper_class
    )
    if settings.normalize is not None:
        env = VecNormalize(env, **settings.normalize)
        eval_env = VecNormalize(eval_env, **{**settings.normalize, "training": False, "norm_reward": False})
    log_tmp = tempfile.TemporaryDirectory()
    log_dir = log_tmp.name
    model = PPO(env=env, seed=args.seed, device="cpu", verbose=0, **settings.ppo_kwargs)
    evaluation = SeededTimedEval(
        eval_env,
        callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=target),
        n_eval_episodes=args.eval_episodes,
        eval_freq=max(args.eval_freq // settings.n_envs, 1),
        log_path=log_dir,  # EvalCallback keeps the per-episode returns (for the std) only with a log_path
        deterministic=True,
        verbose=0,
        seed_base=args.seed + EVAL_SEED_OFFSET,
    )
    timer = StopAfterSeconds(args.max_seconds)
    start = time.perf_counter()
    model.learn(total_timesteps=settings.n_timesteps, callback=[evaluation, timer])
    wall_seconds = time.perf_counter() - start
    log_tmp.cleanup()

    best = max(evaluation.records, key=lambda r: r["mean"], default=None)
    solved = best is not None and best["mean"] >= target
    # The last 100 training episodes (Monitor); SB3 types the buffer as optional (None before learn() sets it up).
    episode_returns = [info["r"] for info in model.ep_info_buffer or ()]
    # PPO trains on every step of each finished rollout; a rollout cut short by a stop is not trained on.
    trained_steps = model._n_updates // model.n_epochs * model.n_steps * settings.n_envs
    metrics = {
        "algo": "SB3 PPO",
        "env": args.env,
        "seed": args.seed,
        "target_return": target,
        "solved": bool(solved),
        "stopped_by": "target" if solved else "max_seconds" if timer.timed_out else "n_timesteps",
        "env_steps": int(model.num_timesteps),
        "wall_seconds": wall_seconds,
        "train_seconds": wall_seconds - evaluation.eval_seconds,
        "mean_return_100": float(np.mean(episode_returns)) if len(episode_returns) >= 100 else None,
        # Training stops at the first greedy evaluation >= the target: the benchmark's "greedy >= target at" column.
        "greedy_train_seconds": wall_seconds - evaluation.eval_seconds if solved else None,
        "greedy_env_steps": int(model.num_timesteps) if solved else None,
        "eval_return_mean": None if best is None else best["mean"],
        "eval_return_std": None if best is None else best["std"],
        "eval_env_steps": None if best is None else best["env_steps"],
        "eval_seed": None if best is None else best["seed"],
        "evaluations": evaluation.records,
        "batch_share": trained_steps / max(model.num_timesteps, 1),
        "settings": {
            "zoo_commit": ZOO_COMMIT,
            "zoo_ppo_yml": ZOO_PPO[args.env],
            "eval_freq": args.eval_freq,
            "eval_episodes": args.eval_episodes,
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gymnasium.__version__,
        },
    }
    print(
        f"{'solved' if solved else 'not solved'}: greedy evaluation "
        f"{metrics['eval_return_mean']} +- {metrics['eval_return_std']} at {metrics['eval_env_steps']} env steps; "
        f"{wall_seconds:.1f} s wall ({evaluation.eval_seconds:.1f} s evaluating), {model.num_timesteps} env steps, "
        f"{model.num_timesteps / max(wall_seconds - evaluation.eval_seconds, 1e-9):,.0f} env steps/s (training)"
    )
    if args.metrics_json:
        Path(args.metrics_json).write_text(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    main()
