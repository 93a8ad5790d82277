"""discounted_returns, complete_episode_mask, first_episode_mask and normalize against hand-computed
values and a float64 per-episode reference written from the docstring formula."""

import numpy as np
import pytest

from kerasce.rl.returns import (
    RunningScale,
    complete_episode_mask,
    discounted_returns,
    first_episode_mask,
    gae_advantages,
    normalize,
)


def col(*values):
    """A single-env column [T, 1]."""
    return np.array(values, dtype=float)[:, None]


def flags(T, at):
    out = np.zeros((T, 1), bool)
    out[list(at), 0] = True
    return out


def reference_episodes(terminated, truncated, valid):
    """``(n, [t...])`` per episode: each column's valid steps up to a terminated or truncated step, or the last row."""
    T, N = terminated.shape
    for n in range(N):
        episode = []
        for t in range(T):
            if not valid[t, n]:
                continue
            episode.append(t)
            if terminated[t, n] or truncated[t, n] or t == T - 1:
                yield n, episode
                episode = []


def reference_returns(rewards, terminated, truncated, gamma, valid):
    """Split every column into episodes, then G_t = sum_k gamma^k r_{t+k} inside each episode."""
    out = np.zeros(rewards.shape)
    for n, episode in reference_episodes(terminated, truncated, valid):
        for i, s in enumerate(episode):
            out[s, n] = sum(gamma**k * rewards[u, n] for k, u in enumerate(episode[i:]))
    return out


def test_single_episode_hand_computed():
    # r = 1, 2, 3, terminated at the last step, gamma = 0.5:
    # G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75
    got = discounted_returns(col(1, 2, 3), flags(3, [2]), flags(3, []), 0.5)
    np.testing.assert_allclose(got, col(2.75, 3.5, 3.0))


@pytest.mark.parametrize("boundary", ["terminated", "truncated"])
def test_terminated_and_truncated_both_cut_the_return(boundary):
    # Two episodes in one column: [1, 1] ends at t=1, then [10, 10] ends at t=3.
    ends = flags(4, [1, 3])
    none = flags(4, [])
    terminated, truncated = (ends, none) if boundary == "terminated" else (none, ends)
    got = discounted_returns(col(1, 1, 10, 10), terminated, truncated, 0.9)
    np.testing.assert_allclose(got, col(1.9, 1.0, 19.0, 10.0))


def test_reward_on_first_step_only():
    got = discounted_returns(col(5, 0, 0, 0), flags(4, [3]), flags(4, []), 0.9)
    np.testing.assert_allclose(got, col(5, 0, 0, 0))


def test_reward_on_last_step_only():
    got = discounted_returns(col(0, 0, 0, 5), flags(4, [3]), flags(4, []), 0.9)
    np.testing.assert_allclose(got, col(5 * 0.9**3, 5 * 0.9**2, 5 * 0.9, 5))


def test_autoreset_step_is_masked_and_does_not_link_episodes():
    # Next-step autoreset: episode [1, 1] ends at t=1, t=2 is the reset step (reward 0, invalid),
    # then episode [2, 2] ends at t=4.
    rewards = col(1, 1, 0, 2, 2)
    valid = np.array([1, 1, 0, 1, 1], bool)[:, None]
    got = discounted_returns(rewards, flags(5, [1, 4]), flags(5, []), 1.0, valid)
    np.testing.assert_allclose(got, col(2, 1, 0, 4, 2))
    mask = complete_episode_mask(flags(5, [1, 4]), flags(5, []), valid)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 1, 1])


def test_partial_episode_at_the_end_is_not_complete():
    terminated = flags(5, [1])
    valid = np.array([1, 1, 0, 1, 1], bool)[:, None]
    mask = complete_episode_mask(terminated, flags(5, []), valid)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 0, 0])
    # The partial episode's returns still cover only what was observed.
    got = discounted_returns(col(1, 1, 0, 3, 4), terminated, flags(5, []), 1.0, valid)
    np.testing.assert_allclose(got, col(2, 1, 0, 7, 4))


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (40, 5)])
def test_matches_per_episode_reference_on_random_rollouts(gamma, shape):
    rng = np.random.default_rng(sum(shape))
    rewards = rng.normal(size=shape)
    terminated = rng.uniform(size=shape) < 0.15
    truncated = ~terminated & (rng.uniform(size=shape) < 0.1)
    done = terminated | truncated
    # Next-step autoreset: the step after a done step is invalid and carries no reward.
    valid = np.vstack([np.ones((1, shape[1]), bool), ~done[:-1]])
    terminated &= valid
    truncated &= valid
    rewards = np.where(valid, rewards, 0.0)
    got = discounted_returns(rewards, terminated, truncated, gamma, valid)
    np.testing.assert_allclose(got, reference_returns(rewards, terminated, truncated, gamma, valid))


