"""The model card of a model version: Markdown from what its registration gathered.

:func:`render_model_card` is pure: a :class:`CardContext` in (the bundle's
metadata, the ONNX signature from ``models.signature``, the evaluation from
``models.evaluation``, the plots drawn by ``models.plots``), Markdown out. It
imports neither matplotlib nor scikit-learn, so reading or rendering a card is
cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.bundle import BundleMeta

if TYPE_CHECKING:
    from models.evaluation import Evaluation
    from models.signature import OnnxSignature

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
