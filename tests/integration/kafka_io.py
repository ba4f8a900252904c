"""Helpers for integration tests: read topics back, run the processor."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.settings import Settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(
    settings: Settings, topic: str, expected: int, *, timeout: float = 30.0, settle: float = 1.0
) -> list[Record]:
    """Every record of ``topic`` from the beginning, without a consumer group.

    Reads until ``expected`` records arrived and then ``settle`` more seconds
    (to catch surplus duplicates), or until ``timeout``. It never trusts the
    reported end offset: the embedded broker understates it.
    """
    consumer = Consumer(
        {**settings.kafka.client_properties(), "group.id": "reader", "enable.auto.commit": False}
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            for m in consumer.consume(1000, 0.2):
                if m.error():
                    continue
                records.append(
                    Record(m.key(), m.value(), dict(m.headers() or []), m.partition(), m.offset())
                )
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + settle
    finally:
        consumer.close()
    return records
