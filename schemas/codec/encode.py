"""The encoding half of the codec: generated encoders and the helpers they call.

:class:`_EncodeSource` writes ``encode_fast`` (the plain-shape fast path), the
field statements of ``encode`` and of ``encode_run`` (the batch loop behind
``encode_many``), and one helper function per array or map type. A value the
fast path does not take as is raises one of :data:`_RECOVERABLE`, and the
record is handed to fastavro (``schemas.codec.compile_codec``).

``map<double>`` fields get a layout writer per key set: the nine features of
an event are written by one ``struct.pack`` call instead of nine lookups and
nine packs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from schemas.codec.schema import _Array, _is_scalar, _is_string, _Map, _Node, _Optional, _Prim, _Rec
from schemas.codec.source import _describe, _indent, _Lines, _SourceWriter
from schemas.codec.wire import (
    _LOW14,
    _MAX_TEMPLATE_KEYS,
    _SMALL,
    _VARINT,
    _map_double_layout,
    _uvarint,
)

#: struct codes of the fixed-size types, for packing runs of fields in one call.
_FIXED_CODES = {"boolean": "?", "float": "f", "double": "d"}
_MAX_MAP_LAYOUTS = 64  # learned key sets per map<double> field (encoding)
_MAX_CACHED_KEYS = 1024


class _Fallback(Exception):
    """The fast encoder met a value it does not take as is: let fastavro encode it."""


def _layout_writer(keys: Sequence[str], *, strict: bool, prefix: bytes) -> Callable[..., bytes]:
    """``write(v0, v1, …)``: the map ``{keys[i]: vi}`` in one ``struct.pack`` call.

    The key bytes are ``s`` fields of the format, passed as constants; only the
    doubles vary. Keys reach the generated code as bound constants, never as
    source text. ``strict`` adds fastavro's union check (float or int, not bool).
    """
    segments = _map_double_layout(keys, prefix)
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
    exec(compile("\n".join(lines), "<avro map<double> layout>", "exec"), ns)  # noqa: S102 - generated from schema keys
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
#: A field's "last value" before the first record of a batch: never a record's value.
_UNSET = object()

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

#: What the generated encoders call, by name.
ENCODE_RUNTIME: dict[str, Any] = {
    "_join": b"".join,
    "_utf8": str.encode,
    "_VARINT": _VARINT,
    "_LOW14": _LOW14,
    "_uvarint": _uvarint,
    "_islice": islice,
    "_key_bytes": _key_bytes,
    "_Fallback": _Fallback,
    "_UNSET": _UNSET,
}


class _EncodeSource(_SourceWriter):
    """The encoder-writing methods of the codec generator."""

    def packer(self, codes: str) -> str:
        return self.const("pack_" + codes.replace("?", "b"), struct.Struct("<" + codes).pack)

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
