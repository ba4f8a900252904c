"""The decoding half of the codec: generated decoders and the helpers they call.

:class:`_DecodeSource` writes the statements of ``decode`` and of
``decode_many``: every length and count is checked against the bytes left
before anything is allocated, and whatever malformed bytes make them raise is
one of :data:`_DECODE_ERRORS`, turned into a ``DecodeError`` by
``schemas.codec.compile_codec``. In ``decode_many`` the high bytes of each long
field's varint are kept from one record to the next (timestamps of one batch
share them).

``map<double>`` fields are read by :class:`_DoubleMapReader`, which learns a key
set seen twice in a row as a template read by one masked compare and one
``struct`` call.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.codec.schema import (
    _FIXED_SIZES,
    _Array,
    _Map,
    _min_size,
    _Node,
    _Optional,
    _Prim,
    _Rec,
)
from schemas.codec.source import _describe, _indent, _Lines, _printable, _SourceWriter
from schemas.codec.wire import _MAX_TEMPLATE_KEYS, _map_double_layout

#: Decoding runs only float/double: a boolean byte must be checked to be 0 or 1.
_UNPACK_CODES = {"float": "f", "double": "d"}
_MAX_MAP_TEMPLATES = 4  # learned key sets per map<double> field (decoding)
_MAX_TEMPLATE_BYTES = 4096  # longer maps are not worth a compiled template


@dataclass(frozen=True, eq=False)
class MapLayout:
    """A learned wire layout of a ``map<double>``: its keys in wire order, and where each
    value's 8 bytes sit in the ``size`` bytes of a map written so."""

    keys: tuple[str, ...]
    size: int
    offsets: tuple[int, ...]
    _unpack: Callable[[bytes, int], tuple[float, ...]] = field(repr=False)

    def values(self, chunk: bytes) -> tuple[float, ...]:
        """The doubles of one map of this layout (its ``size`` bytes), in key order."""
        return self._unpack(chunk, 0)

    def as_dict(self, chunk: bytes) -> dict[str, float]:
        """One map of this layout, as ``decode`` returns it."""
        return dict(zip(self.keys, self.values(chunk), strict=True))

    def matrix(self, chunks: Sequence[bytes], places: Sequence[int]) -> np.ndarray:
        """Maps of this layout as one float64 matrix: row ``i`` holds the values of
        ``chunks[i]`` at the key places ``places`` (read by numpy, no float per value)."""
        rows = np.frombuffer(b"".join(chunks), dtype=self._dtype)
        out = np.empty((len(chunks), len(places)), dtype=np.float64)
        for column, place in enumerate(places):
            out[:, column] = rows[f"v{place}"]
        return out

    @functools.cached_property
    def _dtype(self) -> np.dtype:
        return np.dtype(
            {
                "names": [f"v{i}" for i in range(len(self.keys))],
                "formats": ["<f8"] * len(self.keys),
                "offsets": list(self.offsets),
                "itemsize": self.size,
            }
        )


@dataclass(frozen=True, slots=True)
class DecodedColumns:
    """A batch read column-wise by ``Codec.decode_columns(values, indices)``.

    ``indices``: the places in ``values`` of the records read, in order; ``columns``:
    per field of the schema, its value for each of them. A ``map<double>`` field's column
    holds, for a map that matched a learned layout, its bytes on the wire, read by that
    record's entry in ``layouts[field]`` (a :class:`MapLayout`); for any other map the
    dict itself and None there. ``errors``: (place, DecodeError) of each record that is
    not one, with the error ``decode`` raises for it.
    """

    indices: list[int]
    columns: dict[str, list[Any]]
    layouts: dict[str, list[MapLayout | None]]
    errors: list[tuple[int, Any]]

    def record(self, row: int) -> dict[str, Any]:
        """Row ``row`` as the record ``decode`` returns for it."""
        out = {name: column[row] for name, column in self.columns.items()}
        for name, layouts in self.layouts.items():
            layout = layouts[row]
            if layout is not None:
                out[name] = layout.as_dict(out[name])
        return out


