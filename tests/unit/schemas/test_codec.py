"""Compiled codec vs fastavro: same bytes out, same records in, DecodeError on junk.

fastavro is the reference throughout. Records are generated from the parsed
schemas with fixed seeds (unicode, empty maps, nulls, extreme longs, NaN/inf);
fuzzing mutates valid encodings. The one documented difference: on bytes fastavro
*accepts* the codec may be stricter (a boolean byte other than 0/1, a varint over
10 bytes or 64 bits, a union index written as a non-canonical varint) and reject
them; whenever both accept, the records are equal.
"""

from __future__ import annotations

import io
import math
import random
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import fastavro
import numpy as np
import pytest

from schemas.catalog import SCHEMA_NAMES, load_schema
from schemas.codec import Codec, UnsupportedSchema, compile_codec
from schemas.errors import DecodeError

NAMES = sorted(SCHEMA_NAMES.values())
#: Types and shapes our topic schemas do not use, for the same checks.
EXTRA = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Extra",
        "namespace": "test",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "raw", "type": "bytes"},
            {"name": "maybe_raw", "type": ["null", "bytes"]},
            {"name": "flag", "type": ["boolean", "null"], "default": True},
            {"name": "nothing", "type": "null"},
            {"name": "i", "type": "int"},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [
                        {"name": "a", "type": "long"},
                        {"name": "s", "type": "string"},
                        {"name": "d", "type": "double"},
                        {"name": "ok", "type": "boolean"},
                    ],
                },
            },
            {"name": "maybe_inner", "type": ["null", "Inner"]},
            {"name": "inners", "type": {"type": "array", "items": "Inner"}},
            {"name": "doubles", "type": {"type": "array", "items": "double"}},
            {"name": "longs", "type": {"type": "map", "values": ["null", "long"]}},
            {
                "name": "nested",
                "type": {"type": "map", "values": {"type": "array", "items": "string"}},
            },
            {"name": "maybe_map", "type": ["null", {"type": "map", "values": "string"}]},
        ],
    }
)
SCHEMAS: dict[str, Any] = {**{name: load_schema(name) for name in NAMES}, "extra": EXTRA}
ALL = [*NAMES, "extra"]
LONG_EDGES = [
    0, 1, -1, 63, -64, 64, -65, 8191, -8192, 8192, -8193, 2**31 - 1, -(2**31),
    2**32, 1_704_067_200_000, -1_704_067_200_000, 2**53 + 1, 2**62, -(2**62),
    2**63 - 1, -(2**63),
]  # fmt: skip
DOUBLE_EDGES = [
    0.0, -0.0, 1.0, -1.5, math.nan, math.inf, -math.inf, 5e-324, -5e-324,
    1.7976931348623157e308, 2.2250738585072014e-308, 1 / 3,
]  # fmt: skip
STRINGS = [
    "",
    "a",
    "model-\u03b1",
    "héllo wörld",
    "日本語テキスト",
    "emoji 🚀🔥",
    "nul\x00byte",
    "x" * 70,
]


