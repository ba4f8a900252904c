"""The files that describe one model version: what a registry run keeps as its artifacts.

:func:`write_artifacts` fills a folder with::

    bundle/model.onnx, bundle/bundle.json   the bundle (the version's source)
    signature.json                          feature order, classes, ONNX signature
    profile.json                            the reference profile
    evaluation.json, plots/*.png            held-out evaluation and its plots, when
                                            a labelled test split is given

and :func:`write_model_card` adds ``model_card.md`` once the registry has named
the version. Nothing here knows where the folder goes (``connectors.model_registry``
logs it to MLflow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import BundleMeta, save_bundle
from models.card import DEFAULT_INTENDED_USE, CardContext, render_model_card
from models.evaluation import Evaluation, evaluate_model, feature_importances
from models.plots import (
    plot_confusion_matrix,
    plot_feature_importance,
    plot_predicted_vs_actual,
    plot_roc_curve,
)
from models.runtime import OnnxModel
from models.signature import OnnxSignature, load_checked, onnx_signature
from schemas.errors import ModelError

#: The folder of the bundle inside the artifacts.
BUNDLE_FOLDER = "bundle"
MODEL_CARD_FILE = "model_card.md"


@dataclass(frozen=True)
class VersionArtifacts:
    """What :func:`write_artifacts` wrote, and what the model card will say."""

    folder: Path
    #: The bundle's metadata as written: its metrics are the evaluation's, when there was one.
    meta: BundleMeta
    #: None only for bytes registered unchecked that are not an ONNX model.
    signature: OnnxSignature | None
    #: The held-out evaluation; None without a labelled test split (or unchecked bytes).
    evaluation: Evaluation | None
    #: The plots drawn, as paths relative to ``folder``, in drawing order.
    plots: list[str]
    #: Whether the estimator exposed a feature importance (plotted, and used for slices).
    has_importance: bool


def write_artifacts(
    folder: Path,
    onnx_bytes: bytes,
    meta: BundleMeta,
    *,
    estimator: Any = None,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    validate: bool = True,
) -> VersionArtifacts:
    """Check the model, evaluate it and write the files that describe it into ``folder``.

    The model must load against the bundle's feature order and be an ONNX graph
    (:class:`ModelError` if not). With ``X_test`` / ``y_test`` the exported model
    is evaluated (metrics, slices, plots) and those metrics replace
    ``meta.metrics``; with a fitted ``estimator`` its feature importance is
    plotted and picks the sliced features. ``validate=False`` writes the bytes
    unchecked and unevaluated: only for rehearsing how consumers refuse a broken
    version.
    """
    model = load_checked(onnx_bytes, meta) if validate else None
    try:
        signature: OnnxSignature | None = onnx_signature(onnx_bytes)
    except ValueError as exc:
        if validate:
            raise ModelError(f"{meta.name}: {exc}") from exc
        signature = None
    importances = (
        feature_importances(estimator, len(meta.feature_names)) if estimator is not None else None
    )
    evaluation: Evaluation | None = None
    plots: list[Path | None] = []
    if model is not None and X_test is not None and y_test is not None:
        evaluation, plots = _write_evaluation(folder, model, meta, X_test, y_test, importances)
        meta = meta.model_copy(update={"metrics": evaluation.metrics})
    if importances is not None:
        plots.append(
            plot_feature_importance(
                meta.feature_names, importances, folder / "plots" / "feature_importance.png"
            )
        )
    save_bundle(folder / BUNDLE_FOLDER, onnx_bytes, meta)
    described = signature.as_dict() if signature is not None else {"error": "not an ONNX model"}
    (folder / "signature.json").write_text(
        json.dumps(
            {"feature_names": meta.feature_names, "classes": meta.classes, "onnx": described},
            indent=2,
        ),
        encoding="utf-8",
    )
    (folder / "profile.json").write_text(meta.profile.model_dump_json(indent=2), "utf-8")
    return VersionArtifacts(
        folder=folder,
        meta=meta,
        signature=signature,
        evaluation=evaluation,
        plots=[p.relative_to(folder).as_posix() for p in plots if p is not None],
        has_importance=importances is not None,
    )


def write_model_card(
    artifacts: VersionArtifacts,
    *,
    registered_name: str,
    version: str,
    run_id: str,
    source: str,
    intended_use: str = DEFAULT_INTENDED_USE,
) -> Path:
    """Write ``model_card.md`` of the registered ``version`` beside the other artifacts."""
    text = render_model_card(
        CardContext(
            registered_name=registered_name,
            version=version,
            run_id=run_id,
            meta=artifacts.meta,
            signature=artifacts.signature,
            evaluation=artifacts.evaluation,
            source=source,
            intended_use=intended_use,
            plots=artifacts.plots,
            has_importance=artifacts.has_importance,
        )
    )
    path = artifacts.folder / MODEL_CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def _write_evaluation(
    folder: Path,
    model: OnnxModel,
    meta: BundleMeta,
    X_test: np.ndarray,
    y_test: np.ndarray,
    importances: np.ndarray | None,
) -> tuple[Evaluation, list[Path | None]]:
    """``evaluation.json`` and the quality plots; returns the evaluation and the plots
    drawn (None for a plot with nothing to draw)."""
    evaluation, scores = evaluate_model(model, meta, X_test, y_test, importances=importances)
    classes = evaluation.classes
    plots_dir = folder / "plots"
    drawn: list[Path | None] = []
    if meta.task == "classification" and scores.labels is not None:
        drawn.append(
            plot_confusion_matrix(
                y_test, scores.labels, classes, plots_dir / "confusion_matrix.png"
            )
        )
        if scores.probabilities is not None:
            drawn.append(
                plot_roc_curve(y_test, scores.probabilities, classes, plots_dir / "roc_curve.png")
            )
    else:
        drawn.append(
            plot_predicted_vs_actual(
                np.asarray(y_test, dtype=np.float64),
                scores.score,
                plots_dir / "predicted_vs_actual.png",
            )
        )
    (folder / "evaluation.json").write_text(
        json.dumps(
            {
                "rows": evaluation.rows,
                "metrics": evaluation.metrics,
                "slices": [
                    {"feature": s.feature, "slice": s.label, "rows": s.rows, "metrics": s.metrics}
                    for s in evaluation.slices
                ],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return evaluation, drawn
