"""Drift detection: exact PSI, windows, ADWIN, incidents, records, and the quick bench.

Seeded throughout; every expected value is exact or hand-computed.
"""

from __future__ import annotations

import doctest
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import streams.drift.monitor
from models.datasets import shuttle
from models.profile import FeatureProfile, ReferenceProfile, build_profile
from models.train import split
from schemas.errors import ConfigError
from schemas.serde import AvroSerde
from streams.drift.monitor import (
    DEFAULT_EPSILON,
    AdwinMonitor,
    DriftMonitor,
    DriftSettings,
    FeatureThresholds,
    IncidentTracker,
    PsiMonitor,
    Severity,
    Windower,
    psi,
)

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def two_bin_profile(*names: str) -> ReferenceProfile:
    """Features with one edge at 0: half the reference below, half above."""
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name=name, kind="continuous", edges=[0.0], reference_fractions=[0.5, 0.5],
                count=100, min=-1, max=1, mean=0, std=1, hard_min=-10, hard_max=10,
            )
            for name in names
        ]
    )  # fmt: skip


def discrete_profile() -> ReferenceProfile:
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name="mode", kind="discrete", values=[1.0, 2.0, 3.0],
                reference_fractions=[0.5, 0.3, 0.2, 0.0],
                count=10, min=1, max=3, mean=1.7, std=0.78, hard_min=0, hard_max=9,
            )
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, ReferenceProfile]:
    data = shuttle()
    X_train, _, _, _ = split(data)
    return X_train, build_profile(X_train, data.feature_names)


def feed(
    monitor: DriftMonitor,
    matrix: np.ndarray | None,
    scores: np.ndarray | None = None,
    *,
    batch: int = 1000,
    start: int = 0,
) -> list[dict[str, Any]]:
    n = len(matrix) if matrix is not None else len(scores) if scores is not None else 0
    records = []
    for a in range(0, n, batch):
        b = min(n, a + batch)
        offsets = np.arange(start + a, start + b)
        records += monitor.update(
            None if matrix is None else matrix[a:b],
            None if scores is None else scores[a:b],
            offsets,
            T0 + offsets,
        )
    return records


def summary(records: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(r["status"], r["detector"], r["target"], r["severity"]) for r in records]


# --------------------------------------------------------------------------- psi()


def test_psi_hand_computed_two_bins() -> None:
    value, parts = psi([0.5, 0.5], [75, 25])
    # 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    assert value == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert parts.tolist() == pytest.approx([0.25 * math.log(1.5), 0.25 * math.log(2)], rel=1e-12)


def test_psi_identical_distribution_is_zero() -> None:
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == (0.0, pytest.approx([0.0, 0.0, 0.0]))


def test_psi_empty_bins_use_the_epsilon_floor() -> None:
    eps = DEFAULT_EPSILON
    value, parts = psi([0.5, 0.5, 0.0], [0, 100, 0])
    emptied = (eps - 0.5) * math.log(eps / 0.5)
    assert parts.tolist() == pytest.approx([emptied, 0.5 * math.log(2), 0.0], rel=1e-12)
    assert value == pytest.approx(emptied + 0.5 * math.log(2), rel=1e-12)
    # A bin empty on both sides contributes nothing, whatever the epsilon.
    assert psi([0.5, 0.5, 0.0], [50, 50, 0], epsilon=1e-3)[0] == 0.0
    # A larger epsilon makes an emptied bin count for less.
    assert psi([0.5, 0.5], [0, 10], epsilon=1e-2)[0] < value


def test_psi_rejects_mismatched_or_empty_counts() -> None:
    with pytest.raises(ValueError, match="2 current bins for 3"):
        psi([0.2, 0.3, 0.5], [1, 2])
    with pytest.raises(ValueError, match="empty window"):
        psi([0.5, 0.5], [0, 0])


# --------------------------------------------------------------------------- windows


def test_windower_splits_batches_exactly_at_count_boundaries() -> None:
    windows = Windower(window_events=10)
    got = []
    for n in (7, 7, 7, 1):
        got.append([(a, b, w.index if w else None) for a, b, w in windows.split(n)])
    assert got == [
        [(0, 7, None)],
        [(0, 3, 0), (3, 7, None)],
        [(0, 6, 1), (6, 7, None)],
        [(0, 1, None)],
    ]
    assert windows.events_in_window == 2
    assert Windower(window_events=3).split(7)[1][2] is not None


