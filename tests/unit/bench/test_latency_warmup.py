"""The latency phase's warm-up: what is left out of a run's measures, and what never is."""

from __future__ import annotations

import numpy as np

from streams.bench.latency import steady_counts, steady_records


def test_the_first_seconds_of_a_steady_run_are_left_out() -> None:
    event_ms = np.arange(10_000, dtype=np.float64)  # 10 s at 1,000 events/s
    kept = steady_records(event_ms, warmup_s=2.0)
    assert kept.size == 8_000 and event_ms[kept].min() == 2_000


def test_at_least_the_first_five_percent_are_left_out() -> None:
    event_ms = np.arange(1_000, dtype=np.float64) * 100  # 100 s, a record every 100 ms
    assert steady_records(event_ms, warmup_s=2.0).size == 950


def test_a_burst_from_a_source_that_fell_behind_keeps_half() -> None:
    event_ms = np.full(1_200, 1_700_000_000_000.0)  # every event stamped the same ms
    event_ms[:10] -= 50
    kept = steady_records(event_ms, warmup_s=0.5)
    assert kept.size == 600


def test_records_are_taken_in_event_time_order() -> None:
    event_ms = np.array([5_000.0, 0.0, 4_000.0, 1_000.0, 3_000.0])
    assert event_ms[steady_records(event_ms, warmup_s=2.5)].tolist() == [3_000.0, 4_000.0, 5_000.0]
    assert steady_records(np.array([]), warmup_s=2.0).size == 0


def test_the_in_loop_histogram_loses_its_warm_up_unless_that_is_most_of_it() -> None:
    counts = np.array([10, 50, 40, 0])
    assert steady_counts(counts, np.array([10, 20, 0, 0])).tolist() == [0, 30, 40, 0]
    assert steady_counts(counts, np.array([10, 50, 0, 0])).tolist() == [10, 50, 40, 0]
    assert steady_counts(counts, None) is counts
