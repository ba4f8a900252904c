"""WorkerProcess: side-path work in a spawned child, fed through bounded lanes.

The child runs :class:`Recorder` (built by a module-level factory, as the real side sinks
are). What the parent sees is asserted as counts: handled, dropped, errors; the child's
counters and gauges mirrored into the parent's metrics; its health problems mirrored.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from streams.ops.metrics import Health, Metrics
from streams.scoring.side_path import WorkerProcess


class Recorder:
    """A child handler: counts what it handles; ``boom`` raises, ``slow`` takes 1 s."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.health = Health()
        self.seen: list[tuple[str, Any]] = []

    def handle(self, lane: str, item: Any) -> None:
        if item == "boom":
            raise ValueError("bad item")
        if item == "slow":
            time.sleep(1.0)
        if item == "down":
            self.health.problems["redis"] = "unreachable"
        elif item == "up":
            self.health.problems.pop("redis", None)
        self.seen.append((lane, item))
        self.metrics.produced.labels(role=lane).inc()
        self.metrics.store_backlog_events.set(len(self.seen))

    def report(self) -> dict[str, dict[str, Any]]:
        return {"recorder": {"seen": list(self.seen)}}

    def close(self) -> None:
        self.metrics.commits.inc()  # what the child does at close reaches the parent too


def build_recorder() -> Recorder:
    return Recorder()


def build_nothing() -> Recorder:
    raise RuntimeError("no Redis here")


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_items_are_handled_counted_and_the_childs_metrics_and_report_mirrored() -> None:
    metrics, health = Metrics(), Health()
    process = WorkerProcess("recorder", build_recorder, (), metrics=metrics, health=health)
    shadow, store = process.lane("shadow", max_pending=8), process.lane("store", max_pending=8)
    assert process.wait_ready(30)
    assert [shadow.submit(i) for i in range(3)] == [True] * 3
    assert store.submit("down")
    assert shadow.drain() and store.drain()
    wait(lambda: "redis" in health.problems)
    assert store.submit("up") and store.submit("boom")
    assert store.drain()
    assert (shadow.submitted, shadow.processed, shadow.errors, shadow.dropped) == (3, 3, 0, 0)
    assert (store.processed, store.errors, store.last_error) == (2, 1, "ValueError: bad item")
    shadow.close()
    store.close()  # the last lane closed: the child finishes and reports
    assert not process.alive
    assert value(metrics, "streamscore_records_produced_total", role="shadow") == 3
    assert value(metrics, "streamscore_records_produced_total", role="store") == 2
    assert value(metrics, "streamscore_prediction_store_backlog_events") == 5
    assert value(metrics, "streamscore_commits_total") == 1
    assert "redis" not in health.problems
    assert process.report["recorder"]["seen"][:3] == [("shadow", 0), ("shadow", 1), ("shadow", 2)]


def test_a_lane_full_of_batches_in_flight_drops_and_counts_and_never_blocks() -> None:
    process = WorkerProcess("behind", build_recorder, (), metrics=Metrics())
    lane = process.lane("store", max_pending=2)
    assert process.wait_ready(30)
    started = time.monotonic()
    accepted = [lane.submit("slow"), lane.submit("slow"), lane.submit(1), lane.submit(2)]
    assert time.monotonic() - started < 0.5
    assert accepted == [True, True, False, False]
    assert (lane.submitted, lane.dropped) == (2, 2)
    lane.close()
    assert (lane.processed, lane.errors) == (2, 0)


def test_a_child_that_cannot_start_turns_its_lanes_into_counted_drops() -> None:
    health = Health()
    process = WorkerProcess("broken", build_nothing, (), metrics=Metrics(), health=health)
    lane = process.lane("store", max_pending=4)
    assert not process.wait_ready(30)
    assert not lane.submit(1)
    assert lane.dropped == 1
    assert "RuntimeError: no Redis here" in (process.exit_error or "")
    assert "broken" in health.problems
    lane.close()


def test_a_child_killed_mid_batch_counts_what_was_in_flight_as_errors() -> None:
    health = Health()
    process = WorkerProcess("killed", build_recorder, (), metrics=Metrics(), health=health)
    lane = process.lane("shadow", max_pending=4)
    assert process.wait_ready(30)
    assert lane.submit("slow")
    pid = process._process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait(lambda: not process.alive)
    assert (lane.errors, lane.in_flight) == (1, 0)
    assert not lane.submit(2)  # gone: a drop, never a wait
    assert "killed" in health.problems
    lane.close()
