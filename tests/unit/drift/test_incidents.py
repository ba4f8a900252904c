"""Incidents: hysteresis, cooldown and retrain per (detector, target); records and their ids."""

from __future__ import annotations

import doctest
from collections import Counter

import streams.drift.incidents
from streams.drift.incidents import Finding, Incidents, IncidentTracker, Severity
from streams.drift.windows import Window
from tests.unit.drift.profiles import T0


def test_incident_tracker_hysteresis_cooldown_and_retrain() -> None:
    tracker = IncidentTracker(clear_windows=2, cooldown_windows=2, retrain_after_windows=3)
    observed = []
    windows: list[tuple[Severity, bool]] = [
        ("warning", False),
        ("alert", False),
        ("alert", False),
        ("alert", False),  # third alert window in a row: retrain
        ("none", False),  # between the clear threshold and warning: not clearing
        ("none", True),
        ("none", True),  # second clear window: closed
        ("alert", False),  # cooldown
        ("alert", False),  # cooldown
        ("alert", False),  # a new incident
    ]
    for severity, clearing in windows:
        observed.append(tracker.observe(severity, clearing=clearing))
    assert observed == [
        ["open"],
        ["update"],
        ["update"],
        ["update", "retrain_requested"],
        ["update"],
        ["update"],
        ["closed"],
        [],
        [],
        ["open"],
    ]
    assert (tracker.suppressed, tracker.incidents, tracker.peak_severity) == (2, 2, "alert")


def test_incidents_write_one_record_per_status_under_one_id() -> None:
    incidents = Incidents("m", "3", clear_windows=1, cooldown_windows=0)
    with_offsets = Window(
        index=0, events=10, first_offset=100, last_offset=109, start_ms=T0, end_ms=T0 + 9
    )
    bare = Window(
        index=1, events=10, first_offset=None, last_offset=None, start_ms=None, end_ms=None
    )
    top = [{"bin": "(0, inf]", "reference": 0.5, "current": 0.8, "contribution": 0.2}]
    drift = Finding("psi", "x", "warning", 0.2, 0.1, clearing=False, top_bins=top)
    calm = Finding("psi", "x", "none", 0.01, 0.1, clearing=True, top_bins=[])
    quiet_score = Finding("adwin", "score", "none", 0.0, 0.002, clearing=True, top_bins=[])

    assert incidents.observe([drift, quiet_score], with_offsets, now=5) == [
        {
            "incident_id": "m:3:psi:x:100:5",
            "status": "open",
            "detector": "psi",
            "target": "x",
            "statistic": 0.2,
            "threshold": 0.1,
            "severity": "warning",
            "trigger": None,
            "hop": False,
            "tests": [],
            "window_first_offset": 100,
            "window_last_offset": 109,
            "window_start": T0,
            "window_end": T0 + 9,
            "window_events": 10,
            "model_name": "m",
            "model_version": "3",
            "top_bins": top,
            "detected_at": 5,
        }
    ]
    assert incidents.open == [("psi", "x")]
    closed = incidents.observe([calm, quiet_score], bare, now=6)
    assert [(r["status"], r["severity"], r["incident_id"]) for r in closed] == [
        ("closed", "none", "m:3:psi:x:100:5")
    ]
    assert incidents.open == []
    # Without offsets a new incident is anchored at the window index.
    [reopened] = incidents.observe([drift], bare, now=7)
    assert (reopened["status"], reopened["incident_id"]) == ("open", "m:3:psi:x:1:7")
    assert incidents.raised == Counter(
        {("psi", "warning"): 2, ("psi", "none"): 1, ("adwin", "none"): 2}
    )
    assert incidents.emitted == Counter({("psi", "warning"): 2, ("psi", "none"): 1})


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.incidents, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0
