"""The prediction-store side path: each served variant's predictions to Redis, off the loop.

Labels arrive later and are joined against these records by the evaluator, so a
prediction that never reaches Redis is a label that finds nothing. While Redis
is down the writer keeps what it could not write in a :class:`Backlog`, capped in
bytes (``store.backlog_max_bytes``), and writes it, oldest first, as soon as
Redis answers again, before the batch in hand. Every prediction that is never
written is counted once as the gap (``streamscore_prediction_store_gap_events_total``
and ``gap_events`` in the run summary, by variant): one dropped from a full
backlog, one handed over while the worker is behind, one still waiting at shutdown.

All writes, the backlog's included, happen on the writer's
:class:`~streams.scoring.side_path.BackgroundWorker` thread; the scoring loop only
hands batches over. Other side paths (the shadow challenger) write through the
same writer with :meth:`StoreWriter.put_batch`, so their rows share the backlog
and the count.

With ``processor.side_paths = "process"`` (the default) the :class:`StoreWriter` lives in
the side-path worker process instead (packing Redis commands holds the interpreter), and
the loop hands its parts to :class:`StoreHandOver`, which sends them there through a
bounded lane: a part the lane cannot take is counted as the gap, as here.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

from connectors.redis_store import StoreUnavailable
from schemas.settings import StoreSettings
from streams.ops.metrics import Health, Metrics
from streams.scoring.pipeline import BatchOutput, RawBatch
from streams.scoring.side_path import BackgroundWorker, Lane

log = logging.getLogger(__name__)

#: Memory estimated per waiting event besides its id: the id's string object, its
#: score and label and their list slots (~150 bytes measured with tracemalloc).
EVENT_BYTES = 160

MIB = 2**20


class PredictionSink(Protocol):
    """Takes one variant's predictions for a batch of events: the store, or the writer."""

    def put_batch(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
    ) -> None: ...


@runtime_checkable
class SensorIndexedSink(Protocol):
    """A sink that also indexes events by sensor for erasure (``PredictionStore``)."""

    def put_batch_indexed(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
        sensor_ids: Sequence[str] | None,
    ) -> None: ...


class StorePart(NamedTuple):
    """One variant's predictions for one batch: the arguments of one ``put_batch``, and the
    events' sensor ids for the erasure index (None: not indexed)."""

    variant: str
    model_version: str
    event_ids: list[str]
    labels: list[str | None] | None
    scores: list[float]
    sensor_ids: list[str] | None = None

    @property
    def nbytes(self) -> int:
        """Estimated memory held: the ids' lengths plus :data:`EVENT_BYTES` per event."""
        size = sum(map(len, self.event_ids)) + EVENT_BYTES * len(self.event_ids)
        return size + (sum(map(len, self.sensor_ids)) if self.sensor_ids is not None else 0)


class Backlog:
    """Parts Redis did not take, oldest first; never more than ``max_bytes`` (estimated).

    Adding past the cap drops whole parts from the oldest end and returns them,
    so the caller counts them as the gap.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: deque[tuple[StorePart, int]] = deque()
        self.events = 0
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, part: StorePart) -> list[StorePart]:
        """Keep ``part`` (newest); returns the parts dropped to stay within the cap."""
        self._push(part)
        dropped = []
        while self.nbytes > self.max_bytes:
            dropped.append(self.pop_oldest())
        return dropped

    def oldest(self) -> StorePart | None:
        return self._parts[0][0] if self._parts else None

    def pop_oldest(self) -> StorePart:
        part, size = self._parts.popleft()
        self.events -= len(part.event_ids)
        self.nbytes -= size
        return part

    def take_all(self) -> list[StorePart]:
        """Empty the backlog; its parts, oldest first."""
        parts = [part for part, _ in self._parts]
        self._parts.clear()
        self.events = self.nbytes = 0
        return parts

    def _push(self, part: StorePart) -> None:
        size = part.nbytes
        self._parts.append((part, size))
        self.events += len(part.event_ids)
        self.nbytes += size


def store_parts(out: BatchOutput) -> list[StorePart]:
    """One part per variant that served rows of the batch: what goes to the store."""
    if out.scores is None or out.scored == 0:
        return []
    parts = []
    stored = out.ids("store")  # pseudonymised as privacy.topics.store says
    labels_all, scores_all, ids_all = out.scores.labels, out.scores.score, stored.event_ids
    sensors_all = stored.sensor_ids
    for variant, version, rows in out.served_parts():
        labels = labels_all[rows].tolist() if labels_all is not None else None
        every = len(rows) == len(ids_all)
        ids = ids_all if every else [ids_all[i] for i in rows]
        sensors = sensors_all if every else [sensors_all[i] for i in rows]
        scores = scores_all[rows].tolist()
        parts.append(StorePart(variant, version, list(ids), labels, scores, list(sensors)))
    return parts


class _PartsIntake(ABC):
    """How predictions reach a store writer: a batch's output (as a side path) or one
    variant's rows (as a :class:`PredictionSink`, for the shadow); ``_hand_over`` takes it."""

    @abstractmethod
    def _hand_over(self, parts: list[StorePart]) -> None:
        """Each writer hands parts over its own way (its thread, or the side-path process)."""

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None:
        parts = store_parts(out)
        if parts:
            self._hand_over(parts)

    def put_batch(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
        sensor_ids: Sequence[str] | None = None,
    ) -> None:
        """Hand over one variant's predictions; never raises, never blocks on Redis."""
        part = StorePart(
            variant,
            model_version,
            list(event_ids),
            None if labels is None else list(labels),
            list(scores),
            None if sensor_ids is None else list(sensor_ids),
        )
        self._hand_over([part])


