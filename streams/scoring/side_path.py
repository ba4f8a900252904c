"""What a side path is, and the bounded worker the slow ones run on.

A side path gets each batch's output after the champion's records are produced:
the shadow challenger, the Redis prediction store writer and the drift watch. The
processor knows them only through :class:`SidePath`; the composition root
(:mod:`streams.scoring.compose`) gives each exactly what it uses.

Slow side paths run on a :class:`BackgroundWorker`: one thread and a *bounded*
queue. The loop hands it a batch and moves on; when the worker falls behind the
batch is dropped and counted, never queued without bound, and when it raises the
error is counted and logged: nothing a side path does stops the champion's path.

Work that holds the interpreter (building and encoding records, packing Redis writes)
would still take the loop's time from a thread. :class:`WorkerProcess` runs it in a
process of its own instead, on the other cores, with the same guarantees: each
:class:`Lane` of it has a bounded number of batches in flight (more are dropped and
counted), the child's errors are counted and kept, and closing drains what is in flight.
What the child counts in its own :class:`~streams.ops.metrics.Metrics` and reports in its
:class:`~streams.ops.metrics.Health` is mirrored into the parent's, so ``/metrics`` and
``/readyz`` show it as before.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge

from streams.ops.metrics import Health, Metrics
from streams.scoring.pipeline import BatchOutput, RawBatch

log = logging.getLogger(__name__)

T = TypeVar("T")


class SidePath(Protocol):
    """Sees every batch after the champion's outputs; never fails the batch."""

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None: ...

    def report(self) -> dict[str, dict[str, Any]]:
        """Its part of the run summary, keyed by its stable name."""
        ...

    def close(self) -> None:
        """Drain what is queued (shutdown); outputs it produces are flushed after."""
        ...


