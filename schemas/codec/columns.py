"""Columnar encoding: a batch handed over as columns, encoded without a dict per record.

The scoring loop holds a batch's outputs as columns (event ids, scores, the model that
served them); building one dict per record only for the encoder to read it back field by
field cost more than the encoding itself. :meth:`ColumnEncoder.encode` takes, per field of
the schema, one of

* a sequence of ``n`` values, one per record;
* :class:`Same` — one value every record shares (the model of the batch, the processing
  time): encoded once for the whole batch;
* :class:`KeyedRows` — for a ``map<double>`` field (optional or not): the same keys for
  every record and the values of record ``i`` in ``rows[i]`` (class probabilities, one
  row per event): written by the map's layout writer, one ``struct`` call, no dict. Rows
  given as a float64 numpy matrix are written for the whole batch at once by numpy (the
  key bytes and the doubles laid out side by side), no float object per value.

A field left out takes its schema default (``None`` for an optional one).

**Contract:** the bytes are exactly ``Codec.encode_many(records_from_columns(columns, n))``.
The generated loop runs the statements :class:`~schemas.codec.encode._EncodeSource` writes
for ``encode_many``; a value they do not take as is (one fastavro would coerce or refuse)
sends the whole batch through ``encode_many`` of the records those columns stand for, with
its per-record fastavro fallback. ``tests/unit/schemas/test_columns.py`` checks it.

One function is compiled per *shape* (which fields are columns, shared values or keyed
rows), at most :data:`MAX_SHAPES` of them per codec; a batch of another shape takes the
records path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import numpy as np

from schemas.codec.encode import _RECOVERABLE, ENCODE_RUNTIME, _EncodeSource, _layout_writer
from schemas.codec.schema import _FIXED_SIZES, _is_scalar, _is_string, _Map, _Optional, _Prim, _Rec
from schemas.codec.source import _indent, _Lines, _printable
from schemas.codec.wire import _MAX_TEMPLATE_KEYS, _VARINT, _map_double_layout

__all__ = ["Column", "ColumnEncoder", "KeyedRows", "Same", "records_from_columns"]

#: Compiled shapes per codec, and learned key sets per keyed-rows field.
MAX_SHAPES = 16
MAX_KEY_SETS = 64


@dataclass(frozen=True, slots=True)
class Same:
    """One value that every record of the batch has in this field."""

    value: Any


@dataclass(frozen=True, slots=True)
class KeyedRows:
    """A ``map<double>`` column: record ``i`` is ``dict(zip(keys, rows[i]))``."""

    keys: tuple[str, ...]
    rows: Sequence[Sequence[float]] | np.ndarray


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A field's bytes on the wire, one per record, written before the loop from
    ``source`` (what the records path is given instead)."""

    values: list[bytes]
    source: KeyedRows


Column: TypeAlias = Sequence[Any] | Same | KeyedRows
Record = dict[str, Any]
#: The compiled encoder of one shape: ``f(columns, n)``.
_ShapeEncoder: TypeAlias = Callable[[Mapping[str, "Column | _Encoded"], int], list[bytes]]


def records_from_columns(columns: Mapping[str, Column | _Encoded], n: int) -> list[Record]:
    """The records ``columns`` stand for (what any other encoder is given)."""
    per_field: list[tuple[str, Any, int]] = []  # (name, column, 0 same / 1 values / 2 keyed)
    for name, given in columns.items():
        column = given.source if isinstance(given, _Encoded) else given
        if isinstance(column, Same):
            per_field.append((name, column.value, 0))
        elif isinstance(column, KeyedRows):
            per_field.append((name, KeyedRows(column.keys, _as_lists(column.rows)), 2))
        else:
            per_field.append((name, column, 1))
    records: list[Record] = []
    for i in range(n):
        record: Record = {}
        for name, column, kind in per_field:
            if kind == 0:
                record[name] = column
            elif kind == 1:
                record[name] = column[i]
            else:
                record[name] = dict(zip(column.keys, column.rows[i], strict=True))
        records.append(record)
    return records


def _as_lists(rows: Sequence[Sequence[float]] | np.ndarray) -> Sequence[Sequence[float]]:
    """Rows as Python floats (a numpy matrix's values as ``float``, not ``np.float64``)."""
    return rows.tolist() if isinstance(rows, np.ndarray) else rows


def _is_matrix(rows: Sequence[Sequence[float]] | np.ndarray, width: int) -> bool:
    """Whether ``rows`` is a float64 numpy matrix of ``width`` columns."""
    return (
        isinstance(rows, np.ndarray)
        and rows.dtype == np.float64
        and rows.ndim == 2
        and rows.shape[1] == width
    )