def test_windower_records_offsets_and_event_time_bounds() -> None:
    windows = Windower(window_events=4)
    offsets = np.array([100, 101, 102, 103, 104])
    times = np.array([T0 + 5, T0 + 1, T0 + 9, T0 + 3, T0 + 20])
    [(_, _, window), (_, _, still_open)] = windows.split(5, offsets, times)
    assert still_open is None
    assert window is not None
    assert (window.first_offset, window.last_offset) == (100, 103)
    assert (window.start_ms, window.end_ms, window.events) == (T0 + 1, T0 + 9, 4)


def test_time_windows_close_at_epoch_aligned_boundaries() -> None:
    windows = Windower(window_events=100, window_seconds=1.0, min_window_events=2)
    times = np.array([T0, T0 + 10, T0 + 999, T0 + 1000, T0 + 1500, T0 + 2100, T0 + 2200])
    segments = windows.split(len(times), np.arange(7), times)
    # T0 is a whole second: boundaries at T0 + 1000, T0 + 2000, ...
    assert [(a, b, w.events if w else None) for a, b, w in segments] == [
        (0, 3, 3),
        (3, 5, 2),
        (5, 7, None),
    ]
    assert segments[1][2] is not None
    assert (segments[1][2].start_ms, segments[1][2].end_ms) == (T0 + 1000, T0 + 1500)


def test_time_window_with_too_few_events_stays_open() -> None:
    windows = Windower(window_events=100, window_seconds=1.0, min_window_events=3)
    times = np.array([T0, T0 + 1001, T0 + 1002, T0 + 2003, T0 + 3004])
    segments = windows.split(len(times), None, times)
    # One event before the first boundary: the window stays open to the next boundary.
    assert [(a, b, w.events if w else None) for a, b, w in segments] == [
        (0, 3, 3),
        (3, 5, None),
    ]


# --------------------------------------------------------------------------- PsiMonitor


def test_psi_monitor_matches_psi_on_every_window_whatever_the_batching() -> None:
    rng = np.random.default_rng(11)
    profile = build_profile(rng.normal(size=(20_000, 3)), ["a", "b", "c"])
    stream = rng.normal(size=(7_300, 3)) * [1.0, 1.3, 1.0] + [0.0, 0.0, 0.4]
    monitor = PsiMonitor(profile, window_events=1_000)
    closed = []
    start = 0
    while start < len(stream):
        stop = min(len(stream), start + int(rng.integers(1, 700)))
        closed += monitor.update(stream[start:stop], np.arange(start, stop))
        start = stop
    assert [w.window.index for w in closed] == list(range(7))
    assert monitor.window_events_seen == 300
    for w in closed:
        first = w.window.index * 1000
        assert (w.window.first_offset, w.window.last_offset) == (first, first + 999)
        chunk = stream[first : first + 1000]
        for j, feature in enumerate(profile.features):
            expected, parts = psi(feature.reference_fractions, feature.bin_counts(chunk[:, j]))
            assert w.psi[j] == pytest.approx(expected, rel=1e-12)
            assert w.contributions[j] == pytest.approx(parts, rel=1e-12)
    assert monitor.latest_psi == pytest.approx(
        dict(zip("abc", closed[-1].psi.tolist(), strict=True))
    )


def test_discrete_feature_vanishing_category_and_unseen_values() -> None:
    monitor = PsiMonitor(discrete_profile(), window_events=10)
    # Category 3 vanishes; 1 event of an unseen value lands in "other".
    [window] = monitor.update(np.array([[1.0]] * 5 + [[2.0]] * 4 + [[7.0]]))
    eps = DEFAULT_EPSILON
    expected = (
        0.0  # category 1: 0.5 vs 0.5
        + (0.4 - 0.3) * math.log(0.4 / 0.3)
        + (eps - 0.2) * math.log(eps / 0.2)
        + (0.1 - eps) * math.log(0.1 / eps)
    )
    assert window.psi[0] == pytest.approx(expected, rel=1e-12)
    assert window.current[0].tolist() == [0.5, 0.4, 0.0, 0.1]
    assert window.severity == ["alert"]


