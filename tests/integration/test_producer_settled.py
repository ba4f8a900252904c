"""``Producer.settled``: the non-blocking half of the commit protocol, on the real broker."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

import pytest

from connectors.kafka import Producer
from connectors.kafka_admin import Admin
from schemas.errors import DeliveryFailed
from schemas.settings import Settings
from streams.ops.metrics import Metrics
from streams.serve.publish import Publisher
from tests.integration.kafka_io import read_topic, wait_until


def test_settled_is_false_while_records_are_in_flight_then_true_once_acknowledged(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    topic = settings.topics.predictions
    Admin(settings.kafka).ensure_topics([topic], partitions=2)
    producer = Producer(settings.kafka, client_id="settled-test", linger_ms=200)
    try:
        assert producer.settled()  # nothing queued yet
        producer.produce_many(topic, [f"v{i}".encode() for i in range(50)], [b"k"] * 50)
        assert not producer.settled()  # lingering for 200 ms: not even sent
        wait_until(producer.settled, "the 50 records acknowledged", timeout=30)
        assert len(read_topic(settings, topic, 50)) == 50  # settled means on the broker
    finally:
        producer.flush(10)


def test_settled_raises_for_a_record_the_broker_never_took(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    # A topic that does not exist and is never created: delivery times out and fails.
    producer = Producer(
        settings.kafka,
        client_id="settled-fail",
        linger_ms=0,
        **{"message.timeout.ms": 1500, "allow.auto.create.topics": False},
    )
    producer.produce(f"no-such-topic-{time.monotonic_ns()}", b"lost", b"k")
    deadline = time.monotonic() + 30
    with pytest.raises(DeliveryFailed, match="not delivered"):
        while time.monotonic() < deadline:
            if producer.settled():
                pytest.fail("a record that was never delivered counted as settled")
            time.sleep(0.05)


def test_close_delivers_what_was_flushed_and_discard_drops_the_rest_at_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    topic = settings.topics.predictions
    Admin(settings.kafka).ensure_topics([topic], partitions=1)
    kept = Producer(settings.kafka, client_id="close-kept", linger_ms=0)
    kept.produce_many(topic, [b"kept"] * 5, [b"k"] * 5)
    kept.flush(10)
    kept.close()
    kept.close(discard=True)  # a second close does nothing
    with pytest.raises(RuntimeError, match="closed"):  # no client left to reconnect
        kept.produce(topic, b"late", b"k")
    # Queued for a minute of lingering, then discarded: close does not wait for them.
    dropped = Producer(settings.kafka, client_id="close-dropped", linger_ms=60_000)
    dropped.produce_many(topic, [b"dropped"] * 5, [b"k"] * 5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="connectors.kafka"):
        dropped.close(discard=True)
    assert time.monotonic() - started < 5
    # Dropped on purpose: one warning with the count, no delivery failure.
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "dropped 5 unacknowledged output record(s): their inputs are "
                    "uncommitted and are consumed again"),
    ]  # fmt: skip
    # read_topic waits a second past the fifth record: nothing else arrives.
    assert [r.value for r in read_topic(settings, topic, 5, settle=2.0)] == [b"kept"] * 5


def test_the_http_publisher_delivers_at_close_and_counts_later_records_as_the_gap(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    topic = settings.topics.predictions
    Admin(settings.kafka).ensure_topics([topic], partitions=1)
    producer = Producer(settings.kafka, client_id="publisher-test", linger_ms=5)
    publisher = Publisher(producer, Metrics(), flush_every_s=30.0)  # only close flushes
    publisher.publish("champion", topic, [b"p"] * 4, [b"k"] * 4)
    publisher.close()
    assert publisher.published == Counter({"champion": 4}) and not publisher.gap
    publisher.publish("champion", topic, [b"late"] * 2, [b"k"] * 2)  # never raises
    assert publisher.gap == Counter({"champion": 2})
    assert [r.value for r in read_topic(settings, topic, 4, settle=2.0)] == [b"p"] * 4