class BackgroundWorker(Generic[T]):
    """One thread, a bounded queue, counted drops and errors."""

    def __init__(self, name: str, handle: Callable[[T], None], *, max_pending: int) -> None:
        self.name = name
        self._handle = handle
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize=max_pending)
        self.submitted = 0
        self.dropped = 0
        self.errors = 0
        self.processed = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the worker is behind."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 - counted and logged; the hot path goes on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.errors <= 5 or self.errors % 1000 == 0:
                    log.error("%s failed (%d so far): %s", self.name, self.errors, self.last_error)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is handled (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
            with self._queue.mutex:
                if not self._queue.queue and self.processed + self.errors >= self.submitted:
                    return True
        return self.processed + self.errors >= self.submitted

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("%s did not stop in time", self.name)
            return
        self._thread.join(timeout)


# -- side-path work in a process of its own ----------------------------------------------------


class ChildHandler(Protocol):
    """What a :class:`WorkerProcess` runs in the child; built there by its factory."""

    metrics: Metrics
    health: Health

    def handle(self, lane: str, item: Any) -> None: ...

    def report(self) -> dict[str, dict[str, Any]]: ...

    def close(self) -> None:
        """Finish (write what waits, flush outputs); called once, after the last item."""
        ...


#: (metric family name, sorted label pairs) -> value: a counter's increase, a gauge's value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class MetricsDelta:
    """What changed in a registry since the last call: counter increases, new gauge values.

    Run in the child over its own :class:`Metrics`; :func:`apply_delta` in the parent.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}

    def take(self) -> tuple[Samples, Samples]:
        counters: Samples = {}
        gauges: Samples = {}
        for family in self._metrics.registry.collect():
            if family.type not in ("counter", "gauge"):
                continue
            for sample in family.samples:
                if family.type == "counter" and not sample.name.endswith("_total"):
                    continue  # the _created sample
                labels = tuple(sorted(sample.labels.items()))
                key = (family.type, family.name, labels)
                before = self._seen.get(key, 0.0)
                if sample.value == before:
                    continue
                self._seen[key] = sample.value
                if family.type == "counter":
                    counters[(family.name, labels)] = sample.value - before
                else:
                    gauges[(family.name, labels)] = sample.value
        return counters, gauges


def apply_delta(metrics: Metrics, counters: Samples, gauges: Samples) -> None:
    """Add a child's counter increases to ``metrics`` and set its changed gauges."""
    counter_by_name: dict[str, Counter] = {}
    gauge_by_name: dict[str, Gauge] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            counter_by_name[metric._name] = metric
        elif isinstance(metric, Gauge):
            gauge_by_name[metric._name] = metric
    for (name, labels), increase in counters.items():
        if (counter := counter_by_name.get(name)) is not None:
            (counter.labels(**dict(labels)) if labels else counter).inc(increase)
    for (name, labels), value in gauges.items():
        if (gauge := gauge_by_name.get(name)) is not None:
            (gauge.labels(**dict(labels)) if labels else gauge).set(value)


@dataclass
class Lane:
    """One kind of item a :class:`WorkerProcess` takes, with its own bound and counts.

    The same counts as a :class:`BackgroundWorker`: ``submitted``, ``dropped`` (the lane
    had ``max_pending`` batches in flight, or the child is gone), ``processed``,
    ``errors`` and ``last_error``.
    """

    name: str
    max_pending: int
    process: WorkerProcess
    submitted: int = 0
    dropped: int = 0
    processed: int = 0
    errors: int = 0
    last_error: str | None = None
    closed: bool = field(default=False)

    @property
    def in_flight(self) -> int:
        return self.submitted - self.processed - self.errors

    def submit(self, item: Any) -> bool:
        """Send ``item`` to the child; False (and counted) when the lane is full or gone."""
        return self.process.submit(self, item)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the child has handled everything this lane sent."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0 and time.monotonic() < deadline and self.process.alive:
            time.sleep(0.002)
        return self.in_flight <= 0

    def close(self, timeout: float = 10.0) -> None:
        """Drain; the process stops once every lane of it is closed."""
        self.drain(timeout)
        self.closed = True
        self.process.lane_closed(timeout)


def _child_main(
    factory: Callable[..., ChildHandler], args: tuple[Any, ...], inbox: Any, outbox: Any
) -> None:
    """The child: build the handler, then handle items until the stop marker.

    It ignores SIGINT / SIGTERM (a Ctrl-C reaches the whole process group): the parent
    decides when it stops, after draining. It stops by itself if the parent is gone.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    try:
        handler = factory(*args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which says so
        outbox.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    delta = MetricsDelta(handler.metrics)
    outbox.put(("ready", time.process_time()))

    def report() -> tuple[Any, ...]:
        problems = dict(handler.health.problems)
        return (*delta.take(), problems, handler.report(), time.process_time())

    last_report, unreported = 0.0, False
    while True:
        try:
            message = inbox.get(timeout=REPORT_INTERVAL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the loop's process died: nothing will drain us
                break
            if unreported:  # idle: say what the last items changed
                outbox.put(("report", report()))
                last_report, unreported = time.monotonic(), False
            continue
        if message is None:
            break
        lane, item = message
        error = None
        try:
            handler.handle(lane, item)
        except Exception as exc:  # noqa: BLE001 - counted and kept by the parent's lane
            error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        state = None
        if now - last_report >= REPORT_INTERVAL_S:
            state, last_report = report(), now
        unreported = state is None
        outbox.put(("done", lane, error, state))
    try:
        handler.close()
    except Exception as exc:  # noqa: BLE001 - said, and the parent still gets the last report
        log.error("side-path process: closing failed: %s: %s", type(exc).__name__, exc)
    outbox.put(("closed", report()))


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start a spawned child without it running the parent's ``__main__`` again.

    ``spawn`` re-imports the main script in the child, so a script that builds a processor
    without an ``if __name__ == "__main__"`` guard would build another one there. The
    child needs nothing from ``__main__`` (its factory lives in a module), so it is not
    told about it.
    """
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    try:
        for k in saved:
            if k == "__spec__":
                main.__spec__ = None  # type: ignore[union-attr]
            else:
                delattr(main, k)
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


#: The child sends its metrics, problems and report at most this often, and once idle.
REPORT_INTERVAL_S = 0.1


class WorkerProcess:
    """A spawned child running a :class:`ChildHandler`, fed through bounded :class:`Lane` s.

    ``factory(*args)`` builds the handler in the child (both must pickle: a module-level
    function and plain data). The parent never waits on the child in :meth:`submit`: a
    lane with ``max_pending`` batches in flight drops the next one, and a child that died
    makes every submit a drop. A reader thread takes the child's answers: lane counts,
    the child's metric changes (mirrored into ``metrics``), its health problems (mirrored
    into ``health``) and its report (:attr:`report`).
    """

    def __init__(
        self,
        name: str,
        factory: Callable[..., ChildHandler],
        args: tuple[Any, ...],
        *,
        metrics: Metrics,
        health: Health | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.health = health
        self.lanes: dict[str, Lane] = {}
        #: The child's latest report (its side paths' run-summary parts).
        self.report: dict[str, dict[str, Any]] = {}
        self.exit_error: str | None = None
        #: CPU seconds the child spent handling items (since it was ready), as it last said.
        self.cpu_s = 0.0
        self._cpu_at_ready = 0.0
        self._owned_problems: set[str] = set()
        self._closed = False
        self._start_timeout_s = start_timeout_s
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        self._inbox = context.Queue()
        self._outbox = context.Queue()
        self._process = context.Process(
            target=_child_main,
            args=(factory, args, self._inbox, self._outbox),
            name=name,
            daemon=True,
        )
        with main_module_hidden():
            self._process.start()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()

    def lane(self, name: str, *, max_pending: int) -> Lane:
        lane = self.lanes[name] = Lane(name, max_pending, self)
        return lane

    @property
    def alive(self) -> bool:
        return not self._finished.is_set()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the child has built its handler (the first submit waits for it)."""
        waited = self._ready.wait(self._start_timeout_s if timeout is None else timeout)
        return waited and self.alive

    def submit(self, lane: Lane, item: Any) -> bool:
        if not self._ready.is_set():
            self.wait_ready()
        with self._lock:
            if not self.alive or lane.closed or lane.in_flight >= lane.max_pending:
                lane.dropped += 1
                return False
            lane.submitted += 1
        self._inbox.put((lane.name, item))
        return True

    def lane_closed(self, timeout: float) -> None:
        """Stop the child once every lane is closed: it finishes, reports, exits."""
        if not all(lane.closed for lane in self.lanes.values()):
            return
        self.close(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it finishes what it holds and reports); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            self._inbox.put(None)
        self._finished.wait(timeout)
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("%s did not stop in time: ended", self.name)
            self._process.kill()
            self._process.join(5)
        self._inbox.close()

    def _read(self) -> None:
        while True:
            try:
                message = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if self._process.is_alive():
                    continue
                self._child_gone(f"exited with code {self._process.exitcode}")
                return
            except (EOFError, OSError):
                self._child_gone("its pipe closed")
                return
            kind = message[0]
            if kind == "ready":
                self._cpu_at_ready = message[1]
                self._ready.set()
            elif kind == "failed":
                self._child_gone(f"could not start: {message[1]}")
                return
            elif kind == "done":
                _, name, error, report = message
                lane = self.lanes[name]
                with self._lock:
                    if error is None:
                        lane.processed += 1
                    else:
                        lane.errors += 1
                        lane.last_error = error
                if error is not None and (lane.errors <= 5 or lane.errors % 1000 == 0):
                    log.error("%s %s failed (%d so far): %s", self.name, name, lane.errors, error)
                if report is not None:
                    self._mirror(*report)
            elif kind == "report":
                self._mirror(*message[1])
            elif kind == "closed":
                self._mirror(*message[1])
                self._finished.set()
                self._ready.set()
                return

    def _mirror(
        self,
        counters: Samples,
        gauges: Samples,
        problems: dict[str, str],
        report: dict[str, dict[str, Any]],
        cpu_s: float,
    ) -> None:
        apply_delta(self.metrics, counters, gauges)
        self.report = report
        self.cpu_s = cpu_s - self._cpu_at_ready
        if self.health is None:
            return
        for key in self._owned_problems - problems.keys():
            self.health.problems.pop(key, None)
        self.health.problems.update(problems)
        self._owned_problems = set(problems)

    def _child_gone(self, why: str) -> None:
        """The child ended without being asked: what was in flight is counted as errors."""
        self.exit_error = why
        with self._lock:
            for lane in self.lanes.values():
                lost = lane.in_flight
                if lost > 0:
                    lane.errors += lost
                    lane.last_error = f"{self.name} {why}"
        if self.health is not None:
            self.health.problems[self.name] = f"worker process {why}; its side paths are off"
        log.error("%s %s: its side paths are off, the champion goes on", self.name, why)
        self._finished.set()
        self._ready.set()
