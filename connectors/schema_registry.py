"""Serdes per topic role, with a Confluent Schema Registry for ``avro-confluent``.

The Confluent framing itself is pure (``schemas.serde.ConfluentAvroSerde``);
this edge registers our schema under the topic's ``<topic>-value`` subject and
resolves other writers' schema ids.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import fastavro

from schemas.catalog import SCHEMA_NAMES, _strip_logical_types, schema_text
from schemas.errors import ConfigError, InfrastructureError
from schemas.serde import Serde, make_serde
from schemas.settings import Settings


def topic_serde(settings: Settings, role: str) -> Serde:
    """The serde configured for topic ``role`` (events, predictions, audit, ...)."""
    fmt = getattr(settings.formats, role)
    schema_name = SCHEMA_NAMES[role]
    if fmt != "avro-confluent":
        return make_serde(fmt, schema_name)
    url = settings.kafka.schema_registry_url
    if not url:
        raise ConfigError(
            f"formats.{role} = avro-confluent needs kafka.schema_registry_url "
            "(STREAMSCORE_KAFKA__SCHEMA_REGISTRY_URL)"
        )
    topic = getattr(settings.topics, role)
    return make_serde(fmt, schema_name, confluent=_register(url, f"{topic}-value", schema_name))


@cache
def _client(url: str) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url})


def _register(url: str, subject: str, schema_name: str) -> tuple[int, Any]:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryError

    client = _client(url)
    try:
        schema_id = client.register_schema(subject, Schema(schema_text(schema_name), "AVRO"))
    except (SchemaRegistryError, OSError) as exc:
        raise InfrastructureError(
            f"Schema Registry {url}: cannot register {subject}: {exc}"
        ) from exc

    @cache
    def writer_schema(schema_id: int) -> Any:
        text = client.get_schema(schema_id).schema_str
        return fastavro.parse_schema(_strip_logical_types(json.loads(text)))

    return schema_id, writer_schema
