"""Serde: Avro round trips of every packaged schema, Confluent framing, JSON decoding.

Exact values throughout: decoded records are compared whole, bytes byte for byte.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest

from schemas.catalog import SCHEMA_NAMES, _strip_logical_types, load_schema, schema_text
from schemas.errors import DecodeError
from schemas.serde import AvroSerde, ConfluentAvroSerde, JsonSerde, make_serde, to_millis

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in epoch milliseconds

#: One representative record per schema, every field set (unions on their non-null branch).
RECORDS: dict[str, dict[str, Any]] = {
    "sensor_event": {
        "event_id": "evt-1",
        "sensor_id": "sensor-0001",
        "event_time": T0,
        "features": {"f1": 1.5, "f2": -2.25, "f3": 0.0},
    },
    "prediction": {
        "event_id": "evt-1",
        "sensor_id": "sensor-0001",
        "event_time": T0,
        "model_name": "shuttle-gbm",
        "model_version": "3",
        "variant": "champion",
        "predicted_label": "1",
        "score": 0.875,
        "probabilities": {"0": 0.125, "1": 0.875},
        "processed_at": T0 + 12,
    },
    "audit_event": {
        "action": "scored",
        "event_id": "evt-1",
        "sensor_id": "sensor-0001",
        "model_name": "shuttle-gbm",
        "model_version": "3",
        "decision": "1",
        "input_digest": "00112233445566778899aabbccddeeff",
        "source_topic": "sensor.events",
        "source_partition": 2,
        "source_offset": 2**40,
        "actor": "processor-1",
        "occurred_at": T0 + 13,
        "details": {"why": "test"},
    },
    "shadow_record": {
        "event_id": "evt-1",
        "sensor_id": "sensor-0001",
        "champion_version": "3",
        "challenger_version": "4",
        "champion_label": "1",
        "challenger_label": "0",
        "champion_score": 0.875,
        "challenger_score": 0.25,
        "agree": False,
        "processed_at": T0 + 14,
    },
    "drift_event": {
        "incident_id": "inc-1",
        "status": "open",
        "detector": "psi",
        "target": "f1",
        "statistic": 0.5,
        "threshold": 0.25,
        "severity": "alert",
        "window_first_offset": 10,
        "window_last_offset": 20,
        "window_start": T0,
        "window_end": T0 + 1000,
        "window_events": 11,
        "model_name": "shuttle-gbm",
        "model_version": "3",
        "trigger": "chi2",
        "hop": True,
        "tests": [{"test": "chi2", "statistic": 80.0, "threshold": 64.7, "severity": "alert"}],
        "top_bins": [{"bin": "(1, 2]", "reference": 0.1, "current": 0.4, "contribution": 0.3}],
        "detected_at": T0 + 1001,
    },
    "label": {"event_id": "evt-1", "label": "1", "value": 2.5, "labelled_at": T0 + 99},
    "evaluation": {
        "variant": "champion",
        "model_version": "3",
        "window": "tumbling",
        "window_start": T0,
        "window_end": T0 + 60_000,
        "count": 500,
        "metrics": {"accuracy": 0.75},
        "verdict": "keep",
        "evidence": {"log_e": 1.25},
        "emitted_at": T0 + 60_001,
    },
}


def sensor_event(**changes: Any) -> dict[str, Any]:
    return {**RECORDS["sensor_event"], **changes}


def test_every_packaged_schema_has_a_representative_record() -> None:
    assert sorted(RECORDS) == sorted(SCHEMA_NAMES.values())


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_avro_round_trip_is_exact(name: str) -> None:
    serde = AvroSerde(name)
    data = serde.encode(RECORDS[name])
    assert serde.decode(data) == RECORDS[name]
    # encode_many gives the same bytes as encode, record by record
    assert serde.encode_many([RECORDS[name], RECORDS[name]]) == [data, data]


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_avro_timestamps_decode_as_int_milliseconds(name: str) -> None:
    decoded = AvroSerde(name).decode(AvroSerde(name).encode(RECORDS[name]))
    public = load_schema(name, raw=False)
    stamps = [f["name"] for f in public["fields"] if "timestamp-millis" in json.dumps(f["type"])]
    assert stamps  # every schema carries at least one timestamp
    for field in stamps:
        assert type(decoded[field]) is int
        assert decoded[field] == RECORDS[name][field]


def test_raw_and_public_schema_write_identical_bytes() -> None:
    """Stripping logical types changes the reader's types, never the wire bytes."""
    record = RECORDS["prediction"]
    raw = AvroSerde("prediction").encode(record)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema("prediction", raw=False), record)
    assert buf.getvalue() == raw


