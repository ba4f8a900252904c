"""The pure stages: size check, decode, validate + matrix. Exact rejections and matrices."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from schemas.errors import Rejection
from schemas.serde import AvroSerde, JsonSerde
from streams.scoring.stages import EventBatch, build_matrix, check_sizes, decode_events

NAMES = ["b", "a", "c"]  # feature order of the model: deliberately not alphabetical
LO = np.array([0.0, -1.0, 10.0])
HI = np.array([5.0, 1.0, 20.0])


def batch_of(*features: dict[str, Any], indices: list[int] | None = None) -> EventBatch:
    n = len(features)
    idx = indices if indices is not None else list(range(n))
    return EventBatch(
        indices=idx,
        event_ids=[f"e{i}" for i in idx],
        sensor_ids=["s"] * n,
        event_times=[0] * n,
        features=list(features),
    )


def event(n: int, **features: Any) -> dict[str, Any]:
    return {"event_id": f"e{n}", "sensor_id": f"s{n}", "event_time": 1000 + n, "features": features}


# -- size ---------------------------------------------------------------------------------------


def test_check_sizes_keeps_up_to_the_limit_and_rejects_larger_and_tombstones() -> None:
    values: list[bytes | None] = [b"x" * 10, None, b"x" * 11, b"", b"x" * 9]
    ok, rejected = check_sizes(values, 10)
    assert ok == [0, 3, 4]
    assert rejected == [
        Rejection(1, "decode", "EmptyValue", "record has no value (tombstone)"),
        Rejection(2, "size", "Oversized", "11 bytes > limit 10"),
    ]


def test_check_sizes_empty_batch() -> None:
    assert check_sizes([], 10) == ([], [])


# -- decode -------------------------------------------------------------------------------------


def test_decode_events_avro_columns_and_undecodable_index() -> None:
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = [
        serde.encode(event(0, a=0.5, b=1.0, c=11.0)),
        b"\xff\x00garbage",
        serde.encode(event(2, a=-0.5, b=2.0, c=12.0)),
        serde.encode(event(3, a=0.0, b=3.0, c=13.0)),
    ]
    batch, rejected = decode_events(values, [0, 1, 2], serde, typed=True)
    assert batch.indices == [0, 2]  # index 3 was not asked for
    assert batch.event_ids == ["e0", "e2"]
    assert batch.sensor_ids == ["s0", "s2"]
    assert batch.event_times == [1000, 1002]
    assert batch.feature_maps() == [
        {"a": 0.5, "b": 1.0, "c": 11.0},
        {"a": -0.5, "b": 2.0, "c": 12.0},
    ]
    assert [(r.index, r.stage, r.reason) for r in rejected] == [(1, "decode", "Undecodable")]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**event(0), "event_id": ""}, "event_id must be a non-empty string"),
        ({**event(0), "event_id": 17}, "event_id must be a non-empty string"),
        ({**event(0), "sensor_id": None}, "sensor_id must be a non-empty string"),
        ({**event(0), "event_time": None}, "event_time must be epoch milliseconds or ISO-8601"),
        ({**event(0), "features": [1.0, 2.0]}, "features must be an object"),
        ({**event(0), "features": "a=1"}, "features must be an object"),
    ],
    ids=["empty-id", "int-id", "null-sensor", "null-time", "list-features", "str-features"],
)
def test_decode_events_json_envelope_types_are_invalid_field(
    record: dict[str, Any], message: str
) -> None:
    values: list[bytes | None] = [
        json.dumps(event(0, a=0.0, b=1.0, c=10.0)).encode(),
        json.dumps(record).encode(),
    ]
    batch, rejected = decode_events(values, [0, 1], JsonSerde("sensor_event"), typed=False)
    assert batch.indices == [0]
    assert len(rejected) == 1
    assert (rejected[0].index, rejected[0].stage, rejected[0].reason) == (
        1,
        "decode",
        "InvalidField",
    )
    assert rejected[0].message.startswith(message)


def test_decode_events_json_missing_field_and_non_json_are_undecodable() -> None:
    no_features = event(0)
    del no_features["features"]
    values: list[bytes | None] = [
        json.dumps(no_features).encode(),
        b"not json",
        json.dumps(event(2, a=0.0, b=1.0, c=10.0)).encode(),
    ]
    batch, rejected = decode_events(values, [0, 1, 2], JsonSerde("sensor_event"), typed=False)
    assert batch.indices == [2]
    assert [(r.index, r.stage, r.reason) for r in rejected] == [
        (0, "decode", "Undecodable"),
        (1, "decode", "Undecodable"),
    ]
    assert rejected[0].message == "missing field(s): features"


def test_decode_events_json_iso_time_becomes_millis() -> None:
    record = {**event(0, a=0.0), "event_time": "1970-01-01T00:00:01.5Z"}
    batch, rejected = decode_events(
        [json.dumps(record).encode()], [0], JsonSerde("sensor_event"), typed=False
    )
    assert rejected == []
    assert batch.event_times == [1500]


def test_decode_events_nothing_to_decode() -> None:
    batch, rejected = decode_events([None], [], AvroSerde("sensor_event"), typed=True)
    assert len(batch) == 0
    assert rejected == []


# -- validate + matrix --------------------------------------------------------------------------


@pytest.mark.parametrize("typed", [True, False])
def test_matrix_is_in_feature_order_and_ignores_extra_features(typed: bool) -> None:
    batch = batch_of(
        {"a": 0.5, "b": 1.0, "c": 11.0, "extra": 99.0},
        {"c": 12.0, "a": -0.25, "b": 2.0},
        {"a": 0, "b": 3, "c": 13, "note": "strings elsewhere are ignored"},
        indices=[4, 7, 9],
    )
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=typed)
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(
        matrix, np.array([[1.0, 0.5, 11.0], [2.0, -0.25, 12.0], [3.0, 0.0, 13.0]])
    )
    assert keep == [0, 1, 2]
    assert rejected == []


@pytest.mark.parametrize("typed", [True, False])
def test_boundaries_exactly_at_hard_min_and_max_are_accepted(typed: bool) -> None:
    batch = batch_of({"b": 0.0, "a": -1.0, "c": 10.0}, {"b": 5.0, "a": 1.0, "c": 20.0})
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=typed)
    np.testing.assert_array_equal(matrix, np.array([[0.0, -1.0, 10.0], [5.0, 1.0, 20.0]]))
    assert keep == [0, 1]
    assert rejected == []


def _reasons(rejected: list[Rejection]) -> list[tuple[int, str, str]]:
    return [(r.index, r.stage, r.reason) for r in rejected]


@pytest.mark.parametrize("typed", [True, False])
def test_each_validation_reason_with_its_polled_index(typed: bool) -> None:
    good = {"a": 0.0, "b": 1.0, "c": 10.0}
    batch = batch_of(
        good,
        {"a": 0.0, "c": 10.0},  # b missing
        {**good, "a": math.nan},
        {**good, "b": math.inf},
        {**good, "c": -math.inf},
        {**good, "a": 1.0 + 1e-9},  # just above hard_max
        {**good, "b": -1e-9},  # just below hard_min
        {**good, "c": 15.5},
        indices=[10, 11, 12, 13, 14, 15, 16, 17],
    )
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=typed)
    np.testing.assert_array_equal(matrix, np.array([[1.0, 0.0, 10.0], [1.0, 0.0, 15.5]]))
    assert keep == [0, 7]
    assert _reasons(rejected) == [
        (11, "validate", "MissingFeature"),
        (12, "validate", "NonFiniteValue"),
        (13, "validate", "NonFiniteValue"),
        (14, "validate", "NonFiniteValue"),
        (15, "validate", "OutOfRange"),
        (16, "validate", "OutOfRange"),
    ]
    messages = [r.message for r in rejected]
    assert messages[0] == "missing feature(s): b"
    assert messages[1] == "feature a is nan"
    assert messages[2] == "feature b is inf"
    assert messages[3] == "feature c is -inf"
    assert messages[4] == "feature a=1 outside [-1, 1]"
    assert messages[5] == "feature b=-1e-09 outside [0, 5]"


@pytest.mark.parametrize("value", ["1.5", True, False, None, [1.0], {"v": 1.0}], ids=repr)
def test_json_non_numbers_are_non_numeric_feature(value: Any) -> None:
    """numpy would quietly take "1.5" or true as numbers: the untyped path refuses them."""
    batch = batch_of({"a": 0.0, "b": 1.0, "c": 10.0}, {"a": value, "b": 2.0, "c": 11.0})
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=False)
    np.testing.assert_array_equal(matrix, np.array([[1.0, 0.0, 10.0]]))
    assert keep == [0]
    assert _reasons(rejected) == [(1, "validate", "NonNumericFeature")]
    assert rejected[0].message == f"feature a is not a number: {value!r}"


def test_missing_feature_is_reported_before_a_non_numeric_one() -> None:
    batch = batch_of({"a": "x", "c": 10.0})
    _, _, rejected = build_matrix(batch, NAMES, LO, HI, typed=False)
    assert _reasons(rejected) == [(0, "validate", "MissingFeature")]
    assert rejected[0].message == "missing feature(s): b"


def test_typed_path_accepts_avro_decoded_doubles() -> None:
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = [serde.encode(event(0, a=0.1, b=4.9, c=19.75, z=-3.0))]
    batch, _ = decode_events(values, [0], serde, typed=True)
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=True)
    np.testing.assert_array_equal(matrix, np.array([[4.9, 0.1, 19.75]]))
    assert (keep, rejected) == ([0], [])


def test_json_integers_are_numbers() -> None:
    matrix, keep, rejected = build_matrix(
        batch_of({"a": -1, "b": 5, "c": 10}), NAMES, LO, HI, typed=False
    )
    np.testing.assert_array_equal(matrix, np.array([[5.0, -1.0, 10.0]]))
    assert (keep, rejected) == ([0], [])


def test_json_integer_too_large_for_a_float_is_rejected_not_raised() -> None:
    """A JSON integer like 10**400 is a valid number that no float can hold: bad input."""
    batch = batch_of({"a": 0, "b": 1, "c": 10}, {"a": 10**400, "b": 1, "c": 10})
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=False)
    np.testing.assert_array_equal(matrix, np.array([[1.0, 0.0, 10.0]]))
    assert keep == [0]
    assert [(r.index, r.stage) for r in rejected] == [(1, "validate")]
    assert rejected[0].reason in {"OutOfRange", "NonFiniteValue"}


@pytest.mark.parametrize("typed", [True, False])
def test_all_invalid_batch_gives_an_empty_matrix_of_the_right_width(typed: bool) -> None:
    batch = batch_of(
        {"a": 0.0, "b": 1.0},
        {"a": math.nan, "b": 1.0, "c": 10.0},
        {"a": 5.0, "b": 1.0, "c": 10.0},
        *([] if typed else [{"a": "0", "b": 1.0, "c": 10.0}]),
    )
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=typed)
    assert matrix.shape == (0, 3)
    assert keep == []
    expected = ["MissingFeature", "NonFiniteValue", "OutOfRange"]
    assert [r.reason for r in rejected] == expected + ([] if typed else ["NonNumericFeature"])


def test_all_non_numeric_json_batch_gives_an_empty_matrix_of_the_right_width() -> None:
    """Every row refused before conversion: the matrix must still be [0, n_features]."""
    batch = batch_of({"a": "0", "b": 1.0, "c": 10.0}, {"a": 0.0, "c": 10.0})
    matrix, keep, rejected = build_matrix(batch, NAMES, LO, HI, typed=False)
    assert [r.reason for r in rejected] == ["NonNumericFeature", "MissingFeature"]
    assert keep == []
    assert matrix.shape == (0, 3)


def test_empty_batch() -> None:
    matrix, keep, rejected = build_matrix(EventBatch(), NAMES, LO, HI, typed=True)
    assert matrix.shape == (0, 3)
    assert (keep, rejected) == ([], [])


@pytest.mark.parametrize("typed", [True, False])
def test_single_feature_model(typed: bool) -> None:
    batch = batch_of({"a": 0.5}, {"a": 2.0}, {"b": 0.0}, {"a": -1.0})
    matrix, keep, rejected = build_matrix(
        batch, ["a"], np.array([-1.0]), np.array([1.0]), typed=typed
    )
    np.testing.assert_array_equal(matrix, np.array([[0.5], [-1.0]]))
    assert keep == [0, 3]
    assert [r.reason for r in rejected] == ["OutOfRange", "MissingFeature"]


def test_unbounded_range_accepts_any_finite_value() -> None:
    lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
    batch = batch_of({"a": -1e300, "b": 1e300, "c": 0.0}, {"a": np.inf, "b": 0.0, "c": 0.0})
    matrix, keep, rejected = build_matrix(batch, NAMES, lo, hi, typed=True)
    np.testing.assert_array_equal(matrix, np.array([[1e300, -1e300, 0.0]]))
    assert keep == [0]
    assert [r.reason for r in rejected] == ["NonFiniteValue"]


def test_event_batch_select_keeps_columns_aligned() -> None:
    batch = batch_of({"a": 1.0}, {"a": 2.0}, {"a": 3.0}, indices=[5, 6, 8])
    picked = batch.select([2, 0])
    assert picked.indices == [8, 5]
    assert picked.event_ids == ["e8", "e5"]
    assert picked.features == [{"a": 3.0}, {"a": 1.0}]
    assert len(picked) == 2


# -- the JSON fast paths agree with the per-value checks ----------------------------------------


@pytest.mark.parametrize(
    "value",
    [1, 1.5, True, "1.5", None, [1.0], {"x": 1}, 10**400, float("nan")],
    ids=["int", "float", "bool", "str", "none", "list", "dict", "huge", "nan"],
)
def test_json_batch_with_one_odd_value_rejects_exactly_that_row(value: Any) -> None:
    good = {"a": 0.5, "b": 1.0, "c": 11.0}
    odd = {**good, "b": value}
    batch = batch_of(good, odd, good, indices=[0, 1, 2])
    matrix, positions, rejected = build_matrix(batch, NAMES, LO, HI, typed=False)
    typed_matrix, _, _ = build_matrix(
        batch_of(good, good, indices=[0, 2]), NAMES, LO, HI, typed=True
    )
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 5:
        assert positions == [0, 1, 2] and rejected == []
        return
    assert positions == [0, 2]
    np.testing.assert_array_equal(matrix, typed_matrix)
    assert [r.index for r in rejected] == [1]


def _envelope(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e", "sensor_id": "s", "event_time": 1, "features": {}, **fields}


@pytest.mark.parametrize(
    ("record", "reason", "message"),
    [
        (_envelope(), None, None),
        (_envelope(event_id=""), "InvalidField", "event_id must be a non-empty string"),
        (_envelope(sensor_id=7), "InvalidField", "sensor_id must be a non-empty string"),
        (
            _envelope(event_time=True),
            "Undecodable",
            "event_time must be epoch milliseconds or ISO-8601, got a boolean",
        ),
        (
            _envelope(event_time=2**63),
            "InvalidField",
            f"event_time {2**63} is outside the range of a 64-bit long",
        ),
        (
            _envelope(features=[1.0]),
            "InvalidField",
            "features must be an object of feature name to number",
        ),
    ],
    ids=["good", "empty-id", "int-sensor", "bool-time", "long-overflow", "list-features"],
)
def test_json_envelope_fast_path_gives_the_same_reason(
    record: dict[str, Any], reason: str | None, message: str | None
) -> None:
    values: list[bytes | None] = [json.dumps(record).encode()]
    batch, rejected = decode_events(values, [0], JsonSerde("sensor_event"), typed=False)
    if reason is None:
        assert len(batch) == 1 and rejected == []
    else:
        assert len(batch) == 0
        assert rejected == [Rejection(0, "decode", reason, message or "")]


# -- Avro read column-wise agrees with reading record by record --------------------------------


class RecordByRecord(AvroSerde):
    """The Avro serde with no column reader: the per-record path of ``decode_events``."""

    def decode_columns(self, values: Any, indices: Any) -> None:
        return None


GOOD = {"b": 1.0, "a": 0.5, "c": 11.0}  # the model's order
HOSTILE_FEATURES: list[dict[str, float]] = [
    {**GOOD, "b": math.nan},
    {**GOOD, "a": math.inf},
    {**GOOD, "c": -math.inf},
    {**GOOD, "b": 5.0000001},
    {**GOOD, "a": -1.0, "c": 20.0},  # at both limits: valid
    {"a": 0.5, "b": 1.0, "c": 11.0},  # another key order
    {**GOOD, "extra": 1e300},  # one key more
    {"b": 1.0, "a": 0.5},  # a missing feature
    {},
    {"B": 1.0, "a": 0.5, "c": 11.0},  # a near-miss key
]


def _both_ways(values: list[bytes | None]) -> tuple[Any, Any]:
    """(columns, records): decode_events then build_matrix, each way, on the same bytes."""
    out = []
    for serde in (AvroSerde("sensor_event"), RecordByRecord("sensor_event")):
        for _ in range(2):  # the second read runs on learned layouts
            batch, rejected = decode_events(values, range(len(values)), serde, typed=True)
        matrix, keep, bad = build_matrix(batch, NAMES, LO, HI, typed=True)
        out.append((batch, rejected, matrix, keep, bad))
    return out[0], out[1]


def _agree(values: list[bytes | None]) -> Any:
    (batch, rejected, matrix, keep, bad), (b2, r2, m2, k2, bad2) = _both_ways(values)
    assert batch.layouts is not None and b2.layouts is None
    assert (batch.indices, batch.event_ids, batch.event_times) == (
        b2.indices,
        b2.event_ids,
        b2.event_times,
    )
    assert repr(batch.feature_maps()) == repr(b2.features)  # NaN as NaN
    assert rejected == r2
    np.testing.assert_array_equal(matrix, m2)
    assert matrix.dtype == m2.dtype and matrix.shape == m2.shape
    assert keep == k2
    assert bad == bad2
    return batch, rejected + bad, keep


def test_one_layout_batch_is_read_by_its_layout_and_gives_the_same_matrix() -> None:
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = [serde.encode(event(i, **GOOD)) for i in range(50)]
    batch, refused, keep = _agree(values)
    assert {layout and layout.keys for layout in batch.layouts or []} == {("b", "a", "c")}
    assert keep == list(range(50)) and refused == []


@pytest.mark.parametrize(
    "features",
    HOSTILE_FEATURES,
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "empty",
)
def test_a_layout_of_its_own_gives_the_same_rejections(features: dict[str, float]) -> None:
    """A batch all of one odd shape (learned as its own layout), then that shape among
    good events: the same matrix, positions, reasons and messages as record by record."""
    serde = AvroSerde("sensor_event")
    alone: list[bytes | None] = [serde.encode(event(i, **features)) for i in range(6)]
    _agree(alone)
    mixed: list[bytes | None] = [serde.encode(event(i, **GOOD)) for i in range(8)]
    mixed[3:3] = alone[:2]
    _, refused, keep = _agree(mixed)
    assert len(keep) + len(refused) == len(mixed)


def test_every_hostile_shape_in_one_batch_with_undecodable_bytes() -> None:
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = []
    for n, features in enumerate(HOSTILE_FEATURES * 3):
        values += [serde.encode(event(n, **GOOD)), serde.encode(event(n, **features))]
    good = serde.encode(event(99, **GOOD))
    values += [b"", good[:-3], good + b"\x00", b"\xff" * 20, good]
    _, refused, keep = _agree(values)
    reasons = {r.reason for r in refused}
    assert {"Undecodable", "NonFiniteValue", "OutOfRange", "MissingFeature"} <= reasons
    assert len(keep) + len(refused) == len(values)


def test_a_keyed_matrix_out_of_range_names_the_feature_and_value() -> None:
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = [serde.encode(event(i, **GOOD)) for i in range(4)]
    values.append(serde.encode(event(4, **{**GOOD, "c": 25.0})))
    for _ in range(2):
        batch, _ = decode_events(values, range(5), serde, typed=True)
    assert batch.layouts is not None and None not in batch.layouts
    matrix, keep, bad = build_matrix(batch, NAMES, LO, HI, typed=True)
    assert keep == [0, 1, 2, 3] and matrix.shape == (4, 3)
    assert bad == [Rejection(4, "validate", "OutOfRange", "feature c=25 outside [10, 20]")]


# -- JSON read typed agrees with reading record by record --------------------------------------


class JsonRecordByRecord(JsonSerde):
    """The JSON serde outside the typed reader: the per-record path of ``decode_events``."""

    format = "json, record by record"


def _json(event_id: Any = "e", sensor_id: Any = "s", event_time: Any = 1, **features: Any) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "sensor_id": sensor_id,
            "event_time": event_time,
            "features": features,
        }
    )


HOSTILE_JSON: list[bytes] = [
    _json(**GOOD).encode(),
    _json(b=1, a=0, c=11).encode(),  # integers
    _json(b=-0, a=-0.0, c=20).encode(),
    _json(b=9007199254740993, a=0.5, c=11.0).encode(),  # 2**53 + 1: rounds
    _json(b=1.0, a=0.5, c=18446744073709551617).encode(),
    _json(b=10**400, a=0.5, c=11.0).encode(),
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":1e400,"a":0.5,"c":11}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":NaN,"a":0.5,"c":11}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":1,"b":9,"a":0.5,"c":11}}',
    b'{"event_id":"e","event_id":"","sensor_id":"s","event_time":1,"features":{}}',
    b'{"event_id":"\\ud800","sensor_id":"s","event_time":1,"features":{"b":1,"a":0,"c":11}}',
    b'\xef\xbb\xbf{"event_id":"e","sensor_id":"s","event_time":1,"features":{}}',
    b' {"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":1,"a":0,"c":11}}\n',
    _json(b=True, a=0.5, c=11.0).encode(),
    _json(b="1.5", a=0.5, c=11.0).encode(),
    _json(b=None, a=0.5, c=11.0).encode(),
    _json(b=[1.0], a=0.5, c=11.0).encode(),
    _json(b={"x": 1}, a=0.5, c=11.0).encode(),
    _json(a=0.5, c=11.0).encode(),
    _json(**GOOD, extra="text").encode(),
    _json(event_time="2024-01-01T00:00:00Z", **GOOD).encode(),
    _json(event_time="2024-01-01T00:00:00", **GOOD).encode(),
    _json(event_time="yesterday", **GOOD).encode(),
    _json(event_time=1.5, **GOOD).encode(),
    _json(event_time=True, **GOOD).encode(),
    _json(event_time=None, **GOOD).encode(),
    _json(event_time=2**63, **GOOD).encode(),
    _json(event_time=2**63 - 1, **GOOD).encode(),
    _json(event_time=-(2**63) - 1, **GOOD).encode(),
    _json(event_time=2**70, **GOOD).encode(),
    _json(event_id="", **GOOD).encode(),
    _json(event_id=7, **GOOD).encode(),
    _json(sensor_id=None, **GOOD).encode(),
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":[1.0,2.0]}',
    b'{"event_id":"e","sensor_id":"s","event_time":1}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{},"x":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    b"[1, 2]",
    b"not json",
    b"",
    # what an unknown field holds must be checked too: the serde refuses these
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":1},"x":"\xff"}',
    b'{"x":{"y":"\xc0\x80"},"event_id":"e","sensor_id":"s","event_time":1,"features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{},"\xff":1}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{},"x":1' + b"0" * 4300 + b"}",
    b'{"event_id":"e","sensor_id":"s","features":{},"event_time":1' + b"0" * 4300 + b"}",
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"b":1' + b"0" * 4300 + b"}}",
]


@pytest.mark.parametrize("mixed", [False, True], ids=["alone", "among-good-events"])
def test_json_typed_reading_gives_the_record_by_record_batch_and_reasons(mixed: bool) -> None:
    good = _json(**GOOD).encode()
    batches = [[value, good, good] for value in HOSTILE_JSON] if mixed else [HOSTILE_JSON]
    for values_ in batches:
        values: list[bytes | None] = list(values_)
        out = []
        for serde in (JsonSerde("sensor_event"), JsonRecordByRecord("sensor_event")):
            batch, rejected = decode_events(values, range(len(values)), serde, typed=False)
            matrix, keep, bad = build_matrix(batch, NAMES, LO, HI, typed=False)
            out.append((batch, rejected, matrix, keep, bad))
        (batch, rejected, matrix, keep, bad), (b2, r2, m2, k2, bad2) = out
        assert (batch.indices, batch.event_ids, batch.sensor_ids, batch.event_times) == (
            b2.indices,
            b2.event_ids,
            b2.sensor_ids,
            b2.event_times,
        )
        assert rejected == r2
        np.testing.assert_array_equal(matrix, m2)
        assert (keep, bad) == (k2, bad2)
        assert len(keep) + len(rejected) + len(bad) == len(values)


def test_json_typed_batch_of_plain_events_needs_no_type_check() -> None:
    values: list[bytes | None] = [_json(b=1, a=0.5, c=11).encode()] * 3
    batch, _ = decode_events(values, range(3), JsonSerde("sensor_event"), typed=False)
    assert batch.floats and batch.features[0] == {"b": 1.0, "a": 0.5, "c": 11.0}
    values.append(_json(b=True, a=0.5, c=11).encode())
    batch, _ = decode_events(values, range(4), JsonSerde("sensor_event"), typed=False)
    assert not batch.floats
    _, keep, bad = build_matrix(batch, NAMES, LO, HI, typed=False)
    assert keep == [0, 1, 2] and [r.reason for r in bad] == ["NonNumericFeature"]
