"""Hopping windows of the two-sample tests: the ring of hop counts, spans, alarms, gaps."""

from __future__ import annotations

import doctest

import numpy as np

import streams.drift.hops
from models.profile import FeatureProfile
from streams.drift.hops import HoppingTests
from streams.drift.twosample import BinnedTests
from streams.drift.windows import Window
from tests.unit.drift.profiles import T0


def features() -> list[FeatureProfile]:
    return [
        FeatureProfile(
            name=name, kind="continuous", edges=[-1.0, 0.0, 1.0],
            reference_fractions=[0.2, 0.3, 0.3, 0.2], count=1_000_000, min=-2, max=2,
            mean=0, std=1, hard_min=-9, hard_max=9,
        )
        for name in ("a", "b")
    ]  # fmt: skip


def hop(i: int, events: int = 100) -> Window:
    first = i * events
    return Window(i, events, first, first + events - 1, T0 + first, T0 + first + events - 1)


def test_each_hop_judges_the_sum_of_the_last_window_of_hops() -> None:
    rng = np.random.default_rng(11)
    hops = HoppingTests(features(), window_events=400, hop_events=100, hop_rate=1e-6)
    assert (hops.hops_per_window, hops.window_events) == (4, 400)
    tests = BinnedTests(features(), 400)
    history = []
    for i in range(9):
        counts = np.concatenate([rng.multinomial(100, [0.2, 0.3, 0.3, 0.2]) for _ in range(2)])
        history.append(counts)
        # Counts arrive in pieces within a hop (batches, segments).
        hops.add(np.concatenate([counts[:4], np.zeros(4, dtype=np.int64)]))
        hops.add(np.concatenate([np.zeros(4, dtype=np.int64), counts[4:]]))
        result = hops.close_hop(hop(i))
        if i < 3:
            assert result is None
            continue
        assert result is not None
        window = np.sum(history[-4:], axis=0)
        np.testing.assert_array_equal(result.counts, window)
        np.testing.assert_allclose(result.ks, tests.ks(window, 400))
        np.testing.assert_allclose(result.chi2, tests.chi2(window, 400))
        span = result.span
        assert (span.first_offset, span.last_offset, span.events) == (
            (i - 3) * 100,
            i * 100 + 99,
            400,
        )
        assert (span.start_ms, span.end_ms) == (T0 + (i - 3) * 100, T0 + i * 100 + 99)
    assert hops.hops_judged == 6


def test_alarm_runs_count_once_as_onsets() -> None:
    hops = HoppingTests(features()[:1], window_events=200, hop_events=100, hop_rate=1e-6)
    calm, hot = np.array([20, 30, 30, 20]), np.array([0, 0, 0, 100])
    alarms = []
    for i, counts in enumerate([calm, calm, hot, hot, calm, calm, hot, calm]):
        hops.add(counts)
        result = hops.close_hop(hop(i))
        alarms.append(None if result is None else bool(result.alarm[0]))
    assert alarms == [None, False, True, True, True, False, True, True]
    assert hops.alarm_hops.tolist() == [5]
    assert hops.alarm_onsets.tolist() == [2]


def test_an_incomplete_hop_pauses_judgement_until_the_ring_is_whole_again() -> None:
    hops = HoppingTests(features()[:1], window_events=200, hop_events=100, hop_rate=1e-6)
    calm = np.array([20, 30, 30, 20])
    judged = []
    for i, counts in enumerate([calm, calm, calm // 2, calm, calm, calm]):
        hops.add(counts)  # the third hop counted half of its events (scores missing)
        judged.append(hops.close_hop(hop(i)) is not None)
    assert judged == [False, True, False, False, True, True]


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.hops, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5
    assert result.failed == 0