def fastavro_bytes(schema: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def fastavro_read(schema: Any, data: bytes) -> Any:
    """fastavro's record, or the exception it raises; trailing bytes count as rejection."""
    buf = io.BytesIO(data)
    try:
        record = fastavro.schemaless_reader(buf, schema, None)
    except Exception as exc:  # noqa: BLE001 - any fastavro failure is a rejection here
        return exc
    if buf.tell() != len(data):
        return ValueError("trailing bytes")
    return record


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN, -0.0 differs from 0.0 and types must match."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class EqualToAnything:
    """Not a string, but equal to every one: the batch cache must not trust it."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


class RecordMaker:
    """Random records of a parsed schema. Strings and numbers come from small pools
    half the time, so batches repeat objects (the codec's batch caches) and maps
    repeat key sets (its learned layouts)."""

    def __init__(self, schema: Any, seed: int) -> None:
        self.schema = schema
        self.named = schema.get("__named_schemas", {})
        self.rng = random.Random(seed)
        self.key_sets = [["x1", "x2", "x3"], [f"f{i}" for i in range(9)], ["0", "1"], ["ü", "k"]]

    def record(self) -> dict[str, Any]:
        value = self.value(self.schema)
        assert isinstance(value, dict)
        return value

    def value(self, schema: Any) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            other = next(s for s in schema if s != "null")
            return None if rng.random() < 0.3 else self.value(other)
        if isinstance(schema, str) and schema in self.named:
            return self.value(self.named[schema])
        kind = schema if isinstance(schema, str) else schema["type"]
        if kind == "record":
            return {f["name"]: self.value(f["type"]) for f in schema["fields"]}
        if kind == "map":
            if rng.random() < 0.5:
                keys = rng.choice(self.key_sets)
            else:
                keys = [self.string() for _ in range(rng.randrange(0, 6))]
            return {k: self.value(schema["values"]) for k in keys}
        if kind == "array":
            return [self.value(schema["items"]) for _ in range(rng.randrange(0, 4))]
        if kind == "string":
            return self.string()
        if kind == "long":
            roll = rng.random()
            if roll < 0.4:
                return rng.choice(LONG_EDGES)
            if roll < 0.7:
                return 1_704_067_200_000 + rng.randrange(100_000)  # a batch's timestamps
            return rng.randrange(-(2**63), 2**63)
        if kind == "int":
            return rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
        if kind == "double":
            return rng.choice(DOUBLE_EDGES) if rng.random() < 0.4 else rng.uniform(-1e6, 1e6)
        if kind == "float":
            return rng.choice([0.0, -0.0, 1.5, math.inf, math.nan, rng.uniform(-1e6, 1e6)])
        if kind == "bytes":
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 20)))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        raise AssertionError(f"no generator for {kind}")

    def string(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(STRINGS)
        alphabet = "abcXYZ019-_ éß€😀中\u0301"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))


@pytest.fixture(scope="module")
def codecs() -> dict[str, Codec]:
    return {name: compile_codec(schema) for name, schema in SCHEMAS.items()}


def records_for(name: str, n: int, seed: int) -> list[dict[str, Any]]:
    maker = RecordMaker(SCHEMAS[name], seed)
    return [maker.record() for _ in range(n)]


# ------------------------------------------------------------------------- encode


@pytest.mark.parametrize("name", ALL)
def test_encode_is_byte_identical_to_fastavro(codecs: dict[str, Codec], name: str) -> None:
    schema, codec = SCHEMAS[name], codecs[name]
    records = records_for(name, 400, seed=1)
    expected = [fastavro_bytes(schema, r) for r in records]
    before = codec.fallbacks
    assert [codec.encode(r) for r in records] == expected
    for size in (1, 7, 400):  # batch caches start afresh at each batch
        got = [b for i in range(0, 400, size) for b in codec.encode_many(records[i : i + size])]
        assert got == expected
    assert codec.fallbacks == before, "conforming records must all take the fast path"


def test_encode_many_reuses_objects_across_a_batch(codecs: dict[str, Codec]) -> None:
    """The pipeline's batches share objects (model name, the batch timestamp)."""
    schema, codec = load_schema("prediction"), codecs["prediction"]
    name, now = "shuttle-gbm", 1_704_067_260_000
    rows = []
    for i in range(300):
        rows.append(
            {
                "event_id": f"e-{i}",
                "sensor_id": f"s-{i % 7}",
                "event_time": 1_704_067_200_000 + i * 37,  # crosses 14-bit boundaries
                "model_name": name,
                "model_version": "3" if i < 150 else "4",
                "variant": "champion",
                "predicted_label": None if i % 3 == 0 else str(i % 2),
                "score": i / 300,
                "probabilities": None if i % 3 == 0 else {"0": 1 - i / 300, "1": i / 300},
                "processed_at": now if i < 200 else now + 1,
            }
        )
    rows += [rows[5], rows[5], rows[0], rows[299]]  # the very same dicts again
    assert codec.encode_many(rows) == [fastavro_bytes(schema, r) for r in rows]


def test_union_null_branch_keeps_batch_caches_intact(codecs: dict[str, Codec]) -> None:
    """A null union blanks its own parts only; the record inside it caches its fields."""
    codec = codecs["extra"]
    base = RecordMaker(EXTRA, seed=2).record()
    inner = {"a": 1_704_067_200_000, "s": "", "d": 0.5, "ok": False}
    rows = [
        dict(base, maybe_inner=inner),
        dict(base, maybe_inner=None),
        dict(base, maybe_inner=dict(inner)),  # same field objects as two records before
        dict(base, maybe_inner=None, maybe_raw=None),
        dict(base, maybe_inner=inner, maybe_raw=b""),
    ]
    assert codec.encode_many(rows) == [fastavro_bytes(EXTRA, r) for r in rows]


def test_long_and_double_edges_round_trip(codecs: dict[str, Codec]) -> None:
    schema, codec = load_schema("label"), codecs["label"]
    records = [
        {"event_id": "e", "label": None, "value": v, "labelled_at": t}
        for t in LONG_EDGES
        for v in [None, *DOUBLE_EDGES]
    ]
    encoded = codec.encode_many(records)
    assert encoded == [fastavro_bytes(schema, r) for r in records]
    for record, got in zip(records, codec.decode_many(encoded), strict=True):
        assert same(got, record)


def test_map_layouts_keep_key_order_and_values(codecs: dict[str, Codec]) -> None:
    """Same keys in another order, one key more or less: never a stale layout."""
    schema, codec = load_schema("sensor_event"), codecs["sensor_event"]
    base = {"event_id": "e", "sensor_id": "s", "event_time": 1}
    feature_sets = [
        {"x1": 1.0, "x2": 2.0},
        {"x2": 2.0, "x1": 1.0},
        {"x1": 1.0, "x2": 2.0, "x3": 3.0},
        {"x1": 1.0},
        {},
        {"y1": 1.0, "x2": 2.0},
        {"x1": -0.0, "x2": math.nan},
    ]
    records = [dict(base, features=f) for f in feature_sets * 3]
    expected = [fastavro_bytes(schema, r) for r in records]
    assert codec.encode_many(records) == expected
    for _ in range(2):  # the second pass runs on learned templates
        for record, got in zip(records, codec.decode_many(expected), strict=True):
            assert same(got, record)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("score", 3),  # int for a double
        ("score", True),
        ("score", "0.5"),  # fastavro converts a numeric string
        ("score", np.float32(0.25)),
        ("event_time", 2.0),  # fastavro truncates a float for a long
        ("event_time", 7.9),
        ("event_time", True),
        ("event_time", np.int64(-(2**62) - 3)),
        ("event_time", np.int64(2**63 - 1)),
        ("predicted_label", ("string", "1")),  # fastavro's tuple notation for unions
        ("predicted_label", np.str_("1")),
        ("probabilities", {"0": np.float64(0.5), "1": 1}),
        ("sensor_id", np.str_("s-1")),
    ],
)
def test_values_fastavro_coerces_get_fastavro_bytes(field: str, value: Any) -> None:
    schema, codec = load_schema("prediction"), compile_codec(load_schema("prediction"))
    record = RecordMaker(schema, seed=3).record()
    record[field] = value
    expected = fastavro_bytes(schema, record)
    assert codec.encode(record) == expected
    assert codec.encode_many([record, record]) == [expected, expected]