def _keyed_node(node: Any) -> tuple[bool, bytes] | None:
    """(strict, union prefix) when ``node`` is a map<double>, optional or not; else None."""
    if isinstance(node, _Map) and node.values == _Prim("double"):
        return False, b""
    inner = node.inner if isinstance(node, _Optional) else None
    if isinstance(inner, _Map) and inner.values == _Prim("double"):
        return True, _VARINT[(1 - node.null_index) << 1]
    return None


class _ColumnSource(_EncodeSource):
    """Writes the encoder of one shape: shared fields before the loop, columns in it."""

    def shape_function(self, rec: _Rec, shape: Mapping[str, str]) -> str:
        before: _Lines = []
        loop: _Lines = []
        loop_vars: list[tuple[str, str]] = []  # (loop variable, field name)
        parts: list[str] = []
        shared: list[str] = []  # parts of consecutive shared fields, joined once

        def flush_shared() -> None:
            if shared:
                name = self.fresh("same")
                before.append(f"{name} = _join(({', '.join(shared)},))")
                parts.append(name)
                shared.clear()

        for f in rec.fields:
            node, kind = f.node, shape[f.name]
            if isinstance(node, _Prim) and node.kind == "null":
                continue  # nothing on the wire, and fastavro does not look at the value
            x = self.fresh("v")
            if kind == "same":
                before.append(f"{x} = cols[{f.name!r}].value  # {_printable(f.name)}")
                more, more_parts = self.enc_value(node, x, False, False)
                before += more
                shared += more_parts
                continue
            flush_shared()
            loop_vars.append((x, f.name))
            if kind == "encoded":
                parts.append(x)
                continue
            if kind == "keyed":
                layout = self.fresh("layout")
                before.append(f"{layout} = _layout_for({f.name!r}, cols[{f.name!r}].keys)")
                u = self.fresh("u")
                loop.append(f"{u} = {layout}(*{x})")
                parts.append(u)
                continue
            more, more_parts = self.enc_value(node, x, False, True)
            fixed = isinstance(node, _Prim) and node.kind in _FIXED_SIZES
            if _is_scalar(node) and not fixed:
                more = self.remember_last(more, x, _is_string(node))
            loop += more
            parts += more_parts
        flush_shared()
        joined = f"_join(({', '.join(parts)},))" if parts else "b''"
        if not loop_vars:
            head = "for _ in range(n):"
        elif len(loop_vars) == 1:
            head = f"for {loop_vars[0][0]} in {self._column(loop_vars[0][1], shape)}:"
        else:
            names = ", ".join(x for x, _ in loop_vars)
            columns = ", ".join(self._column(name, shape) for _, name in loop_vars)
            head = f"for {names} in zip({columns}):"
        return "\n".join(
            [
                "def encode_columns(cols, n):",
                "    out = []",
                "    append = out.append",
                *_indent(before),
                *_indent(self.inits),
                f"    {head}",
                *_indent(loop, 2),
                f"        append({joined})",
                "    return out",
            ]
        )

    @staticmethod
    def _column(name: str, shape: Mapping[str, str]) -> str:
        kind = shape[name]
        if kind == "keyed":
            return f"cols[{name!r}].rows"
        return f"cols[{name!r}].values" if kind == "encoded" else f"cols[{name!r}]"


