"""Compiled Avro codecs: straight-line encode/decode functions generated from a schema.

fastavro interprets the schema for every datum it reads or writes; for the small
records of the scoring loop that walk is most of the ~10 µs a record costs.
:func:`compile_codec` walks the schema once, writes Python source for functions
specialised to it (every field, type and union branch known in advance) and
compiles them. The generated source stays on :attr:`Codec.source` for review.

Contracts (``tests/unit/test_codec.py`` checks them against fastavro):

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
    records = codec.decode_many(values)                    # record or DecodeError each
    record = codec.decode(value)                           # raises DecodeError

``python -m schemas.codec_bench`` compares it with fastavro on this machine.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeAlias

import fastavro

from schemas.errors import DecodeError

Record = dict[str, Any]
BytesLike: TypeAlias = bytes | bytearray | memoryview

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
#: struct codes of the fixed-size types, for packing runs of fields in one call.
_FIXED_CODES = {"boolean": "?", "float": "f", "double": "d"}
#: Decoding runs only float/double: a boolean byte must be checked to be 0 or 1.
_UNPACK_CODES = {"float": "f", "double": "d"}
_FIXED_SIZES = {"boolean": 1, "float": 4, "double": 8}
_SMALL = 1 << 14  # unsigned values below this encode in one or two bytes
_MAX_MAP_TEMPLATES = 4  # learned key sets per map<double> field (decoding)
_MAX_MAP_LAYOUTS = 64  # learned key sets per map<double> field (encoding)
_MAX_TEMPLATE_KEYS = 64
_MAX_TEMPLATE_BYTES = 4096  # longer maps are not worth a compiled template
_MAX_CACHED_KEYS = 1024


class UnsupportedSchema(ValueError):
    """The schema uses a type the compiler does not handle; use fastavro for it."""


class _Fallback(Exception):
    """The fast encoder met a value it does not take as is: let fastavro encode it."""


class _Malformed(Exception):
    """Bytes that are not a record of the schema; wrapped into a DecodeError."""


# --------------------------------------------------------------------------- varints


def _uvarint_loop(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Varint of every unsigned value below 2^14 (zigzagged longs -8192..8191).
_VARINT: tuple[bytes, ...] = tuple(_uvarint_loop(n) for n in range(_SMALL))
#: The low 14 bits of a larger value: two bytes, both with the continuation bit.
_LOW14: tuple[bytes, ...] = tuple(bytes((n & 0x7F | 0x80, n >> 7 | 0x80)) for n in range(_SMALL))
#: A one-byte varint (below 128) decoded: its zigzagged long.
_ZIGZAG1: tuple[int, ...] = tuple((b >> 1) ^ -(b & 1) for b in range(128))
#: A first length byte decoded: the length when it is a one-byte varint, else -1
#: (multi-byte or negative: ``_read_length`` reads it, or rejects it).
_LENGTH1: tuple[int, ...] = tuple(-1 if b >= 128 or b & 1 else b >> 1 for b in range(256))
#: Varint of ``n >> 14`` for large values; timestamps of one batch share it.
_HIGH: dict[int, bytes] = {}


def _uvarint(n: int) -> bytes:
    """Varint of a zigzagged 64-bit long ``n``; OverflowError when out of range."""
    if 0 <= n < _SMALL:
        return _VARINT[n]
    if n < 0 or n >> 64:
        raise OverflowError(f"{n} is outside the zigzag range of a 64-bit long")
    high = n >> 14
    tail = _HIGH.get(high)
    if tail is None:
        tail = _uvarint_loop(high)
        if len(_HIGH) < 4096:
            _HIGH[high] = tail
    return _LOW14[n & 0x3FFF] + tail


def _read_long(data: bytes, p: int) -> tuple[int, int]:
    """The zigzag long starting at ``p``: (value, position after it)."""
    b = data[p]
    n = b & 0x7F
    shift = 7
    p += 1
    while b & 0x80:
        if shift > 63:
            raise _Malformed(f"varint longer than 10 bytes at byte {p}")
        b = data[p]
        p += 1
        n |= (b & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise _Malformed(f"varint above 64 bits before byte {p}")
    return (n >> 1) ^ -(n & 1), p


def _read_long_high(
    data: bytes, p: int, high: bytes, high_value: int, length: int
) -> tuple[int, int, bytes, int, int]:
    """``_read_long``, also returning the varint's bytes after its first two.

    ``decode_many`` keeps them per long field: the next record's timestamp
    usually shares them, and is then read from its two low bytes alone.
    Returns (value, next position, high bytes, their value, varint length).
    """
    start = p
    value, p = _read_long(data, p)
    if p - start > 2:
        high = data[start + 2 : p]
        high_value = ((value << 1) ^ (value >> 63)) >> 14 << 14
        length = p - start
    return value, p, high, high_value, length


def _read_length(data: bytes, p: int) -> tuple[int, int]:
    """A string/bytes length at ``p``; a negative one is malformed."""
    n, after = _read_long(data, p)
    if n < 0:
        raise _Malformed(f"negative length {n} at byte {p}")
    return n, after


def _read_string(data: bytes, p: int, size: int) -> tuple[str, int]:
    n, p = _read_long(data, p)
    end = p + n
    if n < 0 or end > size:
        raise _bad_length(n, p, size)
    return data[p:end].decode(), end


def _bad_length(n: int, p: int, size: int) -> _Malformed:
    if n < 0:
        return _Malformed(f"negative length {n} at byte {p}")
    return _Malformed(f"length {n} at byte {p} runs past the end ({size - p} bytes left)")


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise _Malformed(f"expected bytes, got {type(data).__name__}")


# ------------------------------------------------------------- map<double> templates


def _map_double_layout(keys: Sequence[str]) -> list[bytes]:
    """Wire segments around the doubles of a one-block map<double>: count+key0, key1, …, 0."""
    segments = []
    for i, key in enumerate(keys):
        raw = key.encode()
        head = _uvarint(len(keys) << 1) if i == 0 else b""
        segments.append(head + _uvarint(len(raw) << 1) + raw)
    segments.append(b"\x00")
    return segments


def _dict_builder(keys: Sequence[str]) -> Callable[..., dict[str, float]]:
    """``f(v0, v1, …) -> {keys[0]: v0, …}`` with constant keys (Python's fastest dict build).

    The keys enter the source through ``repr``, which always yields a plain
    string literal, so the compiled code cannot be anything but this dict.
    """
    params = ", ".join(f"v{i}" for i in range(len(keys)))
    items = ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys))
    code = compile(f"lambda {params}: {{{items}}}", "<avro map template>", "eval")
    builder: Callable[..., dict[str, float]] = eval(code, {})
    return builder


class _DoubleMapReader:
    """Reads a map<double>; learns a key set seen twice in a row as a template.

    A template is the map's exact wire layout (count, key lengths and key bytes,
    terminator) with the doubles at fixed offsets: a masked integer compare
    checks every non-double byte at once, one ``struct`` call reads the doubles
    and a constant-key dict display builds the map — about 4x faster than the
    generic loop for the 9-feature events.
    """

    __slots__ = ("_pending", "templates")

    def __init__(self) -> None:
        self.templates: list[tuple[int, int, int, Callable[..., tuple[Any, ...]], Callable]] = []
        self._pending: tuple[str, ...] | None = None

    def read(self, data: bytes, p: int, size: int) -> tuple[dict[str, float], int]:
        start = p
        result: dict[str, float] = {}
        count, p = _read_long(data, p)
        blocks = 0
        plain = count > 0  # one block, count written without a byte size
        while count:
            if count < 0:
                count = -count
                plain = False
                _, p = _read_long(data, p)  # block size in bytes: not needed
            if count > (size - p) // 9:  # an entry is at least 9 bytes
                raise _Malformed(f"{count} items at byte {p} exceed the data")
            for _ in range(count):
                key, p = _read_string(data, p, size)
                result[key] = _unpack_d(data, p)[0]
                p += 8
            blocks += 1
            count, p = _read_long(data, p)
        if plain and blocks == 1:
            self._learn(result, data, start, p)
        return result, p

    def _learn(self, result: dict[str, float], data: bytes, start: int, end: int) -> None:
        keys = tuple(result)
        if keys != self._pending:
            self._pending = keys
            return
        self._pending = None
        if (
            len(self.templates) >= _MAX_MAP_TEMPLATES
            or len(keys) > _MAX_TEMPLATE_KEYS
            or end - start > _MAX_TEMPLATE_BYTES
        ):
            return
        segments = _map_double_layout(keys)
        fmt = "<" + "".join(f"{len(s)}xd" for s in segments[:-1]) + "x"
        unpacker = struct.Struct(fmt)
        expect = bytearray()
        mask = bytearray()
        for i, segment in enumerate(segments):
            expect += segment
            mask += b"\xff" * len(segment)
            if i < len(keys):
                expect += bytes(8)
                mask += bytes(8)
        length = len(expect)
        expect_int = int.from_bytes(expect, "little")
        mask_int = int.from_bytes(mask, "little")
        # Learn only the canonical layout actually on the wire (no duplicate keys,
        # no overlong varints): the template must match the bytes just read.
        if end - start != length:
            return
        if int.from_bytes(data[start:end], "little") & mask_int != expect_int:
            return
        self.templates.append(
            (length, mask_int, expect_int, unpacker.unpack_from, _dict_builder(keys))
        )


def _layout_writer(keys: Sequence[str], *, strict: bool, prefix: bytes) -> Callable[..., bytes]:
    """``write(v0, v1, …)``: the map ``{keys[i]: vi}`` in one ``struct.pack`` call.

    The key bytes are ``s`` fields of the format, passed as constants; only the
    doubles vary. Keys reach the generated code as bound constants, never as
    source text. ``strict`` adds fastavro's union check (float or int, not bool).
    """
    segments = _map_double_layout(keys)
    segments[0] = prefix + segments[0]
    n = len(keys)
    ns: dict[str, Any] = {f"_s{i}": segment for i, segment in enumerate(segments)}
    ns["_pack"] = struct.Struct("<" + "d".join(f"{len(seg)}s" for seg in segments)).pack
    ns["_Fallback"] = _Fallback
    lines = [f"def write({', '.join(f'v{i}' for i in range(n))}):"]
    if strict:
        for i in range(n):
            lines += [
                f"    if v{i}.__class__ is not float and v{i}.__class__ is not int:",
                "        raise _Fallback",
            ]
    args = ", ".join(f"_s{i}, v{i}" for i in range(n))
    lines.append(f"    return _pack({args}, _s{n})")
    exec(compile("\n".join(lines), "<avro map<double> layout>", "exec"), ns)
    writer: Callable[..., bytes] = ns["write"]
    return writer


def _map_double_writer(
    *, strict: bool, prefix: bytes = b""
) -> tuple[Callable[[Any], bytes], dict[tuple[str, ...], Callable[..., bytes]]]:
    """Encoder of a map<double> (``prefix``: a union index to write first).

    Each key set (in order) seen gets a layout writer (up to a bound; further
    key sets take the generic loop), so the nine features of an event are
    written by one struct call instead of nine key lookups and nine packs.
    Returns the encoder and its layouts by key tuple: generated code looks the
    layout up itself and calls the encoder only for a key set it has not got.
    """
    empty = prefix + b"\x00"
    layouts: dict[tuple[str, ...], Callable[..., bytes]] = {(): lambda: empty}
    key_bytes: dict[str, bytes] = {}

    def generic(m: Any) -> bytes:
        parts = [prefix, _uvarint(len(m) << 1)]
        for key, value in m.items():
            kb = key_bytes.get(key)
            if kb is None:
                kb = _key_bytes(key, key_bytes)
            if strict and value.__class__ is not float and value.__class__ is not int:
                raise _Fallback
            parts += (kb, _pack_d(value))
        parts.append(b"\x00")
        return b"".join(parts)

    def write(m: Any) -> bytes:
        keys = tuple(m)
        layout = layouts.get(keys)
        if layout is None:
            if len(layouts) > _MAX_MAP_LAYOUTS or len(keys) > _MAX_TEMPLATE_KEYS:
                return generic(m)
            for key in keys:
                if key.__class__ is not str:
                    raise _Fallback  # fastavro says what is wrong with the key
            layout = layouts[keys] = _layout_writer(keys, strict=strict, prefix=prefix)
        return layout(*m.values())

    return write, layouts


def _key_bytes(key: str, cache: dict[str, bytes]) -> bytes:
    """Length-prefixed UTF-8 of a map key, remembered (boundedly) for the next map."""
    raw = str.encode(key)
    encoded = _uvarint(len(raw) << 1) + raw
    if key.__class__ is str and len(cache) < _MAX_CACHED_KEYS:
        cache[key] = encoded
    return encoded


_pack_d = struct.Struct("<d").pack
_unpack_d = struct.Struct("<d").unpack_from

# ------------------------------------------------------------------- schema model


@dataclass(frozen=True, slots=True)
class _Prim:
    kind: str


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    node: _Node
    has_default: bool
    default: Any


@dataclass(frozen=True, slots=True)
class _Rec:
    name: str
    fields: tuple[_Field, ...]


@dataclass(frozen=True, slots=True)
class _Array:
    items: _Node


@dataclass(frozen=True, slots=True)
class _Map:
    values: _Node


@dataclass(frozen=True, slots=True)
class _Optional:
    """A union of null and one other type; ``null_index`` is null's branch (0 or 1)."""

    inner: _Node
    null_index: int