def test_missing_optional_fields_take_their_defaults(codecs: dict[str, Codec]) -> None:
    schema, codec = load_schema("audit_event"), codecs["audit_event"]
    full = RecordMaker(schema, seed=4).record()
    sparse = {k: full[k] for k in ("action", "model_name", "model_version", "actor", "occurred_at")}
    rows = [full, sparse, full, sparse, full]
    expected = [fastavro_bytes(schema, r) for r in rows]
    before = codec.fallbacks
    assert codec.encode_many(rows) == expected
    assert codec.encode(sparse) == expected[1]
    assert codec.fallbacks == before + 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source_partition", True),  # fastavro's union check refuses bools
        ("source_partition", 2**31),  # out of int range inside a union
        ("source_offset", 2.0),
        ("source_offset", 2**63),
        ("event_id", 5),
        ("model_name", None),
        ("model_name", b"bytes"),
        ("actor", "\ud800"),  # a lone surrogate is not UTF-8
        ("occurred_at", 2**63),
        ("occurred_at", -(2**63) - 1),
        ("occurred_at", "now"),
        ("details", {"k": 1}),
        ("details", {1: "v"}),
        ("details", None),
        ("details", [("k", "v")]),
        ("model_name", EqualToAnything()),  # must not pass for the last record's string
    ],
)
def test_records_fastavro_refuses_raise_fastavros_error(field: str, value: Any) -> None:
    schema = load_schema("audit_event")
    codec = compile_codec(schema)
    record = RecordMaker(schema, seed=5).record()
    record[field] = value
    with pytest.raises(Exception) as reference:  # whatever fastavro raises
        fastavro_bytes(schema, record)
    with pytest.raises(reference.type):
        codec.encode(record)
    good = RecordMaker(schema, seed=6).record()
    with pytest.raises(reference.type):
        codec.encode_many([good, record, good])


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("label", "value", True),  # inside a union fastavro refuses a bool for a double
        ("label", "value", "1.5"),
        ("label", "value", Decimal("1.5")),
        ("label", "label", 1),
        ("prediction", "probabilities", {"0": True, "1": 0.5}),
        ("prediction", "probabilities", {"0": "0.5"}),
        ("prediction", "probabilities", {0: 0.5}),
        ("prediction", "probabilities", [0.5]),
    ],
)
def test_union_values_fastavro_refuses_raise(name: str, field: str, value: Any) -> None:
    schema = load_schema(name)
    codec = compile_codec(schema)
    record = RecordMaker(schema, seed=9).record()
    record[field] = value
    with pytest.raises(Exception) as reference:  # whatever fastavro raises
        fastavro_bytes(schema, record)
    with pytest.raises(reference.type):
        codec.encode(record)
    with pytest.raises(reference.type):
        codec.encode_many([record])


