"""Sensor sources: replay the reference dataset or a CSV / JSONL file into Kafka.

Options mix in a fraction of invalid events (each kind maps to the DLQ reason
the processor must give it) and inject a feature shift from a given event on,
for drift demos and tests. Event ids are deterministic (``<run>-<n>``), so a
test can account for every one.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from connectors.kafka import Producer, client_id
from connectors.kafka_admin import ensure_topics
from connectors.schema_registry import topic_serde
from models.datasets import shuttle
from schemas.errors import ConfigError
from schemas.serde import Serde
from schemas.settings import Settings

#: Invalid kinds the source can inject, and the DLQ reason each must get.
INVALID_KINDS: dict[str, str] = {
    "garbage": "Undecodable",
    "missing_feature": "MissingFeature",
    "nan": "NonFiniteValue",
    "out_of_range": "OutOfRange",
    "oversized": "Oversized",
}
#: JSON can carry a string where a number belongs; Avro cannot.
JSON_ONLY_KINDS: dict[str, str] = {"non_numeric": "NonNumericFeature"}


@dataclass
class SourceOptions:
    count: int = 10_000
    #: Events per second; 0 = as fast as possible.
    rate: float = 0.0
    invalid_fraction: float = 0.0
    #: Event index from which ``shift_feature`` is shifted by ``shift_sigma`` std devs.
    shift_at: int | None = None
    shift_feature: str | None = None
    shift_sigma: float = 1.0
    sensors: int = 50
    seed: int = 7
    run_id: str = "evt"
    #: Oversized events are padded beyond this many bytes.
    max_message_bytes: int = 65_536
    #: A source file's own event_id / sensor_id / event_time are used (False: generated).
    keep_file_fields: bool = True


@dataclass
class ProduceReport:
    produced: int = 0
    valid: int = 0
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    valid_ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    labels: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "valid": self.valid,
            "invalid_by_reason": dict(self.invalid_by_reason),
            "labels": self.labels,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_eps": round(self.produced / self.elapsed_s, 1) if self.elapsed_s else 0.0,
        }


#: Columns of a source file that are not features.
IDENTITY_COLUMNS = ("event_id", "sensor_id", "event_time", "label")
_NOT_FEATURES = {*IDENTITY_COLUMNS, "anomaly", "target"}


@dataclass
class RowFields:
    """A source file's own identity columns, per row (None where the file has none)."""

    event_ids: list[str] | None = None
    sensor_ids: list[str] | None = None
    event_times: list[int] | None = None
    labels: list[str] | None = None


def _epoch_ms(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)


def read_source_file(path: Path) -> tuple[list[str], np.ndarray, RowFields]:
    """Feature names, a float matrix and the file's own identity columns (CSV or JSONL).

    JSONL lines may be full SensorEvents (with a ``features`` object) or flat
    objects of feature values. Columns ``event_id``, ``sensor_id``, ``event_time``
    and ``label`` are kept as the events' own fields, not features.
    """
    records: list[dict[str, Any]]
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        records = [{**{k: v for k, v in r.items() if k != "features"}, **r.get("features", {})}
                   for r in lines]  # fmt: skip
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
    if not records:
        raise ValueError(f"{path} has no rows")
    names = [n for n in records[0] if n not in _NOT_FEATURES]
    matrix = np.array([[float(r[n]) for n in names] for r in records], dtype=np.float64)
    first = records[0]

    def column(name: str) -> list[Any] | None:
        return [r.get(name) for r in records] if name in first else None

    ids, sensors, times, labels = (column(c) for c in IDENTITY_COLUMNS)
    fields = RowFields(
        event_ids=[str(v) for v in ids] if ids else None,
        sensor_ids=[str(v) for v in sensors] if sensors else None,
        event_times=[_epoch_ms(v) for v in times] if times else None,
        labels=[str(v) for v in labels] if labels else None,
    )
    return names, matrix, fields