_Node: TypeAlias = _Prim | _Rec | _Array | _Map | _Optional


def _model(schema: Any, named: dict[str, Any], stack: tuple[str, ...]) -> _Node:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _Prim(schema)
        if schema in stack:
            raise UnsupportedSchema(f"recursive record {schema!r}")
        if schema in named:
            return _model(named[schema], named, stack)
        raise UnsupportedSchema(f"unknown type {schema!r}")
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(schema) != 2 or len(branches) != 1:
            raise UnsupportedSchema(f"only unions of null and one type are supported: {schema}")
        inner = _model(branches[0], named, stack)
        if isinstance(inner, _Optional):
            raise UnsupportedSchema(f"nested union {schema}")
        return _Optional(inner, schema.index("null"))
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"not a schema: {schema!r}")
    if "logicalType" in schema:
        raise UnsupportedSchema(
            f"logical type {schema['logicalType']!r}: load the schema with logical types stripped"
        )
    kind = schema.get("type")
    if kind in _PRIMITIVES:
        return _Prim(kind)
    if kind in ("record", "error"):
        name = schema["name"]
        if name in stack:
            raise UnsupportedSchema(f"recursive record {name!r}")
        inner_stack = (*stack, name)
        fields = tuple(
            _Field(
                f["name"], _model(f["type"], named, inner_stack), "default" in f, f.get("default")
            )
            for f in schema["fields"]
        )
        return _Rec(name, fields)
    if kind == "array":
        items = _model(schema["items"], named, stack)
        if _min_size(items) == 0:
            raise UnsupportedSchema("arrays of zero-size items (null, empty records)")
        return _Array(items)
    if kind == "map":
        return _Map(_model(schema["values"], named, stack))
    if isinstance(kind, str | list | dict) and kind not in ("enum", "fixed"):
        return _model(kind, named, stack)
    raise UnsupportedSchema(f"type {kind!r} is not supported")