def test_missing_required_field_raises_like_fastavro(codecs: dict[str, Codec]) -> None:
    record = RecordMaker(load_schema("prediction"), seed=7).record()
    del record["event_id"]
    with pytest.raises(ValueError, match="no value and no default"):
        codecs["prediction"].encode(record)


def test_encode_many_resumes_fast_after_an_odd_record(codecs: dict[str, Codec]) -> None:
    schema, codec = load_schema("shadow_record"), codecs["shadow_record"]
    rows = records_for("shadow_record", 50, seed=8)
    rows[10] = dict(rows[10], agree=1)  # fastavro writes truthiness for a plain boolean
    rows[20] = {k: v for k, v in rows[20].items() if k != "champion_label"}
    before = codec.fallbacks
    assert codec.encode_many(rows) == [fastavro_bytes(schema, r) for r in rows]
    assert codec.fallbacks == before + 1  # the boolean needs no fallback: same bytes


# ------------------------------------------------------------------------- decode


@pytest.mark.parametrize("name", ALL)
def test_decode_equals_fastavro(codecs: dict[str, Codec], name: str) -> None:
    schema, codec = SCHEMAS[name], codecs[name]
    records = records_for(name, 400, seed=11)
    values = [fastavro_bytes(schema, r) for r in records]
    singles = [codec.decode(v) for v in values]
    for _ in range(2):  # the second pass may use learned map templates
        batch = codec.decode_many(values)
        for value, one, many in zip(values, singles, batch, strict=True):
            reference = fastavro_read(schema, value)
            assert same(one, reference)
            assert same(many, reference)


