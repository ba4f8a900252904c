"""Compiled Avro codecs: straight-line encode/decode functions generated from a schema.

fastavro interprets the schema for every datum it reads or writes; for the small
records of the scoring loop that walk is most of the ~10 µs a record costs.
:func:`compile_codec` walks the schema once, writes Python source for functions
specialised to it (every field, type and union branch known in advance) and
compiles them. The generated source stays on :attr:`Codec.source` for review.

Contracts (``tests/unit/schemas/test_codec.py`` checks them against fastavro):

* **encode** is byte-identical to ``fastavro.schemaless_writer``. The generated
  fast path takes records of the plain shape (every field present, builtin
  types, union values of the exact branch type). A record it cannot take as is
  — an optional field left out, a value fastavro would coerce (``"1.5"`` for a
  double), a value it might reject — is handed to fastavro itself (after one
  retry with the schema defaults filled in), so odd records get fastavro's bytes
  and fastavro's errors, only slower; :attr:`Codec.fallbacks` counts them.
* **decode** returns the record fastavro returns, and raises
  :class:`~schemas.errors.DecodeError` for bytes that are not one record of the
  schema: truncated, trailing bytes, invalid UTF-8, negative or oversized
  lengths, union index out of range, block counts larger than the bytes left.
  It is stricter than fastavro where fastavro accepts junk, and rejects: a
  boolean byte other than 0/1; a varint longer than 10 bytes or above 64 bits;
  a union index that is negative (fastavro indexes the branch list from the
  end) or written as a non-canonical varint; a block count of -2^63 (fastavro's
  int64 negation overflows it into an empty block). Every length and count is
  checked against the bytes left before anything is allocated, so hostile
  input costs at most O(its size) memory and time.
* **decode_columns** reads what ``decode_many`` reads, column-wise: the same
  records (``DecodedColumns.record``) and the same errors, word for word; a
  ``map<double>`` of a learned layout is kept as its bytes (``MapLayout``).

Speed comes from: no per-datum schema dispatch; zigzag varints from a table for
values up to 2^13 and a cached high part above (timestamps share it within a
batch); consecutive fixed-size fields packed/unpacked by one ``struct`` call;
``encode_many`` keeping the last value and bytes of each scalar field, so fields
that repeat through a batch (model name, version, variant, timestamps of the
batch) are encoded once; ``map<double>`` key sets learned after two sightings
and then written/read by one ``struct`` call with precomputed key bytes.

Supported types: record (nested), string, bytes, long, int, double, float,
boolean, null, union of null and one type, array, map. Anything else (enum,
fixed, wider unions, logical types, recursive records) raises
:class:`UnsupportedSchema` at compile time; keep fastavro for those.

Use::

    codec = compile_codec(load_schema("sensor_event"))   # once, at start-up
    values = codec.encode_many(records)                    # list[bytes]
    values = codec.columns.encode({"event_id": ids, "model": Same("m"), ...}, n)
    records = codec.decode_many(values)                    # record or DecodeError each
    batch = codec.decode_columns(values, range(len(values)))  # one list per field
    record = codec.decode(value)                           # raises DecodeError

``python -m schemas.codec_bench`` compares it with fastavro on this machine.

The package: ``schema`` (the supported types, as a node tree), ``wire`` (varints
and the map<double> layout), ``source`` (what both generators share),
``encode`` and ``decode`` (each direction's generator and the runtime helpers
its code calls); this module assembles the generated module and compiles it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import fastavro

from schemas.codec.columns import Column, ColumnEncoder, KeyedRows, Same, records_from_columns
from schemas.codec.decode import (
    _DECODE_ERRORS,
    DECODE_RUNTIME,
    DecodedColumns,
    MapLayout,
    _DecodeSource,
    _Malformed,
    whole_record,
)
from schemas.codec.encode import _RECOVERABLE, ENCODE_RUNTIME, _EncodeSource
from schemas.codec.schema import UnsupportedSchema, _model, _Optional, _Prim, _Rec
from schemas.codec.source import _indent, _printable
from schemas.errors import DecodeError

__all__ = [
    "BytesLike",
    "Codec",
    "Column",
    "DecodedColumns",
    "KeyedRows",
    "MapLayout",
    "Record",
    "Same",
    "UnsupportedSchema",
    "compile_codec",
    "records_from_columns",
]

Record = dict[str, Any]
BytesLike: TypeAlias = bytes | bytearray | memoryview


class _Generator(_EncodeSource, _DecodeSource):
    """The source of one codec's module: its encoders and decoders, side by side."""

    def __init__(self, root: _Rec) -> None:
        super().__init__(root, {**ENCODE_RUNTIME, **DECODE_RUNTIME})

    def module(self) -> str:
        root = self.root
        lines, parts = self.enc_fields(root, "r", False, False)
        joined = f"_join(({', '.join(parts)},))" if parts else "b''"
        self.inits = []
        batch_lines, batch_parts = self.enc_fields(root, "r", False, True)
        batch_joined = f"_join(({', '.join(batch_parts)},))" if batch_parts else "b''"
        encode_inits = self.inits
        self.decoding_batch = True
        self.inits, self.state_globals = [], []
        decode_lines = self.dec_record(root, "record")
        decode_inits, state_globals = self.inits, self.state_globals
        self.inits, self.state_globals = [], None
        decode_batch_lines = self.dec_record(root, "record")
        decode_many_inits = self.inits
        decode_columns = self.decode_columns_source(root)
        declare = [f"    global {', '.join(state_globals)}"] if state_globals else []
        source = [
            f"# Generated by schemas.codec for {_printable(root.name)}. Do not edit: recompile.",
            "",
            *[h + "\n" for h in self.helpers],
            "def encode_fast(r):",
            '    """The record as bytes; raises on anything not of the plain shape."""',
            *_indent(lines),
            f"    return {joined}",
            "",
            "",
            "def encode(r):",
            "    try:",
            *_indent(lines, 2),
            f"        return {joined}",
            "    except _RECOVERABLE:",
            "        pass",
            "    return _encode_slow(r)",
            "",
            "",
            "def encode_run(records, out, start):",
            '    """Append encoded records[start:] to out; stop at the first odd one."""',
            "    append = out.append",
            *_indent(encode_inits),
            "    try:",
            "        for r in (_islice(records, start, None) if start else records):",
            *_indent(batch_lines, 3),
            f"            append({batch_joined})",
            "    except _RECOVERABLE:",
            "        pass",
            "    return len(out)",
            "",
            "",
            "def decode(data):",
            *declare,
            *_indent(decode_inits),
            "    try:",
            *_indent(whole_record(decode_lines), 2),
            "    except _DECODE_ERRORS as exc:",
            "        raise _decode_error(exc) from exc",
            "    return record",
            "",
            "",
            "def decode_many(values):",
            "    out = []",
            "    append = out.append",
            *_indent(decode_many_inits),
            "    for data in values:",
            "        try:",
            *_indent(whole_record(decode_batch_lines), 3),
            "        except _DECODE_ERRORS as exc:",
            "            append(_decode_error(exc))",
            "            continue",
            "        append(record)",
            "    return out",
            "",
            "",
            *decode_columns,
        ]
        return "\n".join(source) + "\n"