class _Malformed(Exception):
    """Bytes that are not a record of the schema; wrapped into a DecodeError."""


#: A one-byte varint (below 128) decoded: its zigzagged long.
_ZIGZAG1: tuple[int, ...] = tuple((b >> 1) ^ -(b & 1) for b in range(128))
#: A first length byte decoded: the length when it is a one-byte varint, else -1
#: (multi-byte or negative: ``_read_length`` reads it, or rejects it).
_LENGTH1: tuple[int, ...] = tuple(-1 if b >= 128 or b & 1 else b >> 1 for b in range(256))


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


def _dict_builder(keys: Sequence[str]) -> Callable[..., dict[str, float]]:
    """``f(v0, v1, …) -> {keys[0]: v0, …}`` with constant keys (Python's fastest dict build).

    The keys enter the source through ``repr``, which always yields a plain
    string literal, so the compiled code cannot be anything but this dict.
    """
    params = ", ".join(f"v{i}" for i in range(len(keys)))
    items = ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys))
    code = compile(f"lambda {params}: {{{items}}}", "<avro map template>", "eval")
    builder: Callable[..., dict[str, float]] = eval(code, {})  # noqa: S307 - compiled above from repr-quoted schema keys
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
        #: (length, mask, expected bytes, unpack, dict builder, layout) per learned layout.
        self.templates: list[
            tuple[int, int, int, Callable[..., tuple[Any, ...]], Callable, MapLayout]
        ] = []
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
        offsets, at = [], 0
        for segment in segments[:-1]:
            at += len(segment)
            offsets.append(at)
            at += 8
        layout = MapLayout(keys, length, tuple(offsets), unpacker.unpack_from)
        self.templates.append(
            (length, mask_int, expect_int, unpacker.unpack_from, _dict_builder(keys), layout)
        )


_unpack_d = struct.Struct("<d").unpack_from

#: What malformed bytes make the generated decoder raise.
_DECODE_ERRORS = (_Malformed, IndexError, struct.error, UnicodeDecodeError, OverflowError)

#: What the generated decoders call, by name.
DECODE_RUNTIME: dict[str, Any] = {
    "_read_long": _read_long,
    "_read_long_high": _read_long_high,
    "_read_length": _read_length,
    "_ZIGZAG1": _ZIGZAG1,
    "_LENGTH1": _LENGTH1,
    "_bad_length": _bad_length,
    "_as_bytes": _as_bytes,
    "_from_bytes": int.from_bytes,
    "_Malformed": _Malformed,
}


def whole_record(lines: _Lines) -> _Lines:
    """``lines`` reading one record from ``data`` (any bytes-like), all of it: what
    ``decode``, ``decode_many`` and ``decode_columns`` each run per record."""
    return [
        "if data.__class__ is not bytes:",
        "    data = _as_bytes(data)",
        "p = 0",
        "size = len(data)",
        *lines,
        "if p != size:",
        "    raise _Malformed(f'{size - p} trailing bytes')",
    ]


