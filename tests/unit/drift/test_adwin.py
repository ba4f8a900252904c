"""ADWIN on one stream: a step found with the means either side, river's own detections, quiet
on a stationary stream. Seeded throughout."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import streams.drift.adwin
from streams.drift.adwin import AdwinMonitor


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


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.adwin, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4
    assert result.failed == 0
