"""The retraining steps without Prefect (each task's function): the family refitted with the
champion's hyperparameters, a failing fit, the held-out comparison, the audit records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import Ridge

from models.bundle import BundleMeta
from models.profile import build_profile
from models.serving import ServingModel
from schemas.settings import Settings
from streams.autopilot.dataset import TrainingWindow
from streams.autopilot.retrain import (
    Champion,
    FitFailed,
    RetrainJob,
    RetrainResult,
    compare,
    export_onnx,
    fit_candidate,
    result_records,
    too_few_labels,
)

PARAMS = {"n_estimators": 20, "max_depth": 2, "learning_rate": 0.3, "random_state": 1}


def data(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] > 0).astype(np.int64)  # the label follows the unshifted feature
    X[:, 0] += shift
    return X, y


def champion() -> Champion:
    X, y = data(2000, 0.0, 1)
    estimator = GradientBoostingClassifier(**PARAMS).fit(X.astype(np.float32), y)
    meta = BundleMeta(
        name="m",
        version="1",
        task="classification",
        feature_names=["a", "b"],
        classes=["0", "1"],
        profile=build_profile(X, ["a", "b"]),
        params=PARAMS,
        algorithm="GradientBoostingClassifier",
    )
    return Champion("1", ServingModel.build(export_onnx(estimator, 2, classifier=True), meta))


def window(n: int, shift: float) -> TrainingWindow:
    X, y = data(n, shift, 2)
    return TrainingWindow(
        ["a", "b"],
        X,
        np.array([str(v) for v in y], dtype=object),
        np.arange(n, dtype=np.int64),
        0,
        n,
    )


@pytest.fixture
def job(tmp_path: Path) -> RetrainJob:
    settings = Settings(home=tmp_path, autopilot={"retrain": {"min_labels": 100}})
    return RetrainJob(settings, "m", "autopilot", "test", 0, 1)


def test_refit_on_the_shifted_window_is_better_on_its_newest_slice(job: RetrainJob) -> None:
    ours, shifted = champion(), window(3000, 1.0)
    train, holdout = shifted.split(0.25)
    candidate = fit_candidate.fn(job, ours, shifted, train)
    assert candidate.meta.params == PARAMS and candidate.meta.classes == ["0", "1"]
    assert candidate.meta.dataset["parent_version"] == "1"
    judged = compare.fn(job, ours, candidate, shifted, holdout)
    assert judged.metric == "accuracy" and judged.not_worse
    assert judged.candidate > 0.97 and judged.champion < 0.85


def test_a_failing_fit_is_a_fit_failure_and_an_override_wins(job: RetrainJob) -> None:
    ours, shifted = champion(), window(500, 0.0)
    train, _ = shifted.split(0.25)
    bad = RetrainJob(job.settings, "m", "a", "t", 0, 1, {"n_estimators": -3})
    with pytest.raises(FitFailed, match="n_estimators"):
        fit_candidate.fn(bad, ours, shifted, train)
    tiny = RetrainJob(job.settings, "m", "a", "t", 0, 1, {"n_estimators": 2})
    assert fit_candidate.fn(tiny, ours, shifted, train).meta.params["n_estimators"] == 2


def test_too_few_labels_overall_or_per_class(job: RetrainJob) -> None:
    ours = champion()
    assert (
        too_few_labels(window(50, 0.0), job, ours) == "50 labelled events in the window, 100 needed"
    )
    one_class = window(300, 0.0)
    one_class.y[:] = "0"
    assert "classes with fewer than 20 labels: {'1': 0}" in str(
        too_few_labels(one_class, job, ours)
    )
    assert too_few_labels(window(300, 0.0), job, ours) is None


def test_regressors_export_and_compare_on_mae(tmp_path: Path) -> None:
    # Both fits are exact up to float32 rounding: "not worse" within a relative tolerance.
    settings = Settings(home=tmp_path, autopilot={"retrain": {"tolerance": 0.5}})
    job = RetrainJob(settings, "r", "autopilot", "test", 0, 1)
    X, _ = data(500, 0.0, 3)
    y = X @ np.array([2.0, -1.0])
    onnx_bytes = export_onnx(Ridge().fit(X.astype(np.float32), y), 2, classifier=False)
    meta = BundleMeta(
        name="r",
        version="1",
        task="regression",
        feature_names=["a", "b"],
        profile=build_profile(X, ["a", "b"]),
        params={"alpha": 1.0},
        algorithm="Ridge",
    )
    ours = Champion("1", ServingModel.build(onnx_bytes, meta))
    win = TrainingWindow(["a", "b"], X, y, np.arange(500, dtype=np.int64), 0, 500)
    train, holdout = win.split(0.25)
    candidate = fit_candidate.fn(job, ours, win, train)
    judged = compare.fn(job, ours, candidate, win, holdout)
    assert judged.metric == "mae" and judged.not_worse and judged.candidate < 0.01


def test_audit_records_of_a_registered_and_of_a_failed_run(job: RetrainJob) -> None:
    registered = RetrainResult(
        "registered",
        "registered",
        champion_version="1",
        candidate_version="3",
        metric="accuracy",
        champion_metric=0.94,
        candidate_metric=0.999,
        rows=900,
        lineage={"lineage.rows": "900"},
    )
    records = result_records(job, registered)
    assert [r["action"] for r in records] == ["retrain_finished", "challenger_registered"]
    details = records[1]["details"]
    assert details["candidate_accuracy"] == "0.999000" and details["parent_version"] == "1"
    assert details["lineage.rows"] == "900" and records[1]["model_version"] == "3"
    failed = result_records(job, RetrainResult("failed", "fit_failed", "bad"))
    assert [r["action"] for r in failed] == ["retrain_failed"]
    assert failed[0]["details"]["reason"] == "fit_failed"
