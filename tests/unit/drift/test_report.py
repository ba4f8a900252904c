"""The HTML drift report and the ``drift`` CLI: self-contained, escaped, complete."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from models.profile import FeatureProfile, ReferenceProfile
from streams.cli.drift import app, load_records
from streams.drift.monitor import DriftMonitor, DriftSettings
from streams.drift.report import incidents, render_drift_report

T0 = 1_704_067_200_000


def profile() -> ReferenceProfile:
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name=name, kind="continuous", edges=[0.0, 1.0],
                reference_fractions=[0.4, 0.4, 0.2],
                count=100, min=-1, max=2, mean=0.5, std=1, hard_min=-10, hard_max=10,
            )
            for name in ("temp", "<b>press</b>")
        ]
    )  # fmt: skip


def drift_records() -> list[dict[str, Any]]:
    """temp drifts for three windows and recovers; the score steps up once."""
    settings = DriftSettings(
        window_events=100, min_window_events=1, clear_windows=2, cooldown_windows=0,
        retrain_after_windows=2, score_detector="adwin",
    )  # fmt: skip
    monitor = DriftMonitor(profile(), "shuttle-gbm", "3", settings, clock=lambda: T0 + 5)
    calm = np.array([[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [1.5, 1.5]] * 20)
    hot = calm.copy()
    hot[:, 0] = 1.5
    matrix = np.concatenate([calm, hot, hot, hot, calm, calm, calm])
    scores = np.concatenate([np.full(300, 0.05), np.full(400, 0.6)])
    records = []
    for a in range(0, len(matrix), 50):
        offsets = np.arange(a, a + 50)
        records += monitor.update(matrix[a : a + 50], scores[a : a + 50], offsets, T0 + offsets)
    return records


def test_report_is_self_contained_and_has_every_section() -> None:
    records = drift_records()
    page = render_drift_report(records)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "<link" not in page
    for heading in (
        "PSI per feature over windows",
        "Most-shifted features: reference vs current",
        "ADWIN: score and error streams",
        "Incidents",
    ):
        assert f"<h2>{heading}</h2>" in page
    # One PSI chart for temp, one histogram for temp, one ADWIN chart for the score.
    assert page.count("<svg") == 3
    assert "(1, inf]" in page
    # Feature names are escaped, never markup.
    assert "<b>press</b>" not in page
    for incident in {r["incident_id"] for r in records}:
        assert incident in page


def test_incident_summaries() -> None:
    records = drift_records()
    summaries = {(i["detector"], i["target"]): i for i in incidents(records)}
    temp = summaries["psi", "temp"]
    assert temp["peak_severity"] == "alert"
    assert temp["retrain_requested"] is True
    assert temp["opened"] == T0 + 199
    assert temp["closed"] == T0 + 599
    assert temp["windows"] == 5  # open, two updates, a quiet update, closed
    score = summaries["adwin", "score"]
    assert score["peak_severity"] == "alert"
    assert score["closed"] is not None


def test_empty_report() -> None:
    page = render_drift_report([])
    assert "No drift records." in page
    assert "<svg" not in page


def test_records_without_times_use_offsets_then_order() -> None:
    records = drift_records()
    for r in records:
        r["window_start"] = r["window_end"] = None
    assert "x: window last offset" in render_drift_report(records)
    for r in records:
        r["window_first_offset"] = r["window_last_offset"] = None
    assert "x: record" in render_drift_report(records)


def test_cli_report_from_jsonl(tmp_path: Path) -> None:
    records = drift_records()
    source = tmp_path / "drift.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    assert load_records(source) == records
    output = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(app, ["report", "--input", str(source), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_text() == render_drift_report(records)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"incident_id": "x"}) + "\n")
    result = CliRunner().invoke(app, ["report", "--input", str(bad), "--output", str(output)])
    assert result.exit_code == 1
    assert re.search(r"bad\.jsonl:1: missing field\(s\): status, detector", result.output)


def test_two_sample_tests_and_what_raised_each_incident() -> None:
    settings = DriftSettings(
        window_events=100, check_events=50, min_window_events=1, clear_windows=1,
        cooldown_windows=0,
    )  # fmt: skip
    monitor = DriftMonitor(profile(), "shuttle-gbm", "3", settings, clock=lambda: T0 + 5)
    calm = np.array([[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [1.5, 1.5]] * 10)
    hot = calm.copy()
    hot[:, 0] = 1.5
    # temp turns hot at the start of the fourth window: the hop at its middle opens.
    matrix = np.concatenate([calm] * 6 + [hot] * 3 + [calm] * 4)
    records = []
    for a in range(0, len(matrix), 25):
        offsets = np.arange(a, a + 25)
        records += monitor.update(matrix[a : a + 25], None, offsets, T0 + offsets)
    assert records[0]["hop"] is True and records[0]["trigger"] in ("ks", "chi2")
    page = render_drift_report(records)
    assert "<h2>Two-sample tests: KS and chi-squared</h2>" in page
    assert " (hop)</td>" in page
    assert "No distribution records." in page
    [temp] = incidents(records)
    assert temp["raised_by"][0] == records[0]["trigger"]
    assert "psi" in temp["raised_by"]
