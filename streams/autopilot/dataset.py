"""The training window: valid events joined with their labels, and where they came from.

The events and labels topics are read back (:func:`read_recent`: the newest
``max_rows`` records of each partition, up to the ones produced after the read
began, so a stream that keeps flowing does not keep the read going), and
:func:`join_window` keeps the events whose event time is inside the window,
whose every feature is present, finite and inside the champion's hard range
(what the processor would score rather than dead-letter), and whose label
arrived; the last label of an event wins, the first copy of a replayed event
wins. What was left out is counted by reason.

The window's lineage names exactly what it holds: the topics, the offset range
of each partition the rows came from, the row count, and the SHA-256 of the
feature matrix and labels.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from connectors.kafka import Consumer, TopicPartition, client_id
from connectors.topic_reader import READER_GROUP, RawRecord
from schemas.errors import DecodeError
from schemas.serde import Serde
from schemas.settings import KafkaSettings

Task = Literal["classification", "regression"]


@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str
    partition: int
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]={self.first}-{self.last}"


@dataclass(frozen=True)
class TrainingWindow:
    """Rows of one window, aligned: features, label, event time; and their lineage."""

    feature_names: list[str]
    X: npt.NDArray[np.float64]
    #: Class names (classification) or true values (regression).
    y: np.ndarray
    event_time: npt.NDArray[np.int64]
    since_ms: int
    until_ms: int
    sources: list[PartitionRange] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def data_sha256(self) -> str:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.X).tobytes())
        if self.y.dtype == object:
            digest.update("\x1f".join(str(v) for v in self.y.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(self.y).tobytes())
        return digest.hexdigest()

    def class_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in Counter(self.y.tolist()).items()}

    def lineage(self) -> dict[str, str]:
        """Registry tags naming the data: topics, offset ranges, rows, hash, window."""
        topics = sorted({r.topic for r in self.sources})
        return {
            "lineage.source_topics": ",".join(topics),
            "lineage.offsets": ",".join(str(r) for r in self.sources),
            "lineage.rows": str(self.rows),
            "lineage.data_sha256": self.data_sha256,
            "lineage.window_start_ms": str(self.since_ms),
            "lineage.window_end_ms": str(self.until_ms),
        }

    def split(self, holdout_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the training part and of the held-out part: the newest
        ``holdout_fraction`` of the rows by event time (a model is judged on what comes
        after what it learnt from, as it will be once it serves)."""
        order = np.argsort(self.event_time, kind="stable")
        cut = self.rows - max(1, round(self.rows * holdout_fraction))
        return np.sort(order[:cut]), np.sort(order[cut:])


def read_recent(
    kafka: KafkaSettings,
    topic: str,
    max_rows: int,
    *,
    idle_s: float = 0.5,
    first_record_s: float = 15.0,
    timeout_s: float = 120.0,
) -> list[RawRecord]:
    """The newest ``max_rows`` records of each partition of ``topic`` produced before this
    call ([] for a topic that does not exist, or holds nothing).

    Why not :func:`connectors.topic_reader.read_partition_range` up to the end offsets: the
    embedded broker understates a partition's end by up to one producer batch (the newest
    records, which a retraining needs most), and reading on until idle never ends while the
    stream flows. So each partition is read from ``end - max_rows`` until a record produced
    after the read began (its create time), or ``idle_s`` without a record once records
    came (the first may take ``first_record_s``: the consumer connects and fetches first).
    """
    started_ms = int(time.time() * 1000)
    consumer = Consumer(kafka, group_id=READER_GROUP, client_id=client_id("autopilot-train"))
    try:
        partitions = [p for p in consumer.offsets(topic, timeout=10.0) if p.high > p.low]
        if not partitions:
            return []
        consumer.assign(
            [TopicPartition(topic, p.partition, max(p.low, p.high - max_rows)) for p in partitions]
        )
        open_partitions = {p.partition for p in partitions}
        records: list[RawRecord] = []
        began = time.monotonic()
        last: float | None = None
        while open_partitions and time.monotonic() < began + timeout_s:
            messages = consumer.consume(2000, 0.1)
            now = time.monotonic()
            waited = now - began if last is None else now - last
            if messages:
                last = now
            elif waited >= (first_record_s if last is None else idle_s):
                break
            for message in messages:
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None or partition not in open_partitions:
                    continue
                _, created_ms = message.timestamp()  # -1 when the broker keeps none
                if created_ms > started_ms:
                    open_partitions.discard(partition)  # the rest came after the read began
                    continue
                records.append(RawRecord(partition, offset, message.key(), message.value()))
    finally:
        consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _ranges(topic: str, used: list[tuple[int, int]]) -> list[PartitionRange]:
    bounds: dict[int, tuple[int, int]] = {}
    for partition, offset in used:
        low, high = bounds.get(partition, (offset, offset))
        bounds[partition] = (min(low, offset), max(high, offset))
    return [PartitionRange(topic, p, lo, hi) for p, (lo, hi) in sorted(bounds.items())]