def test_first_episode_mask_hand_computed():
    # Columns ("r" an invalid reset step): episodes [t0 t1] r [t3 t4]; a first episode still
    # running; one-step episodes [t0] r [t2] r [t4]; a done on the invalid t1 (ignored), so the first
    # episode is [t0 t2 t3].
    terminated = np.array([[0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 1, 0]], bool)
    valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]], bool)
    got = first_episode_mask(terminated, np.zeros_like(terminated), valid)
    np.testing.assert_array_equal(got, [[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 0]])
    # truncated ends an episode as terminated does; valid=None means every step is valid.
    np.testing.assert_array_equal(first_episode_mask(flags(4, []), flags(4, [1]))[:, 0], [1, 1, 0, 0])


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (40, 5)])
def test_first_episode_mask_matches_a_loop_reference(shape):
    rng = np.random.default_rng(sum(shape))
    terminated = rng.uniform(size=shape) < 0.15
    truncated = rng.uniform(size=shape) < 0.1
    valid = rng.uniform(size=shape) < 0.8
    expected = np.zeros(shape, bool)
    for n in range(shape[1]):
        for t in range(shape[0]):
            expected[t, n] = valid[t, n]
            if valid[t, n] and (terminated[t, n] or truncated[t, n]):
                break
    np.testing.assert_array_equal(first_episode_mask(terminated, truncated, valid), expected)


def test_several_envs_are_independent():
    rewards = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    terminated = np.array([[True, False], [False, False], [True, True]])
    got = discounted_returns(rewards, terminated, np.zeros_like(terminated), 1.0)
    np.testing.assert_allclose(got, [[1, 3], [2, 2], [1, 1]])


def test_normalize_over_mask():
    values = np.array([[1.0, 100.0], [3.0, -5.0]])
    mask = np.array([[True, False], [True, False]])
    out = normalize(values, mask)
    np.testing.assert_allclose(out[mask], [-1.0, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(out[~mask], [0.0, 0.0])
    full = normalize(np.arange(10.0))
    assert abs(full.mean()) < 1e-12 and abs(full.std() - 1.0) < 1e-12


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: discounted_returns(np.zeros(3), np.zeros(3), np.zeros(3), 0.9), "shape \\[T, N\\]"),
        (lambda: discounted_returns(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2)), 0.9), "terminated"),
        (lambda: discounted_returns(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), 1.5), "gamma"),
        (lambda: normalize(np.zeros(3), np.zeros(3, bool)), "all-False mask"),
    ],
)
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_truncated_steps_bootstrap_and_terminated_ones_do_not():
    # Column 0 is truncated at t=1, column 1 both terminated and truncated there (terminated wins),
    # column 2 truncated at t=0 and then runs a new episode. Bootstrap entries elsewhere must be ignored.
    gamma = 0.5
    rewards = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    terminated = np.array([[0, 0, 0], [0, 1, 0]], bool)
    truncated = np.array([[0, 0, 1], [1, 1, 0]], bool)
    bootstrap = np.array([[100.0, 100.0, 8.0], [10.0, 10.0, 100.0]])
    returns = discounted_returns(rewards, terminated, truncated, gamma, bootstrap=bootstrap)
    expected = np.array([[1 + gamma * (2 + gamma * 10), 1 + gamma * 2, 1 + gamma * 8], [2 + gamma * 10, 2, 2]])
    np.testing.assert_allclose(returns, expected)
    with pytest.raises(ValueError, match="bootstrap"):
        discounted_returns(rewards, terminated, truncated, gamma, bootstrap=bootstrap[:1])


def test_running_scale_is_the_std_of_everything_seen():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=n) for n in (1, 7, 50, 3)]
    scale = RunningScale()
    assert scale.scale == 1.0
    for chunk in chunks:
        scale.update(chunk)
    everything = np.concatenate(chunks)
    np.testing.assert_allclose(scale.scale, everything.std(), rtol=1e-12)
    np.testing.assert_allclose(scale.mean, everything.mean(), rtol=1e-12)
    assert RunningScale(**scale.get_state()).scale == scale.scale


def reference_gae(rewards, values, terminated, truncated, gamma, lam, valid, bootstrap):
    """A plain double loop from the formula: split every column into episodes (valid steps up to a terminated
    or truncated step, or the last row), delta_k = r_k + gamma * V'_k - V_k with V' the next step's value inside
    the episode, 0 after a termination or the rollout's last row, the bootstrap after a truncation; then
    A_t = sum_{k >= t in the episode} (gamma * lam)^(k - t) delta_k."""
    out = np.zeros(rewards.shape)
    for n, episode in reference_episodes(terminated, truncated, valid):
        deltas = []
        for i, k in enumerate(episode):
            if i + 1 < len(episode):
                following = values[episode[i + 1], n]
            elif terminated[k, n]:
                following = 0.0
            elif truncated[k, n]:
                following = bootstrap[k, n]
            else:  # cut by the end of the rollout
                following = 0.0
            deltas.append(rewards[k, n] + gamma * following - values[k, n])
        for i, t in enumerate(episode):
            out[t, n] = sum((gamma * lam) ** j * d for j, d in enumerate(deltas[i:]))
    return out


