"""Train a REINFORCE policy on CartPole-v1 (or any gymnasium env of the supported spaces: Discrete,
MultiBinary, MultiDiscrete or Box actions; Box, Discrete, Dict or Tuple observations)
with kerasce, then export it.

    python -m kerasce.cli.reinforce
    python -m kerasce.cli.reinforce --env Acrobot-v1 --target-return -100 --max-seconds 120

The update is `kerasce.losses.PolicyGradientLoss`: the classifier's sparse softmax cross-entropy,
weighted by the discounted return. Every --eval-every updates the greedy policy plays --eval-episodes
episodes on fresh seeds of a separate env; a run is "solved" only when both the 100-episode training mean
and a greedy evaluation reach the target, and the weights with the best greedy evaluation are exported.
Writes into --export-dir (default saved_models/reinforce_<env>): the SavedModel (serving_default: float32
observations -> greedy `action`, `probabilities`; signature `sample`: a sampled `action`), metrics.json,
training_log.csv (one row per update, counted from 1 as printed), learning_curve.png (training and
greedy-evaluation curves) and greedy_episode.gif (one greedy episode, rendered headless).

Settings: the env's preset (kerasce/rl/presets.py, RL Zoo style), then --num-envs, --learning-rate and
--set KEY=VALUE ... (any ReinforceAgent argument); --no-preset starts from the agent's defaults.

Training is resumable: the agent is checkpointed to --backup-dir every 10 updates; a run that is killed
continues from its last checkpoint (same optimizer state, update count and curve) when started again
with the same flags, and says so in one line. The backup records the flags it was made with and the
settings they resolved to (kerasce.cli.runs): a run with other flags or an edited preset is refused, not
silently resumed. --export-dir, --backup-dir,
--quiet and the stopping flags (--max-seconds, --max-updates, --target-return: they move where the same
run stops) may differ; --fresh discards the backup. The backup is deleted once training ends, and a start
that fails before its first checkpoint (an unknown --env, say) leaves none behind.

Flags are checked before TensorFlow is imported: --help and a bad value answer at once.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import math
import os
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

# Light imports only: the flags are parsed and checked before TensorFlow (~5 s) is imported.
from kerasce.cli.runs import (
    STRATEGIES,
    ArgumentParser,
    RunBackup,
    finite_float,
    non_negative_int,
    open_backup,
    positive_float,
    positive_int,
    quiet_tensorflow_startup,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from kerasce.rl import EvalCallback, ReinforceAgent

__all__ = ["MAY_CHANGE_ON_RESUME", "apply_settings", "env_slug", "main", "parse_args", "run_command", "setting"]

# Flags that may differ between a run and its resume: where output goes, verbosity, and when to stop (the
# run's updates do not depend on them). Every other flag defines the run, a flag added later too.
MAY_CHANGE_ON_RESUME = ("export_dir", "backup_dir", "quiet", "fresh", "max_seconds", "max_updates", "target_return")
EVERY_UPDATES = 10  # updates between checkpoints


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses and checks the flags (no TensorFlow import); a bad value exits with ``error: ...`` (status 2)."""
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id (see kerasce.rl.spaces for the spaces)")
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds the networks, env resets and action sampling"
    )
    parser.add_argument(
        "--num-envs",
        type=positive_int,
        default=None,
        help="parallel envs of the vector env (default: the env's preset, else 32)",
    )
    parser.add_argument(
        "--target-return",
        type=finite_float,
        default=None,
        help="stop when the 100-episode mean return reaches it (default: the env's reward threshold)",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=None,
        help="stop after this much training time (default: kerasce.rl.presets.MAX_SECONDS[env], else 120)",
    )
    parser.add_argument("--max-updates", type=positive_int, default=None, help="stop after this many updates in total")
    parser.add_argument(
        "--export-dir",
        default=None,
        help="where the SavedModel, metrics.json, plot and GIF go (default saved_models/reinforce_<env>)",
    )
    parser.add_argument(
        "--backup-dir", default=None, help="checkpoints for resuming after a kill (default <export-dir>.backup)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="discard the backup of an earlier run instead of resuming it"
    )
    parser.add_argument(
        "--strategy",
        default="default",
        choices=STRATEGIES,
        help="tf.distribute strategy the agent is built and trained under",
    )
    parser.add_argument("--quiet", action="store_true", help="no line per update")
    parser.add_argument("--eval-every", type=positive_int, default=10, help="updates between greedy evaluations")
    parser.add_argument(
        "--eval-episodes", type=positive_int, default=20, help="episodes (fresh seeds) per greedy evaluation"
    )
    parser.add_argument(
        "--learning-rate", type=positive_float, default=None, help="Adam learning rate (default: the preset's)"
    )
    parser.add_argument(
        "--no-preset",
        action="store_true",
        help="ignore kerasce.rl.presets.PRESETS[env] and use the ReinforceAgent defaults",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        type=setting,
        default=[],
        metavar="KEY=VALUE",
        help="override ReinforceAgent settings of the preset, values as Python literals, e.g. "
        "--set ent_coef=0.01 gamma=0.98 'hidden_units=(64, 64)'",
    )
    return parser.parse_args(argv)


