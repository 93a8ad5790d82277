"""benchmarks/reinforce_solve_time.py: the SB3 PPO side (RL Zoo's settings and their translation) and the
kerasce side (`solve`, the library's agent run to the env's threshold).

The translation is plain Python and runs without stable-baselines3; the one check that builds a PPO model
(in a process of its own) is skipped where SB3 is not installed (the project's own venv).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the runner's dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


runner = load("sb3_ppo_solve_time")
solve_time = load("reinforce_solve_time")


@pytest.mark.parametrize("progress, expected", [(1.0, 1e-3), (0.5, 5e-4), (0.25, 2.5e-4), (0.0, 0.0)])
def test_linear_schedule_goes_from_the_initial_value_to_zero(progress, expected):
    # RL Zoo: SimpleLinearSchedule(x)(progress_remaining) = progress_remaining * x.
    schedule = runner.ppo_settings("CartPole-v1").ppo_kwargs["learning_rate"]
    assert isinstance(schedule, runner.SimpleLinearSchedule)
    assert schedule(progress) == pytest.approx(expected, rel=1e-12, abs=0)


def test_cartpole_settings_are_rl_zoo_ones():
    settings = runner.ppo_settings("CartPole-v1")
    assert (settings.n_envs, settings.n_timesteps, settings.normalize) == (8, 100_000, None)
    kwargs = dict(settings.ppo_kwargs)
    assert kwargs.pop("clip_range")(1.0) == pytest.approx(0.2)
    kwargs.pop("learning_rate")
    assert kwargs == {
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
    }


def test_normalize_true_passes_the_discount_to_vecnormalize():
    settings = runner.ppo_settings("Acrobot-v1")
    assert (settings.n_envs, settings.n_timesteps, settings.normalize) == (16, 1_000_000, {"gamma": 0.99})
    assert "normalize" not in settings.ppo_kwargs and "n_envs" not in settings.ppo_kwargs
    assert runner.ppo_settings("LunarLander-v3").normalize is None


def test_other_rl_zoo_forms():
    table = {
        "Env-v0": {
            "n_timesteps": 2e4,
            "normalize": "dict(norm_obs=False, norm_reward=True)",
            "gamma": 0.9,
            "learning_rate": 3e-4,
            "clip_range": -1,
            "clip_range_vf": "lin_0.5",
        }
    }
    settings = runner.ppo_settings("Env-v0", table)
    assert settings.n_envs == 1  # RL Zoo's default
    assert settings.normalize == {"norm_obs": False, "norm_reward": True, "gamma": 0.9}
    assert settings.ppo_kwargs["learning_rate"] == 3e-4  # a constant stays a number
    assert settings.ppo_kwargs["clip_range"] == -1  # negative: left alone, as RL Zoo does
    assert settings.ppo_kwargs["clip_range_vf"](0.5) == pytest.approx(0.25)
    assert table["Env-v0"]["clip_range_vf"] == "lin_0.5"  # the table itself is not modified


def test_continuous_settings_pass_gsde_through_and_normalise_with_their_discount():
    # RL Zoo's Pendulum-v1: gSDE, constant learning rate and clip range, no VecNormalize.
    pendulum = runner.ppo_settings("Pendulum-v1")
    assert (pendulum.n_envs, pendulum.n_timesteps, pendulum.normalize, pendulum.env_wrappers) == (4, 100_000, None, [])
    assert pendulum.ppo_kwargs == {
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
    }
    # RL Zoo's InvertedPendulum-v2 entry, for v5: one env, VecNormalize with gamma 0.999.
    pendulum_v5 = runner.ppo_settings("InvertedPendulum-v5")
    assert (pendulum_v5.n_envs, pendulum_v5.n_timesteps, pendulum_v5.normalize) == (1, 1_000_000, {"gamma": 0.999})
    assert pendulum_v5.ppo_kwargs["learning_rate"] == 0.000222425 and pendulum_v5.ppo_kwargs["n_steps"] == 32
    lander = runner.ppo_settings("LunarLanderContinuous-v3")
    assert (lander.n_envs, lander.normalize, lander.ppo_kwargs["gamma"]) == (16, None, 0.999)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("minigrid.wrappers.FlatObsWrapper", [("minigrid.wrappers.FlatObsWrapper", {})]),
        (
            ["a.B", {"c.d.E": {"skip": 2}}, {"f.G": None}],
            [("a.B", {}), ("c.d.E", {"skip": 2}), ("f.G", {})],
        ),
    ],
)
def test_env_wrapper_forms_of_rl_zoo(value, expected):
    """RL Zoo's get_wrapper_class: one name, {name: kwargs}, or a list of them, in order."""
    table = {"E": {"n_timesteps": 1, "env_wrapper": value}}
    settings = runner.ppo_settings("E", table)
    assert settings.env_wrappers == expected
    assert "env_wrapper" not in settings.ppo_kwargs