class StoreWriter(_PartsIntake):
    """Writes each served variant's predictions to Redis, off the hot path, with a backlog.

    ``worker=False``: no thread of its own, every hand-over written at once (the writer
    inside the side-path process, which is off the loop already).
    """

    def __init__(
        self,
        store: PredictionSink,
        metrics: Metrics,
        health: Health | None = None,
        *,
        max_pending: int = 16,
        backlog_max_bytes: int = StoreSettings().backlog_max_bytes,
        worker: bool = True,
    ) -> None:
        self.store = store
        #: The store also keeps the per-sensor erasure index (``privacy erase`` reads it).
        self._indexed = isinstance(store, SensorIndexedSink)
        self.metrics = metrics
        self.health = health
        self.backlog = Backlog(backlog_max_bytes)
        #: Predictions never written, by variant (their sum is the gap metric's share).
        self.gap_by_variant: Counter[str] = Counter()
        #: Hand-overs written in full when their turn came.
        self.batches_written = 0
        #: Events written late, from the backlog.
        self.replayed_events = 0
        self._redis_down = False
        self._gap_lock = threading.Lock()
        # Serialises hand-overs with close(): a part handed over while the worker
        # stops would be queued behind its stop marker and silently lost.
        self._lifecycle = threading.Lock()
        self._closed = False
        self.worker: BackgroundWorker[list[StorePart]] | None = (
            BackgroundWorker("prediction-store", self._write, max_pending=max_pending)
            if worker
            else None
        )

    @property
    def gap_events(self) -> int:
        """Predictions never written, every variant: the writer's share of the gap metric."""
        with self._gap_lock:
            return sum(self.gap_by_variant.values())

    def put_parts(self, parts: list[StorePart]) -> None:
        """Queue parts built elsewhere (:func:`store_parts`, the loop's process)."""
        self._hand_over(parts)

    def flush(self) -> None:
        """Ask the worker to write the backlog now, without waiting for the next batch."""
        self._hand_over([])

    def _hand_over(self, parts: list[StorePart]) -> None:
        with self._lifecycle:
            if self.worker is None and not self._closed:
                self._write(parts)
                return
            if self._closed or self.worker is None:
                # Shutdown: a side path closed after this one (the shadow) drains its
                # last parts; the worker is gone, so they are written on the caller's
                # thread (never the scoring loop, which has stopped).
                self._write(parts)
                self._abandon_backlog()
                return
            accepted = self.worker.submit(parts)
        if not accepted:
            self._count_gap(parts)

    def _write(self, parts: list[StorePart]) -> None:
        """The backlog first (oldest first), then ``parts``; what Redis refuses is kept."""
        if not parts and not self.backlog:
            return  # nothing to write: Redis was not asked, so its state is unknown
        written = replayed = 0
        try:
            while (part := self.backlog.oldest()) is not None:
                self._put(part)
                self.backlog.pop_oldest()
                replayed += len(part.event_ids)
            for part in parts:
                self._put(part)
                written += 1
        except StoreUnavailable as exc:
            for part in parts[written:]:
                self._count_gap(self.backlog.add(part))
            self._down(exc)
            return
        finally:
            self.replayed_events += replayed
            self._show_backlog()
        if parts:
            self.batches_written += 1
        self._up(replayed)

    def _put(self, part: StorePart) -> None:
        if self._indexed and part.sensor_ids is not None:
            cast(SensorIndexedSink, self.store).put_batch_indexed(*part)
        else:
            self.store.put_batch(*part[:5])

    def _count_gap(self, parts: list[StorePart]) -> None:
        if not parts:
            return
        with self._gap_lock:
            for part in parts:
                self.gap_by_variant[part.variant] += len(part.event_ids)
        self.metrics.store_gap.inc(sum(len(p.event_ids) for p in parts))

    def _show_backlog(self) -> None:
        self.metrics.store_backlog_events.set(self.backlog.events)
        self.metrics.store_backlog_bytes.set(self.backlog.nbytes)

    def _down(self, exc: StoreUnavailable) -> None:
        self.metrics.dependency_up.labels(dependency="redis").set(0)
        if not self._redis_down:
            log.warning(
                "Redis unreachable (%s): keeping predictions in memory, up to %.0f MiB",
                exc,
                self.backlog.max_bytes / MIB,
            )
        self._redis_down = True
        if self.health is not None:
            b = self.backlog
            self.health.problems["redis"] = (
                f"unreachable: {b.events} predictions waiting to be written "
                f"({b.nbytes / MIB:.2f} of {b.max_bytes / MIB:.2f} MiB), "
                f"{self.gap_events} lost so far"
            )

    def _up(self, replayed: int) -> None:
        self.metrics.dependency_up.labels(dependency="redis").set(1)
        if self._redis_down:
            log.info("Redis answers again: %d waiting predictions written", replayed)
        self._redis_down = False
        if self.health is not None:
            self.health.problems.pop("redis", None)

    def _abandon_backlog(self) -> None:
        """At shutdown: what is still waiting will never be written; count it as the gap."""
        left = self.backlog.take_all()
        if left:
            events = sum(len(p.event_ids) for p in left)
            log.warning(
                "%d predictions still waiting for Redis at shutdown: counted as gap", events
            )
            self._count_gap(left)
            self._show_backlog()

    def close(self) -> None:
        """Drain, one last try at the backlog (on the worker), stop; what is left is gap."""
        with self._lifecycle:
            if self._closed:
                return
            if self.worker is None:
                self._write([])  # one last try at the backlog
            else:
                self.worker.drain()
                if self.backlog:  # the worker is idle once drained: its backlog can be read
                    self.worker.submit([])
                self.worker.close()
            self._closed = True
            self._abandon_backlog()

    def report(self) -> dict[str, dict[str, Any]]:
        with self._gap_lock:
            by_variant = dict(self.gap_by_variant)
        return {
            "prediction_store": {
                "batches_written": self.batches_written,
                "gap_events": sum(by_variant.values()),
                "gap_events_by_variant": by_variant,
                "replayed_events": self.replayed_events,
                "backlog_events": self.backlog.events,
                "backlog_bytes": self.backlog.nbytes,
                "backlog_max_bytes": self.backlog.max_bytes,
            }
        }