def setting(text: str) -> str:
    """``KEY=VALUE`` with a Python literal VALUE (checked here; the key is checked against the agent)."""
    key, sep, value = text.partition("=")
    try:
        if not (sep and key.isidentifier()):
            raise ValueError
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with a Python literal VALUE (ent_coef=0.01, baseline=True), got {text!r}"
        ) from None
    return text


def apply_settings(settings: dict, overrides: list[str], allowed: Collection[str]) -> dict:
    """``settings`` with each ``--set KEY=VALUE`` applied.

    Raises:
        ValueError: a KEY that is not in `allowed` (the agent's constructor arguments).
    """
    for text in overrides:
        key, _, value = text.partition("=")
        if key not in allowed:
            raise ValueError(
                f"`--set` KEY must be a ReinforceAgent setting, one of {sorted(allowed)}. Received: --set {key}"
            )
        settings[key] = ast.literal_eval(value)
    return settings


def env_slug(env_id: str) -> str:
    """``"LunarLander-v3"`` -> ``"lunarlander_v3"``: a directory name for the env's default exports."""
    return re.sub(r"[^a-z0-9]+", "_", env_id.lower()).strip("_")


def finite_or_none(value: float | None) -> float | None:
    """NaN/inf -> None, so that metrics.json is strict JSON."""
    return value if value is not None and math.isfinite(value) else None


