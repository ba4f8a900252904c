"""The controller's reading of the topics: verdicts by version pair, quality, incidents."""

from __future__ import annotations

from streams.autopilot.views import EvaluationView, IncidentView, SplitView
from streams.evaluation.verdict import PairedComparison
from tests.unit.autopilot.conftest import cumulative, verdict_records


def test_a_verdict_belongs_to_the_pair_it_was_emitted_with() -> None:
    view = EvaluationView()
    verdict = PairedComparison().verdict()
    view.add(verdict_records("1", "2", verdict, 100, (0.9, 0.95)))
    view.add([cumulative("champion", "1", 50, 0.91, 200)])  # no verdict: quality only
    view.add([{**cumulative("champion", "1", 7, 0.5, 300), "window": "tumbling"}])  # ignored
    assert view.verdict_for("1", "2") is not None
    assert view.verdict_for("1", "3") is None and view.verdict_for("2", "1") is None
    quality = view.quality("champion", "1")
    assert quality is not None and (quality.count, quality.accuracy, quality.errors) == (
        50,
        0.91,
        4,
    )


def test_incidents_open_close_and_hand_out_retrain_requests_once() -> None:
    view = IncidentView()

    def record(status: str, **extra: object) -> dict:
        return {
            "incident_id": "m:1:psi:f1:0:1",
            "status": status,
            "model_version": "1",
            "detector": "psi",
            "target": "f1",
            "severity": "alert",
            "window_start": 10,
            "window_end": 20,
            "detected_at": 30,
            **extra,
        }

    view.add([record("open"), record("update", window_end=40), record("retrain_requested")])
    assert view.open_against("1") is not None and view.open_against("2") is None
    request = view.requests.popleft()
    assert (request.model_version, request.since_ms, request.target) == ("1", 20, "f1")
    view.add([record("closed")])
    assert view.open_against("1") is None and view.open_count() == 0


def test_split_counts_distinct_sensors_per_variant() -> None:
    view = SplitView()
    view.add([{"variant": "champion", "sensor_id": s} for s in ("a", "b", "a")])
    view.add([{"variant": "challenger", "sensor_id": "c"}])
    assert view.observed() == {"champion": 2, "challenger": 1}