def test_avro_null_branches_round_trip() -> None:
    record = {**RECORDS["prediction"], "predicted_label": None, "probabilities": None}
    serde = AvroSerde("prediction")
    assert serde.decode(serde.encode(record)) == record


def test_avro_trailing_bytes_are_a_decode_error() -> None:
    serde = AvroSerde("sensor_event")
    data = serde.encode(RECORDS["sensor_event"])
    with pytest.raises(DecodeError, match="3 trailing bytes"):
        serde.decode(data + b"abc")


@pytest.mark.parametrize("data", [b"", b"\xff\x00not-an-event", b"\x02", b"\xff" * 12], ids=repr)
def test_avro_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        AvroSerde("sensor_event").decode(data)


def test_avro_truncated_record_is_a_decode_error() -> None:
    data = AvroSerde("sensor_event").encode(RECORDS["sensor_event"])
    with pytest.raises(DecodeError):
        AvroSerde("sensor_event").decode(data[:-3])


def test_decode_error_is_a_value_error() -> None:
    """Callers that only know ValueError still catch a bad record."""
    with pytest.raises(ValueError):
        AvroSerde("sensor_event").decode(b"")


# -- Confluent wire format ----------------------------------------------------------------------


def _unknown_id(schema_id: int) -> Any:
    raise KeyError(schema_id)


def test_confluent_framing_is_magic_zero_then_big_endian_id() -> None:
    serde = ConfluentAvroSerde("sensor_event", 258, _unknown_id)
    body = AvroSerde("sensor_event").encode(RECORDS["sensor_event"])
    data = serde.encode(RECORDS["sensor_event"])
    assert data == b"\x00\x00\x00\x01\x02" + body
    assert serde.encode_many([RECORDS["sensor_event"]]) == [data]
    assert serde.decode(data) == RECORDS["sensor_event"]


def _writer_v2() -> Any:
    """A producer's newer SensorEvent: an extra field in the middle, fields reordered."""
    schema = json.loads(schema_text("sensor_event"))
    fields = {f["name"]: f for f in schema["fields"]}
    schema["fields"] = [
        fields["sensor_id"],
        {"name": "firmware", "type": "string"},
        fields["event_id"],
        fields["features"],
        fields["event_time"],
    ]
    return fastavro.parse_schema(_strip_logical_types(schema))


def test_confluent_foreign_schema_id_is_resolved_through_the_resolver() -> None:
    writer = _writer_v2()
    asked: list[int] = []

    def resolve(schema_id: int) -> Any:
        asked.append(schema_id)
        return {9: writer}[schema_id]

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, {**RECORDS["sensor_event"], "firmware": "v2.1"})
    serde = ConfluentAvroSerde("sensor_event", 7, resolve)
    decoded = serde.decode(struct.pack(">bI", 0, 9) + buf.getvalue())
    assert decoded == RECORDS["sensor_event"]
    assert asked == [9]
    # our own id never goes to the resolver
    serde.decode(serde.encode(RECORDS["sensor_event"]))
    assert asked == [9]


def test_confluent_foreign_schema_trailing_bytes_are_a_decode_error() -> None:
    """Same rule as for our own schema id: a record followed by junk is not a record."""
    writer = _writer_v2()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, {**RECORDS["sensor_event"], "firmware": "v2.1"})
    serde = ConfluentAvroSerde("sensor_event", 7, {9: writer}.__getitem__)
    with pytest.raises(DecodeError):
        serde.decode(struct.pack(">bI", 0, 9) + buf.getvalue() + b"junk")


