"""REINFORCE for Keras 3: the policy gradient is the classifier's cross-entropy weighted by the return.

from kerasce.rl import EvalCallback, ReinforceAgent
agent = ReinforceAgent.from_env("CartPole-v1", seed=0)
agent.learn("CartPole-v1", target_return=475, callbacks=[EvalCallback("CartPole-v1")])
agent.export_policy("saved_models/reinforce_cartpole")
"""

import kerasce.rl.registration  # noqa: F401  (registers the kerasce/... gymnasium ids)
from kerasce.rl.agent import ReinforceAgent
from kerasce.rl.batch import Batch
from kerasce.rl.callbacks import CheckpointCallback, EvalCallback, RLCallback, RunContext, StopAtMeanReturn
from kerasce.rl.envs import as_vector_env, check_env_spaces, make_vector_env
from kerasce.rl.evaluation import Evaluation, evaluate_policy
from kerasce.rl.model import ReinforceModel
from kerasce.rl.networks import build_mlp
from kerasce.rl.progress import ProgressBar
from kerasce.rl.returns import complete_episode_mask, discounted_returns, first_episode_mask, normalize
from kerasce.rl.rollout import (
    CompiledPolicy,
    NumpyPolicy,
    Rollout,
    collect_episodes,
    completed_episodes,
    make_policy_sampler,
    sample_actions,
)
from kerasce.rl.state import RunState
from kerasce.rl.tabular import TabularVectorEnv
from kerasce.rl.trainer import StopConditions, Trainer

__all__ = [
    "Batch",
    "CheckpointCallback",
    "CompiledPolicy",
    "EvalCallback",
    "Evaluation",
    "NumpyPolicy",
    "ProgressBar",
    "RLCallback",
    "ReinforceAgent",
    "ReinforceModel",
    "Rollout",
    "RunContext",
    "RunState",
    "StopAtMeanReturn",
    "StopConditions",
    "TabularVectorEnv",
    "Trainer",
    "as_vector_env",
    "build_mlp",
    "check_env_spaces",
    "collect_episodes",
    "complete_episode_mask",
    "completed_episodes",
    "discounted_returns",
    "evaluate_policy",
    "first_episode_mask",
    "make_policy_sampler",
    "make_vector_env",
    "normalize",
    "sample_actions",
]
