"""kerasce.rl.tabular: the NumPy vector env of the tabular envs, against gymnasium's own env, step by step."""

import gymnasium
import numpy as np
import pytest

from kerasce.rl.envs import make_vector_env
from kerasce.rl.tabular import TabularVectorEnv


@pytest.mark.parametrize(
    "env_id, kwargs",
    [("Taxi-v4", {}), ("FrozenLake-v1", {"is_slippery": False}), ("CliffWalking-v1", {})],
)
def test_every_step_equals_gymnasiums_env_from_the_same_state(env_id, kwargs):
    # gymnasium's env (with its TimeLimit) is put into our sub-env's state after each reset; with
    # deterministic dynamics every observation, reward, termination, truncation and mask must then agree.
    # Mutations tried: truncation one step late, the autoreset step keeping the action's reward -> red.
    n, steps = 12, 450  # Taxi truncates at 200: two truncations per sub-env, many terminations
    ours = TabularVectorEnv(env_id, n, **kwargs)
    theirs = [gymnasium.make(env_id, **kwargs) for _ in range(n)]
    rng = np.random.default_rng(0)

    def restart(i, state):
        theirs[i].reset(seed=int(rng.integers(2**31)))
        theirs[i].unwrapped.s = int(state)
        mask = getattr(theirs[i].unwrapped, "action_mask", None)
        return None if mask is None else mask(int(state))

    states, infos = ours.reset(seed=1)
    masks = [restart(i, s) for i, s in enumerate(states)]
    if masks[0] is not None:
        np.testing.assert_array_equal(infos["action_mask"], np.stack(masks))
    ended = np.zeros(n, bool)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(steps):
        actions = rng.integers(0, ours._next.shape[1], n)  # the number of actions
        states, rewards, terminated, truncated, infos = ours.step(actions)
        for i in range(n):
            if ended[i]:  # NEXT_STEP autoreset: a reset state, reward 0, the action ignored
                assert rewards[i] == 0 and not terminated[i] and not truncated[i]
                mask = restart(i, states[i])
            else:
                s, r, term, trunc, info = theirs[i].step(int(actions[i]))
                assert (states[i], rewards[i], terminated[i], truncated[i]) == (s, r, term, trunc)
                mask = info.get("action_mask")
            if mask is not None:
                np.testing.assert_array_equal(infos["action_mask"][i], mask)
        ended = terminated | truncated
        ends["terminated"] += int(terminated.sum())
        ends["truncated"] += int(truncated.sum())
    # Random play ends Taxi and FrozenLake episodes (CliffWalking's only end is its goal, rarely reached).
    assert env_id == "CliffWalking-v1" or ends["terminated"] > 0, ends
    assert env_id != "Taxi-v4" or ends["truncated"] > 0, ends


def test_stochastic_transitions_follow_the_table():
    # Slippery FrozenLake: from every state-action pair each outcome's frequency matches P's probability.
    env = TabularVectorEnv("FrozenLake-v1", 20_000, is_slippery=True)
    table = getattr(gymnasium.make("FrozenLake-v1", is_slippery=True).unwrapped, "P")  # noqa: B009  (not in Env's type)
    env.reset(seed=0)
    for state, action in [(0, 0), (5 + 1, 2), (14, 1), (9, 3)]:
        env._states[:] = state
        env._elapsed[:] = 0
        env._ended[:] = False
        next_states, *_ = env.step(np.full(env.num_envs, action))
        expected: dict[int, float] = {}
        for prob, s_next, _, _ in table[state][action]:
            expected[s_next] = expected.get(s_next, 0.0) + prob
        got = {int(s): float(np.mean(next_states == s)) for s in np.unique(next_states)}
        assert got.keys() == expected.keys()
        for s_next, prob in expected.items():
            assert abs(got[s_next] - prob) < 0.015, (state, action, s_next)


def test_make_vector_env_picks_the_table_and_falls_back_to_gymnasium_where_it_must():
    assert isinstance(make_vector_env("Taxi-v4", 4).unwrapped, TabularVectorEnv)
    assert isinstance(make_vector_env("Taxi-v4", 4, mode="native").unwrapped, TabularVectorEnv)
    assert isinstance(make_vector_env("Taxi-v4", 4, mode="sync").unwrapped, gymnasium.vector.SyncVectorEnv)
    rendering = make_vector_env("Taxi-v4", 1, render_mode="rgb_array")
    assert isinstance(rendering.unwrapped, gymnasium.vector.SyncVectorEnv)
    # one-hot observations either way
    observations, _ = make_vector_env("Taxi-v4", 3).reset(seed=0)
    assert observations.shape == (3, 500) and (observations.sum(-1) == 1).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TabularVectorEnv("CartPole-v1", 2), "supports"),
        (lambda: TabularVectorEnv("Taxi-v4", 2, render_mode="rgb_array"), "does not render"),
        (lambda: TabularVectorEnv("Taxi-v4", 2, fickle_passenger=True), "fickle_passenger"),
        (lambda: TabularVectorEnv("Taxi-v4", 0), "`num_envs` must be >= 1"),
    ],
)
def test_bad_construction_is_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_actions_out_of_range_are_a_clear_error():
    env = TabularVectorEnv("Taxi-v4", 2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"must be 2 actions in \[0, 6\)"):
        env.step(np.array([0, 6]))
