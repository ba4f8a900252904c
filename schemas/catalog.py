"""Loading the packaged ``.avsc`` schemas.

Two parsed forms exist per schema. The *public* form keeps logical types
(``timestamp-millis``) for tools and the schema registry. The *raw* form strips
them: the bytes on the wire are identical (a timestamp-millis is an Avro long),
but readers get plain ints instead of timezone-aware datetimes, which is both
what the pipeline works with and several times cheaper to decode.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro

#: Schema file stem by record role.
SCHEMA_NAMES: dict[str, str] = {
    "events": "sensor_event",
    "predictions": "prediction",
    "audit": "audit_event",
    "shadow": "shadow_record",
    "drift": "drift_event",
    "labels": "label",
    "evaluation": "evaluation",
}


def schema_text(name: str) -> str:
    """The ``.avsc`` text of schema ``name`` (file stem, e.g. ``sensor_event``)."""
    return resources.files("schemas").joinpath(f"{name}.avsc").read_text(encoding="utf-8")


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@cache
def load_schema(name: str, raw: bool = True) -> Any:
    """Parsed fastavro schema; ``raw`` strips logical types (see module doc)."""
    schema = json.loads(schema_text(name))
    if raw:
        schema = _strip_logical_types(schema)
    return fastavro.parse_schema(schema)