def random_rollout(shape, seed, next_step=True):
    """Rewards, values, bootstrap values and flags of a rollout, terminations and truncations both (some steps
    flagged both). ``next_step``: gymnasium's next-step autoreset (the step after a done one is invalid), else
    same-step autoreset (every step valid, the next episode starts right after a done step)."""
    rng = np.random.default_rng(seed)
    terminated = rng.uniform(size=shape) < 0.15
    truncated = rng.uniform(size=shape) < 0.12
    done = terminated | truncated
    valid = np.vstack([np.ones((1, shape[1]), bool), ~done[:-1]]) if next_step else np.ones(shape, bool)
    terminated &= valid
    truncated &= valid
    rewards = np.where(valid, rng.normal(size=shape), 0.0)
    return rewards, rng.normal(size=shape), rng.normal(size=shape) * 3.0, terminated, truncated, valid


@pytest.mark.parametrize("next_step", [True, False])
@pytest.mark.parametrize("gamma, lam", [(0.9, 0.95), (0.5, 0.0), (0.99, 0.5), (1.0, 1.0), (0.0, 0.7)])
@pytest.mark.parametrize("shape", [(1, 1), (9, 3), (40, 5)])
def test_gae_matches_a_double_loop_reference(gamma, lam, shape, next_step):
    """Mutations tried in `gae_advantages`: no bootstrap (V' = 0 after a truncation) -> red; gamma instead of
    gamma * lambda in the recursion -> red; the recursion crossing an episode boundary (no `* continues[t]`)
    -> red (same-step autoreset: with next-step autoreset an invalid step sits between episodes); `truncated`
    winning over `terminated` (the bootstrap read where both are set) -> red."""
    rewards, values, bootstrap, terminated, truncated, valid = random_rollout(shape, sum(shape), next_step)
    got = gae_advantages(rewards, values, terminated, truncated, gamma, lam, valid, bootstrap=bootstrap)
    want = reference_gae(rewards, values, terminated, truncated, gamma, lam, valid, bootstrap)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert got.dtype == np.float64


def test_gae_hand_computed_truncation_and_termination():
    # Column 0: one episode of 2 steps truncated, reaching a state of value 10; column 1: terminated at t=0, an
    # invalid reset step, then an episode cut by the rollout's end. gamma 0.5, lambda 0.5 (gamma * lambda 0.25).
    rewards = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    values = np.array([[4.0, 2.0], [6.0, 99.0], [99.0, 1.0]])
    terminated = np.array([[0, 1], [0, 0], [0, 0]], bool)
    truncated = np.array([[0, 0], [1, 0], [0, 0]], bool)
    valid = np.array([[1, 1], [1, 0], [0, 1]], bool)
    bootstrap = np.full((3, 2), 10.0)
    got = gae_advantages(rewards, values, terminated, truncated, 0.5, 0.5, valid, bootstrap=bootstrap)
    d01, d00 = 2 + 0.5 * 10 - 6, 1 + 0.5 * 6 - 4  # 1.0, 0.0
    want = np.array([[d00 + 0.25 * d01, 1 - 2], [d01, 0.0], [0.0, 3 - 1]])
    np.testing.assert_allclose(got, want)


def test_gae_limits_are_monte_carlo_and_one_step():
    """lambda = 1: the bootstrapped discounted return minus V; lambda = 0: the one-step TD error."""
    rewards, values, bootstrap, terminated, truncated, valid = random_rollout((30, 4), 7)
    values = np.where(valid, values, 0.0)
    returns = discounted_returns(rewards, terminated, truncated, 0.9, valid, bootstrap=bootstrap)
    one = gae_advantages(rewards, values, terminated, truncated, 0.9, 1.0, valid, bootstrap=bootstrap)
    np.testing.assert_allclose(one, np.where(valid, returns - values, 0.0), rtol=1e-10, atol=1e-10)
    zero = gae_advantages(rewards, values, terminated, truncated, 0.9, 0.0, valid, bootstrap=bootstrap)
    next_values = np.vstack([values[1:], np.zeros((1, 4))])
    continues = ~(terminated | truncated)
    tail = np.where(truncated & ~terminated, bootstrap, np.where(continues, next_values, 0.0))
    np.testing.assert_allclose(zero, np.where(valid, rewards + 0.9 * tail - values, 0.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"gae_lambda": 1.5}, "gae_lambda"), ({"gamma": -0.1}, "gamma"), ({"values": np.zeros((2, 2))}, "values")],
)
def test_gae_bad_inputs_raise(kwargs, message):
    args = {"rewards": np.zeros((3, 2)), "values": np.zeros((3, 2)), "terminated": np.zeros((3, 2)),
            "truncated": np.zeros((3, 2)), "gamma": 0.9, "gae_lambda": 0.95} | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=message):
        gae_advantages(**args)
