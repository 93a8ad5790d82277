"""float64 NumPy references, from the formulas in the docstrings: the independent side of a comparison."""

from __future__ import annotations

import numpy as np


def logsumexp(z, axis: int = -1) -> np.ndarray:
    """log Σ_c exp(z_c) over `axis` (removed), shifted by the maximum so that large logits stay finite."""
    z = np.asarray(z, np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def log_softmax(z) -> np.ndarray:
    """log p_c = z_c - logsumexp(z) over the last axis."""
    z = np.asarray(z, np.float64)
    return z - logsumexp(z)[..., None]


def softmax(z) -> np.ndarray:
    """p_c = exp(z_c) / Σ_k exp(z_k) over the last axis."""
    return np.exp(log_softmax(z))


def log_sigmoid(z) -> np.ndarray:
    """log σ(z) = -log(1 + exp(-z)), finite for large |z|."""
    return -np.logaddexp(0.0, -np.asarray(z, np.float64))


def sigmoid(z) -> np.ndarray:
    """σ(z) = 1 / (1 + exp(-z))."""
    return np.exp(log_sigmoid(z))


def smoothed_targets(labels, num_classes: int, *, sparse: bool, smoothing: float = 0.0, ignore=None):
    """Targets ỹ = (1 - ε) y + ε / C over the last axis, and which examples count.

    Args:
        labels: class ids ``[...]`` (`sparse`) or targets ``[..., C]`` with the class axis last.
        num_classes: C.
        sparse: whether `labels` are class ids.
        smoothing: ε.
        ignore: a class id whose examples do not count (sparse only); their targets are class 0's.

    Returns:
        ``(targets [..., C] float64, valid [...] bool)``.
    """
    if sparse:
        ids = np.asarray(labels).astype(np.int64)
        valid = np.ones(ids.shape, bool) if ignore is None else ids != ignore
        y = np.eye(num_classes)[np.where(valid, ids, 0)]
    else:
        y = np.asarray(labels, np.float64)
        valid = np.ones(y.shape[:-1], bool)
    return y * (1 - smoothing) + smoothing / num_classes, valid
