"""Model cards, offline evaluation and evaluation plots of a model version.

Everything here is pure or writes only the file it is given: metrics and slices
take arrays and return values, :func:`render_model_card` returns Markdown, and
the plot helpers draw on a bare matplotlib :class:`~matplotlib.figure.Figure`
(Agg canvas, no pyplot), so they need no display and leave no global state.

The evaluation scores the *exported ONNX model* rather than the estimator it
came from: the numbers in a card are the numbers of the artifact that serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from models.bundle import BundleMeta
from models.runtime import Scores

Task = Literal["classification", "regression"]

#: Number of quantile slices per sliced feature.
SLICES_PER_FEATURE = 4

_ONNX_ELEM_TYPES = {1: "float", 6: "int32", 7: "int64", 8: "string", 9: "bool", 11: "double"}


# -- the ONNX signature -----------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxSignature:
    """Inputs and outputs of an ONNX graph, as ``{"name", "type", "shape"}`` dicts."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    #: Class labels declared by a classifier node (skl2onnx writes them), else empty.
    class_labels: list[str]
    producer: str
    opsets: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "class_labels": self.class_labels,
            "producer": self.producer,
            "opsets": self.opsets,
        }


def onnx_signature(onnx_bytes: bytes) -> OnnxSignature:
    """Read the signature of an ONNX model without building a session.

    Raises ``ValueError`` when the bytes are not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(onnx_bytes)
    except DecodeError as exc:
        raise ValueError(f"not an ONNX model: {exc}") from exc
    initializers = {i.name for i in proto.graph.initializer}
    labels: list[str] = []
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and not labels:
                labels = [s.decode("utf-8") for s in attr.strings]
            elif attr.name == "classlabels_int64s" and not labels:
                labels = [str(i) for i in attr.ints]
    return OnnxSignature(
        inputs=[_value_info(v) for v in proto.graph.input if v.name not in initializers],
        outputs=[_value_info(v) for v in proto.graph.output],
        class_labels=labels,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
    )


def _value_info(value: Any) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "type": kind or "unknown", "shape": None}
    tensor = value.type.tensor_type
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)
    elem = _ONNX_ELEM_TYPES.get(tensor.elem_type, str(tensor.elem_type))
    return {"name": value.name, "type": f"tensor({elem})", "shape": shape}


# -- offline metrics and slices ---------------------------------------------------------------


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

    assert scores.labels is not None
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


# -- plots ------------------------------------------------------------------------------------


def plot_confusion_matrix(
    y_true: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: Path
) -> Path:
    names = list(classes) or sorted(set(np.asarray(y_true).astype(str)))
    matrix = confusion_matrix(
        np.asarray(y_true).astype(str), np.asarray(labels).astype(str), labels=names
    )
    size = max(4.0, 0.6 * len(names) + 2.0)
    fig = Figure(figsize=(size, size * 0.85))
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
    fig = Figure(figsize=(5, 4.5))
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
    fig = Figure(figsize=(6, max(3.0, 0.35 * len(order) + 1.0)))
    ax = fig.add_subplot()
    ax.barh([feature_names[i] for i in order], importances[order])
    ax.set_xlabel("importance")
    ax.set_title("Feature importance")
    return _save(fig, path)


def plot_predicted_vs_actual(y_true: np.ndarray, predicted: np.ndarray, path: Path) -> Path:
    fig = Figure(figsize=(5, 5))
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


# -- the card ---------------------------------------------------------------------------------

DEFAULT_INTENDED_USE = (
    "Real-time scoring of sensor events in the streamscore pipeline: the model flags "
    "readings for operators and downstream consumers. It supports human decisions and "
    "monitoring; it is not a safety interlock and must not be the only control on an "
    "action with physical consequences."
)


@dataclass(frozen=True)
class CardContext:
    """Everything a model card says, gathered by whoever registers the model."""

    registered_name: str
    version: str
    run_id: str
    meta: BundleMeta
    signature: OnnxSignature | None
    evaluation: Evaluation | None = None
    source: str = "trained by `streamscore models train`"
    intended_use: str = DEFAULT_INTENDED_USE
    plots: Sequence[str] = ()
    has_importance: bool = False
    extra_limitations: Sequence[str] = ()


def render_model_card(ctx: CardContext) -> str:
    """The ``model_card.md`` of a model version (Markdown)."""
    meta = ctx.meta
    lines = [
        f"# Model card: {ctx.registered_name} v{ctx.version}",
        "",
        f"- **Registered model:** `{ctx.registered_name}`, version {ctx.version}",
        f"- **Bundle:** `{meta.name}` ({meta.algorithm or 'unknown algorithm'}, {meta.task})",
        f"- **Origin:** {ctx.source}",
        f"- **MLflow run:** `{ctx.run_id}`",
        f"- **Created:** {meta.created_at or 'unknown'}",
        "",
        "## Intended use",
        "",
        ctx.intended_use,
        "",
        "Out of scope: inputs outside the reference profile's hard ranges (the processor "
        "routes them to the dead-letter topic), other sensors or feature sets, and any use "
        "without the drift monitoring that runs beside it.",
        "",
        "## Data",
        "",
        *_data_section(meta),
        "",
        "## Input signature",
        "",
        *_signature_section(meta, ctx.signature),
        "",
        "## Metrics",
        "",
        *_metrics_section(meta, ctx.evaluation),
        "",
        "## Fairness and bias (performance by slice)",
        "",
        *_slices_section(ctx.evaluation),
        "",
        "## Limitations",
        "",
        *[f"- {item}" for item in _limitations(ctx)],
        "",
    ]
    if ctx.plots:
        lines += ["## Plots", "", *[f"- `{p}`" for p in ctx.plots], ""]
    return "\n".join(lines)


def _data_section(meta: BundleMeta) -> list[str]:
    dataset = meta.dataset
    if not dataset:
        return ["No training-data lineage was supplied with this model."]
    lines = [f"- **Dataset:** `{dataset.get('name', 'unknown')}`"]
    if "sha256" in dataset:
        lines.append(f"- **Content hash (SHA-256):** `{dataset['sha256']}`")
    for key in ("rows", "train_rows", "test_rows"):
        if key in dataset:
            lines.append(f"- **{key.replace('_', ' ').capitalize()}:** {dataset[key]}")
    if meta.profile.features:
        lines += [
            "",
            "Reference profile of the training features (used for validation and PSI):",
            "",
            "| feature | kind | min | max | mean | std | hard range |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for f in meta.profile.features:
            lines.append(
                f"| {f.name} | {f.kind} | {f.min:g} | {f.max:g} | {f.mean:.4g} | {f.std:.4g} "
                f"| [{f.hard_min:g}, {f.hard_max:g}] |"
            )
    return lines


def _signature_section(meta: BundleMeta, signature: OnnxSignature | None) -> list[str]:
    lines = [f"Feature order: {', '.join(f'`{n}`' for n in meta.feature_names)}"]
    if meta.classes:
        lines.append(f"Classes (probability column order): {', '.join(meta.classes)}")
    if signature is not None:
        lines.append("")
        for role, values in (("input", signature.inputs), ("output", signature.outputs)):
            for v in values:
                lines.append(f"- {role} `{v['name']}`: {v['type']} shape {v['shape']}")
        lines.append(f"- producer: {signature.producer or 'unknown'}; opsets {signature.opsets}")
    return lines


def _metrics_section(meta: BundleMeta, evaluation: Evaluation | None) -> list[str]:
    if evaluation is not None:
        head = f"Held-out test split of {evaluation.rows} rows, scored by the exported ONNX model."
        if evaluation.positive_rate is not None:
            head += f" Positive class `{evaluation.classes[-1]}`: {evaluation.positive_rate:.2%}."
        return [head, "", *_metric_table(evaluation.metrics)]
    if meta.metrics:
        return [
            "Metrics as supplied with the model; they were not recomputed at registration.",
            "",
            *_metric_table(meta.metrics),
        ]
    return ["No offline metrics: the model was registered without a labelled test set."]


_METRIC_NAMES = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1 score",
    "roc_auc": "ROC-AUC",
    "positive_rate": "positive rate",
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R²",
}


def _number(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else "n/a"


def _metric_table(metrics: Mapping[str, float]) -> list[str]:
    return [
        "| metric | value |",
        "| --- | --- |",
        *[f"| {_METRIC_NAMES.get(k, k)} | {_number(v)} |" for k, v in metrics.items()],
    ]


def _slices_section(evaluation: Evaluation | None) -> list[str]:
    if evaluation is None or not evaluation.slices:
        return [
            "No slice analysis: no labelled evaluation data was available. Evaluate the model "
            "on slices of its inputs before relying on it for any group of sensors."
        ]
    keys = list(evaluation.slices[0].metrics)
    lines = [
        "The data describe machines, not people: it has no demographic or other protected "
        "attribute, so group fairness in that sense cannot be assessed. What can be checked "
        "is whether quality is uneven across operating conditions; the table slices the "
        "test split by quantiles of the most influential features.",
        "",
        f"| feature | slice | rows | {' | '.join(_METRIC_NAMES.get(k, k) for k in keys)} |",
        f"| --- | --- | --- | {' | '.join('---' for _ in keys)} |",
    ]
    for s in evaluation.slices:
        cells = " | ".join(_number(s.metrics.get(k, float("nan"))) for k in keys)
        lines.append(f"| {s.feature} | {s.label} | {s.rows} | {cells} |")
    main = "f1" if evaluation.task == "classification" else "mae"
    values = [
        s.metrics[main]
        for s in evaluation.slices
        if s.rows >= 30 and np.isfinite(s.metrics.get(main, np.nan))
    ]
    if len(values) >= 2:
        lines += [
            "",
            f"{_METRIC_NAMES[main]} across slices of at least 30 rows ranges from "
            f"{min(values):.4f} to {max(values):.4f}; n/a means the slice has no positive "
            "row or prediction to measure it on.",
        ]
    return lines


def _limitations(ctx: CardContext) -> list[str]:
    meta = ctx.meta
    items = [
        "Trained once on a fixed sample; its quality on live data is only known through the "
        "evaluator (labels) and the drift monitors (PSI, ADWIN).",
    ]
    if meta.task == "classification" and len(meta.classes) == 2:
        items.append(
            "The label is the most probable class (a 0.5 threshold on the positive-class "
            "probability); with a rare positive class, precision is sensitive to small shifts "
            "in the score."
        )
    if not meta.profile.features:
        items.append(
            "No reference profile: the processor cannot range-check inputs against training "
            "ranges (only type and finiteness checks apply) and cannot compute PSI drift for "
            "this model."
        )
    if not meta.dataset:
        items.append("Training data unknown: lineage cannot be traced for this version.")
    if ctx.evaluation is None:
        items.append("Not evaluated at registration: the metrics above are not independent.")
    if not ctx.has_importance:
        items.append("No feature importance is available for this model.")
    items.extend(ctx.extra_limitations)
    return items
