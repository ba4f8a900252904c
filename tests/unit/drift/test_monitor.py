"""DriftMonitor: incidents through the whole monitor, records, ADWIN streams, Avro, contract.

Seeded throughout; every expected value is exact or hand-computed.
"""

from __future__ import annotations

import doctest
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

import streams.drift.monitor
from models.datasets import shuttle
from models.profile import ReferenceProfile, build_profile
from models.train import split
from schemas.serde import AvroSerde
from streams.drift.monitor import DriftMonitor, DriftSettings
from streams.drift.psi import DEFAULT_EPSILON
from tests.unit.drift.profiles import T0, two_bin_profile


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
    assert monitor.incidents.trackers["psi", "x"].suppressed == 3


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
    # The score is judged once its reference (20,000 scores) and a first window are in.
    assert monitor.raised == Counter({("psi", "none"): 180, ("distribution", "none"): 18})
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
    # PSI alone: its alert comes at the close of the window that holds the change.
    settings = DriftSettings(two_sample=False)
    monitor = DriftMonitor(profile, "shuttle-gbm", "1", settings, clock=lambda: 0)
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
    assert result.attempted >= 7
    assert result.failed == 0