@dataclass(frozen=True, slots=True)
class Codec:
    """Encode/decode functions compiled for one record schema.

    Drop-in for ``AvroSerde``'s core: ``encode``, ``encode_many``, ``decode``
    (raising :class:`~schemas.errors.DecodeError`) and ``decode_many`` (the
    DecodeError in place of each bad record, so a batch never stops on one).
    """

    name: str
    #: The generated Python source of the functions, for review and debugging.
    source: str = field(repr=False)
    encode: Callable[[Record], bytes] = field(repr=False)
    encode_many: Callable[[Sequence[Record]], list[bytes]] = field(repr=False)
    decode: Callable[[BytesLike], Record] = field(repr=False)
    #: Takes any iterable of values; a None (tombstone) comes back as a DecodeError.
    decode_many: Callable[[Iterable[BytesLike | None]], list[Record | DecodeError]] = field(
        repr=False
    )
    #: ``decode_columns(values, indices)``: those records read column-wise, no dict per
    #: record (a ``map<double>`` that matches a learned layout stays its bytes: ``MapLayout``).
    decode_columns: Callable[[Sequence[BytesLike], Iterable[int]], DecodedColumns] = field(
        repr=False
    )
    _fallbacks: list[int] = field(repr=False)
    #: ``encode(columns, n)``: a batch given as columns (``schemas.codec.columns``).
    columns: ColumnEncoder = field(repr=False)

    @property
    def fallbacks(self) -> int:
        """Records encoded by fastavro because the fast path did not take them as is."""
        return self._fallbacks[0]


