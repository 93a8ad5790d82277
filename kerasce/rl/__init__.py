"""REINFORCE for Keras 3: the policy gradient is the classifier's cross-entropy weighted by the return.

    from kerasce.rl import ReinforceAgent
    agent = ReinforceAgent.from_env("CartPole-v1", seed=0)
    agent.learn("CartPole-v1", target_return=475)
    agent.export_policy("saved_models/reinforce_cartpole")
"""

from kerasce.rl.agent import ReinforceAgent, StopAtMeanReturn, build_mlp
from kerasce.rl.envs import check_spaces, make_vector_env
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

__all__ = [
    "CompiledPolicy",
    "NumpyPolicy",
    "ReinforceAgent",
    "Rollout",
    "StopAtMeanReturn",
    "build_mlp",
    "check_spaces",
    "collect_episodes",
    "complete_episode_mask",
    "completed_episodes",
    "discounted_returns",
    "first_episode_mask",
    "make_policy_sampler",
    "make_vector_env",
    "normalize",
    "sample_actions",
]