def test_per_feature_thresholds_override_the_defaults() -> None:
    profile = two_bin_profile("loose", "strict")
    monitor = PsiMonitor(
        profile,
        window_events=100,
        thresholds={"loose": FeatureThresholds(warning=0.5, alert=1.0)},
    )
    # 70 / 30 on both features: PSI 0.2 ln(0.7 / 0.5) + 0.2 ln(0.5 / 0.3) = 0.1695
    rows = np.array([[-1.0, -1.0]] * 70 + [[1.0, 1.0]] * 30)
    [window] = monitor.update(rows)
    value = 0.2 * math.log(0.7 / 0.5) + 0.2 * math.log(0.5 / 0.3)
    assert window.psi.tolist() == pytest.approx([value, value])
    assert window.severity == ["none", "warning"]


def test_thresholds_for_unknown_features_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\['nope'\]"):
        PsiMonitor(two_bin_profile("x"), thresholds={"nope": FeatureThresholds(warning=1, alert=2)})


def test_drift_settings_validate_thresholds() -> None:
    with pytest.raises(ValidationError):
        DriftSettings(warning=0.3, alert=0.2)
    with pytest.raises(ValidationError):
        FeatureThresholds(warning=0.3, alert=0.2)
    settings = DriftSettings(thresholds={"f1": FeatureThresholds(warning=0.2, alert=0.5)})
    assert settings.thresholds_for("f1").alert == 0.5
    assert settings.thresholds_for("f2") == FeatureThresholds(warning=0.1, alert=0.25)


# --------------------------------------------------------------------------- ADWIN


def test_adwin_monitor_finds_a_step_and_reports_the_means() -> None:
    rng = np.random.default_rng(5)
    monitor = AdwinMonitor("error")
    assert monitor.update((rng.random(20_000) < 0.1).astype(float)) == []
    after = (rng.random(20_000) < 0.2).astype(float)
    detections = []
    for a in range(0, len(after), 1000):
        detections += [(a + d.index, d) for d in monitor.update(after[a : a + 1000])]
    assert len(detections) >= 1
    index, first = detections[0]
    assert 0 < index < 5_000
    assert first.mean_before == pytest.approx(0.1, abs=0.01)
    assert first.mean_after > first.mean_before
    assert first.shift == first.mean_after - first.mean_before
    assert monitor.n_seen == 40_000
    assert monitor.n_detections == len(detections)


def test_adwin_detections_match_river_fed_one_value_at_a_time() -> None:
    from river import drift

    rng = np.random.default_rng(9)
    values = np.concatenate([rng.random(8_000) < 0.1, rng.random(8_000) < 0.3]).astype(float)
    values = np.concatenate([values, values[::-1]])
    reference = drift.ADWIN()
    expected = []
    total, width = 0.0, 0
    for i, value in enumerate(values.tolist()):
        if reference.drift_detected:  # river restarts the window after a detection
            total, width = 0.0, 0
        reference.update(value)
        total, width = total + value, width + 1
        if reference.drift_detected:
            kept, kept_width = reference.total, reference.width
            expected.append((i, (total - kept) / (width - kept_width), kept / kept_width))
    assert len(expected) >= 2

    monitor = AdwinMonitor("error")
    got = []
    for a in range(0, len(values), 999):
        got += [
            (a + d.index, d.mean_before, d.mean_after) for d in monitor.update(values[a : a + 999])
        ]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert np.allclose([g[1:] for g in got], [e[1:] for e in expected], rtol=1e-9)


def test_adwin_monitor_is_quiet_on_a_stationary_stream() -> None:
    rng = np.random.default_rng(6)
    monitor = AdwinMonitor("score")
    for _ in range(100):
        assert monitor.update(rng.beta(1, 12, 1000)) == []
    assert monitor.n_detections == 0
    assert monitor.estimation == pytest.approx(1 / 13, abs=0.005)


# --------------------------------------------------------------------------- incidents


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