class ColumnEncoder:
    """``encode(columns, n)`` for one record schema; see the module's docstring."""

    def __init__(self, root: _Rec, encode_many: Callable[[Sequence[Record]], list[bytes]]):
        self._root = root
        self._encode_many = encode_many
        self._fields = {f.name: f for f in root.fields}
        self._defaults = {
            f.name: Same(f.default if f.has_default else None)
            for f in root.fields
            if f.has_default or isinstance(f.node, _Optional) or f.node == _Prim("null")
        }
        self._shapes: dict[tuple[str, ...], _ShapeEncoder] = {}
        self._layouts: dict[tuple[str, tuple[str, ...]], Callable[..., bytes]] = {}
        #: Batches the compiled loop handed to the records path (a value it did not take).
        self.fallbacks = 0
        #: Batches of a shape beyond the compiled ones (``MAX_SHAPES``): the records path.
        self.uncompiled = 0
        #: The generated source of each compiled shape, for review.
        self.sources: dict[tuple[str, ...], str] = {}

    def encode(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        """The encoded records of ``columns`` (``n`` of them), in order."""
        cols = self._complete(columns, n)
        shape = tuple(self._kind(name, column) for name, column in cols.items())
        function = self._shapes.get(shape)
        if function is None and len(self._shapes) < MAX_SHAPES:
            function = self._shapes[shape] = self._compile(dict(zip(cols, shape, strict=True)))
        if function is None:
            self.uncompiled += 1
        else:
            try:
                return function(cols, n)
            except _RECOVERABLE:
                self.fallbacks += 1
        return self._encode_many(records_from_columns(cols, n))

    def _complete(self, columns: Mapping[str, Column], n: int) -> dict[str, Column | _Encoded]:
        """Every field of the schema, in its order; lengths checked; odd keyed rows as maps."""
        unknown = set(columns) - self._fields.keys()
        if unknown:
            raise ValueError(f"no such field(s) in {self._root.name}: {', '.join(sorted(unknown))}")
        cols: dict[str, Column | _Encoded] = {}
        for name, f in self._fields.items():
            column = columns.get(name, self._defaults.get(name))
            if column is None:
                raise ValueError(f"no column for the required field {name!r}")
            if isinstance(column, KeyedRows):
                cols[name] = self._keyed(name, f.node, column, n)
                continue
            if not isinstance(column, Same) and len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} values, not {n}")
            cols[name] = column
        return cols

    def _keyed(self, name: str, node: Any, column: KeyedRows, n: int) -> Column | _Encoded:
        """A keyed-rows column as the loop takes it: written before it (a float64 matrix),
        as rows for the layout writer, or as maps (keys no layout writes)."""
        if len(column.rows) != n:
            raise ValueError(f"column {name!r} has {len(column.rows)} rows, not {n}")
        if not self._layout_fits(node, column.keys):
            return [dict(zip(column.keys, row, strict=True)) for row in _as_lists(column.rows)]
        if _is_matrix(column.rows, len(column.keys)):
            matrix = cast(np.ndarray, column.rows)
            return _Encoded(self._write_matrix(name, column.keys, matrix), column)
        return KeyedRows(column.keys, _as_lists(column.rows))

    @staticmethod
    def _layout_fits(node: Any, keys: tuple[str, ...]) -> bool:
        """Whether one layout writer encodes these keys as a dict of them would be."""
        return (
            _keyed_node(node) is not None
            and 0 < len(keys) <= _MAX_TEMPLATE_KEYS
            and len(set(keys)) == len(keys)
            and all(k.__class__ is str for k in keys)
        )

    @staticmethod
    def _kind(name: str, column: Column | _Encoded) -> str:
        if isinstance(column, Same):
            return "same"
        if isinstance(column, _Encoded):
            return "encoded"
        return "keyed" if isinstance(column, KeyedRows) else "values"

    def _write_matrix(self, name: str, keys: tuple[str, ...], rows: np.ndarray) -> list[bytes]:
        """Each row of ``rows`` as the map ``{keys[j]: row[j]}`` on the wire (the union's
        branch first where the field is optional): the bytes the layout writer gives,
        laid out for the whole batch in one array."""
        _, prefix = _keyed_node(self._fields[name].node) or (False, b"")
        segments = _map_double_layout(keys, prefix)
        size = sum(map(len, segments)) + 8 * len(keys)
        n = len(rows)
        out = np.empty((n, size), dtype=np.uint8)
        doubles = np.ascontiguousarray(rows, dtype="<f8").view(np.uint8).reshape(n, len(keys), 8)
        at = 0
        for j, segment in enumerate(segments):
            out[:, at : at + len(segment)] = np.frombuffer(segment, dtype=np.uint8)
            at += len(segment)
            if j < len(keys):
                out[:, at : at + 8] = doubles[:, j]
                at += 8
        data = out.tobytes()
        return [data[start : start + size] for start in range(0, n * size, size)]

    def _layout_for(self, name: str, keys: tuple[str, ...]) -> Callable[..., bytes]:
        layout = self._layouts.get((name, keys))
        if layout is None:
            strict, prefix = _keyed_node(self._fields[name].node) or (False, b"")
            layout = _layout_writer(keys, strict=strict, prefix=prefix)
            if len(self._layouts) < MAX_KEY_SETS:
                self._layouts[(name, keys)] = layout
        return layout

    def _compile(self, shape: dict[str, str]) -> _ShapeEncoder:
        writer = _ColumnSource(self._root, ENCODE_RUNTIME)
        function_source = writer.shape_function(self._root, shape)  # writes its helpers too
        source = "\n\n".join([*writer.helpers, function_source]) + "\n"
        ns = writer.ns
        ns["_layout_for"] = self._layout_for
        exec(compile(source, f"<avro columns {self._root.name}>", "exec"), ns)  # noqa: S102 - generated from the schema
        self.sources[tuple(shape.values())] = source
        function: _ShapeEncoder = ns["encode_columns"]
        return function
