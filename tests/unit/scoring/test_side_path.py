"""BackgroundWorker: a bounded queue whose overflow is dropped and counted, errors counted
and kept, drain and close. A gate the test opens holds the worker mid-item, so "the
worker is behind" is a fixed state, not a race."""

from __future__ import annotations

import logging
import threading

import pytest

from streams.scoring.side_path import BackgroundWorker


class Gate:
    """A handler that records items; while closed it holds the worker on the item it took."""

    def __init__(self, *, fail_on: frozenset[int] = frozenset()) -> None:
        self.fail_on = fail_on
        self.handled: list[int] = []
        self.entered = threading.Event()
        self.opened = threading.Event()

    def open(self) -> None:
        self.opened.set()

    def __call__(self, item: int) -> None:
        self.entered.set()
        assert self.opened.wait(10), "the test never opened the gate"
        if item in self.fail_on:
            raise ValueError(f"item {item} is bad")
        self.handled.append(item)


def running(name: str) -> bool:
    """Whether a worker thread of that name is alive (each test names its worker apart)."""
    return any(t.name == name for t in threading.enumerate())


def test_items_are_handled_in_order_and_counted() -> None:
    gate = Gate()
    gate.open()
    worker: BackgroundWorker[int] = BackgroundWorker("orderly", gate, max_pending=8)
    assert [worker.submit(i) for i in range(5)] == [True] * 5
    assert worker.drain()
    assert gate.handled == [0, 1, 2, 3, 4]
    assert (worker.submitted, worker.processed, worker.dropped, worker.errors) == (5, 5, 0, 0)
    assert worker.last_error is None
    worker.close()


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    gate = Gate()
    worker: BackgroundWorker[int] = BackgroundWorker("behind", gate, max_pending=2)
    assert worker.submit(0)
    assert gate.entered.wait(10)  # the worker holds item 0: the queue is empty again
    accepted = [worker.submit(i) for i in range(1, 7)]
    assert accepted == [True, True, False, False, False, False]
    assert (worker.submitted, worker.dropped) == (3, 4)
    gate.open()
    assert worker.drain()
    assert gate.handled == [0, 1, 2]
    assert (worker.processed, worker.errors) == (3, 0)
    # once it has caught up, it takes items again
    assert worker.submit(7)
    worker.close()
    assert gate.handled == [0, 1, 2, 7]
    assert (worker.submitted, worker.dropped, worker.processed) == (4, 4, 4)


def test_errors_are_counted_the_last_one_kept_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate(fail_on=frozenset({1, 3}))
    gate.open()
    worker: BackgroundWorker[int] = BackgroundWorker("flaky", gate, max_pending=8)
    with caplog.at_level(logging.ERROR, logger="streams.scoring.side_path"):
        for i in range(5):
            assert worker.submit(i)
        assert worker.drain()
    assert gate.handled == [0, 2, 4]
    assert (worker.submitted, worker.processed, worker.errors) == (5, 3, 2)
    assert worker.last_error == "ValueError: item 3 is bad"
    assert [r.getMessage() for r in caplog.records] == [
        "flaky failed (1 so far): ValueError: item 1 is bad",
        "flaky failed (2 so far): ValueError: item 3 is bad",
    ]
    worker.close()


def test_drain_waits_for_what_is_queued_and_says_when_it_could_not() -> None:
    gate = Gate()
    worker: BackgroundWorker[int] = BackgroundWorker("slow", gate, max_pending=4)
    assert worker.drain(timeout=0.05)  # nothing submitted: drained at once
    worker.submit(0)
    worker.submit(1)
    assert gate.entered.wait(10)
    assert not worker.drain(timeout=0.05)  # held: not everything was handled
    gate.open()
    assert worker.drain()
    assert gate.handled == [0, 1]
    worker.close()


def test_close_handles_what_is_queued_then_stops_the_thread() -> None:
    gate = Gate()
    gate.open()
    worker: BackgroundWorker[int] = BackgroundWorker("closing", gate, max_pending=16)
    assert running("closing")
    for i in range(10):
        worker.submit(i)
    worker.close()
    assert gate.handled == list(range(10))
    assert worker.processed == 10
    assert not running("closing")


def test_close_gives_up_after_its_timeout_when_the_handler_is_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    worker: BackgroundWorker[int] = BackgroundWorker("stuck", gate, max_pending=1)
    worker.submit(0)
    assert gate.entered.wait(10)
    worker.submit(1)  # the queue is full: no room for the stop signal
    with caplog.at_level(logging.WARNING, logger="streams.scoring.side_path"):
        worker.close(timeout=0.05)
    assert [r.getMessage() for r in caplog.records] == ["stuck did not stop in time"]
    assert running("stuck")
    gate.open()
    worker.close()
    assert gate.handled == [0, 1]
    assert not running("stuck")
