"""Pure, batch-in/batch-out stages of the scoring loop.

Each stage takes a batch and returns the batch that goes on plus the
:class:`Rejection` of each event it refused. Indices always refer to the
event's place in the polled batch, so a rejection can be matched back to its
original Kafka record (key, bytes, topic, partition, offset) for the DLQ.

    size     → oversized records
    decode   → bytes that are not a SensorEvent (wire format, required fields)
    validate → missing / non-numeric / non-finite / out-of-range features
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np

from schemas.codec import MapLayout
from schemas.errors import DecodeError, Rejection
from schemas.serde import JsonSerde, Serde, to_millis


@dataclass(slots=True)
class EventBatch:
    """Decoded events, column-wise. ``indices`` are places in the polled batch.

    ``features`` holds each event's feature map; with ``layouts`` (the compiled Avro
    decoder's columns) an event whose map matched a learned wire layout has the map's
    bytes instead, read by its ``layouts`` entry (a ``schemas.codec.MapLayout``; None
    for a real map).
    ``floats``: every feature value is a float (read so by a typed decoder), so the
    matrix needs no check of the values' types.
    """

    indices: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    sensor_ids: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)
    layouts: list[MapLayout | None] | None = None
    floats: bool = False

    def __len__(self) -> int:
        return len(self.indices)

    def select(self, keep: Sequence[int]) -> EventBatch:
        """The events at positions ``keep`` (positions in this batch, not indices)."""
        layouts = self.layouts
        return EventBatch(
            indices=[self.indices[i] for i in keep],
            event_ids=[self.event_ids[i] for i in keep],
            sensor_ids=[self.sensor_ids[i] for i in keep],
            event_times=[self.event_times[i] for i in keep],
            features=[self.features[i] for i in keep],
            layouts=None if layouts is None else [layouts[i] for i in keep],
            floats=self.floats,
        )

    def feature_map(self, pos: int) -> Mapping[str, Any]:
        """The features of the event at position ``pos``, as a map."""
        layout = None if self.layouts is None else self.layouts[pos]
        features = self.features[pos]
        return features if layout is None else layout.as_dict(features)

    def feature_maps(self) -> list[Mapping[str, Any]]:
        """Every event's features as a map, in order."""
        if self.layouts is None:
            return self.features
        return [self.feature_map(pos) for pos in range(len(self))]