def test_confluent_unknown_schema_id_is_a_decode_error() -> None:
    serde = ConfluentAvroSerde("sensor_event", 7, _unknown_id)
    body = AvroSerde("sensor_event").encode(RECORDS["sensor_event"])
    with pytest.raises(DecodeError, match="writer schema id 8"):
        serde.decode(struct.pack(">bI", 0, 8) + body)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x00\x00\x07rest", "magic byte is 1"),
        (b"\x00\x00\x00", "shorter than the 5-byte"),
        (b"", "shorter than the 5-byte"),
    ],
    ids=["bad-magic", "short", "empty"],
)
def test_confluent_bad_framing_is_a_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        ConfluentAvroSerde("sensor_event", 7, _unknown_id).decode(data)


def test_confluent_own_id_with_trailing_bytes_is_a_decode_error() -> None:
    serde = ConfluentAvroSerde("sensor_event", 7, _unknown_id)
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        serde.decode(serde.encode(RECORDS["sensor_event"]) + b"xx")


# -- JSON -----------------------------------------------------------------------------------------


def test_json_round_trip_is_exact() -> None:
    serde = JsonSerde("sensor_event")
    data = serde.encode(RECORDS["sensor_event"])
    assert data == (
        b'{"event_id":"evt-1","sensor_id":"sensor-0001","event_time":1704067200000,'
        b'"features":{"f1":1.5,"f2":-2.25,"f3":0.0}}'
    )
    assert serde.decode(data) == RECORDS["sensor_event"]
    assert serde.encode_many([RECORDS["sensor_event"]]) == [data]


@pytest.mark.parametrize(
    ("event_time", "millis"),
    [
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T00:00:00.123Z", T0 + 123),
        ("2024-01-01T01:00:00.5+01:00", T0 + 500),
        ("2023-12-31T19:00:00-05:00", T0),
        (T0 + 7, T0 + 7),
        (float(T0 + 7), T0 + 7),
        (0, 0),
    ],
)
def test_json_event_time_iso8601_or_epoch_millis(event_time: Any, millis: int) -> None:
    data = json.dumps(sensor_event(event_time=event_time)).encode()
    decoded = JsonSerde("sensor_event").decode(data)
    assert decoded["event_time"] == millis
    assert type(decoded["event_time"]) is int


@pytest.mark.parametrize(
    "event_time", ["yesterday", "2024-13-01T00:00:00Z", True, [T0], {"ms": T0}], ids=repr
)
def test_json_bad_event_time_is_a_decode_error(event_time: Any) -> None:
    data = json.dumps(sensor_event(event_time=event_time)).encode()
    with pytest.raises(DecodeError, match="event_time"):
        JsonSerde("sensor_event").decode(data)


@pytest.mark.parametrize("missing", ["event_id", "sensor_id", "event_time", "features"])
def test_json_missing_required_field_is_a_decode_error(missing: str) -> None:
    record = sensor_event()
    del record[missing]
    with pytest.raises(DecodeError, match=f"missing field\\(s\\): {missing}"):
        JsonSerde("sensor_event").decode(json.dumps(record).encode())


def test_json_optional_fields_may_be_absent() -> None:
    """Fields with a default or a null branch are not required (here: Label.label/value)."""
    data = b'{"event_id":"e","labelled_at":"2024-01-01T00:00:00Z"}'
    assert JsonSerde("label").decode(data) == {"event_id": "e", "labelled_at": T0}


@pytest.mark.parametrize("data", [b"[1, 2]", b"null", b'"text"', b"42"], ids=repr)
def test_json_non_object_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError, match="must be a JSON object"):
        JsonSerde("sensor_event").decode(data)


@pytest.mark.parametrize(
    "data",
    [b'{"event_id": "\xff\xfe"}', b"\xc3\x28", b"{not json", b"", b"\xff\x00not-an-event"],
    ids=repr,
)
def test_json_invalid_utf8_or_syntax_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        JsonSerde("sensor_event").decode(data)


