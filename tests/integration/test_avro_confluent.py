"""avro-confluent end to end: confluent's serializer in, the processor, its deserializer out.

The registry is confluent-kafka's in-process ``mock://`` one, so the producer,
the processor and the reader share this process (``run_processor`` is called
here, not in a subprocess) and reach it through the one client per URL that
``connectors.schema_registry.registry_client`` keeps. The broker is the real one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer as PlainProducer
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connectors.kafka_admin import ensure_topics
from connectors.schema_registry import registry_client
from connectors.source import EventFactory, SourceOptions
from models.datasets import shuttle
from schemas.catalog import schema_text
from schemas.serde import AvroSerde
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import read_topic

pytestmark = pytest.mark.integration

CURRENT, EVOLVED = 300, 100  # events per producer schema version


def _evolved_event_schema() -> str:
    """A newer producer's SensorEvent: one more field, which the processor's schema lacks."""
    schema = json.loads(schema_text("sensor_event"))
    schema["fields"].insert(2, {"name": "firmware", "type": "string"})
    return json.dumps(schema)


def _text_features_schema() -> str:
    """Another topic's SensorEvent with text features: unreadable as ours."""
    schema = json.loads(schema_text("sensor_event"))
    for field in schema["fields"]:
        if field["name"] == "features":
            field["type"] = {"type": "map", "values": "string"}
    return json.dumps(schema)


def test_processor_scores_confluent_serialised_events(make_settings) -> None:
    settings = make_settings(
        kafka={"schema_registry_url": f"mock://test-{uuid.uuid4().hex}"},
        formats={"events": "avro-confluent", "predictions": "avro-confluent"},
    )
    ensure_topics(settings)
    client = registry_client(settings.kafka)
    topic = settings.topics.events
    value = SerializationContext(topic, MessageField.VALUE)
    data = shuttle()
    factory = EventFactory(
        data.feature_names,
        data.X,
        AvroSerde("sensor_event"),
        SourceOptions(count=CURRENT + EVOLVED, seed=3, run_id="sr"),
    )
    current = AvroSerializer(client, schema_text("sensor_event"))
    evolved = AvroSerializer(client, _evolved_event_schema())
    text_features = AvroSerializer(client, _text_features_schema())

    now = int(time.time() * 1000)
    events = [factory.event(n, now) for n in range(CURRENT + EVOLVED)]
    producer = PlainProducer(settings.kafka.client_properties())
    for n, event in enumerate(events):
        if n < CURRENT:
            payload = current(event, value)
        else:
            payload = evolved({**event, "firmware": "v2.1"}, value)
        producer.produce(topic, payload, event["sensor_id"].encode())
    unreadable = text_features(
        {**events[0], "event_id": "sr-unreadable", "features": {"x": "high"}},
        SerializationContext("another.topic", MessageField.VALUE),
    )
    producer.produce(topic, unreadable, b"sensor-x")
    assert producer.flush(30) == 0

    summary = run_processor(settings, exit_when_idle=2)

    n = CURRENT + EVOLVED
    assert summary["events_in"] == n + 1
    assert summary["predictions"] == n
    assert summary["dead_letters_by_reason"] == {"Undecodable": 1}
    subject = f"{settings.topics.predictions}-value"
    assert subject in client.get_subjects()
    prediction_id = client.get_latest_version(subject).schema_id

    predictions = read_topic(settings, settings.topics.predictions, n)
    deserialize = AvroDeserializer(client)
    at = SerializationContext(settings.topics.predictions, MessageField.VALUE)
    decoded: list[dict[str, Any]] = []
    for record in predictions:
        assert record.value is not None
        assert record.value[0] == 0 and int.from_bytes(record.value[1:5], "big") == prediction_id
        prediction = deserialize(record.value, at)
        assert isinstance(prediction, dict)
        decoded.append(prediction)
    assert Counter(p["event_id"] for p in decoded) == Counter(e["event_id"] for e in events)
    event_time = datetime.fromtimestamp(now // 1000, UTC) + timedelta(milliseconds=now % 1000)
    for p in decoded:
        assert p["event_time"] == event_time  # a timestamp-millis, logical type applied
        assert p["variant"] == "champion"
        assert 0.0 <= p["score"] <= 1.0

    dead = read_topic(settings, settings.topics.dlq, 1)
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["__connect.errors.stage"] == b"decode"
    assert headers["__connect.errors.exception.class.name"] == b"Undecodable"
    assert b"cannot read with writer schema id" in headers["__connect.errors.exception.message"]
    assert dead[0].value == unreadable
