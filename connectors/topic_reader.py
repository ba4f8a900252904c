"""Read records outside any consumer group: the evaluator's and the shadow report's edge.

* :func:`read_topic_from_start` — a whole topic from the beginning: the report
  wants the newest evaluation records, whatever consumed them before;
* :func:`read_partition_range` — a range of one partition: the evaluator reads
  back labels its Faust consumer skipped (see ``streams.evaluation.evaluator``).

Neither commits. Both stop once no record came for ``idle_s`` seconds, never at
the reported end offset (the embedded broker understates it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic_from_start(
    kafka: KafkaSettings, topic: str, *, idle_s: float = 1.0, timeout_s: float = 30.0
) -> list[RawRecord]:
    """Every record of ``topic``, in partition order; ``[]`` when the topic does not exist."""
    consumer = Consumer(
        {
            **kafka.client_properties(),
            "group.id": "streamscore-evaluation-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(timeout_s, 10.0))
        except KafkaException as exc:
            raise InfrastructureError(f"cannot reach Kafka: {exc}") from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            return []
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(described.partitions)]
        )
        records: list[RawRecord] = []
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_record < idle_s:
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is not None:
                    if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise InfrastructureError(f"reading {topic}: {error}")
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None:
                    continue
                records.append(RawRecord(partition, offset, message.key(), message.value()))
                last_record = time.monotonic()
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def read_partition_range(
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    start: int,
    end: int,
    *,
    idle_s: float = 1.0,
    timeout_s: float = 15.0,
) -> list[RawRecord]:
    """The records of one partition with ``start <= offset < end``, in offset order.

    Fewer come back when the range holds no record at some offsets (transaction
    markers, compaction): the read stops at ``end - 1`` or after ``idle_s``
    seconds without a record.
    """
    if end <= start:
        return []
    consumer = Consumer(
        {
            **kafka.client_properties(),
            "group.id": "streamscore-evaluation-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        records: list[RawRecord] = []
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_record < idle_s:
            for message in consumer.consume(1000, 0.2):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise InfrastructureError(f"reading {topic}[{partition}]: {error}")
                    continue
                offset = message.offset()
                if offset is None:
                    continue
                last_record = time.monotonic()
                if start <= offset < end:
                    records.append(RawRecord(partition, offset, message.key(), message.value()))
                if offset >= end - 1:
                    return sorted(records, key=lambda r: r.offset)
        return sorted(records, key=lambda r: r.offset)
    finally:
        consumer.close()