def test_wrappers_are_applied_in_their_order():
    """Mutation tried: the wrappers applied in reverse order (the outer one would be the TimeLimit)."""
    wrap = runner.load_wrappers(
        runner.wrapper_specs(
            [
                {"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 3}},
                "gymnasium.wrappers.RecordEpisodeStatistics",
            ]
        )
    )
    env = wrap(gymnasium.make("CartPole-v1"))
    assert isinstance(env, gymnasium.wrappers.RecordEpisodeStatistics)
    assert isinstance(env.env, gymnasium.wrappers.TimeLimit)
    env.reset(seed=0)
    truncated = [env.step(0)[3] for _ in range(2)] + [env.step(1)[3]]
    assert truncated == [False, False, True]
    assert runner.load_wrappers([]) is None


def test_the_minigrid_entry_flattens_minigrids_own_env_with_rl_zoos_wrapper():
    settings = runner.ppo_settings("MiniGrid-Empty-Random-5x5-v0")
    assert settings.env_wrappers == [("minigrid.wrappers.FlatObsWrapper", {})]
    assert (settings.n_envs, settings.normalize) == (8, {"gamma": 0.99})
    env = runner.load_wrappers(settings.env_wrappers)(gymnasium.make("MiniGrid-Empty-Random-5x5-v0"))
    observation, _ = env.reset(seed=0)
    # FlatObsWrapper: the 7x7x3 image and the mission's characters one-hot (28 codes x 96 places), no direction.
    assert isinstance(env.observation_space, gymnasium.spaces.Box)
    assert observation.shape == (7 * 7 * 3 + 28 * 96,)


@pytest.mark.parametrize(
    "env_id, table, message",
    [
        ("NoSuchEnv-v0", runner.ZOO_PPO, "No RL Zoo PPO settings for 'NoSuchEnv-v0'"),
        ("E", {"E": {"n_timesteps": 1, "learning_rate": "exp_0.1"}}, "Expected a schedule 'lin_<number>'"),
        ("E", {"E": {"n_timesteps": 1, "normalize": "print(1)"}}, "Expected normalize as 'dict"),
        ("E", {"E": {"n_timesteps": 1, "env_wrapper": "os.system('ls')"}}, "`env_wrapper` must be a dotted class name"),
        ("E", {"E": {"n_timesteps": 1, "env_wrapper": "FlatObsWrapper"}}, "`env_wrapper` must be a dotted class name"),
        ("E", {"E": {"n_timesteps": 1, "env_wrapper": [3]}}, "`env_wrapper` must be a dotted class name"),
    ],
)
def test_bad_settings_are_rejected(env_id, table, message):
    with pytest.raises(ValueError, match=message):
        runner.ppo_settings(env_id, table)


def test_the_benchmark_reads_the_runner_envs_and_reports_a_missing_interpreter():
    assert solve_time.zoo_envs() == [
        "Acrobot-v1",
        "CartPole-v1",
        "InvertedPendulum-v5",
        "LunarLander-v3",
        "LunarLanderContinuous-v3",
        "MiniGrid-Empty-Random-5x5-v0",
        "Pendulum-v1",
    ]
    assert "cannot start /nonexistent/python" in solve_time.sb3_missing("/nonexistent/python")


@pytest.mark.parametrize(
    "env_id, expected",
    [
        ("Pendulum-v1", -200.0),  # no reward_threshold in its spec: TARGETS
        ("InvertedPendulum-v5", 950.0),  # the spec's
        ("LunarLanderContinuous-v3", 200.0),
        ("kerasce/MiniGrid-Empty-Random-5x5-v0", 0.9),  # kerasce's registration
    ],
)
def test_each_env_has_one_greedy_target(env_id, expected):
    """Mutation tried: TARGETS emptied (Pendulum-v1 then has no target: ValueError)."""
    assert solve_time.target_return(env_id) == expected


def test_an_env_without_a_target_is_refused():
    with pytest.raises(ValueError, match="`env_id` must have a reward_threshold or an entry in TARGETS"):
        solve_time.target_return("CliffWalking-v1")


@pytest.mark.parametrize(
    "env_id, sb3_env, target",
    [
        ("kerasce/MiniGrid-Empty-Random-5x5-v0", "MiniGrid-Empty-Random-5x5-v0", "0.9"),
        ("Pendulum-v1", "Pendulum-v1", "-200.0"),
    ],
)
def test_the_sb3_row_plays_the_packages_own_id_to_the_same_target(env_id, sb3_env, target, tmp_path):
    """Mutations tried: SB3_ENV_IDS not applied; --target left out (the runner would use the spec's)."""
    command = solve_time.sb3_command(env_id, 2, 60.0, 5000, "python", tmp_path / "m.json")
    flags = dict(zip(command[2::2], command[3::2]))
    assert flags["--env"] == sb3_env and flags["--target"] == target and flags["--seed"] == "2"
    assert runner.parse_args(command[2:]).target == float(target)


class Trained:
    """What `run_figures` reads of a trained agent."""

    def __init__(self, returns, batch_steps, env_steps):
        self.episode_returns = returns
        self.training_log = [{"batch_steps": n} for n in batch_steps]
        self.env_steps, self.updates, self.train_seconds = env_steps, len(batch_steps), 1.5

    def mean_return(self, window):
        return float(np.mean(self.episode_returns[-window:]))


@pytest.mark.parametrize(
    "returns, eval_mean, solved",
    [
        ([480.0] * 100, 475.0, True),
        ([480.0] * 100, 474.0, False),  # the greedy evaluation short of the target
        ([400.0] * 50 + [480.0] * 100, 490.0, True),  # the last 100 episodes count
        ([480.0] * 50 + [400.0] * 100, 490.0, False),
        ([480.0] * 99, 490.0, False),  # no full 100-episode window yet
    ],
)
def test_the_solved_rule_needs_the_training_mean_and_the_greedy_evaluation(returns, eval_mean, solved):
    """Mutations tried: `solved` without the training-mean condition, without the evaluation condition,
    without the 100-episode window."""
    got = solve_time.run_figures(Trained(returns, [10], 40), {"mean": eval_mean, "std": 1.0}, 475.0, 2.0)
    assert got["solved"] is solved
    assert got["mean_return_100"] == pytest.approx(np.mean(returns[-100:]))


def test_the_batch_share_counts_every_update_and_no_evaluation_reads_none():
    """Mutation tried: the batch steps of the last update only."""
    got = solve_time.run_figures(Trained([1.0], [30, 50, 20], 400), None, 475.0, 2.0)
    assert got["batch_share"] == pytest.approx(100 / 400)
    assert (got["updates"], got["env_steps"], got["solved"]) == (3, 400, False)
    assert got["eval_return_mean"] is None and got["eval_return_std"] is None


def test_the_first_greedy_evaluation_at_the_target_gives_sb3s_time():
    """SB3 stops at its first greedy evaluation >= the target; the kerasce row reports the training time and env
    steps of its own first one (row ``epoch`` of the training log). Mutations tried: the best evaluation instead
    of the first; the row after it (``epoch + 1``, the 1-based ``update``)."""
    agent = Trained([480.0] * 100, [10, 10, 10, 10], 400)
    agent.training_log = [{"batch_steps": 10, "train_seconds": 1.0 + i, "env_steps": 100 * (i + 1)} for i in range(4)]
    evaluations = [
        {"epoch": 0, "update": 1, "mean": 400.0},
        {"epoch": 1, "update": 2, "mean": 480.0},
        {"epoch": 3, "update": 4, "mean": 500.0, "std": 0.0},
    ]
    got = solve_time.run_figures(agent, evaluations[-1], 475.0, 9.0, evaluations)
    assert (got["greedy_train_seconds"], got["greedy_env_steps"]) == (2.0, 200)
    never = solve_time.run_figures(agent, evaluations[-1], 600.0, 9.0, evaluations)
    assert never["greedy_train_seconds"] is None and never["greedy_env_steps"] is None


@pytest.mark.slow
def test_the_kerasce_side_solves_cartpole_with_the_library():
    """CartPole pays 1 per step, so one update's returns add up to its batch: batch_share * env_steps equals
    the first episodes' mean return times num_envs (32)."""
    cut = solve_time.solve("CartPole-v1", 0, max_seconds=1e-3)
    assert cut["updates"] == 1 and cut["solved"] is False
    assert cut["batch_share"] * cut["env_steps"] == pytest.approx(cut["mean_return_100"] * 32)
    run = solve_time.solve("CartPole-v1", 0, max_seconds=60)
    assert run["solved"] is True and run["mean_return_100"] >= 475 and run["eval_return_mean"] >= 475
    assert 0 < run["batch_share"] < 1 and run["updates"] > 1


# Builds SB3's PPO from the translated CartPole settings and reads back what it took. It runs in a process of its
# own, with TensorFlow made unimportable there: torch working after TensorFlow has loaded in one process (this
# pytest process has: conftest imports keras) crashes with a segmentation fault, which would end the whole run.
PPO_SETTINGS = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.modules["tensorflow"] = None  # SB3 imports tensorboard, which imports TensorFlow when it is installed
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    spec = importlib.util.spec_from_file_location("sb3_ppo_solve_time", sys.argv[1])
    runner = importlib.util.module_from_spec(spec)
    sys.modules["sb3_ppo_solve_time"] = runner  # the runner's dataclass looks its module up there
    spec.loader.exec_module(runner)
    settings = runner.ppo_settings("CartPole-v1")
    model = PPO(env=make_vec_env("CartPole-v1", n_envs=settings.n_envs), device="cpu", **settings.ppo_kwargs)
    print(json.dumps({
        "took": [model.n_steps, model.batch_size, model.n_epochs, model.gamma],
        "lr_at_half": model.lr_schedule(0.5),
        "clip_at_half": model.clip_range(0.5),
        "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
    }))
    """
)


@pytest.mark.slow
def test_sb3_ppo_takes_the_translated_settings():
    pytest.importorskip(
        "stable_baselines3",
        reason="stable-baselines3 is optional: the `sb3` extra, a benchmark dependency only (it brings torch)",
    )
    proc = subprocess.run(
        [sys.executable, "-c", PPO_SETTINGS, str(BENCHMARKS / "sb3_ppo_solve_time.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["took"] == [32, 256, 20, 0.98]
    assert got["lr_at_half"] == pytest.approx(5e-4)
    assert got["clip_at_half"] == pytest.approx(0.1)
    assert got["tensorflow_loaded"] is False