def test_decode_shares_its_timestamp_state_safely_across_threads() -> None:
    """decode() keeps the last timestamp's high bytes between calls; threads interleave."""
    codec = compile_codec(load_schema("label"))
    starts = [0, 1_704_067_200_000, -(2**40), 2**62]
    streams = [
        [
            {"event_id": "e", "label": None, "value": None, "labelled_at": t + i * 7}
            for i in range(3000)
        ]
        for t in starts
    ]
    encoded = [[codec.encode(r) for r in rows] for rows in streams]
    failures: list[int] = []

    def work(k: int) -> None:
        for record, value in zip(streams[k], encoded[k], strict=True):
            if codec.decode(value) != record:
                failures.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(starts))]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert failures == []


def test_decode_takes_any_bytes_like(codecs: dict[str, Codec]) -> None:
    codec = codecs["label"]
    value = codec.encode({"event_id": "e", "label": "1", "value": None, "labelled_at": 5})
    expected = codec.decode(value)
    assert codec.decode(bytearray(value)) == expected
    assert codec.decode(memoryview(value)) == expected
    with pytest.raises(DecodeError, match="expected bytes"):
        codec.decode(None)  # type: ignore[arg-type]


def _sensor_bytes(codec: Codec) -> bytes:
    return codec.encode(
        {"event_id": "e1", "sensor_id": "s1", "event_time": 10, "features": {"a": 1.0}}
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "truncated"),
        (b"\x04e1\x04s1\x14\x02\x02a" + bytes(8) + b"\x00\x00", "trailing"),
        (b"\x04e1\x04s1\x14\x02\x02a" + bytes(7), "truncated"),
        (b"\x04\xff\xfe\x04s1\x14\x00", "invalid UTF-8"),
        (b"\x04\xed\xa0\x04s1\x14\x00", "invalid UTF-8"),  # an encoded surrogate
        (b"\x03e1\x04s1\x14\x00", "negative length"),
        (b"\x7ee1\x04s1\x14\x00", "runs past the end"),
        (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", "runs past the end"),
        (b"\x04e1\x04s1\x14\xfe\xff\xff\xff\x0f", "exceed the data"),  # 2^31 map entries
        (b"\x04e1\x04s1\x14\x01\x02\x02a", "exceed the data"),  # negative count, then size
        (b"\x04e1\x04s1" + b"\xff" * 10 + b"\x01\x00", "longer than 10 bytes"),
        (b"\x04e1\x04s1" + b"\xff" * 9 + b"\x7f\x00", "above 64 bits"),
    ],
)
def test_malformed_sensor_events_raise_decode_error(
    codecs: dict[str, Codec], value: bytes, reason: str
) -> None:
    codec = codecs["sensor_event"]
    assert codec.decode(_sensor_bytes(codec))  # the template itself is fine
    with pytest.raises(DecodeError, match=reason):
        codec.decode(value)
    (error,) = codec.decode_many([value])
    assert isinstance(error, DecodeError)


def test_block_counts_beyond_the_data_are_refused_early(codecs: dict[str, Codec]) -> None:
    """Array and map counts are checked against the bytes left before looping."""
    audit = codecs["audit_event"]
    record = RecordMaker(load_schema("audit_event"), seed=15).record()
    record["details"] = {}
    value = audit.encode(record)
    assert value.endswith(b"\x00")
    # 2^31 entries; a block of -3 entries (then its byte size): 5 bytes hold 2 at most
    for count in (b"\xfe\xff\xff\xff\x0f", b"\x05\x02"):
        with pytest.raises(DecodeError, match="exceed the data"):
            audit.decode(value[:-1] + count + b"\x02k\x02v\x00")
    drift = codecs["drift_event"]
    record = RecordMaker(load_schema("drift_event"), seed=16).record()
    record["top_bins"] = []
    value = drift.encode(record)
    tail = fastavro_bytes({"type": "long"}, record["detected_at"])
    at = len(value) - len(tail) - 1
    assert value[at] == 0
    bins = b"\x04" + b"\x02b" + bytes(24) + b"\x00"  # 2 bins announced, 1 there (25 bytes)
    with pytest.raises(DecodeError, match="exceed the data"):
        drift.decode(value[:at] + bins + tail)


