"""Discounted returns (reward-to-go) over time-major rollouts, and their normalisation.

Shapes: ``T`` time steps, ``N`` parallel environments. Every array is time-major ``[T, N]``, the
layout a gymnasium vector env produces one row at a time. These are NumPy functions: they run on the
collection side, once per update, before anything reaches TensorFlow.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RunningScale",
    "combine_moments",
    "complete_episode_mask",
    "discounted_returns",
    "first_episode_mask",
    "gae_advantages",
    "moments",
    "normalize",
]


def _as_bool(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"`{name}` must have the shape of `rewards`, {shape}. Received: {name}.shape={value.shape}")
    return value.astype(bool, copy=False)


def _check_inputs(rewards, terminated, truncated, valid):
    rewards = np.asarray(rewards)
    if rewards.ndim != 2:
        raise ValueError(f"`rewards` must be time-major, of shape [T, N]. Received: rewards.shape={rewards.shape}")
    shape = rewards.shape
    terminated = _as_bool("terminated", terminated, shape)
    truncated = _as_bool("truncated", truncated, shape)
    valid = np.ones(shape, bool) if valid is None else _as_bool("valid", valid, shape)
    return rewards, terminated, truncated, valid


def discounted_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    valid: np.ndarray | None = None,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """Reward-to-go of every step, cut at episode boundaries.

    ``G[t] = r[t] + gamma * G[t+1] * (1 - done[t])`` with ``done = terminated | truncated``, computed
    in one reverse pass over time, independently for every env column.

    Boundaries:
      * ``terminated[t]`` (the MDP ended): the return stops after ``r[t]``.
      * ``truncated[t]`` (a time limit): the episode also stops there. Without ``bootstrap`` the
        return is the discounted sum of the rewards actually observed; with it (a learned baseline
        ``V`` of the observation after the step), ``G[t] = r[t] + gamma * bootstrap[t]``, as
        Stable-Baselines3 does: a time limit is not a terminal state. ``terminated`` wins when both are set.
      * ``valid[t] == False`` marks a step that belongs to no episode, e.g. the reset step of
        gymnasium's next-step autoreset (action ignored, reward 0). Its return is 0 and it never
        links two episodes: such a step always follows a ``done`` step.
      * The last row of a rollout ends every column as if the episode stopped there; use
        :func:`complete_episode_mask` to drop such partial episodes.

    Args:
      rewards: ``[T, N]`` float rewards.
      terminated: ``[T, N]`` bool, True where the step ended the episode by reaching a terminal state.
      truncated: ``[T, N]`` bool, True where the step ended the episode by a time limit.
      gamma: discount factor in ``[0, 1]``.
      valid: optional ``[T, N]`` bool, False for steps outside any episode (see above).
      bootstrap: optional ``[T, N]`` float, the value estimate of the state reached by a truncated step
        (read only where ``truncated & ~terminated``).

    Returns:
      ``[T, N]`` returns, float64 (or the floating dtype of ``rewards`` if wider); 0 where not valid.

    Raises:
      ValueError: if the shapes differ, ``rewards`` is not 2-D, or ``gamma`` is outside ``[0, 1]``.
    """
    rewards, terminated, truncated, valid = _check_inputs(rewards, terminated, truncated, valid)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"`gamma` must be in [0, 1]. Received: gamma={gamma}")
    dtype = np.result_type(rewards.dtype, np.float64)
    continues = ~(terminated | truncated)
    if bootstrap is None:
        tail = np.zeros(rewards.shape, dtype)
    else:
        bootstrap = _as_float("bootstrap", bootstrap, rewards.shape, dtype)
        tail = np.where(truncated & ~terminated, bootstrap, 0.0)
    returns = np.zeros(rewards.shape, dtype)
    running = np.zeros(rewards.shape[1], dtype)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = np.where(valid[t], rewards[t] + gamma * (running * continues[t] + tail[t]), 0.0)
        returns[t] = running
    return returns


def gae_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    gae_lambda: float,
    valid: np.ndarray | None = None,
    bootstrap: np.ndarray | None = None,
) -> np.ndarray:
    """Generalised advantage estimates (Schulman et al., 2016, "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation"), cut at episode boundaries.

    ``delta[t] = r[t] + gamma * V'[t] - values[t]`` and ``A[t] = delta[t] + gamma * gae_lambda * A[t+1] *
    (1 - done[t])``, i.e. ``A[t] = sum_k (gamma * gae_lambda)^k delta[t+k]`` over the rest of the episode,
    computed in one reverse pass over time, independently for every env column. ``V'[t]``, the value of the
    state the step reached, is ``values[t+1]`` inside an episode, 0 after a termination and ``bootstrap[t]``
    after a time-limit truncation (0 without ``bootstrap``), as in :func:`discounted_returns`, whose
    boundary rules (``terminated`` wins, invalid steps, the last row) hold here too; the last row of a
    rollout ends every column with ``V' = 0``. ``A + values`` are the lambda-returns, the value targets;
    ``gae_lambda = 1`` gives ``discounted_returns(...) - values``, ``gae_lambda = 0`` the one-step ``delta``.

    Args:
      rewards: ``[T, N]`` float rewards.
      values: ``[T, N]`` float value estimates ``V(s[t])`` of the state each step started from.
      terminated: ``[T, N]`` bool, True where the step reached a terminal state.
      truncated: ``[T, N]`` bool, True where the step ended the episode by a time limit.
      gamma: discount factor in ``[0, 1]``.
      gae_lambda: the bias-variance trade-off ``lambda`` in ``[0, 1]``.
      valid: optional ``[T, N]`` bool, False for steps outside any episode (autoreset steps).
      bootstrap: optional ``[T, N]`` float, the value of the state reached by a truncated step (read only
        where ``truncated & ~terminated``).

    Returns:
      ``[T, N]`` advantages, float64 (or the floating dtype of ``rewards`` if wider); 0 where not valid.

    Raises:
      ValueError: if the shapes differ, ``rewards`` is not 2-D, or ``gamma`` or ``gae_lambda`` is outside
        ``[0, 1]``.
    """
    rewards, terminated, truncated, valid = _check_inputs(rewards, terminated, truncated, valid)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"`gamma` must be in [0, 1]. Received: gamma={gamma}")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"`gae_lambda` must be in [0, 1]. Received: gae_lambda={gae_lambda}")
    dtype = np.result_type(rewards.dtype, np.float64)
    values = _as_float("values", values, rewards.shape, dtype)
    # V' of every step: the next row's value inside an episode, the bootstrap after a truncation, else 0.
    next_values = np.concatenate([values[1:], np.zeros((1, rewards.shape[1]), dtype)])
    continues = ~(terminated | truncated)
    next_values = np.where(continues, next_values, 0.0)
    if bootstrap is not None:
        tail = _as_float("bootstrap", bootstrap, rewards.shape, dtype)
        next_values = np.where(truncated & ~terminated, tail, next_values)
    deltas = rewards + gamma * next_values - values
    advantages = np.zeros(rewards.shape, dtype)
    running = np.zeros(rewards.shape[1], dtype)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = np.where(valid[t], deltas[t] + gamma * gae_lambda * running * continues[t], 0.0)
        advantages[t] = running
    return advantages


def _as_float(name: str, value: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    value = np.asarray(value, dtype)
    if value.shape != shape:
        raise ValueError(f"`{name}` must have the shape of `rewards`, {shape}. Received: {name}.shape={value.shape}")
    return value


def complete_episode_mask(terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Which steps belong to an episode that ends (terminated or truncated) inside the rollout.

    Args:
      terminated: ``[T, N]`` bool.
      truncated: ``[T, N]`` bool.
      valid: optional ``[T, N]`` bool, False for steps outside any episode (autoreset steps).

    Returns:
      ``[T, N]`` bool: True for a valid step whose episode's last step is in the rollout. The steps
      of an episode still running at the last row are False.
    """
    terminated = np.asarray(terminated)
    _, terminated, truncated, valid = _check_inputs(np.zeros(terminated.shape), terminated, truncated, valid)
    done = terminated | truncated
    mask = np.zeros(done.shape, bool)
    ends_later = np.zeros(done.shape[1], bool)
    for t in range(done.shape[0] - 1, -1, -1):
        ends_later = done[t] | (ends_later & valid[t])
        mask[t] = ends_later & valid[t]
    return mask


