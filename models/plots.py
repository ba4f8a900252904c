"""The evaluation plots of a model card, drawn with matplotlib and saved as PNG.

Each helper draws on a bare :class:`~matplotlib.figure.Figure` (Agg canvas, no
pyplot): no display, no global state. matplotlib is imported on the first
plot, not with this module: it is slow to import, and only registering a model
draws anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_confusion_matrix(
    y_true: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path
) -> Path:
    names = list(classes) or sorted(set(np.asarray(y_true).astype(str)))
    matrix = confusion_matrix(
        np.asarray(y_true).astype(str), np.asarray(labels).astype(str), labels=names
    )
    size = max(4.0, 0.6 * len(names) + 2.0)
    fig = _figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(names)), labels=names)
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split)")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=colour)
    return _save(fig, path)


def plot_roc_curve(
    y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], path: Path
) -> Path | None:
    """ROC curve (one-vs-rest per class when multi-class); None if no class can be drawn."""
    truth = np.asarray(y_true).astype(str)
    pairs = [(classes[-1], probabilities[:, -1])] if len(classes) == 2 else []
    if len(classes) > 2:
        pairs = [(c, probabilities[:, i]) for i, c in enumerate(classes)]
    fig = _figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    drawn = 0
    for cls, score in pairs:
        positive = truth == cls
        if not 0 < positive.sum() < truth.size:
            continue
        fpr, tpr, _ = roc_curve(positive, score)
        auc = roc_auc_score(positive, score)
        ax.plot(fpr, tpr, label=f"class {cls} (AUC {auc:.3f})")
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve (test split)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_feature_importance(
    feature_names: Sequence[str], importances: np.ndarray, path: Path
) -> Path:
    order = np.argsort(importances, kind="stable")
    fig = _figure(figsize=(6, max(3.0, 0.35 * len(order) + 1.0)))
    ax = fig.add_subplot()
    ax.barh([feature_names[i] for i in order], importances[order])
    ax.set_xlabel("importance")
    ax.set_title("Feature importance")
    return _save(fig, path)


def plot_predicted_vs_actual(y_true: np.ndarray, predicted: np.ndarray, path: Path) -> Path:
    fig = _figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(y_true, predicted, s=4, alpha=0.5)
    lo = float(min(np.min(y_true), np.min(predicted)))
    hi = float(max(np.max(y_true), np.max(predicted)))
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs actual (test split)")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)
