"""Read records outside any consumer group: the evaluator's and the shadow report's edge.

* :func:`read_topic_from_start` — a whole topic from the beginning: the report
  wants the newest evaluation records, whatever consumed them before;
* :func:`read_partition_range` — a range of one partition: the evaluator reads
  back labels its Faust consumer skipped (see ``streams.evaluation.evaluator``).

Both assign partitions to the project's :class:`~connectors.kafka.Consumer` (no
group join) and run the same loop (:func:`_read`). Neither commits. Both stop
once no record came for ``idle_s`` seconds, never at the reported end offset
(the embedded broker understates it); a range read also stops at its last offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaError

from connectors.kafka import Consumer, TopicPartition, client_id
from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import KafkaSettings

#: The readers' group: never joined (partitions are assigned) and never committed.
READER_GROUP = "streamscore-evaluation-reader"
_BATCH = 1000
_POLL_S = 0.2


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
    consumer = _reader(kafka)
    try:
        try:
            consumer.assign_topic(topic, from_beginning=True, timeout=min(timeout_s, 10.0))
        except ConfigError:  # the topic does not exist (yet): nothing to read
            return []
        # A topic deleted while it is read is an error, not an early end.
        return _read(
            consumer,
            topic,
            idle_s=idle_s,
            timeout_s=timeout_s,
            fatal_codes=(KafkaError.UNKNOWN_TOPIC_OR_PART,),
        )
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
    consumer = _reader(kafka)
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        return _read(
            consumer,
            f"{topic}[{partition}]",
            idle_s=idle_s,
            timeout_s=timeout_s,
            offsets=(start, end),
        )
    finally:
        consumer.close()


def _reader(kafka: KafkaSettings) -> Consumer:
    return Consumer(kafka, group_id=READER_GROUP, client_id=client_id("topic-reader"))


def _read(
    consumer: Consumer,
    what: str,
    *,
    idle_s: float,
    timeout_s: float,
    offsets: tuple[int, int] | None = None,
    fatal_codes: tuple[int, ...] = (),
) -> list[RawRecord]:
    """Consume the assigned partitions until ``idle_s`` without a record, ``timeout_s``
    in all, or (with ``offsets``: ``start, end``) the offset ``end - 1``; records in
    ``[start, end)`` only. Returns them by partition, then offset."""
    records: list[RawRecord] = []
    deadline = time.monotonic() + timeout_s
    last_record = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_record < idle_s:
        try:
            messages = consumer.consume(_BATCH, _POLL_S, fatal_codes=fatal_codes)
        except InfrastructureError as exc:
            raise InfrastructureError(f"reading {what}: {exc}") from exc
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            last_record = time.monotonic()
            if offsets is None or offsets[0] <= offset < offsets[1]:
                records.append(RawRecord(partition, offset, message.key(), message.value()))
            if offsets is not None and offset >= offsets[1] - 1:
                return _in_order(records)
    return _in_order(records)


def _in_order(records: list[RawRecord]) -> list[RawRecord]:
    return sorted(records, key=lambda r: (r.partition, r.offset))