def _min_size(node: _Node) -> int:
    """Fewest bytes a value of ``node`` takes on the wire."""
    if isinstance(node, _Prim):
        return 0 if node.kind == "null" else _FIXED_SIZES.get(node.kind, 1)
    if isinstance(node, _Rec):
        return sum(_min_size(f.node) for f in node.fields)
    return 1


def _printable(text: str) -> str:
    """``text`` safe inside a comment of generated code: no line breaks, ASCII only."""
    return text.encode("unicode_escape").decode("ascii")


def _describe(node: _Node) -> str:
    """A type in words, for the comments of the generated code."""
    if isinstance(node, _Prim):
        return node.kind
    if isinstance(node, _Rec):
        return f"record {_printable(node.name)}"
    if isinstance(node, _Array):
        return f"array<{_describe(node.items)}>"
    if isinstance(node, _Map):
        return f"map<{_describe(node.values)}>"
    inner = _describe(node.inner)
    return f"null | {inner}" if node.null_index == 0 else f"{inner} | null"


def _is_scalar(node: _Node) -> bool:
    """Immutable on the Python side: a value may be reused by identity across records."""
    if isinstance(node, _Optional):
        node = node.inner
    return isinstance(node, _Prim)


def _is_string(node: _Node) -> bool:
    if isinstance(node, _Optional):
        node = node.inner
    return node == _Prim("string")


