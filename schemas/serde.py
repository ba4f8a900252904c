"""Serialisers for the three wire formats, batch first.

* ``avro`` — schemaless Avro with the packaged schema (the embedded default);
* ``avro-confluent`` — Confluent wire format: magic byte 0, 4-byte schema id,
  then schemaless Avro. Schema ids are resolved through a registry client given
  by ``connectors.schema_registry``; the framing here is pure;
* ``json`` — UTF-8 JSON objects, so any Kafka client (kcat included) can feed
  the processor. ``timestamp-millis`` fields accept epoch milliseconds or an
  ISO-8601 string. Parsed by msgspec (about 6x the standard library's speed);
  whatever msgspec refuses is parsed again by the standard library, whose verdict
  (and error message) stands, so the records accepted and refused are exactly the
  standard library's.

Records are plain dicts. Timestamps are ints (epoch milliseconds) everywhere in
the pipeline: see ``schemas.catalog`` for why.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import load_schema
from schemas.codec import (
    Codec,
    Column,
    DecodedColumns,
    UnsupportedSchema,
    compile_codec,
    records_from_columns,
)
from schemas.errors import DecodeError, InfrastructureError

Record = dict[str, Any]


class Serde(Protocol):
    """Encodes and decodes records of one schema in one wire format."""

    format: str

    def encode(self, record: Record) -> bytes: ...

    def decode(self, data: bytes) -> Record: ...

    def encode_many(self, records: Sequence[Record]) -> list[bytes]: ...

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        """``n`` records given as columns (``schemas.codec.columns``): the bytes of
        ``encode_many(records_from_columns(columns, n))``."""
        ...


class AvroSerde:
    """Schemaless Avro with one fixed schema.

    Records go through a codec compiled for the schema (``schemas.codec``):
    byte-identical to fastavro and several times faster. A schema the compiler
    does not support falls back to fastavro itself.
    """

    format = "avro"

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name
        self._schema = load_schema(schema_name)
        try:
            self._codec: Codec | None = compile_codec(self._schema)
        except UnsupportedSchema:
            self._codec = None
        self._buffer = io.BytesIO()

    def encode(self, record: Record) -> bytes:
        if self._codec is not None:
            return self._codec.encode(record)
        return self.encode_many((record,))[0]

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        if self._codec is not None:
            return self._codec.encode_many(
                records if isinstance(records, list | tuple) else list(records)
            )
        buf, schema = self._buffer, self._schema
        out: list[bytes] = []
        append = out.append
        for record in records:
            buf.seek(0)
            buf.truncate()
            schemaless_writer(buf, schema, record)
            append(buf.getvalue())
        return out

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        if self._codec is not None:
            return self._codec.columns.encode(columns, n)
        return self.encode_many(records_from_columns(columns, n))

    def decode_columns(
        self, values: Sequence[bytes], indices: Iterable[int]
    ) -> DecodedColumns | None:
        """The records at ``indices`` read column-wise (``schemas.codec.DecodedColumns``),
        each error the one :meth:`decode` raises; None without a compiled codec."""
        if self._codec is None:
            return None
        return self._codec.decode_columns(values, indices)

    def decode(self, data: bytes) -> Record:
        if self._codec is not None:
            return self._codec.decode(data)
        buf = io.BytesIO(data)
        try:
            record = schemaless_reader(buf, self._schema, None)
        except Exception as exc:  # fastavro raises many types on bad bytes
            raise DecodeError(f"not a {self.schema_name} Avro record: {exc!r}") from exc
        if buf.tell() != len(data):
            raise DecodeError(
                f"{len(data) - buf.tell()} trailing bytes after a {self.schema_name} record"
            )
        if not isinstance(record, dict):
            raise DecodeError(f"not a {self.schema_name} record")
        return record


_CONFLUENT_HEADER = struct.Struct(">bI")


class ConfluentAvroSerde:
    """Confluent wire format. ``writer_schema_for`` maps a schema id to a parsed schema.

    What the resolver raises decides where a record goes: ``InfrastructureError``
    (the registry is down) stops the loop; anything else makes the record a
    ``DecodeError``, a dead letter.
    """

    format = "avro-confluent"

    def __init__(
        self,
        schema_name: str,
        schema_id: int,
        writer_schema_for: Callable[[int], Any],
    ) -> None:
        self.schema_name = schema_name
        self.schema_id = schema_id
        self._inner = AvroSerde(schema_name)
        self._header = _CONFLUENT_HEADER.pack(0, schema_id)
        self._writer_schema_for = writer_schema_for

    def encode(self, record: Record) -> bytes:
        return self._header + self._inner.encode(record)

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        header = self._header
        return [header + body for body in self._inner.encode_many(records)]

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        header = self._header
        return [header + body for body in self._inner.encode_columns(columns, n)]

    def decode_columns(
        self, values: Sequence[bytes], indices: Iterable[int]
    ) -> DecodedColumns | None:
        """A batch all written with this serde's schema id, read column-wise (errors as
        :meth:`decode` raises them); None for any other batch, read record by record."""
        header = self._header
        places = list(indices)
        bodies = []
        for i in places:
            value = values[i]
            if not value.startswith(header):
                return None
            bodies.append(value[5:])
        decoded = self._inner.decode_columns(bodies, range(len(bodies)))
        if decoded is None:
            return None
        return DecodedColumns(
            [places[j] for j in decoded.indices],
            decoded.columns,
            decoded.layouts,
            [(places[j], error) for j, error in decoded.errors],
        )

    def decode(self, data: bytes) -> Record:
        if len(data) < 5:
            raise DecodeError("shorter than the 5-byte Confluent header")
        magic, schema_id = _CONFLUENT_HEADER.unpack_from(data)
        if magic != 0:
            raise DecodeError(f"Confluent magic byte is {magic}, not 0")
        if schema_id == self.schema_id:
            return self._inner.decode(data[5:])
        try:
            writer = self._writer_schema_for(schema_id)
            buf = io.BytesIO(data[5:])
            record = schemaless_reader(buf, writer, self._inner._schema)
        except (DecodeError, InfrastructureError):
            raise  # the resolver's own verdict: a bad id, or a registry that is down
        except Exception as exc:  # unknown id, incompatible writer, bad bytes
            raise DecodeError(f"cannot read with writer schema id {schema_id}: {exc!r}") from exc
        if buf.tell() != len(data) - 5:
            raise DecodeError(f"{len(data) - 5 - buf.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(f"not a {self.schema_name} record")
        return record


def to_millis(value: Any, field: str) -> int:
    """A timestamp-millis field's JSON value (epoch milliseconds, or ISO-8601 text, UTC when
    it names no zone) as epoch milliseconds; DecodeError for anything else."""
    if isinstance(value, bool):
        raise DecodeError(f"{field} must be epoch milliseconds or ISO-8601, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise DecodeError(f"{field} is not ISO-8601: {value!r}") from exc
        if parsed.tzinfo is None:  # no zone given: UTC, never the machine's local time
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    raise DecodeError(f"{field} must be epoch milliseconds or ISO-8601, got {type(value).__name__}")


def _timestamp_fields(schema: Any) -> list[str]:
    fields = []
    for field in schema["fields"]:
        ftype = field["type"]
        options = ftype if isinstance(ftype, list) else [ftype]
        if any(isinstance(o, dict) and o.get("logicalType") == "timestamp-millis" for o in options):
            fields.append(field["name"])
    return fields


#: msgspec's untyped JSON parser: the same values as ``json.loads`` for every input it
#: takes (integers of any size stay exact); what it refuses (NaN, lone surrogates, a BOM,
#: UTF-16, bad bytes) goes to the standard library for the verdict.
_parse_json = msgspec.json.Decoder().decode


def _stdlib_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UTF-8, >4300-digit ints
        raise DecodeError(f"not JSON: {exc}") from exc


class JsonSerde:
    """JSON objects shaped like the Avro schema; only required fields are checked here."""

    format = "json"

    def __init__(self, schema_name: str) -> None:
        self.schema_name = schema_name
        public = load_schema(schema_name, raw=False)
        self._required = [
            f["name"]
            for f in public["fields"]
            if "default" not in f and not (isinstance(f["type"], list) and "null" in f["type"])
        ]
        self._required_set = frozenset(self._required)
        self._timestamps = _timestamp_fields(public)

    def encode(self, record: Record) -> bytes:
        return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        return [dumps(r).encode() for r in records]

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        return self.encode_many(records_from_columns(columns, n))

    def decode(self, data: bytes) -> Record:
        try:
            record = _parse_json(data)
        except (msgspec.DecodeError, RecursionError, ValueError, TypeError):
            record = _stdlib_json(data)
        if not isinstance(record, dict):
            raise DecodeError(f"a {self.schema_name} must be a JSON object")
        if not self._required_set <= record.keys():
            missing = [name for name in self._required if name not in record]
            raise DecodeError(f"missing field(s): {', '.join(missing)}")
        for name in self._timestamps:
            value = record.get(name)
            if value is not None and type(value) is not int:  # an int is kept as it is
                record[name] = to_millis(value, name)
        return record


def make_serde(
    fmt: str,
    schema_name: str,
    *,
    confluent: tuple[int, Callable[[int], Any]] | None = None,
) -> Serde:
    """Serde for ``fmt``. ``avro-confluent`` needs ``confluent=(schema_id, resolver)``."""
    if fmt == "avro":
        return AvroSerde(schema_name)
    if fmt == "json":
        return JsonSerde(schema_name)
    if fmt == "avro-confluent":
        if confluent is None:
            raise ValueError("avro-confluent needs a schema id and resolver (Schema Registry URL)")
        return ConfluentAvroSerde(schema_name, *confluent)
    raise ValueError(f"unknown format {fmt!r}")