def compile_codec(schema: Any) -> Codec:
    """Compile a codec for a record schema (parsed by fastavro, or a plain dict).

    Load our schemas with ``schemas.catalog.load_schema(name)``: it strips the
    logical types, which this compiler (like the pipeline) treats as plain ints.
    """
    parsed: Any = schema
    if not (isinstance(schema, dict) and "__fastavro_parsed" in schema):
        parsed = fastavro.parse_schema(schema)
    if not isinstance(parsed, dict):
        raise UnsupportedSchema("the top-level schema must be a record")
    root = _model(parsed, parsed.get("__named_schemas", {}), ())
    if not isinstance(root, _Rec):
        raise UnsupportedSchema("the top-level schema must be a record")
    generator = _Generator(root)
    source = generator.module()
    ns = generator.ns
    fallbacks = [0]
    defaults = _defaults(root)

    def fastavro_encode(record: Record) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        return buffer.getvalue()

    def encode_slow(record: Record) -> bytes:
        """The fast path with defaults filled in, else fastavro's bytes (or error)."""
        fallbacks[0] += 1
        try:
            return ns["encode_fast"]({**defaults, **record})
        except _RECOVERABLE:
            pass
        return fastavro_encode(record)

    def decode_error(exc: Exception) -> DecodeError:
        if isinstance(exc, _Malformed):
            reason = str(exc)
        elif isinstance(exc, UnicodeDecodeError):
            reason = f"invalid UTF-8 in a string ({exc.reason})"
        else:
            reason = "truncated"
        return DecodeError(f"not a {root.name} Avro record: {reason}")

    ns.update(
        _RECOVERABLE=_RECOVERABLE,
        _DECODE_ERRORS=_DECODE_ERRORS,
        _encode_slow=encode_slow,
        _decode_error=decode_error,
    )
    filename = f"<avro codec {root.name}>"
    exec(compile(source, filename, "exec"), ns)  # noqa: S102 - source generated above from the schema, never from data
    encode_run = ns["encode_run"]
    read_columns = ns["decode_columns"]

    def decode_columns(values: Sequence[BytesLike], indices: Iterable[int]) -> DecodedColumns:
        return DecodedColumns(*read_columns(values, indices))

    def encode_many(records: Sequence[Record]) -> list[bytes]:
        out: list[bytes] = []
        total = len(records)
        done = encode_run(records, out, 0)
        while done < total:
            out.append(encode_slow(records[done]))
            done = encode_run(records, out, done + 1)
        return out

    return Codec(
        name=root.name,
        source=source,
        encode=ns["encode"],
        encode_many=encode_many,
        decode=ns["decode"],
        decode_many=ns["decode_many"],
        decode_columns=decode_columns,
        _fallbacks=fallbacks,
        columns=ColumnEncoder(root, encode_many),
    )


def _defaults(rec: _Rec) -> Record:
    """What fastavro writes for a missing field: its default, or None for an optional one."""
    return {
        f.name: f.default
        for f in rec.fields
        if f.has_default or isinstance(f.node, _Optional) or f.node == _Prim("null")
    }