def test_json_overlong_integer_is_a_decode_error() -> None:
    """Python refuses to parse integers over 4300 digits: still bad input, not a crash."""
    data = b'{"event_id":"e","sensor_id":"s","event_time":' + b"1" * 5000 + b',"features":{}}'
    with pytest.raises(DecodeError):
        JsonSerde("sensor_event").decode(data)


# -- make_serde -----------------------------------------------------------------------------------


def test_make_serde_by_format() -> None:
    assert isinstance(make_serde("avro", "prediction"), AvroSerde)
    assert isinstance(make_serde("json", "prediction"), JsonSerde)
    confluent = make_serde("avro-confluent", "prediction", confluent=(5, _unknown_id))
    assert isinstance(confluent, ConfluentAvroSerde)
    assert confluent.encode(RECORDS["prediction"])[:5] == b"\x00\x00\x00\x00\x05"
    assert [make_serde(f, "label").format for f in ("avro", "json")] == ["avro", "json"]


def test_make_serde_refuses_unknown_format_and_confluent_without_registry() -> None:
    with pytest.raises(ValueError, match="unknown format 'protobuf'"):
        make_serde("protobuf", "prediction")
    with pytest.raises(ValueError, match="Schema Registry"):
        make_serde("avro-confluent", "prediction")


# -- JSON: the fast parser and the standard library agree -------------------------------------

#: Inputs where parsers are known to differ: big integers, NaN / Infinity, lone surrogates,
#: a byte-order mark, UTF-16, control characters, deep nesting, duplicate keys, bad bytes.
JSON_EDGES: list[bytes] = [
    b'{"event_id":"e","sensor_id":"s","event_time":123456789012345678901234567890,"features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"a":-9223372036854775809}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"a":1e400}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"a":NaN,"b":-Infinity}}',
    b'{"event_id":"\\ud800","sensor_id":"s","event_time":1,"features":{}}',
    b'\xef\xbb\xbf{"event_id":"e","sensor_id":"s","event_time":1,"features":{}}',
    '{"event_id":"é","sensor_id":"s","event_time":1,"features":{}}'.encode("utf-16"),
    b'{"event_id":"e\x01","sensor_id":"s","event_time":1,"features":{}}',
    b'{"event_id":"e","event_id":"f","sensor_id":"s","event_time":1,"features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{"a":' + b"9" * 5000 + b"}}",
    b'{"event_id":"e","sensor_id":"s","event_time":"2024-01-01T00:00:00Z","features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":true,"features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1.5,"features":{}}',
    b'{"event_id":"e\xff","sensor_id":"s","event_time":1,"features":{}}',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{}}  \n',
    b'{"event_id":"e","sensor_id":"s","event_time":1,"features":{}}x',
    b'{"event_id":"e","sensor_id":"s","features":{}}',
    b"[1, 2]",
    b"",
]


def _stdlib_verdict(serde: JsonSerde, data: bytes) -> Any:
    """What the decoder gave before the fast parser: ``json.loads`` and the same checks."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return ("DecodeError", f"not JSON: {exc}")
    if not isinstance(record, dict):
        return ("DecodeError", "a sensor_event must be a JSON object")
    missing = [n for n in ("event_id", "sensor_id", "event_time", "features") if n not in record]
    if missing:
        return ("DecodeError", f"missing field(s): {', '.join(missing)}")
    try:
        if record.get("event_time") is not None:
            record["event_time"] = to_millis(record["event_time"], "event_time")
    except DecodeError as exc:
        return ("DecodeError", str(exc))
    return record


@pytest.mark.parametrize("data", JSON_EDGES, ids=range(len(JSON_EDGES)))
def test_json_decode_gives_the_standard_librarys_values_and_messages(data: bytes) -> None:
    serde = JsonSerde("sensor_event")
    try:
        got: Any = serde.decode(data)
    except DecodeError as exc:
        got = ("DecodeError", str(exc))
    expected = _stdlib_verdict(serde, data)
    assert got == expected
    if isinstance(expected, dict):  # same types too: an int stays an int, a float a float
        assert [type(v) for v in got["features"].values()] == [
            type(v) for v in expected["features"].values()
        ]
        assert type(got["event_time"]) is type(expected["event_time"])
