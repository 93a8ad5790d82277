"""Time to solve CartPole-v1 (100-episode mean return >= 475): kerasce vs a hand-written REINFORCE.

    python benchmarks/reinforce_cartpole.py                 # seeds 0 1 2
    python benchmarks/reinforce_cartpole.py --seeds 0 1 2 3 4

Per seed, in one process and interleaved: kerasce's `ReinforceAgent` with the example's default
settings (32 envs, NumPy sampling, Adam 1e-2), and the plain vectorized loop most Keras REINFORCE
code uses, written below: 16 envs, one `tf.function` policy call per env step, Adam 1e-2, normalised
reward-to-go, a 2x32 tanh MLP, one episode per env per update (as kerasce). Both clocks include tracing. Prints a
table and the median ratio kerasce / hand-written, and checks the targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasce.cli.runs import HelpFormatter, non_negative_int, positive_float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="seeds to run")
    parser.add_argument("--max-seconds", type=positive_float, default=90.0, help="give up a run after this long")
    return parser.parse_args()


if __name__ == "__main__":
    parse_args()  # --help and bad flags answer here, before the TensorFlow import below

import gymnasium  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _results import save_result  # noqa: E402

from kerasce.rl import ReinforceAgent  # noqa: E402

TARGET = 475.0
TARGETS = {"median_seconds": 3.0, "median_ratio": 0.4, "collect_steps_per_second": 150_000}


def run_kerasce(seed: int, max_seconds: float) -> dict:
    keras.utils.set_random_seed(seed)
    agent = ReinforceAgent.from_env("CartPole-v1", seed=seed)  # the example's defaults
    agent.learn("CartPole-v1", total_timesteps=None, max_seconds=max_seconds, target_return=TARGET)
    return {
        "solved": len(agent.episode_returns) >= 100 and agent.mean_return(100) >= TARGET,
        "seconds": agent.train_seconds,
        "env_steps": agent.env_steps,
        "episodes": len(agent.episode_returns),
        "steps_per_second": agent.env_steps / agent.collect_seconds,
    }


def run_hand_written(seed: int, max_seconds: float, num_envs: int = 16) -> dict:
    """The plain loop: a compiled TF policy call at every vector step."""
    keras.utils.set_random_seed(seed)
    env = gymnasium.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(2),
        ]
    )
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def sample(obs):
        return tf.random.categorical(model(obs), 1)[:, 0]

    @tf.function(reduce_retracing=True)
    def train(obs, actions, returns):
        with tf.GradientTape() as tape:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(actions, model(obs))
            loss = tf.reduce_mean(returns * ce)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    episode_returns: list[float] = []
    env_steps, collect_seconds, update = 0, 0.0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < max_seconds:
        collect_start = time.perf_counter()
        obs, _ = env.reset(seed=seed * 1_000_003 + update)
        rows = []  # (obs, action, reward, done, valid)
        finished = np.zeros(num_envs, bool)
        while not finished.all():
            actions = sample(tf.constant(obs)).numpy()
            next_obs, rewards, terminated, truncated, _ = env.step(actions)
            done = terminated | truncated
            # One episode per env per update, as kerasce does: a step counts while its env is still in its
            # first episode (so next-step autoreset rows and later episodes are left out).
            rows.append((obs, actions, rewards, done & ~finished, ~finished))
            obs = next_obs
            finished |= done
        collect_seconds += time.perf_counter() - collect_start
        env_steps += len(rows) * num_envs
        # Reward-to-go per episode.
        returns = np.zeros((len(rows), num_envs))
        keep = np.zeros((len(rows), num_envs), bool)
        running = np.zeros(num_envs)
        complete = np.zeros(num_envs, bool)
        for t in range(len(rows) - 1, -1, -1):
            _, _, rewards, done, valid = rows[t]
            complete = done | (complete & valid)
            running = np.where(valid, rewards + 0.99 * running * ~done, 0.0)
            returns[t], keep[t] = running, complete & valid
        totals = np.zeros(num_envs)
        for _, _, rewards, done, valid in rows:
            totals += rewards * valid
            episode_returns.extend(totals[done].tolist())
            totals[done] = 0.0
        normalized = (returns - returns[keep].mean()) / (returns[keep].std() + 1e-8)
        train(
            tf.constant(np.stack([r[0] for r in rows])[keep]),
            tf.constant(np.stack([r[1] for r in rows])[keep].astype(np.int32)),
            tf.constant(normalized[keep], tf.float32),
        )
        update += 1
        if len(episode_returns) >= 100 and np.mean(episode_returns[-100:]) >= TARGET:
            break
    env.close()
    return {
        "solved": len(episode_returns) >= 100 and np.mean(episode_returns[-100:]) >= TARGET,
        "seconds": time.perf_counter() - start,
        "env_steps": env_steps,
        "episodes": len(episode_returns),
        "steps_per_second": env_steps / collect_seconds,
    }


def main() -> None:
    args = parse_args()
    print(
        f"CartPole-v1 to a 100-episode mean >= {TARGET:g}; seeds {args.seeds}; {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"gymnasium {gymnasium.__version__}"
    )
    header = (
        f"{'seed':>4} | {'kerasce s':>9} {'steps':>8} {'episodes':>8} {'steps/s':>9} | "
        f"{'hand-written s':>14} {'steps':>8} {'episodes':>8} {'steps/s':>9} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for seed in args.seeds:
        ours = run_kerasce(seed, args.max_seconds)
        plain = run_hand_written(seed, args.max_seconds)
        ratio = ours["seconds"] / plain["seconds"]
        rows.append((ours, plain, ratio))

        def cell(r, width):
            flag = "" if r["solved"] else "*"
            return (
                f"{r['seconds']:>{width - 1}.2f}{flag or ' '} {r['env_steps']:>8d} {r['episodes']:>8d} "
                f"{r['steps_per_second']:>9,.0f}"
            )

        print(f"{seed:>4} | {cell(ours, 9)} | {cell(plain, 14)} | {ratio:>5.2f}", flush=True)
    print("(* = not solved within --max-seconds)")

    median_seconds = statistics.median(r[0]["seconds"] for r in rows)
    median_ratio = statistics.median(r[2] for r in rows)
    slowest_collection = min(r[0]["steps_per_second"] for r in rows)
    checks = {
        "every seed solves (kerasce)": all(r[0]["solved"] for r in rows),
        f"median time to solve {median_seconds:.2f} s <= {TARGETS['median_seconds']} s": median_seconds
        <= TARGETS["median_seconds"],
        f"median ratio kerasce / hand-written {median_ratio:.2f} <= {TARGETS['median_ratio']}": median_ratio
        <= TARGETS["median_ratio"],
        (
            f"collection >= {TARGETS['collect_steps_per_second']:,} env steps/s "
            f"(slowest seed {slowest_collection:,.0f})"
        ): slowest_collection >= TARGETS["collect_steps_per_second"],
    }
    for name, ok in checks.items():
        print(f"[{'ok' if ok else 'MISSED'}] {name}")
    save_result(
        "reinforce-cartpole",
        {
            "median seconds to solve": round(median_seconds, 2),
            "median ratio kerasce / hand-written": round(median_ratio, 2),
            "slowest collection steps/s": round(float(slowest_collection)),
            "seeds": [seed_row(seed, *row) for seed, row in zip(args.seeds, rows)],
        },
    )


def seed_row(seed: int, ours: dict, plain: dict, ratio: float) -> dict:
    """One seed's figures, for the result file."""
    return {
        "seed": seed,
        "kerasce_s": round(ours["seconds"], 2),
        "kerasce_solved": bool(ours["solved"]),
        "kerasce_env_steps": int(ours["env_steps"]),
        "kerasce_steps_per_s": round(ours["steps_per_second"]),
        "hand_written_s": round(plain["seconds"], 2),
        "hand_written_solved": bool(plain["solved"]),
        "hand_written_env_steps": int(plain["env_steps"]),
        "ratio": round(ratio, 2),
    }


if __name__ == "__main__":
    main()
