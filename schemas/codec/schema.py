"""The schema model of the codec compiler: the Avro types it supports, as plain nodes.

:func:`_model` turns a parsed schema into a tree of :class:`_Prim`, :class:`_Rec`,
:class:`_Array`, :class:`_Map` and :class:`_Optional` nodes, and raises
:class:`UnsupportedSchema` for anything else (enum, fixed, wider unions, logical
types, recursive records). The encoder and decoder generators
(``schemas.codec.encode`` / ``schemas.codec.decode``) walk that tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FIXED_SIZES = {"boolean": 1, "float": 4, "double": 8}


class UnsupportedSchema(ValueError):
    """The schema uses a type the compiler does not handle; use fastavro for it."""


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


def _is_scalar(node: _Node) -> bool:
    """Immutable on the Python side: a value may be reused by identity across records."""
    if isinstance(node, _Optional):
        node = node.inner
    return isinstance(node, _Prim)


def _is_string(node: _Node) -> bool:
    if isinstance(node, _Optional):
        node = node.inner
    return node == _Prim("string")