def test_union_index_and_boolean_are_checked(codecs: dict[str, Codec]) -> None:
    codec = codecs["shadow_record"]
    record = {
        "event_id": "e",
        "sensor_id": "s",
        "champion_version": "3",
        "challenger_version": "4",
        "champion_label": "1",
        "challenger_label": None,
        "champion_score": 0.5,
        "challenger_score": 0.25,
        "agree": True,
        "processed_at": 7,
    }
    good = codec.encode(record)
    label_at = 8  # after four one-character strings
    assert good[label_at] == 2
    for bad_index in (b"\x04", b"\x01", b"\x80\x00"):
        with pytest.raises(DecodeError, match="union index"):
            codec.decode(good[:label_at] + bad_index + good[label_at + 1 :])
    agree_at = len(good) - 2  # then processed_at, one byte
    assert good[agree_at] == 1
    with pytest.raises(DecodeError, match="boolean byte 2"):
        codec.decode(good[:agree_at] + b"\x02" + good[agree_at + 1 :])
    assert codec.decode(good) == record


def test_every_truncation_is_rejected(codecs: dict[str, Codec]) -> None:
    for name in ALL:
        codec = codecs[name]
        for record in records_for(name, 20, seed=13):
            value = codec.encode(record)
            for cut in range(len(value)):
                with pytest.raises(DecodeError):
                    codec.decode(value[:cut])


# --------------------------------------------------------------------------- fuzz

#: Reasons the codec may reject bytes fastavro reads (see the module docstring). The
#: last: a block count of -2^63, whose negation overflows fastavro's int64 into an
#: empty block.
STRICTER = (
    "boolean byte",
    "longer than 10 bytes",
    "above 64 bits",
    "union index byte",
    "9223372036854775808 items",
)


def _mutations(value: bytes, rng: random.Random) -> list[bytes]:
    out = []
    for _ in range(12):
        data = bytearray(value)
        kind = rng.randrange(5)
        at = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:
            data[at] = rng.randrange(256)
        elif kind == 1 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif kind == 3 and data:
            del data[at : at + rng.randrange(1, 4)]
        else:
            data[at:at] = rng.choice([b"\xff" * 11, b"\x01", b"\xfe\xff\xff\xff\x0f", b"\x80"])
        out.append(bytes(data))
    return out


def _check_against_fastavro(
    schema: Any, value: bytes, decode: Callable[[bytes], Any], stricter: list[str]
) -> None:
    reference = fastavro_read(schema, value)
    try:
        got = decode(value)
    except DecodeError as exc:
        if not isinstance(reference, Exception):
            assert any(reason in str(exc) for reason in STRICTER), (value, exc, reference)
            stricter.append(str(exc))
        return
    assert not isinstance(reference, Exception), (value, got, reference)
    assert same(got, reference), (value, got, reference)


@pytest.mark.parametrize("name", ALL)
def test_fuzzed_bytes_give_fastavros_record_or_decode_error(
    codecs: dict[str, Codec], name: str
) -> None:
    schema, codec = SCHEMAS[name], codecs[name]
    rng = random.Random(sum(map(ord, name)))
    records = records_for(name, 100, seed=14)
    values = [codec.encode(r) for r in records]
    codec.decode_many(values * 2)  # learn the map templates first: fuzz them too
    stricter: list[str] = []
    candidates = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(150)]
    for value in values:
        candidates += _mutations(value, rng)
    for candidate in candidates:
        _check_against_fastavro(schema, candidate, codec.decode, stricter)
    batch = codec.decode_many(candidates)
    for candidate, got in zip(candidates, batch, strict=True):
        _check_against_fastavro(schema, candidate, _replay(got), stricter)


