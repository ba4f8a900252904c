"""Windows: exact splits at count boundaries, offsets and event-time bounds, time windows."""

from __future__ import annotations

import doctest

import numpy as np

import streams.drift.windows
from streams.drift.windows import Windower
from tests.unit.drift.profiles import T0


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


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.windows, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0
