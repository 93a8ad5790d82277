"""One process of tests/rl/test_scaling.py: a REINFORCE update or a short ``learn`` under a strategy.

Prints one JSON line. ``--task update``: one update on fixed kept steps (returns normalised over the
union), split by ``--split`` between the workers (multiworker) or given whole (default, mirrored); the
final weights must equal the one-device update on the union. ``--task learn``: a few updates of
``agent.learn`` on CartPole; prints counters, episode returns and weights.

    python tests/rl/scaling_job.py --task update --strategy default
    TF_CONFIG=... python tests/rl/scaling_job.py --task update --strategy multiworker --split 9

Several runs can share one process (a TensorFlow start costs seconds): flag groups separated by ``--then``
run one after the other, and the process prints one JSON list of their results instead. ``--devices``
applies to the process (give it in the first group); each strategy is created once and reused. A run that
raises is reported as ``{"error": traceback}`` (also printed to stderr) and the next run goes on.

    python tests/rl/scaling_job.py --devices 2 --task update --then --task update --strategy mirrored
"""

import argparse
import json
import os
import sys
import time
import traceback
import types
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from kerasce import distribute

T, N = 6, 4  # the union: [T, N] steps of which MASK keeps some


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, choices=("update", "learn"))
    parser.add_argument("--strategy", default="default", choices=distribute.STRATEGIES)
    parser.add_argument("--devices", type=int, default=1, help="logical CPU devices")
    parser.add_argument(
        "--split",
        type=int,
        default=2,
        help="update: worker 0 keeps the union's first SPLIT kept steps, worker 1 the rest",
    )
    parser.add_argument("--kept", type=int, default=None, help="update: keep only the union's first KEPT steps")
    parser.add_argument(
        "--mutation",
        default="none",
        choices=("none", "per_worker_mean", "local_count"),
        help="update: a known bug, to show the comparison catches it",
    )
    parser.add_argument(
        "--clock-scale", type=float, default=1.0, help="learn: this worker's clock runs this many times too fast"
    )
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--max-updates", type=int, default=None)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=None, help="learn: a greedy evaluation every update")
    parser.add_argument("--checkpoint-dir", default=None, help="learn: checkpoints (a directory per worker)")
    parser.add_argument(
        "--chief-stops-at",
        type=int,
        default=None,
        help="learn: a callback on the chief only sets stop_training after this update",
    )
    parser.add_argument(
        "--die-at-update",
        type=int,
        default=None,
        help="learn: worker 1 exits with code 7 at the end of this update (a crash)",
    )
    return parser.parse_args(argv)


def union_data():
    rng = np.random.default_rng(0)
    returns = rng.normal(2.0, 3.0, size=(T, N))
    mask = rng.uniform(size=(T, N)) < 0.6
    observations = rng.normal(size=(T, N, 4)).astype(np.float32)
    actions = rng.integers(0, 2, size=(T, N)).astype(np.int32)
    return returns, mask, observations, actions


def build_agent(strategy):
    import keras

    from kerasce.rl import ReinforceAgent

    keras.utils.set_random_seed(0)
    with strategy.scope():
        agent = ReinforceAgent(observation_shape=(4,), num_actions=2, baseline=True, ent_coef=0.05, seed=0, num_envs=4)
        # SGD: Adam's first steps are about lr * sign(g), blind to a gradient off by a constant factor.
        agent.compile(keras.optimizers.SGD(0.5))
    return agent