def check_sizes(
    values: Sequence[bytes | None], max_bytes: int
) -> tuple[list[int], list[Rejection]]:
    """Indices of records within ``max_bytes``; a rejection for each larger or empty one."""
    ok: list[int] = []
    rejected: list[Rejection] = []
    for i, value in enumerate(values):
        if value is None:
            rejected.append(Rejection(i, "decode", "EmptyValue", "record has no value (tombstone)"))
        elif len(value) > max_bytes:
            rejected.append(
                Rejection(i, "size", "Oversized", f"{len(value)} bytes > limit {max_bytes}")
            )
        else:
            ok.append(i)
    return ok, rejected


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _check_fields(record: Mapping[str, Any]) -> str | None:
    """Type check of the envelope for untyped formats (JSON); Avro guarantees it."""
    event_id, sensor_id = record.get("event_id"), record.get("sensor_id")
    event_time = record.get("event_time")
    if (  # the shape every good JSON event has: exact types, checked without a loop
        type(event_id) is str
        and event_id
        and type(sensor_id) is str
        and sensor_id
        and type(event_time) is int
        and _LONG_MIN <= event_time <= _LONG_MAX
        and type(record.get("features")) is dict
    ):
        return None
    for name in ("event_id", "sensor_id"):
        value = record.get(name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string"
    event_time = record.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return "event_time must be epoch milliseconds or ISO-8601"
    if not _LONG_MIN <= event_time <= _LONG_MAX:
        return f"event_time {event_time} is outside the range of a 64-bit long"
    if not isinstance(record.get("features"), Mapping):
        return "features must be an object of feature name to number"
    return None


def decode_events(
    values: Sequence[bytes | None],
    indices: Sequence[int],
    serde: Serde,
    *,
    typed: bool,
) -> tuple[EventBatch, list[Rejection]]:
    """Decode ``values[i]`` for ``i`` in ``indices``. ``typed``: the format enforces types.

    A serde that reads a batch column-wise (``decode_columns``: compiled Avro) does, with
    no dict per event; any other decodes record by record.
    """
    columnar = getattr(serde, "decode_columns", None)
    decoded = columnar(values, indices) if columnar is not None else None
    if decoded is not None:
        columns = decoded.columns
        batch = EventBatch(
            indices=decoded.indices,
            event_ids=columns["event_id"],
            sensor_ids=columns["sensor_id"],
            event_times=columns["event_time"],
            features=columns["features"],
            layouts=decoded.layouts["features"],
        )
        return batch, [Rejection(i, "decode", "Undecodable", str(e)) for i, e in decoded.errors]
    batch = EventBatch()
    rejected: list[Rejection] = []
    if isinstance(serde, JsonSerde) and serde.format == "json" and serde.schema_name == _EVENT:
        _decode_json(values, indices, serde, batch, rejected)
    else:
        for i in indices:
            _decode_one(values[i], i, serde, typed, batch, rejected)
    return batch, rejected


def _decode_one(
    value: bytes | None,
    i: int,
    serde: Serde,
    typed: bool,
    batch: EventBatch,
    rejected: list[Rejection],
) -> None:
    """Decode one record into ``batch``, or its rejection into ``rejected``."""
    try:
        record = serde.decode(value)  # type: ignore[arg-type]
    except DecodeError as exc:
        rejected.append(Rejection(i, "decode", "Undecodable", str(exc)))
        return
    if not typed:
        problem = _check_fields(record)
        if problem is not None:
            rejected.append(Rejection(i, "decode", "InvalidField", problem))
            return
    batch.indices.append(i)
    batch.event_ids.append(record["event_id"])
    batch.sensor_ids.append(record["sensor_id"])
    batch.event_times.append(record["event_time"])
    batch.features.append(record["features"])


_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


_EVENT = "sensor_event"


class _JsonEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A good JSON SensorEvent as msgspec reads it in one typed call: non-empty ids,
    epoch milliseconds or ISO-8601 text, every feature a number (as a float; bools,
    strings and nulls refused), no other field. Exactly what the serde and
    :func:`_check_fields` accept among such records; any other record is decoded by
    them, whose verdict stands. (An unknown field would be skipped unchecked: bytes that
    are not UTF-8 there, or an integer over 4,300 digits, are refused by the serde.)"""

    event_id: _NonEmpty
    sensor_id: _NonEmpty
    event_time: int | str
    features: dict[str, float]


_read_json_event = msgspec.json.Decoder(_JsonEvent).decode


def _decode_json(
    values: Sequence[bytes | None],
    indices: Sequence[int],
    serde: Serde,
    batch: EventBatch,
    rejected: list[Rejection],
) -> None:
    """JSON events: typed by msgspec where they are plain, else one by one by ``serde``."""
    read = _read_json_event
    batch.floats = True
    for i in indices:
        try:
            event = read(values[i])  # type: ignore[arg-type]
            event_time = event.event_time
            if event_time.__class__ is not int:
                event_time = to_millis(event_time, "event_time")
        except (msgspec.DecodeError, DecodeError, RecursionError, ValueError, TypeError):
            event_time = None
        if event_time is None or not _LONG_MIN <= event_time <= _LONG_MAX:
            _decode_one(values[i], i, serde, False, batch, rejected)
            batch.floats = False
            continue
        batch.indices.append(i)
        batch.event_ids.append(event.event_id)
        batch.sensor_ids.append(event.sensor_id)
        batch.event_times.append(event_time)
        batch.features.append(event.features)


def _row_problem(
    features: Mapping[str, Any], names: Sequence[str], lo: np.ndarray, hi: np.ndarray
) -> tuple[str, str]:
    """The first problem of one event's features, as (reason, message)."""
    missing = [n for n in names if n not in features]
    if missing:
        return "MissingFeature", f"missing feature(s): {', '.join(missing)}"
    for n in names:
        v = features[n]
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "NonNumericFeature", f"feature {n} is not a number: {v!r}"[:300]
    for j, n in enumerate(names):
        try:
            v = float(features[n])
        except OverflowError:
            return "OutOfRange", f"feature {n} is too large for a 64-bit float"
        if not math.isfinite(v):
            return "NonFiniteValue", f"feature {n} is {v}"
        if not lo[j] <= v <= hi[j]:
            return "OutOfRange", f"feature {n}={v:g} outside [{lo[j]:g}, {hi[j]:g}]"
    return "Invalid", "invalid features"  # unreachable when called on a flagged row


_NUMBER_TYPES = frozenset({int, float})


def _all_numbers(features: Sequence[Mapping[str, Any]], names: Sequence[str]) -> bool:
    """Whether every event has every feature as a real ``int`` / ``float`` (no bool, no
    string, no None): the exact types of all values of the batch, gathered in C."""
    getter = operator.itemgetter(*names)
    try:
        rows = list(map(getter, features))
    except (KeyError, TypeError):
        return False
    values = rows if len(names) == 1 else itertools.chain.from_iterable(rows)
    return set(map(type, values)) <= _NUMBER_TYPES


def build_matrix(
    batch: EventBatch,
    names: Sequence[str],
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    typed: bool,
) -> tuple[np.ndarray, list[int], list[Rejection]]:
    """One float64 matrix in feature order for the valid events.

    Returns (matrix of valid rows, their positions in ``batch``, rejections).
    The fast path converts the whole batch in one numpy call and checks
    finiteness and ranges vectorised; only rows that fail are examined one by
    one to say why. ``typed=False`` (JSON) first checks every value is a real
    number, because numpy would quietly accept ``"1.5"`` or ``true``.
    """
    if len(batch) == 0:
        return np.empty((0, len(names))), [], []
    suspect: set[int] = set()
    keyed = _keyed_matrix(batch, names)
    if keyed is not None:
        matrix, positions = keyed, np.arange(len(batch))
    else:
        matrix, positions = _mapped_matrix(batch, names, typed or batch.floats, suspect)
    if matrix.shape[0]:
        ok = _in_range(matrix, lo, hi)
        if not ok.all():
            suspect.update(int(p) for p in positions[~ok])
            matrix = matrix[ok]
            positions = positions[ok]
    rejected = []
    for p in sorted(suspect):
        reason, message = _row_problem(batch.feature_map(p), names, lo, hi)
        rejected.append(Rejection(batch.indices[p], "validate", reason, message))
    return matrix, [int(p) for p in positions], rejected


def _in_range(matrix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per row: every value finite and within its feature's [lo, hi]."""
    return np.isfinite(matrix).all(axis=1) & (matrix >= lo).all(axis=1) & (matrix <= hi).all(axis=1)


@functools.lru_cache(maxsize=64)
def _places(keys: tuple[str, ...], names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Where each of ``names`` is in ``keys`` (None: one is missing)."""
    where = {key: place for place, key in enumerate(keys)}
    try:
        return tuple(where[name] for name in names)
    except KeyError:
        return None


def _keyed_matrix(batch: EventBatch, names: Sequence[str]) -> np.ndarray | None:
    """The matrix of a batch whose every event came as the bytes of one wire layout
    holding every name: read by numpy at the names' offsets, in ``names``' order. None
    for any other batch."""
    layouts = batch.layouts
    if not layouts:
        return None
    layout = layouts[0]
    if layout is None or layouts.count(layout) != len(layouts):
        return None
    places = _places(layout.keys, tuple(names))
    if places is None:
        return None
    return layout.matrix(batch.features, places)


def _mapped_matrix(
    batch: EventBatch, names: Sequence[str], typed: bool, suspect: set[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The matrix of every event that has every name as a number, from the feature maps,
    and the events' positions; the position of each other event goes into ``suspect``."""
    features = batch.feature_maps()
    getter = operator.itemgetter(*names)
    if not typed and not _all_numbers(features, names):
        for pos, feats in enumerate(features):
            for n in names:
                v = feats.get(n)
                if v is None or isinstance(v, bool) or not isinstance(v, int | float):
                    suspect.add(pos)
                    break
    rows_pos = [p for p in range(len(batch)) if p not in suspect] if suspect else None
    feats_list = features if rows_pos is None else [features[p] for p in rows_pos]
    try:
        if len(names) == 1:
            matrix = np.array([[getter(f)] for f in feats_list], dtype=np.float64)
        else:
            matrix = np.array([getter(f) for f in feats_list], dtype=np.float64)
        matrix = matrix.reshape(len(feats_list), len(names))
    except (KeyError, TypeError, ValueError, OverflowError):
        # Some row lacks a feature or has a non-number: find them one by one.
        good_rows = []
        good_pos = []
        for p, f in zip(
            rows_pos if rows_pos is not None else range(len(batch)), feats_list, strict=True
        ):
            try:
                row = np.array(getter(f), dtype=np.float64).reshape(len(names))
            except (KeyError, TypeError, ValueError, OverflowError):
                suspect.add(p)
                continue
            good_rows.append(row)
            good_pos.append(p)
        matrix = np.array(good_rows, dtype=np.float64).reshape(len(good_rows), len(names))
        rows_pos = good_pos
    positions = np.arange(len(batch)) if rows_pos is None else np.asarray(rows_pos, dtype=np.int64)
    return matrix, positions


def check_matrix(
    matrix: np.ndarray, names: Sequence[str], lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, list[Rejection]]:
    """The validate stage for rows that arrive as numbers already (an HTTP tensor).

    Returns the positions of the finite, in-range rows and a rejection (index = row)
    for each other one, with the reasons and messages :func:`build_matrix` gives.
    """
    if matrix.shape[0] == 0:
        return np.arange(0), []
    ok = _in_range(matrix, lo, hi)
    rejected = []
    for p in np.flatnonzero(~ok).tolist():
        features = dict(zip(names, matrix[p].tolist(), strict=True))
        reason, message = _row_problem(features, names, lo, hi)
        rejected.append(Rejection(p, "validate", reason, message))
    return np.flatnonzero(ok), rejected
