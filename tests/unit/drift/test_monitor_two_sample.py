"""The two-sample tests through DriftMonitor: hop opens, one incident per target, the
incident logic (hysteresis, cooldown, retrain) unchanged, the score's distribution.

Seeded or exact streams; every expected status and offset follows from the stream.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from models.profile import FeatureProfile, ReferenceProfile
from schemas.serde import AvroSerde, JsonSerde
from streams.drift.monitor import DriftMonitor, DriftSettings
from tests.unit.drift.profiles import T0

CALM = np.array([[-1.0], [1.0]] * 500)  # exactly half in each bin, in every 100 events


def sensitive_profile() -> ReferenceProfile:
    """One feature, half below 0, from a reference of a million events (a tight null)."""
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name="x", kind="continuous", edges=[0.0], reference_fractions=[0.5, 0.5],
                count=1_000_000, min=-1, max=1, mean=0, std=1, hard_min=-10, hard_max=10,
            )
        ]
    )  # fmt: skip


def stream(*hot: tuple[int, int], n: int = 8_000) -> np.ndarray:
    """Calm rows, all in the upper bin over the ``[start, stop)`` ranges."""
    rows = np.tile(CALM, (n // len(CALM), 1))
    for start, stop in hot:
        rows[start:stop] = 1.0
    return rows


def feed(
    monitor: DriftMonitor,
    matrix: np.ndarray | None,
    scores: np.ndarray | None = None,
    batch: int = 250,
) -> list[dict[str, Any]]:
    n = len(matrix) if matrix is not None else len(scores) if scores is not None else 0
    records = []
    for a in range(0, n, batch):
        offsets = np.arange(a, min(n, a + batch))
        records += monitor.update(
            None if matrix is None else matrix[offsets],
            None if scores is None else scores[offsets],
            offsets,
            T0 + offsets,
        )
    return records


def brief(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["status"], r["severity"], r["trigger"], r["hop"], r["window_first_offset"],
         r["window_last_offset"])
        for r in records
    ]  # fmt: skip


SETTINGS = DriftSettings(
    window_events=1_000, check_events=100, min_window_events=1, clear_windows=1,
    cooldown_windows=2,
)  # fmt: skip


def test_an_alarm_inside_a_window_opens_at_the_hop_then_moves_at_window_closes() -> None:
    monitor = DriftMonitor(sensitive_profile(), "m", "1", SETTINGS, clock=lambda: T0)
    # Hot from 1,300 to 1,999; again from 4,300 to 4,999 (in the cooldown); from 7,300 on.
    records = feed(monitor, stream((1_300, 2_000), (4_300, 5_000), (7_300, 8_000)))
    assert brief(records) == [
        # 200 hot events of the last 1,000 at the hop ending at 1,499: opened there.
        ("open", "alert", "chi2", True, 500, 1_499),
        ("update", "alert", "psi", False, 1_000, 1_999),
        # PSI is back to 0, but the hops of this window still see the hot events.
        ("update", "alert", "chi2", False, 2_000, 2_999),
        ("closed", "none", None, False, 3_000, 3_999),
        # 4,300-4,999 falls in the two cooldown windows: nothing opens.
        ("open", "alert", "chi2", True, 6_500, 7_499),
        ("update", "alert", "psi", False, 7_000, 7_999),
    ]
    assert len({r["incident_id"] for r in records[:4]}) == 1
    assert records[4]["incident_id"] == "m:1:psi:x:6500:" + str(T0)
    assert monitor.incidents.trackers["psi", "x"].suppressed == 2
    opened = records[0]
    # The hop record's statistic is PSI over the events judged; the tests say why it opened.
    assert opened["statistic"] == pytest.approx(_psi(0.4, 0.6))
    assert [(t["test"], t["severity"]) for t in opened["tests"]] == [
        ("psi", "none"), ("ks", "alert"), ("chi2", "alert"),
    ]  # fmt: skip
    ks = opened["tests"][1]
    assert ks["statistic"] == pytest.approx(0.1)
    assert ks["threshold"] == pytest.approx(float(monitor.tests.ks_thresholds[0]))  # type: ignore[union-attr]
    # Window closes count as before (hop opens are not window evaluations): windows 1, 2, 4,
    # 5 and 7 at alert (2 and 5 by their hops), 0, 3 and 6 quiet.
    assert monitor.raised == Counter({("psi", "none"): 3, ("psi", "alert"): 5})
    for serde in (AvroSerde("drift_event"), JsonSerde("drift_event")):
        assert [serde.decode(serde.encode(r)) for r in records] == records


def _psi(lower: float, upper: float) -> float:
    """PSI of a two-bin window against the half/half reference."""
    return (lower - 0.5) * np.log(lower / 0.5) + (upper - 0.5) * np.log(upper / 0.5)


def test_a_hop_open_is_counted_once_towards_the_retrain_request() -> None:
    settings = SETTINGS.model_copy(update={"retrain_after_windows": 2, "cooldown_windows": 0})
    monitor = DriftMonitor(sensitive_profile(), "m", "1", settings, clock=lambda: 0)
    records = feed(monitor, stream((1_300, 2_000), n=4_000))
    assert [(r["status"], r["window_last_offset"]) for r in records] == [
        ("open", 1_499),
        ("update", 1_999),  # the first alert window, opened inside it
        ("update", 2_999),
        ("retrain_requested", 2_999),  # the second
        ("closed", 3_999),
    ]


def test_windows_aligned_with_hops_open_at_the_close_as_before() -> None:
    settings = SETTINGS.model_copy(update={"check_events": 1_000})
    monitor = DriftMonitor(sensitive_profile(), "m", "1", settings, clock=lambda: 0)
    records = feed(monitor, stream((1_000, 2_000), n=3_000))
    assert brief(records) == [
        ("open", "alert", "psi", False, 1_000, 1_999),
        ("closed", "none", None, False, 2_000, 2_999),
    ]


def test_without_two_sample_tests_nothing_runs_at_hops() -> None:
    settings = SETTINGS.model_copy(update={"two_sample": False})
    monitor = DriftMonitor(sensitive_profile(), "m", "1", settings, clock=lambda: 0)
    records = feed(monitor, stream((1_300, 2_000), n=4_000), np.zeros(4_000))
    assert monitor.tests is None and monitor.score_tests is None
    assert brief(records) == [
        ("open", "alert", "psi", False, 1_000, 1_999),
        ("closed", "none", None, False, 2_000, 2_999),
    ]
    assert records[0]["tests"] == [
        {"test": "psi", "statistic": records[0]["statistic"], "threshold": 0.25,
         "severity": "alert"}
    ]  # fmt: skip
    assert monitor.latest_tests == {}


def test_the_score_distribution_against_its_first_scores() -> None:
    rng = np.random.default_rng(21)
    settings = SETTINGS.model_copy(update={"score_reference_events": 2_000})
    monitor = DriftMonitor(None, "m", "1", settings, clock=lambda: 0)
    scores = rng.random(7_000)
    scores[4_250:] = rng.random(2_750) ** 2  # same range, mass moved towards 0
    records = feed(monitor, None, scores)
    reference = monitor.score_reference
    assert reference is not None and reference.count == 2_000
    assert reference.n_bins == settings.score_bins
    opened = records[0]
    assert (opened["status"], opened["detector"], opened["target"], opened["hop"]) == (
        "open", "distribution", "score", True,
    )  # fmt: skip
    assert opened["trigger"] in ("ks", "chi2")
    assert opened["statistic"] >= opened["threshold"]
    assert 4_250 <= opened["window_last_offset"] < 4_999
    assert {r["detector"] for r in records} == {"distribution"}
    # Judged from the first full window after the reference: windows ending 2,999 and 3,999.
    assert monitor.raised["distribution", "none"] == 2
    assert set(monitor.latest_tests) == {("score", "ks"), ("score", "chi2")}


def test_adwin_on_the_score_when_chosen() -> None:
    settings = SETTINGS.model_copy(update={"score_detector": "adwin"})
    monitor = DriftMonitor(None, "m", "1", settings, clock=lambda: 0)
    scores = np.concatenate([np.full(3_000, 0.1), np.full(3_000, 0.9)])
    records = feed(monitor, None, scores)
    assert monitor.score_tests is None
    first = records[0]
    assert (first["status"], first["detector"], first["target"], first["trigger"]) == (
        "open", "adwin", "score", "adwin",
    )  # fmt: skip
    assert monitor.adwin["score"].n_seen == 6_000
