"""Helpers for integration tests: read topics back, run the processor on a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.settings import Settings
from streams.scoring.processor import Processor

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def stack_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points a ``streamscore`` command at the session's broker and
    Redis (and its home), plus ``extra`` variables."""
    return {
        "STREAMSCORE_HOME": str(settings.home),
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": str(settings.kafka.is_embedded).lower(),
        "STREAMSCORE_REDIS__URL": settings.redis.url,
        "STREAMSCORE_REDIS__EMBEDDED": str(settings.redis.is_embedded).lower(),
        **extra,
    }


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


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until true; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def sample(processor: Processor, name: str, **labels: str) -> float:
    """A metric sample of the processor's registry (0 when absent)."""
    value = processor.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@contextmanager
def running(processor: Processor, *, wait_for_assignment: bool = True) -> Iterator[Processor]:
    """The processor's loop on a thread; stopped (commit, close) on exit."""
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            processor.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            failure.append(exc)

    thread = threading.Thread(target=loop, name="processor", daemon=True)
    thread.start()
    try:
        if wait_for_assignment:
            wait_until(
                lambda: processor.health.partitions_assigned > 0 or bool(failure),
                "the partitions to be assigned",
            )
        yield processor
    finally:
        processor.stop("test done")
        thread.join(60)
    assert not thread.is_alive(), "the processor did not stop"
    if failure:
        raise failure[0]