class StoreHandOver(_PartsIntake):
    """The loop's side of a :class:`StoreWriter` that lives in the side-path process.

    Same surface as the writer for the loop and the shadow (a side path and a
    :class:`PredictionSink`): parts go through ``lane``; one the lane cannot take (the
    process is behind, or gone) is counted as the gap here, by variant, like a hand-over
    the writer's own thread could not take. :meth:`report` is the writer's (as the process
    last reported it) with those added.
    """

    def __init__(self, lane: Lane, metrics: Metrics, report: Callable[[], dict[str, Any]]):
        self.lane = lane
        self.metrics = metrics
        self._child_report = report
        self.gap_by_variant: Counter[str] = Counter()

    @property
    def gap_events(self) -> int:
        child = self._child_report().get("prediction_store", {})
        return int(child.get("gap_events", 0)) + sum(self.gap_by_variant.values())

    def _hand_over(self, parts: list[StorePart]) -> None:
        if self.lane.submit(parts):
            return
        for part in parts:
            self.gap_by_variant[part.variant] += len(part.event_ids)
        self.metrics.store_gap.inc(sum(len(p.event_ids) for p in parts))

    def close(self) -> None:
        self.lane.close()

    def report(self) -> dict[str, dict[str, Any]]:
        child = dict(self._child_report().get("prediction_store", {}))
        by_variant: Counter[str] = Counter(child.get("gap_events_by_variant", {}))
        by_variant.update(self.gap_by_variant)
        child["gap_events_by_variant"] = dict(by_variant)
        child["gap_events"] = sum(by_variant.values())
        child.setdefault("batches_written", 0)
        return {"prediction_store": child}
