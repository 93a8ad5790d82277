"""The plots a classifier run exports: a confusion matrix (multi-class), per-label scores (multi-label).

matplotlib is imported inside the functions, with its file-only backend: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["confusion_matrix_plot", "per_label_auc", "per_label_scores_plot"]


def per_label_auc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """ROC AUC of every label; NaN for a label that is always (or never) present in `labels`."""
    import numpy as np
    from sklearn import metrics as skmetrics

    return np.array(
        [
            skmetrics.roc_auc_score(labels[:, k], probabilities[:, k])
            if 0 < labels[:, k].sum() < len(labels)
            else np.nan
            for k in range(labels.shape[1])
        ]
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _tick_rotation(names: Sequence[str]) -> int:
    return 90 if max(map(len, names)) > 3 else 0


def confusion_matrix_plot(
    path: Path, title: str, names: Sequence[str], labels: np.ndarray, probabilities: np.ndarray
) -> None:
    """Writes the confusion matrix of argmax predictions (counts in the cells up to 30 classes) to `path`."""
    import numpy as np
    from sklearn import metrics as skmetrics

    plt = _pyplot()
    matrix = skmetrics.confusion_matrix(labels, probabilities.argmax(axis=1), labels=range(len(names)))
    size = 2.5 + 0.45 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    fig.colorbar(ax.imshow(matrix, cmap="Blues"), ax=ax, label="test images")
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    accuracy = np.trace(matrix) / matrix.sum()
    ax.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xlabel="predicted",
        ylabel="true",
        title=f"{title}: confusion matrix (accuracy {accuracy:.4f})",
    )
    ax.set_xticklabels(names, rotation=_tick_rotation(names))
    ax.set_yticklabels(names)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_label_scores_plot(
    path: Path, title: str, names: Sequence[str], labels: np.ndarray, probabilities: np.ndarray
) -> None:
    """Writes per-label precision, recall, F1 (threshold 0.5) and ROC AUC bars to `path`."""
    import numpy as np
    from sklearn import metrics as skmetrics

    plt = _pyplot()
    predicted = probabilities > 0.5
    scores = {
        "precision": skmetrics.precision_score(labels, predicted, average=None, zero_division=0),
        "recall": skmetrics.recall_score(labels, predicted, average=None, zero_division=0),
        "F1": skmetrics.f1_score(labels, predicted, average=None, zero_division=0),
        "ROC AUC": per_label_auc(labels, probabilities),
    }
    fig, ax = plt.subplots(figsize=(3 + 0.6 * len(names), 4.5))
    positions = np.arange(len(names))
    for offset, (label, values) in enumerate(scores.items()):
        ax.bar(positions + (offset - 1.5) * 0.2, values, width=0.2, label=label)
    low = min(np.nanmin(v) for v in scores.values())
    ax.set(
        xticks=positions,
        xlabel="label",
        ylabel="score",
        ylim=(max(0.0, low - 0.05), 1.0),
        title=f"{title}: per-label test scores (threshold 0.5)",
    )
    ax.set_xticklabels(names, rotation=_tick_rotation(names))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=4, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