def _replay(result: Any) -> Callable[[bytes], Any]:
    """A decode function that gives ``result`` (a record, or raises the DecodeError)."""

    def decode(_: bytes) -> Any:
        if isinstance(result, Exception):
            raise result
        return result

    return decode


def _columns_agree_with_decode_many(codec: Codec, values: list[bytes]) -> int:
    """decode_columns over two places of every three of ``values`` against decode_many:
    the same records (rebuilt by ``record``) and the same errors, in order. Returns the
    rows whose map came back by a learned layout."""
    places = [i for i in range(len(values)) if i % 3 != 2]
    expected = codec.decode_many([values[i] for i in places])
    got = codec.decode_columns(values, places)
    assert sorted(got.indices + [i for i, _ in got.errors]) == places
    rows = iter(range(len(got.indices)))
    errors = iter(got.errors)
    keyed = 0
    for place, reference in zip(places, expected, strict=True):
        if isinstance(reference, DecodeError):
            where, error = next(errors)
            assert (where, str(error)) == (place, str(reference))
            assert isinstance(error, DecodeError)
            continue
        row = next(rows)
        assert got.indices[row] == place
        assert same(got.record(row), reference), (place, got.record(row), reference)
        for name, layouts in got.layouts.items():
            layout, value = layouts[row], got.columns[name][row]
            if layout is None:
                assert isinstance(value, dict)
                continue
            assert isinstance(value, bytes) and len(value) == layout.size
            assert same(layout.as_dict(value), reference[name])
            assert same(list(layout.values(value)), list(reference[name].values()))
            keyed += 1
    return keyed


@pytest.mark.parametrize("name", ALL)
def test_decode_columns_give_decode_many_records_and_errors(
    codecs: dict[str, Codec], name: str
) -> None:
    """Records of every schema, twice over (learned layouts), then fuzzed bytes and every
    truncation of some among them."""
    codec = codecs[name]
    values = [codec.encode(r) for r in records_for(name, 300, seed=17)]
    for _ in range(2):
        keyed = _columns_agree_with_decode_many(codec, values * 2)
    if name == "sensor_event":
        assert keyed > 0  # the second pass reads the repeated key sets by their layouts
    rng = random.Random(sum(map(ord, name)) + 1)
    fuzzed = [m for v in values[:60] for m in _mutations(v, rng)]
    cut = [v[:k] for v in values[:20] for k in range(len(v))]  # every truncation
    mixed = []
    for n, candidate in enumerate(fuzzed + cut):
        mixed += [values[n % len(values)], candidate]
    _columns_agree_with_decode_many(codec, mixed)


def test_a_cut_map_gets_one_message_whatever_layouts_were_learned() -> None:
    """A map cut short can look like the start of a learned layout; its error must not
    depend on what the codec saw before (decode, decode_many, decode_columns alike)."""
    schema = load_schema("sensor_event")
    record = {"event_id": "e", "sensor_id": "s", "event_time": 1, "features": {"a": 1.0, "b": 2.0}}
    good = compile_codec(schema).encode(record)
    for cut in range(1, 12):
        value = good[:-cut]
        messages = set()
        for learned in (False, True):
            codec = compile_codec(schema)
            if learned:
                codec.decode_many([good, good])
                codec.decode(good), codec.decode(good)
                codec.decode_columns([good, good], [0, 1])
            with pytest.raises(DecodeError) as raised:
                codec.decode(value)
            (many,) = codec.decode_many([value])
            ((_, columns),) = codec.decode_columns([value], [0]).errors
            messages |= {str(raised.value), str(many), str(columns)}
        assert len(messages) == 1, (cut, messages)


