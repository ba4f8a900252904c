"""``avro-confluent`` against confluent-kafka's own serializer, deserializer and registry client.

The registry is confluent-kafka's in-process one (a ``mock://`` URL, one fresh
name per test); no Schema Registry server runs here. One local HTTP stand-in
checks what reaches a real registry's door: the basic-auth header, and that a
refusal quoting the credentials does not leak them into our error.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import certifi
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.schema_registry import registry_client, topic_serde
from schemas.catalog import schema_text
from schemas.errors import ConfigError, DecodeError, InfrastructureError
from schemas.serde import ConfluentAvroSerde
from schemas.settings import Settings

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in epoch milliseconds

EVENT: dict[str, Any] = {
    "event_id": "evt-1",
    "sensor_id": "sensor-0001",
    "event_time": T0,
    "features": {"f1": 1.5, "f2": -2.25},
}
PREDICTION: dict[str, Any] = {
    "event_id": "evt-1",
    "sensor_id": "sensor-0001",
    "event_time": T0,
    "model_name": "shuttle-gbm",
    "model_version": "3",
    "variant": "champion",
    "predicted_label": "1",
    "score": 0.875,
    "probabilities": {"0": 0.125, "1": 0.875},
    "processed_at": T0 + 12,
}
RECORDS = {"events": EVENT, "predictions": PREDICTION}
SCHEMAS = {"events": "sensor_event", "predictions": "prediction"}


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no STREAMSCORE_* variables from the outside."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMSCORE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _settings(
    home: Path, roles: tuple[str, ...] = ("events", "predictions"), **kafka: Any
) -> Settings:
    """avro-confluent for ``roles``; ``kafka`` overrides (default: a fresh mock:// registry)."""
    data: dict[str, Any] = {
        "home": home,
        "kafka": {"schema_registry_url": f"mock://unit-{uuid.uuid4().hex}", **kafka},
        "formats": dict.fromkeys(roles, "avro-confluent"),
    }
    return Settings(**data)


def _confluent(settings: Settings, role: str) -> ConfluentAvroSerde:
    serde = topic_serde(settings, role)
    assert isinstance(serde, ConfluentAvroSerde)
    return serde


@pytest.fixture
def settings(clean: Path) -> Settings:
    """avro-confluent events and predictions on a fresh in-process registry."""
    return _settings(clean)


def _value(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def _millis(value: datetime) -> int:
    """confluent's deserializer applies logical types: a timestamp-millis is a datetime."""
    return int(value.timestamp() * 1000)


def _evolved_event_schema() -> str:
    """A producer's newer SensorEvent: one more field, fields in another order."""
    schema = json.loads(schema_text("sensor_event"))
    fields = {f["name"]: f for f in schema["fields"]}
    schema["fields"] = [
        fields["sensor_id"],
        {"name": "firmware", "type": "string"},
        fields["event_id"],
        fields["features"],
        fields["event_time"],
    ]
    return json.dumps(schema)


def _incompatible_event_schema() -> str:
    """A SensorEvent whose features are text: no Avro resolution reads it into ours."""
    schema = json.loads(schema_text("sensor_event"))
    for field in schema["fields"]:
        if field["name"] == "features":
            field["type"] = {"type": "map", "values": "string"}
    return json.dumps(schema)


# -- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["events", "predictions"])
def test_our_schema_is_registered_under_the_topic_value_subject(
    settings: Settings, role: str
) -> None:
    serde = _confluent(settings, role)
    client = registry_client(settings.kafka)
    subject = f"{getattr(settings.topics, role)}-value"
    assert client.get_subjects() == [subject]
    latest = client.get_latest_version(subject)
    assert latest.schema_id == serde.schema_id
    assert latest.schema.schema_str == schema_text(SCHEMAS[role]).strip()
    # Registering again (a restart, a second role on the same topic) keeps the id.
    assert _confluent(settings, role).schema_id == serde.schema_id


def test_one_client_per_registry_configuration(settings: Settings, clean: Path) -> None:
    assert registry_client(settings.kafka) is registry_client(settings.kafka.model_copy())
    assert registry_client(settings.kafka) is not registry_client(_settings(clean).kafka)


def test_avro_confluent_without_a_registry_url_is_a_config_error(clean: Path) -> None:
    settings = _settings(clean, ("events",), schema_registry_url=None)
    with pytest.raises(ConfigError, match=r"kafka\.schema_registry_url"):
        topic_serde(settings, "events")
    with pytest.raises(ConfigError, match="schema_registry_url"):
        registry_client(settings.kafka)


# -- our bytes, confluent's deserializer; confluent's bytes, our decoder --------------------------


@pytest.mark.parametrize("role", ["events", "predictions"])
def test_our_records_decode_with_confluents_deserializer(settings: Settings, role: str) -> None:
    serde = _confluent(settings, role)
    topic = getattr(settings.topics, role)
    decoded = AvroDeserializer(registry_client(settings.kafka))(
        serde.encode(RECORDS[role]), _value(topic)
    )
    assert isinstance(decoded, dict)
    expected = dict(RECORDS[role])
    for name in ("event_time", "processed_at"):
        if name in decoded:
            assert decoded[name] == datetime.fromtimestamp(expected[name] / 1000, UTC)
            decoded[name] = _millis(decoded[name])
    assert decoded == expected


@pytest.mark.parametrize("role", ["events", "predictions"])
def test_confluents_records_decode_with_our_serde_on_the_fast_path(
    settings: Settings, role: str
) -> None:
    """The same schema text is the same id: confluent's bytes are byte for byte ours."""
    serde = _confluent(settings, role)
    serializer = AvroSerializer(registry_client(settings.kafka), schema_text(SCHEMAS[role]))
    data = serializer(RECORDS[role], _value(getattr(settings.topics, role)))
    assert data is not None
    assert data == serde.encode(RECORDS[role])
    assert serde.decode(data) == RECORDS[role]


def test_a_batch_of_our_schema_id_is_read_column_wise_with_decodes_errors(
    settings: Settings,
) -> None:
    serde = _confluent(settings, "events")
    good = serde.encode(EVENT)
    values = [good, good[:-4], good, serde._header + b"\xff" * 8, good, good]
    decoded = serde.decode_columns(values, [0, 1, 2, 3, 5])
    assert decoded is not None
    assert decoded.indices == [0, 2, 5]
    assert [decoded.record(row) for row in range(3)] == [EVENT] * 3
    last = decoded.layouts["features"][-1]  # learned by then
    assert last is not None and last.keys == tuple(EVENT["features"])
    for place, error in decoded.errors:
        with pytest.raises(DecodeError) as raised:
            serde.decode(values[place])
        assert str(error) == str(raised.value)
    assert [place for place, _ in decoded.errors] == [1, 3]


def test_a_batch_with_another_schema_id_is_read_record_by_record(settings: Settings) -> None:
    serde = _confluent(settings, "events")
    other = b"\x00" + (serde.schema_id + 1).to_bytes(4, "big") + serde.encode(EVENT)[5:]
    assert serde.decode_columns([serde.encode(EVENT), other], [0, 1]) is None
    assert serde.decode_columns([b"\x00\x00", serde.encode(EVENT)], [1]) is not None


def test_an_evolved_producer_schema_is_read_into_ours(settings: Settings) -> None:
    serde = _confluent(settings, "events")
    client = registry_client(settings.kafka)
    serializer = AvroSerializer(client, _evolved_event_schema())
    data = serializer({**EVENT, "firmware": "v2.1"}, _value(settings.topics.events))
    assert data is not None
    writer_id = int.from_bytes(data[1:5], "big")
    assert writer_id != serde.schema_id  # a second version of the subject
    assert sorted(client.get_versions(f"{settings.topics.events}-value")) == [1, 2]
    assert serde.decode(data) == EVENT
    assert serde.decode(data) == EVENT  # the writer schema now comes from the cache


def test_a_schema_incompatible_record_is_a_decode_error(settings: Settings) -> None:
    """Another topic's SensorEvent, features as text: refused as a record, not a crash."""
    serde = _confluent(settings, "events")
    serializer = AvroSerializer(registry_client(settings.kafka), _incompatible_event_schema())
    text_features = {**EVENT, "features": {"f1": "high"}}
    data = serializer(text_features, _value("another.topic"))
    assert data is not None
    with pytest.raises(DecodeError, match="cannot read with writer schema id"):
        serde.decode(data)


def test_an_unknown_schema_id_is_a_decode_error(settings: Settings) -> None:
    serde = _confluent(settings, "events")
    data = b"\x00" + (serde.schema_id + 1000).to_bytes(4, "big") + serde.encode(EVENT)[5:]
    with pytest.raises(DecodeError, match=r"schema id \d+ is not in the Schema Registry"):
        serde.decode(data)


def test_a_writer_schema_that_is_not_avro_is_a_decode_error(settings: Settings) -> None:
    serde = _confluent(settings, "events")
    client = registry_client(settings.kafka)
    json_id = client.register_schema("json.topic-value", Schema('{"type": "object"}', "JSON"))
    data = b"\x00" + json_id.to_bytes(4, "big") + b"{}"
    with pytest.raises(DecodeError, match="is JSON, not Avro"):
        serde.decode(data)


@pytest.mark.parametrize(
    "outage",
    [SchemaRegistryError(503, 50301, "unavailable"), ConnectionRefusedError("refused")],
    ids=["http-503", "connection-refused"],
)
def test_a_registry_outage_is_infrastructure_not_a_dead_letter(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, outage: Exception
) -> None:
    """The record is fine; the registry is not. Stop and replay, never dead-letter it."""
    serde = _confluent(settings, "events")
    client = registry_client(settings.kafka)
    data = AvroSerializer(client, _evolved_event_schema())(
        {**EVENT, "firmware": "v2.1"}, _value(settings.topics.events)
    )
    assert data is not None

    def unreachable(schema_id: int, *args: Any, **kwargs: Any) -> Schema:
        raise outage

    original = client.get_schema
    monkeypatch.setattr(client, "get_schema", unreachable)
    with pytest.raises(InfrastructureError, match="cannot read schema id"):
        serde.decode(data)
    monkeypatch.setattr(client, "get_schema", original)
    assert serde.decode(data) == EVENT  # an outage is not remembered


# -- auth settings --------------------------------------------------------------------------------


def test_auth_settings_reach_the_client_config(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    real = SchemaRegistryClient.new_client

    def recording(conf: dict[str, Any]) -> SchemaRegistryClient:
        seen.append(dict(conf))
        return real(conf)

    monkeypatch.setattr(SchemaRegistryClient, "new_client", staticmethod(recording))
    url = f"https://registry-{uuid.uuid4().hex[:8]}.invalid:8081"
    kafka = _settings(
        clean,
        schema_registry_url=url,
        schema_registry_basic_auth_user_info="alice:s3cret",
        schema_registry_ssl_ca_location=certifi.where(),
    ).kafka
    registry_client(kafka)  # a real client: it accepts every key we give it
    assert seen == [
        {
            "url": url,
            "basic.auth.user.info": "alice:s3cret",
            "ssl.ca.location": certifi.where(),
        }
    ]
    assert "s3cret" not in repr(kafka) and "s3cret" not in str(kafka.model_dump())


def test_malformed_user_info_is_a_config_error_without_the_secret(clean: Path) -> None:
    kafka = _settings(clean, schema_registry_basic_auth_user_info="no-colon-s3cret").kafka
    with pytest.raises(ConfigError) as caught:
        registry_client(kafka)
    assert "basic.auth.user.info" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_unreadable_ca_file_is_a_config_error(clean: Path) -> None:
    kafka = _settings(clean, schema_registry_ssl_ca_location=str(clean / "missing-ca.pem")).kafka
    with pytest.raises(ConfigError, match="Schema Registry mock://unit-"):
        registry_client(kafka)


class _Refusing(BaseHTTPRequestHandler):
    """A registry that refuses every request, quoting the credentials it was sent."""

    authorizations: list[str | None] = []

    def do_POST(self) -> None:
        authorization = self.headers.get("Authorization")
        self.authorizations.append(authorization)
        sent = base64.b64decode((authorization or "Basic ").split()[1]).decode()
        body = json.dumps({"error_code": 40101, "message": f"bad credentials {sent}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_registry() -> Iterator[tuple[str, list[str | None]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    seen: list[str | None] = []
    _Refusing.authorizations = seen
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_basic_auth_is_sent_and_a_refusal_does_not_leak_it(
    clean: Path, refusing_registry: tuple[str, list[str | None]]
) -> None:
    url, seen = refusing_registry
    settings = _settings(
        clean,
        ("events",),
        schema_registry_url=url,
        schema_registry_basic_auth_user_info="alice:s3cret",
    )
    with pytest.raises(InfrastructureError) as caught:
        topic_serde(settings, "events")
    assert seen == [f"Basic {base64.b64encode(b'alice:s3cret').decode()}"]
    message = str(caught.value)
    assert message.startswith(f"Schema Registry {url}: cannot register sensor.events-value")
    assert "HTTP status code 401" in message
    assert "s3cret" not in message and "alice:" not in message


def test_credentials_in_the_url_are_masked_in_errors(
    clean: Path, refusing_registry: tuple[str, list[str | None]]
) -> None:
    url, seen = refusing_registry
    with_credentials = url.replace("http://", "http://bob:urlpass@")
    settings = _settings(clean, ("events",), schema_registry_url=with_credentials)
    with pytest.raises(InfrastructureError) as caught:
        topic_serde(settings, "events")
    assert seen == [f"Basic {base64.b64encode(b'bob:urlpass').decode()}"]
    assert str(caught.value).startswith(f"Schema Registry {url.replace('//', '//***@')}:")
    assert "urlpass" not in str(caught.value)
