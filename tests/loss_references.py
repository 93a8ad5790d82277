"""Independent float64 NumPy references of the losses, written from their docstring formulas (no framework)."""

import numpy as np

EPS = 1e-7  # keras.config.epsilon(), the probability clip


# ------------------------------------------------------------------------------------------------
# Independent float64 references (straight from the docstring formulas)
# ------------------------------------------------------------------------------------------------


def ref_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))


def ref_softmax_ce(labels, pred, *, sparse, from_logits=True, smoothing=0.0, weights=None, ignore=None, axis=-1):
    """-Σ_c w_c ỹ_c log p_c in float64; labels already in the sparse or dense form."""
    pred = np.moveaxis(np.asarray(pred, np.float64), axis, -1)
    num_classes = pred.shape[-1]
    logp = ref_log_softmax(pred) if from_logits else np.log(np.clip(pred, EPS, 1 - EPS))
    wy, valid = ref_weighted_labels(
        labels, num_classes, sparse=sparse, smoothing=smoothing, weights=weights, ignore=ignore, axis=axis
    )
    return np.where(valid, -(wy * logp).sum(-1), 0.0), valid


def ref_weighted_labels(labels, num_classes, *, sparse, smoothing=0.0, weights=None, ignore=None, axis=-1):
    """(w ⊙ ỹ with the class axis last, valid): one-hot ids or dense labels, smoothed and class-weighted, float64;
    `valid` is False where an id is `ignore` (its row of w ⊙ ỹ is meaningless and must be masked)."""
    if sparse:
        ids = np.asarray(labels).astype(np.int64)
        valid = np.ones(ids.shape, bool) if ignore is None else ids != ignore
        y = np.eye(num_classes)[np.where(valid, ids, 0)]
    else:
        y = np.moveaxis(np.asarray(labels, np.float64), axis, -1)
        valid = np.ones(y.shape[:-1], bool)
    y = y * (1 - smoothing) + smoothing / num_classes
    w = np.ones(num_classes) if weights is None else np.asarray(weights, np.float64)
    return w * y, valid


def ref_softmax_ce_grad(labels, logits, *, sparse, smoothing=0.0, weights=None):
    """d loss / d logits = (Σ_c w_c ỹ_c) p - w ⊙ ỹ, per example (class axis last)."""
    z = np.asarray(logits, np.float64)
    num_classes = z.shape[-1]
    y = np.eye(num_classes)[np.asarray(labels).astype(int)] if sparse else np.asarray(labels, np.float64)
    y = y * (1 - smoothing) + smoothing / num_classes
    w = np.ones(num_classes) if weights is None else np.asarray(weights, np.float64)
    p = np.exp(ref_log_softmax(z))
    return (w * y).sum(-1, keepdims=True) * p - w * y


def ref_sigmoid_terms(labels, pred, *, from_logits, smoothing, pos_weight, axis):
    """``(ỹ, log p, log(1 - p), w)`` of a sigmoid loss in float64: smoothed labels, the log-probabilities (of
    logits, or of clipped probabilities) and the positive weight shaped to broadcast along the label axis."""
    y = np.asarray(labels, np.float64) * (1 - smoothing) + smoothing / 2
    x = np.asarray(pred, np.float64)
    if from_logits:
        log_p, log_not_p = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    else:
        log_p, log_not_p = np.log(np.clip(x, EPS, 1 - EPS)), np.log(np.clip(1 - x, EPS, 1 - EPS))
    w = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    if np.ndim(w) == 1 and x.ndim > 1:
        w = np.reshape(w, [-1] + [1] * (x.ndim - 1 - axis % x.ndim))
    return y, log_p, log_not_p, w


def ref_mean_over_labels(per_label, axis):
    return per_label if per_label.ndim == 1 else per_label.mean(axis=axis)


def ref_sigmoid_ce(labels, pred, *, from_logits=True, smoothing=0.0, pos_weight=None, axis=-1):
    """mean over labels of -[w ỹ log σ(z) + (1 - ỹ) log(1 - σ(z))], float64."""
    y, log_p, log_not_p, w = ref_sigmoid_terms(
        labels, pred, from_logits=from_logits, smoothing=smoothing, pos_weight=pos_weight, axis=axis
    )
    return ref_mean_over_labels(-(w * y * log_p + (1 - y) * log_not_p), axis)


def random_problem(rng, shape, axis, *, probabilities=False, scale=3.0):
    """Predictions of `shape` plus sparse ids and dense soft labels for class axis `axis`."""
    z = rng.normal(size=shape) * scale
    num_classes = shape[axis]
    ids = rng.integers(0, num_classes, size=tuple(np.delete(shape, axis % len(shape))))
    soft = rng.dirichlet(np.ones(num_classes), size=ids.shape)
    soft = np.moveaxis(soft, -1, axis)
    if probabilities:
        z = np.exp(ref_log_softmax(np.moveaxis(z, axis, -1)))
        z = np.moveaxis(z, -1, axis)
    return z.astype(np.float32), ids, soft.astype(np.float32)
