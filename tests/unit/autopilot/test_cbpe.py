"""CBPE: calibration (isotonic, Platt), the windows' join with labels, the monitor's records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.autopilot.cbpe import (
    Calibration,
    CbpeMonitor,
    CbpeWindows,
    confidence,
    estimated_accuracy,
    fit_calibration,
)


def test_confidence_is_the_probability_of_the_predicted_class() -> None:
    assert confidence([0.9, 0.2, 0.5], binary=True).tolist() == [0.9, 0.8, 0.5]
    assert confidence([0.4, 0.7], binary=False).tolist() == [0.4, 0.7]


def test_isotonic_calibration_recovers_a_known_reliability_curve() -> None:
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 1.0, 20_000)
    truth = 0.5 + (conf - 0.5) * 0.6  # an over-confident model: right less often than it says
    correct = rng.random(conf.size) < truth
    cal = fit_calibration(conf, correct, method="isotonic", binary=True)
    grid = np.array([0.6, 0.75, 0.9])
    assert np.allclose(cal(grid), 0.5 + (grid - 0.5) * 0.6, atol=0.03)
    assert len(cal.knots_x) <= 64 and cal.rows == 20_000
    fresh = rng.uniform(0.5, 1.0, 5000)
    assert estimated_accuracy(cal, fresh) == pytest.approx(
        float((0.5 + (fresh - 0.5) * 0.6).mean()), abs=0.01
    )


def test_platt_calibration_and_json_round_trip() -> None:
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.5, 1.0, 5000)
    correct = rng.random(conf.size) < conf  # a calibrated model
    for method in ("isotonic", "platt"):
        cal = fit_calibration(conf, correct, method=method, binary=True)  # type: ignore[arg-type]
        again = Calibration.from_json(cal.to_json())
        assert np.allclose(again(conf[:50]), cal(conf[:50]), atol=1e-5)
        assert abs(estimated_accuracy(cal, conf) - correct.mean()) < 0.01


def test_platt_with_one_outcome_is_a_constant() -> None:
    cal = fit_calibration(np.array([0.9, 0.95]), np.array([1, 1]), method="platt", binary=True)
    assert cal(np.array([0.6])) == pytest.approx(1.0, abs=1e-5)


def test_windows_join_labels_forget_the_oldest_and_publish_once() -> None:
    w = CbpeWindows(window_ms=1000, max_pending=3, retention_ms=10_000)
    w.add_predictions(
        "champion",
        "1",
        ["a", "b", "c", "d"],
        np.array([100, 200, 1100, 1200]),
        ["x", "y", "x", "x"],
        np.array([0.9, 0.7, 0.6, 0.8]),
    )
    assert w.forgotten == 1 and "a" not in w.pending  # the oldest id waits no longer
    assert w.add_labels(["a", "b", "c", "z"], ["x", "y", "y", "x"]) == 2
    due = w.due(now_ms=1500, min_predictions=1)
    assert [(d.start_ms, d.count) for d in due] == [(0, 2)]  # [1000, 2000) is still open
    first = due[0].metrics
    assert first["estimated_accuracy"] == pytest.approx(0.8)
    assert first["realised_accuracy"] == 1.0 and first["labelled"] == 1.0
    assert first["estimation_error"] == pytest.approx(-0.2)
    assert w.due(now_ms=1500, min_predictions=1) == []  # unchanged: not again
    assert w.add_labels(["d"], ["y"]) == 1
    later = w.due(now_ms=3000, min_predictions=1)
    assert [(d.start_ms, d.metrics["realised_accuracy"]) for d in later] == [(1000, 0.0)]
    assert w.latest("champion", "1", 1) is not None
    w.due(now_ms=20_000, min_predictions=1)
    assert w.windows == {}  # past retention


def test_monitor_estimates_champion_from_predictions_and_challenger_from_shadow() -> None:
    cal = Calibration("isotonic", True, knots_x=(0.5, 1.0), knots_y=(0.0, 1.0))
    monitor = CbpeMonitor(
        lambda version, alias: cal if version != "9" else None,
        window_s=1.0,
        min_window_predictions=2,
    )
    monitor.add_predictions(
        [
            {
                "event_id": "a",
                "variant": "champion",
                "model_version": "1",
                "predicted_label": "1",
                "score": 0.9,
                "probabilities": {"0": 0.1, "1": 0.9},
                "processed_at": 10,
            },
            {
                "event_id": "b",
                "variant": "champion",
                "model_version": "1",
                "predicted_label": "0",
                "score": 0.3,
                "probabilities": {"0": 0.7, "1": 0.3},
                "processed_at": 20,
            },
            {
                "event_id": "c",
                "variant": "champion",
                "model_version": "9",
                "predicted_label": "0",
                "score": 0.3,
                "probabilities": None,
                "processed_at": 20,
            },
        ]
    )
    monitor.add_shadow(
        [
            {
                "event_id": "a",
                "challenger_version": "2",
                "challenger_label": "1",
                "challenger_score": 0.75,
                "processed_at": 10,
            },
            {
                "event_id": "b",
                "challenger_version": "2",
                "challenger_label": "1",
                "challenger_score": 0.75,
                "processed_at": 20,
            },
        ]
    )
    assert monitor.uncalibrated == 1
    assert monitor.add_labels([{"event_id": "a", "label": "1"}, {"event_id": "b", "label": "0"}])
    records = {(r["variant"], r["model_version"]): r for r in monitor.evaluation_records(5000)}
    champion = records[("champion", "1")]
    assert champion["window"] == "cbpe" and champion["count"] == 2
    assert champion["metrics"]["estimated_accuracy"] == pytest.approx((0.8 + 0.4) / 2)
    assert champion["metrics"]["realised_accuracy"] == 1.0
    challenger = records[("challenger", "2")]["metrics"]
    assert challenger["estimated_accuracy"] == pytest.approx(0.5)
    assert challenger["realised_accuracy"] == 0.5
    assert all(math.isfinite(v) for v in challenger.values())