def test_monitor_incident_lifecycle_open_update_retrain_closed() -> None:
    settings = DriftSettings(
        window_events=100, min_window_events=1, clear_windows=2, cooldown_windows=0,
        retrain_after_windows=2,
    )  # fmt: skip
    clock = iter(range(1, 100))
    monitor = DriftMonitor(
        two_bin_profile("x"), "m", "7", settings, clock=lambda: next(clock) * 1000
    )
    shifted = np.full((300, 1), 1.0)  # every value in the upper bin
    normal = np.array([[-1.0], [1.0]] * 100)
    records = feed(monitor, np.concatenate([shifted, normal]), batch=64)
    assert [(r["status"], r["severity"]) for r in records] == [
        ("open", "alert"),
        ("update", "alert"),
        ("retrain_requested", "alert"),
        ("update", "alert"),
        ("update", "none"),
        ("closed", "none"),
    ]
    assert {r["incident_id"] for r in records} == {"m:7:psi:x:0:1000"}
    opened = records[0]
    emptied = (DEFAULT_EPSILON - 0.5) * math.log(DEFAULT_EPSILON / 0.5) + 0.5 * math.log(2)
    assert opened["statistic"] == pytest.approx(emptied, rel=1e-12)
    assert opened["threshold"] == 0.25
    assert (opened["window_first_offset"], opened["window_last_offset"]) == (0, 99)
    assert (opened["window_start"], opened["window_end"], opened["window_events"]) == (
        T0,
        T0 + 99,
        100,
    )
    assert opened["top_bins"] == [
        {"bin": "(-inf, 0]", "reference": 0.5, "current": 0.0,
         "contribution": pytest.approx(emptied - 0.5 * math.log(2))},
        {"bin": "(0, inf]", "reference": 0.5, "current": 1.0,
         "contribution": pytest.approx(0.5 * math.log(2))},
    ]  # fmt: skip
    assert records[-1]["statistic"] == 0.0
    assert records[-1]["window_first_offset"] == 400
    assert monitor.emitted == Counter({("psi", "alert"): 4, ("psi", "none"): 2})
    assert monitor.raised == Counter({("psi", "alert"): 3, ("psi", "none"): 2})
    assert monitor.latest_psi == {"x": 0.0}
    assert monitor.open_incidents == []


def test_cooldown_suppresses_a_flapping_feature() -> None:
    settings = DriftSettings(
        window_events=100, min_window_events=1, clear_windows=1, cooldown_windows=3
    )
    monitor = DriftMonitor(two_bin_profile("x"), "m", "1", settings, clock=lambda: 0)
    shifted = np.full((100, 1), 1.0)
    normal = np.array([[-1.0], [1.0]] * 50)
    # Drift and recovery alternate window by window for ten windows.
    stream = np.concatenate([shifted, normal] * 5)
    records = feed(monitor, stream, batch=100)
    # Windows: 0 open, 1 closed, 2-4 cooldown (2 and 4 drift, suppressed), 5 quiet,
    # 6 open again, 7 closed, 8-9 cooldown (8 suppressed).
    assert [(r["status"], r["window_first_offset"]) for r in records] == [
        ("open", 0),
        ("closed", 100),
        ("open", 600),
        ("closed", 700),
    ]
    assert len({r["incident_id"] for r in records}) == 2
    assert monitor.raised["psi", "alert"] == 5
    assert monitor._trackers["psi", "x"].suppressed == 3


def test_stationary_shuttle_stream_raises_nothing(
    reference: tuple[np.ndarray, ReferenceProfile],
) -> None:
    X, profile = reference
    rng = np.random.default_rng(2024)
    stream = X[rng.integers(0, len(X), 200_000)]
    monitor = DriftMonitor(profile, "shuttle-gbm", "1", clock=lambda: 0)
    scores = rng.beta(1, 12, len(stream))
    assert feed(monitor, stream, scores, batch=777) == []
    assert monitor.windows_closed == 20
    assert monitor.raised == Counter({("psi", "none"): 180, ("adwin", "none"): 20})
    assert max(monitor.latest_psi.values()) < 0.01
    assert set(monitor.latest_psi) == set(profile.names)


def test_injected_shift_alerts_in_the_right_window_on_the_right_feature(
    reference: tuple[np.ndarray, ReferenceProfile],
) -> None:
    X, profile = reference
    rng = np.random.default_rng(99)
    stream = X[rng.integers(0, len(X), 60_000)].copy()
    f5 = profile.names.index("f5")
    stream[34_500:, f5] += 0.5 * profile.features[f5].std
    monitor = DriftMonitor(profile, "shuttle-gbm", "1", clock=lambda: 0)
    records = feed(monitor, stream, batch=1000)
    first = records[0]
    assert (first["status"], first["detector"], first["target"], first["severity"]) == (
        "open",
        "psi",
        "f5",
        "alert",
    )
    # The change is at offset 34,500: the window 30,000-39,999 is the first to see it.
    assert (first["window_first_offset"], first["window_last_offset"]) == (30_000, 39_999)
    assert {r["target"] for r in records} == {"f5"}
    assert [r["status"] for r in records] == ["open", "update", "update"]
    assert first["top_bins"][0]["contribution"] == max(b["contribution"] for b in first["top_bins"])
    assert len(first["top_bins"]) == profile.features[f5].n_bins