def greedy_episode(
    agent: ReinforceAgent, env_id: str, seed: int, max_frames: int = 500
) -> tuple[list[Image.Image], float]:
    """Play one greedy episode with rendering; returns (frames, return). Every 2nd frame, half size.

    A one-env vector env from `make_vector_env`, so observations are encoded (one-hot, flattened) and masked
    as in training and evaluation; the action is the agent's greedy one in the env's format."""
    from PIL import Image

    from kerasce.rl.envs import flat_observation_env, info_action_mask, make_vector_env

    env = flat_observation_env(make_vector_env(env_id, 1, mode="sync", render_mode="rgb_array"))
    frames: list[Image.Image] = []
    total = 0.0
    obs, infos = env.reset(seed=seed)
    rendering = True
    for step in range((env.spec.max_episode_steps if env.spec else None) or max_frames):
        if rendering and step % 2 == 0 and len(frames) < max_frames:
            try:
                images = cast("tuple[np.ndarray, ...]", env.render())  # rgb_array: one image per sub-env
            except Exception as error:  # noqa: BLE001  e.g. MuJoCo without a display: the episode is still played
                print(f"no greedy_episode.gif: the env does not render here ({type(error).__name__})", flush=True)
                rendering, frames = False, []
            else:
                frame = Image.fromarray(images[0])
                frames.append(frame.resize((frame.width // 2, frame.height // 2)))
        mask = info_action_mask(obs, infos) if agent.use_action_mask else None
        action = agent.greedy_action(obs, mask)
        obs, reward, terminated, truncated, infos = env.step(action)
        total += float(reward[0])
        if terminated[0] or truncated[0]:
            break
    env.close()
    return frames, total


def plot_learning_curve(agent: ReinforceAgent, target: float | None, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = agent.training_log
    steps = [row["env_steps"] for row in log]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [row["episode_return"] for row in log], ".", alpha=0.5, label="mean return of the update's episodes")
    ax.plot(steps, [row["mean_return_100"] for row in log], "-", lw=2, label="mean return, last 100 episodes")
    evaluated = [row for row in log if row.get("evaluated")]
    if evaluated:
        ax.errorbar(
            [row["env_steps"] for row in evaluated],
            [row["eval_return_mean"] for row in evaluated],
            yerr=[row["eval_return_std"] for row in evaluated],
            fmt="o-",
            ms=3,
            lw=1,
            capsize=2,
            label=f"greedy evaluation ({int(evaluated[-1]['eval_episodes'])} episodes, mean ± std)",
        )
    if target is not None:
        ax.axhline(target, color="gray", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_training_log(rows: list[dict[str, float]], path: str | os.PathLike) -> None:
    """The run's log as CSV: one row per update, ``update`` (counted from 1) first, then the keys in order."""
    keys = sorted({key for row in rows for key in row} - {"update"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["update", *keys], restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "update": int(row["update"])} for row in rows)


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Fill in the env's defaults of ``args`` (export dir, time budget); the agent's settings: the env's
    preset (kerasce/rl/presets.py), then the flags given."""
    from kerasce.rl.presets import max_seconds, preset, setting_names

    if args.export_dir is None:
        args.export_dir = f"saved_models/reinforce_{env_slug(args.env)}"
    if args.max_seconds is None:  # the env's time budget (LunarLander-v3: 900 s), recorded with the run's flags
        args.max_seconds = max_seconds(args.env)
    settings = {} if args.no_preset else preset(args.env)
    for key in ("num_envs", "learning_rate"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return apply_settings(settings, args.set, setting_names())


@dataclasses.dataclass
class Run:
    """One run of the command: its flags, resolved settings, strategy, target, agent and backup."""

    args: argparse.Namespace
    settings: dict[str, Any]
    strategy: Any  # tf.distribute.Strategy
    target: float | None
    agent: ReinforceAgent
    backup: RunBackup


def start(args: argparse.Namespace) -> Run:
    """Resolve the settings, build the agent (which checks the env), then open the backup: a start that
    fails before here (an unknown env, a bad setting) leaves no directory behind."""
    with quiet_tensorflow_startup():
        import gymnasium
        import keras
        import numpy as np
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe prints here, inside the filter
    from kerasce import distribute
    from kerasce.rl import ReinforceAgent

    settings = resolve_settings(args)
    strategy = distribute.get_strategy(args.strategy)
    target = args.target_return
    if target is None:
        target = gymnasium.spec(args.env).reward_threshold if args.env in gymnasium.registry else None
    print(
        f"kerasce REINFORCE on {args.env}: seed={args.seed} settings={settings} target={target} "
        f"max_seconds={args.max_seconds} strategy={args.strategy} export_dir={args.export_dir}\n"
        f"python {sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"gymnasium {gymnasium.__version__}, numpy {np.__version__}"
    )
    keras.utils.set_random_seed(args.seed)  # Seeding: one block; the agent derives env and sampling seeds.
    with strategy.scope():
        agent = ReinforceAgent.from_env(args.env, **settings, seed=args.seed)
    # Every worker of a cluster checkpoints, each into a directory of its own. The backup records the
    # resolved settings beside the flags: a preset edited since the backup was made makes another run.
    backup = open_backup(
        distribute.worker_path(args.backup_dir or args.export_dir.rstrip("/") + ".backup", strategy),
        vars(args),
        settings=settings,
        may_change=MAY_CHANGE_ON_RESUME,
        fresh=args.fresh,
    )
    return Run(args, settings, strategy, target, agent, backup)


def resume(run: Run, evaluation: EvalCallback) -> None:
    """Load the backup's checkpoint, if this run resumes one, and say where it stands."""
    from kerasce.rl import StopAtMeanReturn

    agent, state_dir = run.agent, str(run.backup.state_dir)
    if not (run.backup.resuming and agent.has_checkpoint(state_dir)):
        return
    agent.load_checkpoint(state_dir)
    print(run.backup.resume_line(f"at update {agent.updates}"))
    stopper = None if run.target is None else StopAtMeanReturn(run.target, evaluation=evaluation)
    if stopper is not None and agent.training_log and stopper.reached_in(agent.training_log[-1]):
        print(f"target already reached at update {agent.updates}: no more training, exporting")


def train(run: Run) -> tuple[EvalCallback, int, float]:
    """Resume or start, then ``learn`` with a greedy evaluation and checkpoints; returns the evaluation,
    the updates of this ``learn`` call and its wall time."""
    import time

    from kerasce.rl import CheckpointCallback, EvalCallback

    args, state_dir = run.args, str(run.backup.state_dir)
    evaluation = EvalCallback(
        args.env,
        episodes=args.eval_episodes,
        eval_every=args.eval_every,
        target_return=run.target,
        verbose=0 if args.quiet else 1,
        best_model_save_path=os.path.join(state_dir, "best_eval"),
    )
    resume(run, evaluation)
    learn_start = time.perf_counter()
    history = run.agent.learn(
        args.env,
        total_timesteps=None,
        max_seconds=args.max_seconds,
        max_updates=args.max_updates,
        target_return=run.target,
        verbose=0 if args.quiet else 1,
        callbacks=[evaluation, CheckpointCallback(state_dir, save_every=EVERY_UPDATES, resume=True)],
    )
    return evaluation, len(history.epoch), time.perf_counter() - learn_start  # evaluations included


def summarize(run: Run, evaluation: EvalCallback, trained: tuple[int, float], greedy_return: float) -> dict[str, Any]:
    """metrics.json's content; prints the one-line verdict (``trained``: updates and wall time of this run)."""
    import gymnasium
    import keras
    import tensorflow as tf

    from kerasce.rl.collective import worker_index

    agent, target = run.agent, run.target
    # The best evaluation's weights are the agent's now (EvalCallback.restore_best).
    nothing: dict[str, Any] = {"mean": math.nan, "std": math.nan, "episodes": 0, "seed": None, "update": None}
    best: dict[str, Any] = dict(evaluation.best) if evaluation.best is not None else nothing
    reached = target is not None and len(agent.episode_returns) >= 100 and agent.mean_return(100) >= target
    solved = reached and target is not None and best["mean"] >= target
    steps_per_second = agent.env_steps / max(agent.collect_seconds, 1e-9)
    this_run, wall_seconds = trained
    print(
        f"{'solved' if solved else 'not solved'}: mean return (100 episodes) {agent.mean_return(100):.1f}, "
        f"greedy evaluation {best['mean']:.1f} +- {best['std']:.1f} ({best['episodes']} episodes, update "
        f"{best['update']}) after {agent.train_seconds:.2f} s, {agent.env_steps} env steps, "
        f"{len(agent.episode_returns)} episodes, {agent.updates} updates ({this_run} in this run); "
        f"collection {steps_per_second:,.0f} env steps/s"
    )
    return {
        "env": run.args.env,
        "seed": run.args.seed,
        "num_envs": agent.num_envs,
        "settings": {**agent.get_config(), "policy": None},
        "strategy": run.args.strategy,
        "workers": worker_index(run.strategy)[1],  # env_steps, episodes and steps/s count every worker's
        "target_return": target,
        "max_seconds": run.args.max_seconds,
        "solved": bool(solved),
        "episodes": len(agent.episode_returns),
        "env_steps": agent.env_steps,
        "updates": agent.updates,
        "train_seconds": agent.train_seconds,
        "wall_seconds": wall_seconds,
        "mean_return_100": finite_or_none(agent.mean_return(100)),
        "eval_return_mean": finite_or_none(best["mean"]),
        "eval_return_std": finite_or_none(best["std"]),
        "eval_episodes": best["episodes"],
        "eval_seed": best["seed"],  # greedy episode i of the evaluation was reset with eval_seed + i
        "eval_update": best["update"],  # the exported weights are those of this update
        "collect_steps_per_second": steps_per_second,
        "greedy_episode_return": greedy_return,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "gymnasium": gymnasium.__version__},
    }


def export(run: Run, metrics: dict[str, Any], frames: list[Image.Image]) -> Path | None:
    """Write the SavedModel with metrics.json, training_log.csv, the plot and the GIF (the chief only, under
    a strategy), then delete the backup; returns the export directory on the chief."""
    from kerasce import distribute
    from kerasce.export import write_json_atomic

    agent, target = run.agent, run.target
    title = (
        f"REINFORCE (kerasce) on {run.args.env}, seed {run.args.seed}: "
        f"{'solved' if metrics['solved'] else 'stopped'} in {agent.train_seconds:.1f} s"
    )

    def write_extras(directory: Path) -> None:
        write_json_atomic(directory / "metrics.json", metrics)
        write_training_log(agent.training_log, directory / "training_log.csv")
        plot_learning_curve(agent, target, title, str(directory / "learning_curve.png"))
        if frames:
            frames[0].save(
                directory / "greedy_episode.gif", save_all=True, append_images=frames[1:], duration=40, loop=0
            )

    with distribute.export_location(run.args.export_dir, run.strategy) as export_dir:
        path = agent.export_policy(export_dir, write_extras=write_extras)
    run.backup.discard()  # training is over and exported: nothing to resume
    return path if distribute.is_chief(run.strategy) else None


def discard_unstarted(backup: RunBackup) -> None:
    """Delete a new run's backup that holds no checkpoint yet: a failed start leaves nothing behind."""
    from kerasce.rl import ReinforceAgent

    if not backup.resuming and not ReinforceAgent.has_checkpoint(backup.state_dir):
        backup.discard()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command: flags, start, train, export; returns metrics.json's content."""
    args = parse_args(argv)  # before any heavy import: --help and bad flags answer at once
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen
    run = start(args)
    try:
        evaluation, updates, wall_seconds = train(run)
    except BaseException:
        discard_unstarted(run.backup)
        raise
    frames, greedy_return = greedy_episode(run.agent, args.env, seed=args.seed)
    metrics = summarize(run, evaluation, (updates, wall_seconds), greedy_return)
    path = export(run, metrics, frames)
    if path is not None:
        print(
            f"greedy episode return {greedy_return:.0f}; wrote {path}/ (SavedModel, metrics.json, "
            f"training_log.csv, learning_curve.png{', greedy_episode.gif' if frames else ''})"
        )
    return metrics


def run_command(argv: list[str] | None = None) -> None:
    """``main`` as a command: a bad flag, env or setting, NaN observations or loss exit with ``error: ...``."""
    try:
        main(argv)
    except (ValueError, FloatingPointError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    run_command()