def rows_from_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Feature names and a float matrix from a CSV (header row) or JSONL file."""
    names, matrix, _ = read_source_file(path)
    return names, matrix


class EventFactory:
    """Builds sensor events (valid and invalid) from a matrix of feature rows."""

    def __init__(
        self,
        names: list[str],
        rows: np.ndarray,
        serde: Serde,
        options: SourceOptions,
        labels: np.ndarray | None = None,
        fields: RowFields | None = None,
    ):
        self.names = names
        #: The file's own event ids, sensor ids and event times, used as they are.
        self.fields = fields or RowFields()
        self.rows = rows
        #: The true label of each row, when known (for publishing delayed labels).
        self.labels = labels
        self.serde = serde
        self.options = options
        self.rng = random.Random(options.seed)  # noqa: S311 - seeded synthetic events, not a secret
        # A file with its own event ids is replayed in its order; otherwise shuffled.
        self.order = (
            np.arange(len(rows))
            if self.fields.event_ids is not None
            else np.random.default_rng(options.seed).permutation(len(rows))
        )
        self.std = rows.std(axis=0)
        self.span = rows.max(axis=0) - rows.min(axis=0)
        self.kinds = list(INVALID_KINDS) + (list(JSON_ONLY_KINDS) if serde.format == "json" else [])
        self.shift_column = names.index(options.shift_feature) if options.shift_feature else None

    def event_id(self, n: int) -> str:
        """The id of event number ``n``: the file's own, else ``<run>-<n>``."""
        ids = self.fields.event_ids
        if ids is None:
            return f"{self.options.run_id}-{n}"
        i, lap = int(self.order[n % len(self.rows)]), n // len(self.rows)
        return ids[i] if lap == 0 else f"{ids[i]}~{lap}"

    def event(self, n: int, now_ms: int) -> dict[str, Any]:
        i = int(self.order[n % len(self.rows)])
        row = self.rows[i].copy()
        o, f = self.options, self.fields
        if self.shift_column is not None and o.shift_at is not None and n >= o.shift_at:
            row[self.shift_column] += o.shift_sigma * self.std[self.shift_column]
        return {
            "event_id": self.event_id(n),
            "sensor_id": f.sensor_ids[i] if f.sensor_ids else f"sensor-{n % o.sensors:04d}",
            "event_time": f.event_times[i] if f.event_times else now_ms,
            "features": dict(zip(self.names, row.tolist(), strict=True)),
        }

    def label(self, n: int) -> str | None:
        """The true label of event number ``n``, if the source knows it."""
        if self.labels is None:
            return None
        return str(self.labels[self.order[n % len(self.rows)]])

    def make(self, n: int, now_ms: int) -> tuple[bytes, bytes, str | None]:
        """(key, value, expected DLQ reason or None) for event number ``n``."""
        event = self.event(n, now_ms)
        key = event["sensor_id"].encode()
        o = self.options
        if o.invalid_fraction <= 0 or self.rng.random() >= o.invalid_fraction:
            return key, self.serde.encode(event), None
        kind = self.kinds[self.rng.randrange(len(self.kinds))]
        features = event["features"]
        name = self.names[self.rng.randrange(len(self.names))]
        if kind == "garbage":
            return key, b"\xff\x00not-an-event" + self.rng.randbytes(8), INVALID_KINDS[kind]
        if kind == "missing_feature":
            del features[name]
        elif kind == "nan":
            features[name] = math.nan
        elif kind == "out_of_range":
            j = self.names.index(name)
            features[name] = float(self.rows[:, j].max() + 10 * max(self.span[j], 1.0))
        elif kind == "oversized":
            # Over 8 bytes per padding entry in every format: well past the limit.
            pad = o.max_message_bytes // 8 + 1
            features.update({f"pad_{i}": 0.0 for i in range(pad)})
        elif kind == "non_numeric":
            features[name] = "not-a-number"
        reason = INVALID_KINDS.get(kind) or JSON_ONLY_KINDS[kind]
        if kind == "nan" and self.serde.format == "json":
            # Strict JSON has no NaN; producers in the wild still send the bare token.
            return key, json.dumps(event).encode(), reason
        return key, self.serde.encode(event), reason


def produce_events(
    producer: Producer,
    topic: str,
    factory: EventFactory,
    *,
    progress: Callable[[int], None] | None = None,
    keep_ids: bool = False,
    labels: LabelSink | None = None,
) -> ProduceReport:
    """Publish ``factory.options.count`` events, paced at ``rate`` if set, and flush.

    With ``labels``, the true label of every valid event is published to the
    labels topic ``labels.delay_s`` after the last event: delayed ground truth,
    as it arrives in practice (after the predictions were made and stored).
    """
    o = factory.options
    report = ProduceReport()
    labelled: list[int] = []
    started = time.monotonic()
    for n in range(o.count):
        if o.rate > 0:
            due = started + n / o.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        key, value, reason = factory.make(n, int(time.time() * 1000))
        producer.produce(topic, value, key)
        report.produced += 1
        if reason is None:
            report.valid += 1
            if keep_ids:
                report.valid_ids.append(factory.event_id(n))
            if labels is not None:
                labelled.append(n)
        else:
            report.invalid_by_reason[reason] += 1
        if n % 1000 == 999:
            producer.poll(0)
            if progress is not None:
                progress(n + 1)
    producer.flush()
    report.elapsed_s = time.monotonic() - started
    if labels is not None and labelled:
        time.sleep(labels.delay_s)
        now = int(time.time() * 1000)
        ids = [factory.event_id(n) for n in labelled]
        records: list[dict[str, Any]] = [
            {"event_id": event_id, "label": factory.label(n), "labelled_at": now}
            for event_id, n in zip(ids, labelled, strict=True)
        ]
        values = labels.serde.encode_many(records)
        keys: list[bytes | None] = [event_id.encode() for event_id in ids]
        producer.produce_many(labels.topic, values, keys)
        producer.flush()
        report.labels = len(records)
    if progress is not None:
        progress(o.count)
    return report


@dataclass(frozen=True)
class LabelSink:
    """Where and when delayed labels go."""

    topic: str
    serde: Serde
    delay_s: float = 10.0