def test_decode_columns_keyed_maps_keep_their_keys_per_record() -> None:
    """Maps of three layouts (one the reorder of another), an empty one and an odd one,
    interleaved: each tuple's keys are its own record's, never a neighbour's."""
    codec = compile_codec(load_schema("sensor_event"))  # no layouts learned yet
    base: dict[str, Any] = {"event_id": "e", "sensor_id": "s", "event_time": 1}
    feature_sets = [
        {"f1": 1.0, "f2": 2.0},
        {"x": -0.0, "y": math.nan, "z": math.inf},
        {"f2": 2.0, "f1": 1.0},
        {},
        {"f1": 1.0, "f2": 2.0, "f3": 3.0},
    ]
    # A layout is learned from a key set seen twice in a row: each set twice, then mixed.
    sets = [f for f in feature_sets for _ in range(2)] + feature_sets * 6
    records: list[dict[str, Any]] = [
        dict(base, event_id=str(i), features=f) for i, f in enumerate(sets)
    ]
    values = [codec.encode(r) for r in records]
    got = codec.decode_columns(values, range(len(values)))
    assert got.errors == [] and got.indices == list(range(len(values)))
    for row, record in enumerate(records):
        assert same(got.record(row), record)
        layout = got.layouts["features"][row]
        if layout is not None:
            assert layout.keys == tuple(record["features"])
    keys = [None if layout is None else layout.keys for layout in got.layouts["features"]]
    assert keys.count(("f1", "f2")) == keys.count(("f2", "f1")) == 6
    assert keys.count(("x", "y", "z")) == 6


# --------------------------------------------------------------------------- misc


def _one_field(type_: Any, name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": "x", "type": type_}]}


@pytest.mark.parametrize(
    "schema",
    [
        _one_field({"type": "enum", "name": "C", "symbols": ["A"]}),
        _one_field({"type": "fixed", "name": "X", "size": 4}),
        _one_field(["null", "int", "string"]),
        _one_field(["int", "string"]),
        _one_field({"type": "array", "items": "null"}),
        _one_field(["null", "Node"], name="Node"),
        {"type": "array", "items": "long"},
    ],
)
def test_unsupported_schemas_are_refused_at_compile_time(schema: Any) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_codec(fastavro.parse_schema(schema))


def test_logical_types_are_refused() -> None:
    with pytest.raises(UnsupportedSchema, match="logical type"):
        compile_codec(load_schema("prediction", raw=False))


def test_plain_dict_schema_and_nested_defaults() -> None:
    """A schema given unparsed; a nested record missing a defaulted field goes to fastavro."""
    schema = {
        "type": "record",
        "name": "Outer",
        "fields": [
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "In",
                    "fields": [
                        {"name": "a", "type": "long"},
                        {"name": "tag", "type": "string", "default": "none"},
                    ],
                },
            },
            {"name": "more", "type": {"type": "array", "items": "In"}},
        ],
    }
    codec = compile_codec(schema)
    parsed = fastavro.parse_schema(schema)
    rows: list[dict[str, Any]] = [
        {"inner": {"a": 1, "tag": "x"}, "more": [{"a": -5, "tag": "é"}]},
        {"inner": {"a": 2}, "more": [{"a": 3}, {"a": 4, "tag": "t"}]},
    ]
    assert codec.encode_many(rows) == [fastavro_bytes(parsed, r) for r in rows]
    assert codec.fallbacks == 1
    for row in rows:
        value = codec.encode(row)
        assert same(codec.decode(value), fastavro_read(parsed, value))


def test_source_is_kept_and_readable(codecs: dict[str, Codec]) -> None:
    source = codecs["sensor_event"].source
    for name in (
        "def encode(",
        "def encode_run(",
        "def decode(",
        "def decode_many(",
        "def decode_columns(",
    ):
        assert name in source
    compile(source, "<check>", "exec")
