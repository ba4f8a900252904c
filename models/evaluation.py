"""Offline evaluation of a model version: metrics overall and on slices of its inputs.

Everything here is pure: arrays in, values out. :func:`evaluate_model` scores
the *exported ONNX model* on a held-out split rather than the estimator it came
from: the numbers in a model card are the numbers of the artifact that serves.
Plots and files are ``models.plots`` and ``models.artifacts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from models.bundle import BundleMeta
from models.runtime import OnnxModel, Scores

Task = Literal["classification", "regression"]

#: Number of quantile slices per sliced feature.
SLICES_PER_FEATURE = 4


def classification_metrics(
    y_true: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    classes: Sequence[str],
    *,
    zero_division: float = 0.0,
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and ROC-AUC of a classifier.

    Labels are compared as text. Binary: the positive class is the last of
    ``classes`` (the last probability column); multi-class: macro averages and
    one-vs-rest ROC-AUC. ROC-AUC is left out when it is undefined (one class);
    precision / recall / F1 with nothing to divide by are ``zero_division``.

    >>> m = classification_metrics(
    ...     np.array(["0", "1", "1", "0"]), np.array(["0", "1", "0", "0"]),
    ...     np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]), ["0", "1"])
    >>> m["accuracy"], m["recall"], m["roc_auc"]
    (0.75, 0.5, 1.0)
    """
    truth = np.asarray(y_true).astype(str)
    predicted = np.asarray(labels).astype(str)
    metrics = {"accuracy": float(accuracy_score(truth, predicted))}
    present = set(truth)
    if len(classes) == 2:
        positive = classes[-1]
        kwargs: dict[str, Any] = {
            "pos_label": positive,
            "average": "binary",
            "zero_division": zero_division,
        }
        truth_pos = truth == positive
        if probabilities is not None and 0 < truth_pos.sum() < truth.size:
            metrics["roc_auc"] = float(roc_auc_score(truth_pos, probabilities[:, -1]))
    else:
        kwargs = {
            "average": "macro",
            "zero_division": zero_division,
            "labels": list(classes) or None,
        }
        if (
            probabilities is not None
            and classes
            and present == set(classes)
            and probabilities.shape[1] == len(classes)
        ):
            metrics["roc_auc"] = float(
                roc_auc_score(truth, probabilities, multi_class="ovr", labels=list(classes))
            )
    metrics["precision"] = float(precision_score(truth, predicted, **kwargs))
    metrics["recall"] = float(recall_score(truth, predicted, **kwargs))
    metrics["f1"] = float(f1_score(truth, predicted, **kwargs))
    return metrics


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of a regressor.

    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))["mae"]
    0.6666666666666666
    """
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    return {
        "mae": float(mean_absolute_error(truth, pred)),
        "rmse": float(np.sqrt(mean_squared_error(truth, pred))),
        "r2": float(r2_score(truth, pred)) if truth.size > 1 else float("nan"),
    }


def quantile_slices(
    column: np.ndarray, n: int = SLICES_PER_FEATURE
) -> list[tuple[str, np.ndarray]]:
    """Split one feature column into ``n`` quantile slices: ``(label, row mask)`` pairs.

    A column with at most ``n`` distinct values is sliced by value instead.
    Bins follow the reference profile's convention: ``(lo, hi]``.

    >>> [(label, int(mask.sum())) for label, mask in quantile_slices(np.arange(8.0), 2)]
    [('(-inf, 3.5]', 4), ('(3.5, inf]', 4)]
    """
    values = np.asarray(column, dtype=np.float64)
    distinct = np.unique(values)
    if distinct.size <= n:
        return [(f"= {v:g}", values == v) for v in distinct]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n + 1)[1:-1]))
    edges = edges[edges < distinct[-1]]
    index = np.searchsorted(edges, values, side="left")
    bounds = [-np.inf, *edges.tolist(), np.inf]
    return [
        (f"({bounds[i]:g}, {bounds[i + 1]:g}]", index == i)
        for i in range(len(bounds) - 1)
        if (index == i).any()
    ]


@dataclass(frozen=True)
class SliceResult:
    feature: str
    label: str
    rows: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    """Offline quality of one model on a held-out set, overall and by slice."""

    task: Task
    rows: int
    metrics: dict[str, float]
    slices: list[SliceResult] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    #: Share of rows whose true label is the positive class (binary classifiers).
    positive_rate: float | None = None


def evaluate(
    task: Task,
    y_true: np.ndarray,
    scores: Scores,
    classes: Sequence[str],
    *,
    X: np.ndarray,
    feature_names: Sequence[str],
    slice_features: Sequence[str] = (),
) -> Evaluation:
    """Score quality overall and on quantile slices of ``slice_features``."""
    slices: list[SliceResult] = []
    index = {name: i for i, name in enumerate(feature_names)}
    if task == "regression":
        overall = regression_metrics(y_true, scores.score)
        for feature in slice_features:
            for label, mask in quantile_slices(X[:, index[feature]]):
                part = regression_metrics(y_true[mask], scores.score[mask])
                part.pop("r2")  # unstable on small slices, and not comparable across them
                slices.append(SliceResult(feature, label, int(mask.sum()), part))
        return Evaluation(task=task, rows=int(y_true.size), metrics=overall, slices=slices)

    assert scores.labels is not None  # noqa: S101 - narrows the type for mypy, never a check
    truth = np.asarray(y_true).astype(str)
    overall = classification_metrics(truth, scores.labels, scores.probabilities, classes)
    positive = classes[-1] if len(classes) == 2 else None
    for feature in slice_features:
        for label, mask in quantile_slices(X[:, index[feature]]):
            proba = scores.probabilities[mask] if scores.probabilities is not None else None
            part = classification_metrics(
                truth[mask], scores.labels[mask], proba, classes, zero_division=np.nan
            )
            part.pop("roc_auc", None)  # often undefined on a slice; keep slices comparable
            if positive is not None:
                part["positive_rate"] = float((truth[mask] == positive).mean())
            slices.append(SliceResult(feature, label, int(mask.sum()), part))
    return Evaluation(
        task=task,
        rows=int(truth.size),
        metrics=overall,
        slices=slices,
        classes=list(classes),
        positive_rate=float((truth == positive).mean()) if positive is not None else None,
    )


def feature_importances(estimator: Any, n_features: int) -> np.ndarray | None:
    """Per-feature importance of a fitted estimator, when it has one.

    Tree ensembles expose ``feature_importances_``; linear models get the mean
    absolute coefficient per feature. Anything else: None.
    """
    raw = getattr(estimator, "feature_importances_", None)
    if raw is None and getattr(estimator, "coef_", None) is not None:
        raw = np.abs(np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))).mean(axis=0)
    if raw is None:
        return None
    values = np.asarray(raw, dtype=np.float64).reshape(-1)
    return values if values.size == n_features else None


def top_features(
    feature_names: Sequence[str], importances: np.ndarray | None, k: int = 2
) -> list[str]:
    """The ``k`` most important features, or the first ``k`` when importance is unknown."""
    if importances is None:
        return list(feature_names[:k])
    order = np.argsort(-importances, kind="stable")[:k]
    return [feature_names[i] for i in order]


# -- a model on a held-out split --------------------------------------------------------------


def evaluate_model(
    model: OnnxModel,
    meta: BundleMeta,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    importances: np.ndarray | None = None,
) -> tuple[Evaluation, Scores]:
    """Score the exported ONNX model on a held-out split and evaluate it, sliced by
    its two most important features; the scores come back too, for the plots."""
    X = np.asarray(X_test, dtype=np.float64)
    scores = model.predict(X)
    evaluation = evaluate(
        meta.task,
        np.asarray(y_test),
        scores,
        meta.classes or model.classes,
        X=X,
        feature_names=meta.feature_names,
        slice_features=top_features(meta.feature_names, importances),
    )
    return evaluation, scores