# -- from the settings ---------------------------------------------------------------------


def event_factory(settings: Settings, options: SourceOptions, source: Path | None) -> EventFactory:
    """Events from ``source`` (CSV / JSONL), or the reference dataset with its labels."""
    labels, fields = None, None
    if source is not None:
        names, rows, fields = read_source_file(source)
        labels = np.asarray(fields.labels) if fields.labels is not None else None
        if not options.keep_file_fields:
            fields = None
    else:
        data = shuttle()
        names, rows, labels = data.feature_names, data.X, data.y
    options.max_message_bytes = settings.processor.max_message_bytes
    return EventFactory(names, rows, topic_serde(settings, "events"), options, labels, fields)


def run_source(
    settings: Settings,
    options: SourceOptions,
    *,
    source: Path | None = None,
    keep_ids: bool = False,
    labels_after_s: float | None = None,
    **producer_config: Any,
) -> ProduceReport:
    """Publish events per ``options`` to the events topic and wait for their acknowledgement."""
    ensure_topics(settings)
    factory = event_factory(settings, options, source)
    producer = Producer(
        settings.kafka,
        client_id=client_id("source"),
        linger_ms=settings.processor.linger_ms,
        **producer_config,
    )
    labels = None
    if labels_after_s is not None:
        if factory.labels is None:
            raise ConfigError(
                "--labels-after needs labels: the reference dataset has them, and a source "
                "file has them when it has a 'label' column"
            )
        labels = LabelSink(settings.topics.labels, topic_serde(settings, "labels"), labels_after_s)
    return produce_events(
        producer, settings.topics.events, factory, keep_ids=keep_ids, labels=labels
    )


# -- JSON lines from a person or a pipe ----------------------------------------------------


def _json_kind(value: Any) -> str:
    """What a JSON value is, as a reason names it: ``a string``, ``an array``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    return "an array" if isinstance(value, list) else "an object"


def event_from_json_line(line: bytes, serde: Serde) -> tuple[bytes, bytes]:
    """(key, value) of one JSON line holding a sensor event, encoded with ``serde``.

    The envelope is checked here, so each mistake gets a reason a person can act on: not
    JSON, a missing or unknown field, a value of the wrong JSON type. Encoding is the
    schema's own check of what is left. Feature values are not range-checked: that is the
    processor's validation, whose rejections go to the DLQ. The key is the sensor id, as
    every source sends it. Raises ``ValueError`` whose message is the reason.
    """
    try:
        event = json.loads(line.decode("utf-8").rstrip("\r\n"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(event, dict):
        raise ValueError(f"a sensor event is a JSON object, not {_json_kind(event)}")
    fields = ("event_id", "sensor_id", "event_time", "features")
    missing = [name for name in fields if name not in event]
    if missing:
        raise ValueError(f"missing field{'s' * (len(missing) > 1)} {', '.join(missing)}")
    unknown = [name for name in event if name not in fields]
    if unknown:
        raise ValueError(
            f"unknown field{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
            f"(a sensor event has {', '.join(fields)})"
        )
    for name in ("event_id", "sensor_id"):
        if not isinstance(event[name], str) or not event[name]:
            raise ValueError(f"{name} must be a non-empty string, not {_json_kind(event[name])}")
    event_time = event["event_time"]
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise ValueError(
            f"event_time must be epoch milliseconds (an integer), not {_json_kind(event_time)}"
        )
    features = event["features"]
    if not isinstance(features, dict):
        raise ValueError(f"features must be an object of numbers, not {_json_kind(features)}")
    for name, value in features.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"features.{name} must be a number, not {_json_kind(value)}")
    try:
        encoded = serde.encode(event)
    except (TypeError, ValueError, OverflowError) as exc:  # fastavro's and json's refusals
        raise ValueError(f"does not fit the sensor_event schema as {serde.format}: {exc}") from None
    return event["sensor_id"].encode(), encoded


def produce_json_lines(
    settings: Settings, lines: Iterable[bytes], reject: Callable[[int, str], None]
) -> tuple[int, int]:
    """Send each line of ``lines`` that is a valid sensor event to the events topic.

    Every other line goes to ``reject(line_number, reason)`` (numbers count from 1, blank
    lines included, so they match the input; blank lines themselves are skipped). Lines are
    read as they come, so a pipe that stays open is sent as it flows. Returns (sent,
    rejected) once every sent record is acknowledged.
    """
    ensure_topics(settings)
    serde = topic_serde(settings, "events")
    topic = settings.topics.events
    producer = Producer(
        settings.kafka, client_id=client_id("stdin"), linger_ms=settings.processor.linger_ms
    )
    sent = rejected = 0
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                key, value = event_from_json_line(line, serde)
            except ValueError as exc:
                rejected += 1
                reject(number, str(exc))
                continue
            producer.produce(topic, value, key)
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
    finally:  # also on Ctrl-C: what was read and sent is delivered
        producer.flush()
    return sent, rejected