def _indent(lines: list[str], depth: int = 1) -> list[str]:
    pad = "    " * depth
    return [pad + line for line in lines]


# ---------------------------------------------------------------- code generation

_Lines = list[str]


class _Generator:
    """Writes the source of one codec; constants go into the namespace ``ns``.

    ``batch`` code runs inside the loops of ``encode_many``/``decode_many``: it
    may keep state from one record to the next in local variables, declared in
    ``inits`` (lines run once before the loop).
    """

    def __init__(self, root: _Rec) -> None:
        self.root = root
        self.ns: dict[str, Any] = {
            "_join": b"".join,
            "_utf8": str.encode,
            "_VARINT": _VARINT,
            "_LOW14": _LOW14,
            "_uvarint": _uvarint,
            "_read_long": _read_long,
            "_read_long_high": _read_long_high,
            "_read_length": _read_length,
            "_ZIGZAG1": _ZIGZAG1,
            "_LENGTH1": _LENGTH1,
            "_bad_length": _bad_length,
            "_as_bytes": _as_bytes,
            "_from_bytes": int.from_bytes,
            "_islice": islice,
            "_key_bytes": _key_bytes,
            "_Fallback": _Fallback,
            "_Malformed": _Malformed,
            "_UNSET": object(),
        }
        self.helpers: list[str] = []
        self.inits: list[str] = []
        self.decoding_batch = False
        #: Set while writing decode(): names of module globals it keeps state in.
        self.state_globals: list[str] | None = None
        self._ids = itertools.count()
        self._helper_names: dict[tuple[int, bool], str] = {}

    def fresh(self, stem: str) -> str:
        return f"{stem}{next(self._ids)}"

    def const(self, stem: str, value: Any) -> str:
        name = f"_{stem}{next(self._ids)}"
        self.ns[name] = value
        return name

    def packer(self, codes: str) -> str:
        return self.const("pack_" + codes.replace("?", "b"), struct.Struct("<" + codes).pack)

    # ----------------------------------------------------------------- encoding

    def enc_fields(
        self, rec: _Rec, src: str, strict: bool, batch: bool
    ) -> tuple[_Lines, list[str]]:
        """Statements and byte-part expressions for the fields of record value ``src``."""
        lines: _Lines = []
        parts: list[str] = []
        run: list[tuple[str, str]] = []  # (struct code, variable) of consecutive fixed fields

        def flush() -> None:
            if run:
                codes = "".join(code for code, _ in run)
                parts.append(f"{self.packer(codes)}({', '.join(v for _, v in run)})")
                run.clear()

        for f in rec.fields:
            node = f.node
            if isinstance(node, _Prim) and node.kind == "null" and not strict:
                continue  # nothing on the wire, and fastavro does not look at the value
            x = self.fresh("v")
            lines.append(f"{x} = {src}[{f.name!r}]  # {_describe(node)}")
            if isinstance(node, _Prim) and node.kind in _FIXED_CODES:
                lines += self.strict_check(node, x) if strict else []
                run.append((_FIXED_CODES[node.kind], x))
                continue
            flush()
            more, more_parts = self.enc_value(node, x, strict, batch)
            if batch and _is_scalar(node):
                more = self.remember_last(more, x, _is_string(node))
            lines += more
            parts += more_parts
        flush()
        return lines, parts

    def remember_last(self, body: _Lines, x: str, string: bool) -> _Lines:
        """Skip ``body`` when the field holds the value it held in the previous record.

        Only for immutable values (strings, ints, floats, None): the parts computed
        for that value are still in their variables. Model name, version, variant
        and the batch timestamp are the same object all through a batch; labels
        and topic names are equal strings. Equality is trusted for exact ``str``
        only (same text, same bytes); anything else must be the same object.
        """
        last = self.fresh("last")
        self.inits.append(f"{last} = _UNSET")
        test = f"{x} is not {last}"
        if string:
            test += f" and ({x}.__class__ is not str or {x} != {last})"
        return [f"if {test}:", *_indent(body), f"    {last} = {x}"]

    def strict_check(self, node: _Node, x: str) -> _Lines:
        """Inside a union fastavro validates the value: take exactly what it accepts."""
        if isinstance(node, _Prim):
            if node.kind == "null":
                test = f"{x} is not None"
            elif node.kind in ("float", "double"):
                test = f"{x}.__class__ is not float and {x}.__class__ is not int"
            elif node.kind == "int":
                test = f"{x}.__class__ is not int or not -2147483648 <= {x} <= 2147483647"
            else:
                pytype = {"boolean": "bool", "long": "int", "string": "str", "bytes": "bytes"}
                test = f"{x}.__class__ is not {pytype[node.kind]}"
        elif isinstance(node, _Array):
            test = f"{x}.__class__ is not list"
        else:
            test = f"{x}.__class__ is not dict"
        return [f"if {test}:", "    raise _Fallback"]

    def enc_value(self, node: _Node, x: str, strict: bool, batch: bool) -> tuple[_Lines, list[str]]:
        """Statements and parts encoding the value held in variable ``x``."""
        if isinstance(node, _Optional):
            return self.enc_optional(node, x, batch)
        lines = self.strict_check(node, x) if strict else []
        if isinstance(node, _Rec):
            more, parts = self.enc_fields(node, x, strict, batch)
            return lines + more, parts
        if isinstance(node, _Map) and node.values == _Prim("double"):
            m = self.fresh("m")
            return lines + self.enc_map_double(x, m, strict=strict), [m]
        if isinstance(node, _Array | _Map):
            # Empty containers (the usual defaults) skip the call: one zero byte.
            name = self.container_writer(node, strict)
            return lines, [f"({name}({x}) if len({x}) else b'\\x00')"]
        kind = node.kind
        if kind == "null":
            return lines, []
        if kind in _FIXED_CODES:
            return lines, [f"{self.packer(_FIXED_CODES[kind])}({x})"]
        if kind in ("int", "long"):
            n, e = self.fresh("n"), self.fresh("e")
            lines.append(f"{n} = ({x} << 1) ^ ({x} >> 63)")
            if not batch:
                lines.append(f"{e} = _VARINT[{n}] if 0 <= {n} < {_SMALL} else _uvarint({n})")
                return lines, [e]
            # Values of a batch (timestamps, offsets) mostly share all but their
            # low 14 bits: keep the varint tail of the last large value.
            high, tail = self.fresh("high"), self.fresh("tail")
            self.inits.append(f"{high} = {tail} = None")
            lines += [
                f"if 0 <= {n} < {_SMALL}:",
                f"    {e} = _VARINT[{n}]",
                f"elif {n} >> 14 == {high}:",
                f"    {e} = _LOW14[{n} & {_SMALL - 1}] + {tail}",
                "else:",
                f"    {e} = _uvarint({n})",
                f"    {high} = {n} >> 14",
                f"    {tail} = {e}[2:]",
            ]
            return lines, [e]
        # string, bytes
        if kind == "bytes" and not strict:
            lines += [f"if {x}.__class__ is not bytes:", "    raise _Fallback"]
        b, n, ln = self.fresh("b"), self.fresh("n"), self.fresh("l")
        lines.append(f"{b} = _utf8({x})" if kind == "string" else f"{b} = {x}")
        lines += [
            f"{n} = len({b}) << 1",
            f"{ln} = _VARINT[{n}] if {n} < {_SMALL} else _uvarint({n})",
        ]
        return lines, [ln, b]

    def enc_optional(self, node: _Optional, x: str, batch: bool) -> tuple[_Lines, list[str]]:
        """A null union: an index byte, then the value's parts (empty bytes when null).

        The parts stay separate items of the final join: no concatenation.
        """
        null_byte = _VARINT[node.null_index << 1]
        value_byte = _VARINT[(1 - node.null_index) << 1]
        u = self.fresh("u")
        inner = node.inner
        if isinstance(inner, _Map) and inner.values == _Prim("double"):
            body = [
                f"if {x} is None:",
                f"    {u} = {null_byte!r}",
                "else:",
                *_indent(self.strict_check(inner, x)),
                *_indent(self.enc_map_double(x, u, strict=True, prefix=value_byte)),
            ]
            return body, [u]
        lines, parts = self.enc_value(inner, x, True, batch)
        # The union owns the variables of its parts: the null branch blanks them,
        # which must never touch a variable a batch cache inside the value relies on.
        names: list[str] = []
        for part in parts:
            name = self.fresh("w")
            lines.append(f"{name} = {part}")
            names.append(name)
        body = [
            f"if {x} is None:",
            f"    {u} = {null_byte!r}",
            *[f"    {name} = b''" for name in names],
            "else:",
            *_indent(lines),
            f"    {u} = {value_byte!r}",
        ]
        return body, [u, *names]

    def enc_map_double(self, x: str, target: str, *, strict: bool, prefix: bytes = b"") -> _Lines:
        """A map<double> into ``target``: its key set's layout writer, else the encoder."""
        write, layouts = _map_double_writer(strict=strict, prefix=prefix)
        write_name = self.const("write_map_double", write)
        layouts_name = self.const("layouts", layouts)
        self.ns["_tuple"] = tuple
        return [
            f"{target} = {layouts_name}.get(_tuple({x}))",
            f"{target} = {write_name}({x}) if {target} is None else {target}(*{x}.values())",
        ]

    def container_writer(self, node: _Array | _Map, strict: bool) -> str:
        """Name of the function encoding an array or map (generated once per type)."""
        key = (id(node), strict)
        if key in self._helper_names:
            return self._helper_names[key]
        name = self.fresh("_write_array" if isinstance(node, _Array) else "_write_map")
        self._helper_names[key] = name
        if isinstance(node, _Array):
            inner, parts = self.enc_value(node.items, "item", strict, False)
            head = ["for item in items:"]
            arg = "items"
        else:
            inner, parts = self.enc_value(node.values, "value", strict, False)
            keys = self.const("keys", {})
            head = [
                "for key, value in m.items():",
                f"    kb = {keys}.get(key)",
                "    if kb is None:",
                f"        kb = _key_bytes(key, {keys})",
            ]
            arg = "m"
            parts = ["kb", *parts]
        add = f"parts.append({parts[0]})" if len(parts) == 1 else f"parts += ({', '.join(parts)})"
        source = [
            f"def {name}({arg}):",
            f"    # {_describe(node)}",
            f"    n = len({arg})",
            "    if not n:",
            "        return b'\\x00'",
            "    parts = [_uvarint(n << 1)]",
            *_indent(head),
            *_indent(inner, 2),
            f"        {add}",
            "    parts.append(b'\\x00')",
            "    return _join(parts)",
        ]
        self.helpers.append("\n".join(source))
        return name

    # ----------------------------------------------------------------- decoding

    def dec_value(self, node: _Node, target: str) -> _Lines:
        """Statements reading one value at ``p`` of ``data`` (``size`` bytes) into ``target``."""
        if isinstance(node, _Optional):
            index = self.fresh("i")
            null_byte = node.null_index << 1
            return [
                f"{index} = data[p]",
                "p += 1",
                f"if {index} == {null_byte}:",
                f"    {target} = None",
                f"elif {index} == {2 - null_byte}:",
                *_indent(self.dec_value(node.inner, target)),
                "else:",
                f"    raise _Malformed(f'union index byte {{{index}}} at byte {{p - 1}}')",
            ]
        if isinstance(node, _Rec):
            return self.dec_record(node, target)
        if isinstance(node, _Array):
            return self.dec_array(node, target)
        if isinstance(node, _Map):
            return self.dec_map(node, target)
        kind = node.kind
        if kind == "null":
            return [f"{target} = None"]
        if kind == "boolean":
            return [
                f"{target} = data[p]",
                f"if {target} > 1:",
                f"    raise _Malformed(f'boolean byte {{{target}}} at byte {{p}}')",
                "p += 1",
                f"{target} = {target} == 1",
            ]
        if kind in _UNPACK_CODES:
            unpack = self.const(
                "unpack_" + kind, struct.Struct("<" + _UNPACK_CODES[kind]).unpack_from
            )
            return [f"{target} = {unpack}(data, p)[0]", f"p += {_FIXED_SIZES[kind]}"]
        if kind in ("int", "long"):
            return self.dec_long_value(target)
        n, e = self.fresh("n"), self.fresh("e")
        read = "data[p:{e}].decode()" if kind == "string" else "data[p:{e}]"
        return [
            f"{n} = _LENGTH1[data[p]]",
            "p += 1",
            f"if {n} < 0:",
            f"    {n}, p = _read_length(data, p - 1)",
            f"{e} = p + {n}",
            f"if {e} > size:",
            f"    raise _bad_length({n}, p, size)",
            f"{target} = {read.format(e=e)}",
            f"p = {e}",
        ]

    def dec_long_value(self, target: str) -> _Lines:
        """A long field. In ``decode_many`` the varint bytes after the first two are
        kept per field: when the next record's varint ends with the same bytes (a
        timestamp of the same batch), its two low bytes are all there is to read.
        """
        if not self.decoding_batch:
            return self.dec_long(target)
        high, value, length = self.fresh("high"), self.fresh("high_value"), self.fresh("length")
        # The initial state stands for any 3-byte varint ending in 0x01: always true.
        initial = (b"\x01", 1 << 14, 3)
        keep: _Lines = []
        if self.state_globals is None:
            self.inits.append(f"{high}, {value}, {length} = {initial!r}")
        else:
            # decode() keeps it from call to call in one tuple: replaced whole, so a
            # concurrent call sees the old state or the new, never a mix.
            state = self.const("long_state", initial)
            self.state_globals.append(state)
            self.inits.append(f"{high}, {value}, {length} = {state}")
            keep = [f"    {state} = ({high}, {value}, {length})"]
        return [
            f"{target} = data[p]",
            f"if {target} < 128:",
            f"    {target} = _ZIGZAG1[{target}]",
            "    p += 1",
            f"elif data[p + 1] > 127 and data.startswith({high}, p + 2):",
            f"    {target} = {value} | ({target} & 127) | (data[p + 1] & 127) << 7",
            f"    {target} = ({target} >> 1) ^ -({target} & 1)",
            f"    p += {length}",
            "else:",
            f"    {target}, p, {high}, {value}, {length} = _read_long_high(",
            f"        data, p, {high}, {value}, {length}",
            "    )",
            *keep,
        ]

    def dec_long(self, target: str) -> _Lines:
        return [
            f"{target} = data[p]",
            f"if {target} < 128:",
            f"    {target} = _ZIGZAG1[{target}]",
            "    p += 1",
            "else:",
            f"    {target}, p = _read_long(data, p)",
        ]

    def dec_record(self, rec: _Rec, target: str) -> _Lines:
        lines: _Lines = []
        names: list[tuple[str, str]] = []
        run: list[tuple[str, str]] = []  # (struct code, variable) of consecutive doubles/floats

        def flush() -> None:
            if run:
                codes = "".join(code for code, _ in run)
                unpack = self.const("unpack_" + codes, struct.Struct("<" + codes).unpack_from)
                targets = ", ".join(v for _, v in run)
                lines.append(f"{targets}, = {unpack}(data, p)")
                lines.append(f"p += {struct.calcsize('<' + codes)}")
                run.clear()

        for f in rec.fields:
            x = self.fresh("v")
            names.append((f.name, x))
            if isinstance(f.node, _Prim) and f.node.kind in _UNPACK_CODES:
                run.append((_UNPACK_CODES[f.node.kind], x))
                continue
            flush()
            lines.append(f"# {_printable(f.name)}: {_describe(f.node)}")
            lines += self.dec_value(f.node, x)
        flush()
        items = ", ".join(f"{name!r}: {x}" for name, x in names)
        lines.append(f"{target} = {{{items}}}")
        return lines

    def dec_blocks(self, item_size: int, body: _Lines) -> _Lines:
        """The block loop shared by arrays and maps: counts checked against the bytes left."""
        count, skip = self.fresh("count"), self.fresh("skip")
        room = "size - p" if item_size == 1 else f"(size - p) // {item_size}"
        return [
            *self.dec_long(count),
            f"while {count}:",
            f"    if {count} < 0:",
            f"        {count} = -{count}",
            *_indent(self.dec_long(skip), 2),
            f"    if {count} > {room}:",
            f"        raise _Malformed(f'{{{count}}} items at byte {{p}} exceed the data')",
            f"    for _ in range({count}):",
            *_indent(body, 2),
            *_indent(self.dec_long(count)),
        ]

    def dec_array(self, node: _Array, target: str) -> _Lines:
        item = self.fresh("item")
        body = [*self.dec_value(node.items, item), f"{target}.append({item})"]
        return [f"{target} = []", *self.dec_blocks(_min_size(node.items), body)]

    def dec_map(self, node: _Map, target: str) -> _Lines:
        if node.values == _Prim("double"):
            reader = self.const("read_map_double", _DoubleMapReader())
            t = self.fresh("t")
            # Empty maps are common (defaults) and never templated: one byte 0.
            return [
                "if data[p] == 0:",
                f"    {target} = {{}}",
                "    p += 1",
                "else:  # try the learned layouts (one masked compare each), else read",
                f"    for {t}_len, {t}_mask, {t}_expect, {t}_unpack, {t}_build in (",
                f"        {reader}.templates",
                "    ):",
                f"        if _from_bytes(data[p:p + {t}_len], 'little') & {t}_mask == {t}_expect:",
                f"            {target} = {t}_build(*{t}_unpack(data, p))",
                f"            p += {t}_len",
                "            break",
                "    else:",
                f"        {target}, p = {reader}.read(data, p, size)",
            ]
        key, value = self.fresh("key"), self.fresh("value")
        body = [
            *self.dec_value(_Prim("string"), key),
            *self.dec_value(node.values, value),
            f"{target}[{key}] = {value}",
        ]
        return [f"{target} = {{}}", *self.dec_blocks(1 + _min_size(node.values), body)]

    # ------------------------------------------------------------------ module

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
            "        if data.__class__ is not bytes:",
            "            data = _as_bytes(data)",
            "        p = 0",
            "        size = len(data)",
            *_indent(decode_lines, 2),
            "        if p != size:",
            "            raise _Malformed(f'{size - p} trailing bytes')",
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
            "            if data.__class__ is not bytes:",
            "                data = _as_bytes(data)",
            "            p = 0",
            "            size = len(data)",
            *_indent(decode_batch_lines, 3),
            "            if p != size:",
            "                raise _Malformed(f'{size - p} trailing bytes')",
            "        except _DECODE_ERRORS as exc:",
            "            append(_decode_error(exc))",
            "            continue",
            "        append(record)",
            "    return out",
        ]
        return "\n".join(source) + "\n"


#: What the fast encoder may raise on a record it does not take as is.
_RECOVERABLE = (
    _Fallback,
    KeyError,
    TypeError,
    AttributeError,
    ValueError,
    IndexError,
    OverflowError,
    struct.error,
)
#: What malformed bytes make the generated decoder raise.
_DECODE_ERRORS = (_Malformed, IndexError, struct.error, UnicodeDecodeError, OverflowError)


# ------------------------------------------------------------------------ the API


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
    _fallbacks: list[int] = field(repr=False)

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
    exec(compile(source, filename, "exec"), ns)
    encode_run = ns["encode_run"]

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
        _fallbacks=fallbacks,
    )


def _defaults(rec: _Rec) -> Record:
    """What fastavro writes for a missing field: its default, or None for an optional one."""
    return {
        f.name: f.default
        for f in rec.fields
        if f.has_default or isinstance(f.node, _Optional) or f.node == _Prim("null")
    }
