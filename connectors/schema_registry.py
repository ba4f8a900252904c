"""Serdes per topic role, with a Confluent Schema Registry for ``avro-confluent``.

The Confluent framing itself is pure (``schemas.serde.ConfluentAvroSerde``): magic
byte 0, the 4-byte schema id, schemaless Avro, the bytes confluent-kafka's own
``AvroSerializer`` writes and its ``AvroDeserializer`` reads. This edge does the
registry's part:

1. register our schema under the topic's ``<topic>-value`` subject (Confluent's
   default topic name strategy) and frame our records with the id it returns;
2. resolve any other writer's schema id to its schema, so that a producer's own
   (evolved) schema is read into ours by Avro schema resolution;
3. classify what goes wrong. An id the registry does not know, or a writer schema
   that is not usable Avro, is the record's fault: ``DecodeError``, the record
   goes to the dead-letter queue. A registry that cannot be reached is not:
   ``InfrastructureError``, the processor stops and replays from its last commit.

One client per registry configuration serves the whole process
(:func:`registry_client`): its caches are shared, and a ``mock://`` URL
(confluent-kafka's in-process registry, used by the tests) names one registry
for everything in the process. Credentials never appear in an error message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import fastavro
from fastavro.schema import SchemaParseException

from schemas.catalog import SCHEMA_NAMES, _strip_logical_types, schema_text
from schemas.errors import ConfigError, DecodeError, InfrastructureError
from schemas.serde import Serde, make_serde
from schemas.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

#: Writer schemas remembered per subject serde, usable or not. Bounded because the
#: ids come from the records: a stream of garbage ids must not grow it forever.
WRITER_CACHE_SIZE = 1024

_URL_USER_INFO = re.compile(r"//([^/@]*)@")


def topic_serde(settings: Settings, role: str) -> Serde:
    """The serde configured for topic ``role`` (events, predictions, audit, ...)."""
    fmt = getattr(settings.formats, role)
    schema_name = SCHEMA_NAMES[role]
    if fmt != "avro-confluent":
        return make_serde(fmt, schema_name)
    if not settings.kafka.schema_registry_url:
        raise ConfigError(
            f"formats.{role} = avro-confluent needs kafka.schema_registry_url "
            "(STREAMSCORE_KAFKA__SCHEMA_REGISTRY_URL)"
        )
    subject = f"{getattr(settings.topics, role)}-value"
    return make_serde(fmt, schema_name, confluent=_register(settings.kafka, subject, schema_name))


def registry_client(kafka: KafkaSettings) -> SchemaRegistryClient:
    """The one client in this process for the registry ``kafka.schema_registry_*`` describe."""
    if not kafka.schema_registry_url:
        raise ConfigError("kafka.schema_registry_url is not set")
    user_info = kafka.schema_registry_basic_auth_user_info
    return _client(
        kafka.schema_registry_url,
        user_info.get_secret_value() if user_info else None,
        kafka.schema_registry_ssl_ca_location,
    )


@cache
def _client(url: str, user_info: str | None, ca_location: str | None) -> SchemaRegistryClient:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    # No ``basic.auth.credentials.source``: this client rejects that key, and uses
    # ``basic.auth.user.info`` whenever it is given (its other source: the URL's).
    conf: dict[str, Any] = {"url": url}
    if user_info is not None:
        conf["basic.auth.user.info"] = user_info
    if ca_location is not None:
        conf["ssl.ca.location"] = ca_location
    try:
        return SchemaRegistryClient.new_client(conf)  # a MockSchemaRegistryClient for mock://
    except (ValueError, TypeError, OSError) as exc:  # bad URL or user info, unreadable CA
        secrets = _secrets(url, user_info)
        raise ConfigError(
            f"Schema Registry {_masked(url)}: {_scrubbed(str(exc), secrets)}"
        ) from exc


def _register(
    kafka: KafkaSettings, subject: str, schema_name: str
) -> tuple[int, Callable[[int], Any]]:
    from confluent_kafka.schema_registry import Schema

    client = registry_client(kafka)
    url = kafka.schema_registry_url or ""
    user_info = kafka.schema_registry_basic_auth_user_info
    where = _masked(url)
    secrets = _secrets(url, user_info.get_secret_value() if user_info else None)
    # Stripped as confluent's AvroSerializer strips it: the same text is the same
    # schema, and so the same id, even for a registry that does not normalise.
    schema = Schema(schema_text(schema_name).strip(), "AVRO")
    try:
        schema_id = client.register_schema(subject, schema)
    except Exception as exc:  # SchemaRegistryError, or its HTTP client's transport errors
        raise InfrastructureError(
            f"Schema Registry {where}: cannot register {subject}: {_scrubbed(str(exc), secrets)}"
        ) from exc
    return int(schema_id), _writer_schemas(client, where, secrets)


def _writer_schemas(
    client: SchemaRegistryClient, where: str, secrets: tuple[str, ...]
) -> Callable[[int], Any]:
    """Schema id -> parsed writer schema; ``DecodeError`` for an id no record should carry."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    @lru_cache(maxsize=WRITER_CACHE_SIZE)
    def lookup(schema_id: int) -> tuple[Any, str | None]:
        """(parsed schema, None) or (None, why the id is unusable). Outages are not cached."""
        try:
            found = client.get_schema(schema_id)
        except Exception as exc:  # SchemaRegistryError, or its HTTP client's transport errors
            if isinstance(exc, SchemaRegistryError) and exc.http_status_code == 404:
                return None, f"writer schema id {schema_id} is not in the Schema Registry"
            raise InfrastructureError(
                f"Schema Registry {where}: cannot read schema id {schema_id}: "
                f"{_scrubbed(str(exc), secrets)}"
            ) from exc
        if (found.schema_type or "AVRO") != "AVRO":
            return None, f"writer schema id {schema_id} is {found.schema_type}, not Avro"
        try:
            parsed = fastavro.parse_schema(_strip_logical_types(json.loads(found.schema_str or "")))
        except (SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as exc:
            return None, f"writer schema id {schema_id} is not a usable Avro schema: {exc}"
        return parsed, None

    def writer_schema(schema_id: int) -> Any:
        parsed, unusable = lookup(schema_id)
        if unusable is not None:
            raise DecodeError(unusable)
        return parsed

    return writer_schema


def _masked(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return _URL_USER_INFO.sub("//***@", url)


def _secrets(url: str, user_info: str | None) -> tuple[str, ...]:
    """Every credential text an error must not show: user infos and passwords, longest first."""
    in_url = _URL_USER_INFO.findall(url)
    infos = [user_info or "", *in_url, *(unquote(info) for info in in_url)]
    found = {text for info in infos for text in (info, info.partition(":")[2]) if text}
    return tuple(sorted(found, key=len, reverse=True))


def _scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` fit for a log line: URL credentials and every secret masked."""
    text = _masked(text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
