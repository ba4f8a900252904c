"""Records larger than every limit: dead-lettered with a reason, never a crash loop.

The embedded broker accepts records of any size, so the producer's own limit
(librdkafka ``message.max.bytes``, 1 MB by default) is the one refused at produce
time here; a broker's refusal at delivery is driven through the producer's delivery
callback with librdkafka's own error and message types.
"""

from __future__ import annotations

import hashlib

import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as PlainProducer

from connectors.kafka import Producer
from connectors.kafka_admin import Admin, ensure_topics
from connectors.lag import group_lag
from connectors.source import SourceOptions, run_source
from streams.scoring.compose import run_processor
from streams.scoring.dead_letters import (
    ORIGINAL_BYTES,
    ORIGINAL_SHA256,
    TRUNCATED,
    DeadLetterPolicy,
)
from tests.integration.kafka_io import read_topic

pytestmark = pytest.mark.integration

SIZES = {
    "just-under-dlq-limit": 990_000,  # over processor.max_message_bytes, fits the DLQ as is
    "poison-1.5MB": 1_500_000,  # the record that crash-looped the processor
    "far-over-8MB": 8_000_000,
}


def _publish_big(settings, sizes: dict[str, int]) -> dict[str, bytes]:
    producer = PlainProducer(
        {**settings.kafka.client_properties(), "message.max.bytes": 10_000_000}
    )
    values = {}
    for key, size in sizes.items():
        values[key] = hashlib.sha256(key.encode()).digest() * (size // 32)
        producer.produce(settings.topics.events, values[key], key.encode())
    assert producer.flush(30) == 0
    return values


def test_oversized_records_are_dead_lettered_and_the_stream_goes_on(make_settings) -> None:
    settings = make_settings()
    ensure_topics(settings)
    before = run_source(settings, SourceOptions(count=300, seed=3, run_id="pre"), keep_ids=True)
    values = _publish_big(settings, SIZES)
    after = run_source(settings, SourceOptions(count=300, seed=4, run_id="post"), keep_ids=True)

    summary = run_processor(settings, exit_when_idle=2)

    assert summary["exit_reason"].startswith("idle")
    assert summary["predictions"] == before.valid + after.valid
    assert summary["dead_letters_by_reason"] == {"Oversized": 3}
    dead = {r.key.decode(): r for r in read_topic(settings, settings.topics.dlq, 3)}
    assert set(dead) == set(SIZES)
    under = dead["just-under-dlq-limit"]
    assert under.value == values["just-under-dlq-limit"] and TRUNCATED not in under.headers
    for key in ("poison-1.5MB", "far-over-8MB"):
        record, original = dead[key], values[key]
        assert record.headers[TRUNCATED] == b"true"
        assert record.headers[ORIGINAL_BYTES] == str(len(original)).encode()
        assert record.headers[ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest().encode()
        assert original.startswith(record.value) and 0 < len(record.value) < 1_000_000
        assert record.headers["__connect.errors.exception.class.name"] == b"Oversized"
    # Offsets were committed past the poison pills: a restart does not replay them.
    lag = group_lag(settings.kafka, settings.processor.group_id, [settings.topics.events])
    assert sum(p.lag for p in lag) == 0 and all(p.committed is not None for p in lag)
    assert run_processor(settings, exit_when_idle=2)["events_in"] == 0


def test_a_refusal_at_delivery_is_resent_smaller_before_flush_returns(make_settings) -> None:
    settings = make_settings()
    Admin(settings.kafka).ensure_topics([settings.topics.dlq], partitions=1)
    policy = DeadLetterPolicy(1_000_000)
    producer = Producer(
        settings.kafka, client_id="t", shrink=policy.shrink, shrink_topics=[settings.topics.dlq]
    )
    original = b"z" * 900_000
    headers = [("__connect.errors.exception.class.name", b"Oversized")]
    # What librdkafka hands the delivery callback when a broker refuses the record
    # (RecordTooLarge / MESSAGE_TOO_LARGE map to MSG_SIZE_TOO_LARGE).
    refused = Message(topic=settings.topics.dlq, value=original, key=b"s1", headers=headers)
    producer._latch(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), refused)

    producer.flush(15)

    [record] = read_topic(settings, settings.topics.dlq, 1)
    assert record.key == b"s1" and record.headers[TRUNCATED] == b"true"
    assert record.headers[ORIGINAL_BYTES] == b"900000"
    assert len(record.value) < 900_000 // 3 and original.startswith(record.value)


def test_a_record_that_cannot_shrink_is_a_delivery_failure(make_settings) -> None:
    from schemas.errors import DeliveryFailed

    settings = make_settings()
    producer = Producer(settings.kafka, client_id="t")  # no shrink policy: predictions, audit
    with pytest.raises(DeliveryFailed, match="refused"):
        producer.produce(settings.topics.predictions, b"p" * 1_500_000)
