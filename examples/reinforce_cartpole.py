"""Train a REINFORCE policy on CartPole-v1 (or another gymnasium env: any action space, Box, Discrete,
Dict or Tuple observations) with kerasce, then export it.

    python examples/reinforce_cartpole.py
    python examples/reinforce_cartpole.py --env Acrobot-v1 --target-return -100 --max-seconds 120
    python examples/reinforce_cartpole.py --help

The same command as ``python -m kerasce.cli.reinforce``: the env's preset (kerasce/rl/presets.py), then
--num-envs, --learning-rate and --set KEY=VALUE; greedy evaluations on fresh seeds; a run killed midway
resumes from its backup when started again with the same flags; the best-evaluated weights are exported
to saved_models/reinforce_<env>/ with metrics.json, training_log.csv, a learning curve and a GIF.

What the command does, in the library's own terms (kerasce.cli.reinforce adds the flags, the backup
directory, the run record and the files written beside the SavedModel):

    from kerasce.rl import CheckpointCallback, EvalCallback, ReinforceAgent
    from kerasce.rl.presets import preset

    agent = ReinforceAgent.from_env("CartPole-v1", **preset("CartPole-v1"), seed=0)
    evaluation = EvalCallback("CartPole-v1", episodes=20, eval_every=10, target_return=475)
    agent.learn(
        "CartPole-v1",
        total_timesteps=None,
        max_seconds=120,
        target_return=475,  # the 100-episode training mean and a greedy evaluation must both reach it
        verbose=1,
        callbacks=[evaluation, CheckpointCallback("saved_models/reinforce_cartpole_v1.backup/state", resume=True)],
    )
    agent.export_policy("saved_models/reinforce_cartpole_v1")  # the best evaluation's weights

Flags are checked before TensorFlow is imported: --help and a bad value answer at once.
"""

from __future__ import annotations

from kerasce.cli.reinforce import env_slug, main, parse_args, run_command

__all__ = ["env_slug", "main", "parse_args"]

if __name__ == "__main__":
    run_command()