def test_adwin_score_and_error_streams_through_the_monitor() -> None:
    rng = np.random.default_rng(8)
    settings = DriftSettings(window_events=5_000)
    # Evaluator style: no profile, only the error stream.
    monitor = DriftMonitor(None, "m", "1", settings, clock=lambda: 0)
    errors = np.concatenate([rng.random(30_000) < 0.1, rng.random(20_000) < 0.25]).astype(float)
    records = []
    for a in range(0, len(errors), 1000):
        offsets = np.arange(a, a + 1000)
        records += monitor.update(None, None, offsets, T0 + offsets, errors=errors[a : a + 1000])
    opened = records[0]
    assert summary([opened]) == [("open", "adwin", "error", "alert")]
    assert opened["window_first_offset"] == 30_000
    assert opened["threshold"] == 0.002
    [mean] = opened["top_bins"]
    assert mean["bin"] == "mean"
    assert mean["reference"] == pytest.approx(0.1, abs=0.015)
    assert mean["contribution"] == pytest.approx(mean["current"] - mean["reference"])
    assert opened["statistic"] == pytest.approx(abs(mean["contribution"]))
    assert monitor.adwin["score"].n_seen == 0
    assert monitor.latest_psi == {}


def test_drift_records_encode_and_decode_with_the_avro_schema() -> None:
    settings = DriftSettings(
        window_events=100, min_window_events=1, clear_windows=1, retrain_after_windows=1
    )
    monitor = DriftMonitor(two_bin_profile("x", "y"), "m", "2", settings, clock=lambda: T0)
    rows = np.concatenate([np.full((100, 2), 1.0), np.array([[-1.0, 1.0], [1.0, -1.0]] * 50)])
    scores = np.concatenate([np.full(100, 0.1), np.full(100, 0.9)])
    records = feed(monitor, rows, scores, batch=50)
    assert {r["status"] for r in records} == {"open", "retrain_requested", "closed"}
    serde = AvroSerde("drift_event")
    for record in records:
        assert serde.decode(serde.encode(record)) == record


def test_monitor_contract_errors_and_disabled() -> None:
    monitor = DriftMonitor(two_bin_profile("x"), "m", "1", clock=lambda: 0)
    with pytest.raises(ValueError, match="different lengths"):
        monitor.update(np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="needs the feature matrix"):
        monitor.update(None, np.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        monitor.update(np.zeros((3, 2)), None)
    off = DriftMonitor(
        two_bin_profile("x"), "m", "1", DriftSettings(enabled=False, window_events=1)
    )
    assert off.update(np.full((10, 1), 5.0), None) == []
    assert off.windows_closed == 0


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.monitor, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0


# --------------------------------------------------------------------------- bench


def test_quick_bench_reports_numbers_and_meets_the_targets() -> None:
    from streams.drift.bench import CHANGES, format_table, run_drift_bench

    result = run_drift_bench(seed=7, quick=True)
    rows = {(r["detector"], r["change"]): r for r in result["rows"]}
    for change in CHANGES:
        assert rows["psi", change.name]["runs"] == 9
    for k in ("0.5", "1", "2"):
        row = rows["psi", f"mean +{k} sd"]
        assert row["within_two_windows"] == 1.0
        assert 0 < row["median_delay"] <= 2 * result["window_events"]
    assert rows["adwin", "SEA 8→7 abrupt"]["detection_rate"] == 1.0
    assert [fa["alarms"] for fa in result["false_alarms"] if fa["detector"] == "psi"] == [0]
    assert result["stationary_psi_max"] < 0.01
    assert all(result["targets"].values())
    table = format_table(result)
    assert "| psi | features | mean +0.5 sd | 9 | 100% | 100% |" in table
    assert "false alarms / 1M events" in table
