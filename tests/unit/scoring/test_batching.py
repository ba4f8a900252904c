"""Latency-aware batching: the cap follows the cost per record while the loop keeps up,
doubles under a backlog, stays within max_batch; the target is judged on records."""

from __future__ import annotations

import doctest

import pytest

from streams.scoring import batching
from streams.scoring.batching import MIN_BATCH, BatchSizer, LatencyTarget


def test_docstring_examples() -> None:
    assert doctest.testmod(batching).failed == 0


def test_keeping_up_caps_the_batch_at_half_the_target_of_work() -> None:
    sizer = BatchSizer(target_ms=20, max_batch=5000)
    sizer.observe(taken=50, seconds=50 * 40e-6)  # 40 µs per record
    assert sizer.limit == 250  # 10 ms / 40 µs
    assert not sizer.backlog


def test_a_backlog_doubles_the_cap_up_to_max_batch_then_it_comes_back() -> None:
    sizer = BatchSizer(target_ms=20, max_batch=1000, initial=100)
    limits = []
    for _ in range(6):
        sizer.observe(taken=sizer.limit, seconds=sizer.limit * 100e-6)  # full every time
        limits.append(sizer.limit)
    # Up to max_batch even at a high cost per record: a cap that shrank with the cost
    # would shrink the batches as a busy machine inflates their fixed cost, and drain a
    # backlog slower (README, "Latency-aware batching").
    assert limits == [200, 400, 800, 1000, 1000, 1000]
    assert sizer.backlog
    sizer.observe(taken=10, seconds=10 * 100e-6)  # drained: back to 10 ms of work
    assert (sizer.limit, sizer.backlog) == (100, False)


def test_the_cap_never_leaves_min_batch_and_max_batch() -> None:
    slow = BatchSizer(target_ms=1, max_batch=1000)
    slow.observe(taken=5, seconds=1.0)
    assert slow.limit == MIN_BATCH
    fast = BatchSizer(target_ms=1000, max_batch=300)
    fast.observe(taken=5, seconds=5e-6)
    assert fast.limit == 300
    tiny = BatchSizer(target_ms=1, max_batch=4)
    tiny.observe(taken=4, seconds=1.0)
    assert tiny.limit == 4


def test_an_empty_batch_changes_nothing() -> None:
    sizer = BatchSizer(target_ms=20, max_batch=1000, initial=300)
    sizer.observe(taken=0, seconds=0.0)
    assert (sizer.limit, sizer.cost_s) == (300, None)


def test_latency_target_is_met_with_at_most_one_percent_of_records_over() -> None:
    target = LatencyTarget(10.0)
    target.observe(990, 0.009)
    target.observe(10, 0.011)
    assert (target.records, target.over, target.met) == (1000, 10, True)
    target.observe(1, 0.5)
    assert not target.met
    assert target.as_dict(BatchSizer(target_ms=10, max_batch=100))["records_over_target"] == 11


def test_latency_target_now_forgets_an_old_slow_batch() -> None:
    target = LatencyTarget(10.0)
    target.observe(100, 0.5)
    assert not target.met_now
    for _ in range(60):
        target.observe(100, 0.001)
    assert target.met_now and not target.met


@pytest.mark.parametrize("seconds", [0.0099, 0.01])
def test_exactly_the_target_is_within_it(seconds: float) -> None:
    target = LatencyTarget(10.0)
    target.observe(5, seconds)
    assert target.over == 0