def _decoded(records: Sequence[RawRecord], serde: Serde, skipped: Counter[str], what: str) -> list:
    out: list[tuple[RawRecord, dict[str, Any]]] = []
    for record in records:
        if record.value is None:
            continue
        try:
            out.append((record, serde.decode(record.value)))
        except DecodeError:
            skipped[f"undecodable_{what}"] += 1
    return out


def join_window(
    events: Sequence[RawRecord],
    labels: Sequence[RawRecord],
    *,
    event_serde: Serde,
    label_serde: Serde,
    topics: tuple[str, str],
    feature_names: Sequence[str],
    lower: npt.NDArray[np.float64],
    upper: npt.NDArray[np.float64],
    since_ms: int,
    until_ms: int,
    task: Task,
    classes: Sequence[str] = (),
) -> TrainingWindow:
    """The labelled, valid events of ``[since_ms, until_ms]`` (see the module docstring)."""
    skipped: Counter[str] = Counter()
    truth: dict[str, tuple[Any, int, int]] = {}  # event id -> (label, partition, offset)
    for record, label in _decoded(labels, label_serde, skipped, "labels"):
        value = label.get("label") if task == "classification" else label.get("value")
        if value is None:
            skipped["label_of_another_kind"] += 1
            continue
        truth[str(label["event_id"])] = (value, record.partition, record.offset)
    known = set(classes)
    names = list(feature_names)
    seen: set[str] = set()
    rows: list[list[float]] = []
    ys: list[Any] = []
    times: list[int] = []
    used_events: list[tuple[int, int]] = []
    used_labels: list[tuple[int, int]] = []
    for record, event in _decoded(events, event_serde, skipped, "events"):
        event_id = str(event["event_id"])
        if event_id in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(event_id)
        at = int(event["event_time"])
        if not since_ms <= at <= until_ms:
            skipped["outside_window"] += 1
            continue
        label = truth.get(event_id)
        if label is None:
            skipped["unlabelled"] += 1
            continue
        features = event["features"]
        row = [features.get(name) for name in names]
        if any(not isinstance(v, int | float) or not math.isfinite(v) for v in row):
            skipped["invalid_features"] += 1
            continue
        value, partition, offset = label
        if task == "classification" and known and str(value) not in known:
            skipped["unknown_class"] += 1
            continue
        rows.append([float(v) for v in row])
        ys.append(str(value) if task == "classification" else float(value))
        times.append(at)
        used_events.append((record.partition, record.offset))
        used_labels.append((partition, offset))
    X = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    inside = np.all((lower <= X) & (upper >= X), axis=1) if len(rows) else np.ones(0, bool)
    skipped["out_of_range"] += int((~inside).sum())
    keep = np.flatnonzero(inside)
    y = np.array(ys, dtype=object if task == "classification" else np.float64)[keep]
    return TrainingWindow(
        feature_names=names,
        X=X[keep],
        y=y,
        event_time=np.array(times, dtype=np.int64)[keep],
        since_ms=since_ms,
        until_ms=until_ms,
        sources=_ranges(topics[0], [used_events[i] for i in keep.tolist()])
        + _ranges(topics[1], [used_labels[i] for i in keep.tolist()]),
        skipped={k: v for k, v in sorted(skipped.items()) if v},
    )
