"""Avro schemas of every streamscore topic and the serde that reads and writes them.

``*.avsc`` files here are the contract with producers and consumers; ``serde``
turns records into bytes in the wire format configured per topic (schemaless
Avro, Confluent wire format, or JSON).
"""

from schemas.catalog import SCHEMA_NAMES, load_schema, schema_text

__all__ = ["SCHEMA_NAMES", "load_schema", "schema_text"]