def first_episode_mask(terminated: np.ndarray, truncated: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Which steps belong to the first episode of their column.

    ``first[t] = valid[t] and no valid step before t is done``, with ``done = terminated | truncated``:
    each column's valid steps up to and including its first valid ``done``, or all of its valid steps
    if none is done (combine with :func:`complete_episode_mask` to drop such a partial episode).

    Args:
      terminated: ``[T, N]`` bool.
      truncated: ``[T, N]`` bool.
      valid: optional ``[T, N]`` bool, False for steps outside any episode (autoreset steps).

    Returns:
      ``[T, N]`` bool.
    """
    terminated = np.asarray(terminated)
    _, terminated, truncated, valid = _check_inputs(np.zeros(terminated.shape), terminated, truncated, valid)
    ends = (terminated | truncated) & valid
    ended_before = np.cumsum(ends, axis=0) - ends > 0
    return valid & ~ended_before


def normalize(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Standardise to zero mean and unit variance over the entries where ``mask`` is True.

    ``(x - mean) / (std + eps)`` with ``eps`` the machine epsilon of the dtype. Entries outside the
    mask are set to 0.

    Args:
      values: float array of any shape.
      mask: optional bool array of the same shape.

    Returns:
      Array of the shape and dtype of ``values``.

    Raises:
      ValueError: if the mask has another shape or selects nothing.
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if mask is None:
        mask = np.ones(values.shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != values.shape:
        raise ValueError(f"`mask` must have the shape of `values`, {values.shape}. Received: mask.shape={mask.shape}")
    if not mask.any():
        raise ValueError("`mask` must select at least one entry to normalise. Received: an all-False mask")
    selected = values[mask]
    eps = np.finfo(values.dtype).eps
    out = (values - selected.mean()) / (selected.std() + eps)
    return np.where(mask, out, 0.0).astype(values.dtype)


class RunningScale:
    """The standard deviation of every value seen so far (Chan et al.'s parallel variance update).

    The value network of a baseline regresses on ``G / scale``: unlike per-batch normalisation, the
    scale of that target changes slowly, so the network is not chasing a target that is re-scaled
    every update.

    Attributes:
      count: values seen.
      mean: their mean.
      m2: their sum of squared deviations from ``mean``.
    """

    def __init__(self, count: float = 0.0, mean: float = 0.0, m2: float = 0.0):
        self.count, self.mean, self.m2 = float(count), float(mean), float(m2)

    @property
    def scale(self) -> float:
        """``std`` of the values seen (1 before any, and at least 1e-8)."""
        if self.count < 2:
            return 1.0
        return max(float(np.sqrt(self.m2 / self.count)), 1e-8)

    def update(self, values: np.ndarray) -> None:
        """Fold ``values`` (any shape) into the running statistics."""
        self.merge(*moments(values))

    def merge(self, count: float, mean: float, m2: float) -> None:
        """Fold in a group of ``count`` values given by their ``mean`` and ``m2`` (sum of squared deviations).

        Chan et al.'s pairwise update; into an empty scale the group is copied as it is (no rounding)."""
        if count <= 0:
            return
        n = float(count)
        if self.count == 0:
            self.count = n
            if np.ndim(mean) == 0:
                self.mean, self.m2 = float(mean), float(m2)
            else:  # elementwise statistics (kerasce.rl.normalization): copies, not views of the caller's arrays
                self.mean, self.m2 = np.array(mean, np.float64), np.array(m2, np.float64)  # type: ignore[assignment]
            return
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation of the values seen (0 before any)."""
        return float(np.sqrt(self.m2 / self.count)) if self.count > 0 else 0.0

    def get_state(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}


def moments(values: np.ndarray) -> tuple[int, float, float]:
    """``(count, mean, M2)`` of ``values`` (any shape), ``M2 = sum (x - mean)^2``, in float64."""
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        return 0, 0.0, 0.0
    mean = float(values.mean())
    return values.size, mean, float(((values - mean) ** 2).sum())


def combine_moments(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of a union of groups from each group's count ``n``,
    mean and ``M2`` (folded one by one through :meth:`RunningScale.merge`; no large sums of squares).

    Args:
      counts, means, m2s: ``[W]`` per group; groups with ``n = 0`` are ignored.

    Raises:
      ValueError: if every count is 0.
    """
    union = RunningScale()
    for count, mean, m2 in zip(np.asarray(counts, np.float64), means, m2s):
        union.merge(float(count), float(mean), float(m2))
    if union.count <= 0:
        raise ValueError(f"`counts` must have a group with at least one value. Received: counts={list(counts)}")
    return union.mean, union.std