def update_task(args, strategy) -> dict:
    from kerasce.rl import Batch
    from kerasce.rl.collective import worker_index
    from kerasce.rl.envs import make_vector_env
    from kerasce.rl.trainer import Trainer

    returns, mask, observations, actions = union_data()
    if args.kept is not None:
        mask = np.isin(np.arange(T * N), np.flatnonzero(mask.reshape(-1))[: args.kept]).reshape(T, N)
    w, workers = worker_index(strategy)
    if workers > 1:  # this worker keeps its share of the union's kept steps
        order = np.flatnonzero(mask.reshape(-1))
        mine = order[: args.split] if w == 0 else order[args.split :]
        mask = np.isin(np.arange(T * N), mine).reshape(T, N)
    agent = build_agent(strategy)
    env = make_vector_env("CartPole-v1", 2)  # unused by the update; a Trainer needs one

    class Mutant(Trainer):
        def update(self, batch, kept_steps):
            local = self.collective.local_replicas
            size = -(-int(kept_steps.max()) // local)
            mine = max(int(kept_steps[self.collective.worker]), 1)
            if args.mutation == "per_worker_mean":  # each replica's mean over its own steps, averaged
                weight = size * local / mine
            else:  # local_count: this worker's count where the global one belongs
                weight = strategy.num_replicas_in_sync * size / mine
            return self.model.update(batch.padded(local * size, weight))

    learner = (Mutant if args.mutation != "none" else Trainer)(agent, agent.run_state, env)
    normalised, kept_steps = learner.finish_returns(returns.astype(np.float32), mask, update=0)
    batch = Batch(observations[mask], actions[mask], normalised[mask].astype(np.float32))
    learner.update(batch, kept_steps)
    # A second update on the same batch: its logs must be its own (the trackers are zeroed in between on
    # every replica), so they are compared with the one-device run's second update.
    metrics = learner.update(batch, kept_steps)
    env.close()
    return {
        "replicas": strategy.num_replicas_in_sync,
        "kept": int(mask.sum()),
        "metrics": metrics,
        "weights": [v.tolist() for v in agent.get_weights()],
    }


def learn_task(args, strategy) -> dict:
    import kerasce.rl.trainer as learner_module

    if args.clock_scale == 1.0:
        return _learn(args, strategy)
    # This worker's clock disagrees with the chief's (for this run only).
    # The learner's view of the time module only, the rest of it (process_time, ...) as it is.
    real = time.perf_counter
    clock = types.SimpleNamespace(**{**vars(time), "perf_counter": lambda: real() * args.clock_scale})
    with mock.patch.object(learner_module, "time", clock):
        return _learn(args, strategy)


def _learn(args, strategy) -> dict:
    from kerasce.rl.collective import worker_index

    agent = build_agent(strategy)
    agent.max_rollout_steps = 500
    import keras

    class Die(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if worker_index(strategy)[0] == 1 and epoch + 1 == args.die_at_update:
                os._exit(7)
            if worker_index(strategy)[0] == 0 and epoch + 1 == args.chief_stops_at:
                self.model.stop_training = True  # as EarlyStopping does

    checkpoint_dir = None if args.checkpoint_dir is None else distribute.worker_path(args.checkpoint_dir, strategy)
    from kerasce.rl import CheckpointCallback, EvalCallback

    callbacks: list = [Die()]
    evaluation = None
    if args.eval_episodes is not None:
        evaluation = EvalCallback("CartPole-v1", episodes=args.eval_episodes, eval_every=1, restore_best=False)
        callbacks.append(evaluation)
    if checkpoint_dir is not None:
        callbacks.append(CheckpointCallback(checkpoint_dir, save_every=1, resume=True))
    agent.learn(
        "CartPole-v1",
        total_timesteps=args.total_timesteps,
        max_updates=args.max_updates,
        max_seconds=args.max_seconds,
        callbacks=callbacks,
    )
    reevaluated = None
    if evaluation is not None and evaluation.last is not None:
        from kerasce.rl.evaluation import evaluate_policy

        # The last evaluation's episodes played again here, all of them on this worker (same final weights).
        last = evaluation.last
        replay = evaluate_policy(agent.policy_sampler().logits, "CartPole-v1", int(last["episodes"]), int(last["seed"]))
        reevaluated = {"mean": replay.mean, "std": replay.std, "last": last, "count": len(evaluation.evaluations)}
    return {
        "reevaluated": reevaluated,
        "worker": worker_index(strategy)[0],
        "updates": agent.updates,
        "env_steps": agent.env_steps,
        "episodes": len(agent.episode_returns),
        "episode_returns": agent.episode_returns,
        "log": agent.training_log,
        "weights": [v.tolist() for v in agent.get_weights()],
    }


def run(args, strategy) -> dict:
    return update_task(args, strategy) if args.task == "update" else learn_task(args, strategy)


def main(argv: list[str]) -> None:
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--then":
            groups.append([])
        else:
            groups[-1].append(arg)
    runs = [parse_args(group) for group in groups]
    if runs[0].devices > 1:
        distribute.split_cpu(runs[0].devices)
    if len(runs) == 1:
        out = run(runs[0], distribute.get_strategy(runs[0].strategy))
        print(json.dumps(out))
        sys.stdout.flush()
        return
    strategies: dict = {}
    results = []
    for args in runs:
        if args.strategy not in strategies:
            strategies[args.strategy] = distribute.get_strategy(args.strategy)
        try:
            results.append(run(args, strategies[args.strategy]))
        except Exception:  # noqa: BLE001  (reported in the output, for a test that expects this run to fail)
            traceback.print_exc()
            results.append({"error": traceback.format_exc()})
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