class _DecodeSource(_SourceWriter):
    """The decoder-writing methods of the codec generator."""

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
        lines, names, _ = self.dec_fields(rec, keyed=False)
        items = ", ".join(f"{name!r}: {x}" for name, x in names)
        lines.append(f"{target} = {{{items}}}")
        return lines

    def dec_fields(
        self, rec: _Rec, *, keyed: bool
    ) -> tuple[_Lines, list[tuple[str, str]], dict[str, str]]:
        """Statements reading every field of ``rec``: (lines, (name, variable) per field,
        the layout variable of each ``map<double>`` field read by its layout).

        ``keyed``: a ``map<double>`` field of ``rec`` itself that matches a learned
        layout is left as its bytes, the variable in the third item naming its
        :class:`MapLayout` (None where the map was read as a dict).
        """
        lines: _Lines = []
        names: list[tuple[str, str]] = []
        keys: dict[str, str] = {}
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
            if keyed and isinstance(f.node, _Map) and f.node.values == _Prim("double"):
                keys[f.name] = self.fresh("k")
                lines += self.dec_map_double(x, keys[f.name])
            else:
                lines += self.dec_value(f.node, x)
        flush()
        return lines, names, keys

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
            return self.dec_map_double(target, None)
        key, value = self.fresh("key"), self.fresh("value")
        body = [
            *self.dec_value(_Prim("string"), key),
            *self.dec_value(node.values, value),
            f"{target}[{key}] = {value}",
        ]
        return [f"{target} = {{}}", *self.dec_blocks(1 + _min_size(node.values), body)]

    def dec_map_double(self, target: str, keys: str | None) -> _Lines:
        """A ``map<double>``: by a learned layout, else by the reader's loop. With ``keys``,
        a layout's match leaves the map's bytes in ``target`` and its :class:`MapLayout`
        in ``keys``; a map read otherwise is a dict, and ``keys`` None."""
        reader = self.const("read_map_double", _DoubleMapReader())
        t = self.fresh("t")
        # A map cut short can look like a layout's start: it is read by the loop, so
        # its error is the same whatever layouts were learned before it.
        whole = f"p + {t}_len <= size and "
        if keys is None:
            match = f"{whole}_from_bytes(data[p:p + {t}_len], 'little') & {t}_mask == {t}_expect"
            hit, miss = [f"{target} = {t}_build(*{t}_unpack(data, p))"], []
        else:  # the map's bytes, read later by its layout (MapLayout)
            match = f"{whole}_from_bytes({target}, 'little') & {t}_mask == {t}_expect"
            hit, miss = [f"{keys} = {t}_layout"], [f"{keys} = None"]
        # Empty maps are common (defaults) and never templated: one byte 0.
        return [
            "if data[p] == 0:",
            f"    {target} = {{}}",
            *_indent(miss),
            "    p += 1",
            "else:  # try the learned layouts (one masked compare each), else read",
            f"    for {t}_len, {t}_mask, {t}_expect, {t}_unpack, {t}_build, {t}_layout in (",
            f"        {reader}.templates",
            "    ):",
            *([] if keys is None else [f"        {target} = data[p:p + {t}_len]"]),
            f"        if {match}:",
            *_indent(hit, 3),
            f"            p += {t}_len",
            "            break",
            "    else:",
            f"        {target}, p = {reader}.read(data, p, size)",
            *_indent(miss, 2),
        ]

    def decode_columns_source(self, root: _Rec) -> _Lines:
        """``decode_columns(values, indices)``: the records at ``indices`` of ``values`` read
        into one list per field, no dict per record; see :class:`DecodedColumns`."""
        self.inits = []
        lines, names, keys = self.dec_fields(root, keyed=True)
        columns = [(name, x, self.fresh("c")) for name, x in names]
        layouts = [(name, keys[name], self.fresh("c")) for name in keys]
        every = columns + layouts
        return [
            "def decode_columns(values, indices):",
            "    decoded, errors = [], []",
            *[f"    {c} = []" for _, _, c in every],
            *_indent(self.inits),
            "    for i in indices:",
            "        data = values[i]",
            "        try:",
            *_indent(whole_record(lines), 3),
            "        except _DECODE_ERRORS as exc:",
            "            errors.append((i, _decode_error(exc)))",
            "            continue",
            "        decoded.append(i)",
            *[f"        {c}.append({x})" for _, x, c in every],
            "    return (",
            "        decoded,",
            f"        {{{', '.join(f'{name!r}: {c}' for name, _, c in columns)}}},",
            f"        {{{', '.join(f'{name!r}: {c}' for name, _, c in layouts)}}},",
            "        errors,",
            "    )",
        ]
