"""Thin typed wrappers over confluent-kafka: producer and consumer (admin: ``kafka_admin``).

The producer *latches* delivery errors: librdkafka reports them in a callback
from ``poll``/``flush``, the first one is kept, and :meth:`Producer.flush`
raises it. The commit protocol (``streams.scoring.checkpoint``) flushes before it
commits, so a record the broker did not acknowledge can never have its input
offset committed.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Consumer as _Consumer
from confluent_kafka import Producer as _Producer

from schemas.errors import ConfigError, DeliveryFailed, InfrastructureError
from schemas.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

__all__ = [
    "Consumer",
    "Headers",
    "Message",
    "PartitionOffsets",
    "Producer",
    "TopicPartition",
]


def client_id(role: str) -> str:
    """A client id that names the role, the host and the process (broker logs, quotas)."""
    return f"streamscore-{role}-{socket.gethostname()}-{os.getpid()}"


#: librdkafka's default ``message.max.bytes`` (the producer refuses larger records).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: Error codes meaning "this record is larger than the client, broker or topic accepts".
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})
#: Delivery reports of records a purge dropped.
PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})

#: Given a refused record (topic, value, key, headers), a smaller one to send instead,
#: or None when there is nothing smaller to send. See :class:`Producer`.
Shrink = Callable[
    [str, bytes | None, bytes | None, "Headers | None"],
    "tuple[bytes | None, bytes | None, Headers | None] | None",
]


@dataclass(frozen=True, slots=True)
class Refused:
    """A record the broker refused as too large, kept for a smaller second try."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers | None


class _DeliveryLatch:
    """Keeps the first delivery error. Separate from :class:`Producer` so the
    librdkafka handle does not reference its own wrapper (a cycle would keep
    the handle, and its threads, alive after the wrapper is gone).

    A record of a ``shrinkable`` topic refused as too large is not an error yet:
    it is kept in ``refused`` for :meth:`Producer.flush` to send again, smaller.
    """

    def __init__(self, shrinkable: frozenset[str] = frozenset()) -> None:
        self.error: KafkaError | None = None
        self.failed = 0
        #: Records dropped by a purge, not failed.
        self.discarded = 0
        self.shrinkable = shrinkable
        self.refused: list[Refused] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        if err.code() in PURGED:  # dropped on purpose (Producer.close(discard=True))
            self.discarded += 1
            return
        topic = msg.topic() or ""
        if err.code() in TOO_LARGE and topic in self.shrinkable:
            headers = cast("Headers | None", msg.headers())
            self.refused.append(Refused(topic, msg.value(), msg.key(), headers))
            return
        self.failed += 1
        if self.error is None:
            self.error = err
            log.error("delivery to %s failed: %s", topic, err)

    def take(self) -> tuple[KafkaError | None, int]:
        err, failed = self.error, self.failed
        self.error, self.failed = None, 0
        return err, failed

    def raise_failed(self) -> None:
        """Raise :class:`DeliveryFailed` for the failures latched since the last look."""
        err, failed = self.take()
        if err is not None or failed:
            raise DeliveryFailed(f"{failed} output record(s) not delivered: {err or 'too large'}")

    def take_refused(self) -> list[Refused]:
        refused, self.refused = self.refused, []
        return refused


class Producer:
    """Idempotent producer whose delivery errors surface at :meth:`flush`.

    With ``shrink``, a record of one of ``shrink_topics`` that is too large — refused by
    librdkafka at ``produce`` (``message.max.bytes``) or by the broker at delivery
    (``message.max.bytes`` / the topic's ``max.message.bytes``) — is replaced by the
    smaller record ``shrink`` returns, and :meth:`flush` does not return before the
    replacement is acknowledged. That is how a dead letter is always deliverable.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        client_id: str,
        linger_ms: int = 5,
        shrink: Shrink | None = None,
        shrink_topics: Iterable[str] = (),
        **extra: Any,
    ) -> None:
        self._latch = _DeliveryLatch(frozenset(shrink_topics) if shrink else frozenset())
        self._shrink = shrink
        config = {
            **kafka.client_properties(),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "delivery.report.only.error": True,
            "on_delivery": self._latch,
            **extra,
            **kafka.client_config,  # the user's librdkafka properties win over our defaults
        }
        #: The largest record this producer sends (librdkafka's ``message.max.bytes``).
        self.max_message_bytes = int(config.get("message.max.bytes", DEFAULT_MAX_MESSAGE_BYTES))
        self._producer = _Producer(config)
        self._closed = False

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue one record; waits (never drops) while the local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, headers=cast(Any, headers))
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:
                smaller = self._smaller(exc, topic, value, key, headers)
                if smaller is None:
                    raise DeliveryFailed(f"record for {topic} refused: {exc}") from exc
                value, key, headers = smaller

    def _smaller(
        self,
        exc: KafkaException,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
    ) -> tuple[bytes | None, bytes | None, Headers | None] | None:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if self._shrink is None or err is None or err.code() not in TOO_LARGE:
            return None
        if topic not in self._latch.shrinkable:
            return None
        return self._shrink(topic, value, key, headers)

    def produce_many(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
    ) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        for value, key in zip(values, keys, strict=True):
            try:
                produce(topic, value, key)
            except BufferError:
                poll(0.05)
                self.produce(topic, value, key)
        poll(0)

    def poll(self, timeout: float = 0) -> None:
        self._producer.poll(timeout)

    def settled(self) -> bool:
        """Whether every record queued so far is acknowledged, without waiting.

        Serves the delivery reports that have arrived (``poll(0)``) and raises
        :class:`DeliveryFailed` for a failed one, as :meth:`flush` does. False while any
        record is queued or in flight, or was refused as too large (:meth:`flush` sends
        it again, smaller).
        """
        self._producer.poll(0)
        if len(self._producer) or self._latch.refused:
            return False
        self._latch.raise_failed()
        return True

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued record's acknowledgement; raise if any failed.

        Records refused as too large are sent again through ``shrink`` (each try
        smaller) before this returns; one that cannot shrink further is a failure.
        """
        remaining = self._producer.flush(timeout)
        for _attempt in range(4):
            refused = self._latch.take_refused()
            if not refused:
                break
            for r in refused:
                smaller = self._shrink(r.topic, r.value, r.key, r.headers) if self._shrink else None
                if smaller is None:
                    self._latch.failed += 1
                    continue
                log.warning("%s refused a %d-byte record as too large; sent %d bytes instead",
                            r.topic, len(r.value or b""), len(smaller[0] or b""))  # fmt: skip
                self.produce(r.topic, *smaller)
            remaining = self._producer.flush(timeout)
        else:
            self._latch.failed += len(self._latch.take_refused())
        self._latch.raise_failed()
        if remaining:
            raise DeliveryFailed(f"{remaining} output record(s) unacknowledged after {timeout}s")

    def close(self, *, discard: bool = False) -> None:
        """End the client and its broker connections (no reconnecting after a run).

        ``discard`` drops what is still queued instead of delivering it: for a run that
        did not end cleanly, whose unacknowledged outputs are uncommitted and so are
        consumed and produced again. Call :meth:`flush` first to deliver them. A second
        call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        if discard:
            self._producer.purge()
            self._producer.poll(0)  # the purged records' reports: nothing is left queued
            if dropped := self._latch.discarded:
                log.warning("dropped %d unacknowledged output record(s): their inputs are "
                            "uncommitted and are consumed again", dropped)  # fmt: skip
        self._producer.close()

    def __len__(self) -> int:
        return len(self._producer)


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None
    low: int
    high: int

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None and self.committed >= 0 else self.low
        return max(self.high - start, 0)


def _partitions(next_offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]


def _kafka_error(exc: KafkaException) -> KafkaError:
    if exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    raise InfrastructureError(f"offset commit failed: {exc}") from exc


RebalanceCallback = Callable[[list[TopicPartition]], None]

#: Commit refusals that mean "the group has moved on" (a rebalance), not a failure.
GROUP_MOVED_ON = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS}
)


class Consumer:
    """A consumer-group member that never commits on its own.

    Offsets are committed only through :meth:`commit`, with explicit
    next-offsets, after the outputs they cover are acknowledged.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        client_id: str,
        auto_offset_reset: str = "earliest",
        **extra: Any,
    ) -> None:
        config = {
            **kafka.client_properties(),
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "session.timeout.ms": kafka.session_timeout_ms,
            "heartbeat.interval.ms": max(kafka.session_timeout_ms // 6, 500),
            "fetch.wait.max.ms": 20,
            "queued.min.messages": 20_000,
            # librdkafka's default (1 s) stalls fetching once the local queue is full:
            # measured, it capped consumption at ~38k records/s.
            "fetch.queue.backoff.ms": 10,
            "on_commit": self._on_commit,
            **extra,
            **kafka.client_config,  # the user's librdkafka properties win over our defaults
        }
        self._consumer = _Consumer(config)
        self.group_id = group_id
        #: ``cooperative-sticky``: assignments come and go a few partitions at a time.
        self.cooperative = "cooperative" in str(config.get("partition.assignment.strategy", ""))
        #: Partitions that reported their end (``enable.partition.eof``) since :meth:`take_ends`.
        self._ends: list[tuple[str, int]] = []
        #: Commit answers (error, [(topic, partition, offset, error)]) since :meth:`commit_answers`.
        self._answers: list[tuple[KafkaError | None, list[tuple[str, int, int, Any]]]] = []

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        def wrap(cb: RebalanceCallback | None) -> Callable[[Any, list[TopicPartition]], None]:
            def call(_consumer: Any, partitions: list[TopicPartition]) -> None:
                if cb is not None:
                    cb(partitions)

            return call

        kwargs: dict[str, Any] = {"on_assign": wrap(on_assign), "on_revoke": wrap(on_revoke)}
        kwargs["on_lost"] = wrap(on_lost if on_lost is not None else on_revoke)
        self._consumer.subscribe(topics, **kwargs)

    def consume(
        self, max_messages: int, timeout: float, *, fatal_codes: tuple[int, ...] = ()
    ) -> list[Message]:
        """Up to ``max_messages`` records, as soon as there is at least one.

        Waits up to ``timeout`` for the first record, then takes whatever else is
        already queued without waiting: a full batch under load, no batch-filling
        delay at low load. Transient client errors are logged and skipped, except
        the error codes in ``fatal_codes``, raised like fatal ones.
        """
        messages = self._consumer.consume(1, timeout)
        if not messages:
            return messages
        if max_messages > 1:
            messages.extend(self._consumer.consume(max_messages - 1, 0))
        good = [m for m in messages if m.error() is None]
        if len(good) != len(messages):
            for m in messages:
                err = m.error()
                if err is None:
                    continue
                if err.code() == KafkaError._PARTITION_EOF:
                    self._ends.append((cast(str, m.topic()), cast(int, m.partition())))
                    continue
                if err.fatal() or err.code() in fatal_codes:
                    raise InfrastructureError(f"fatal consumer error: {err}")
                log.warning("consumer error on %s[%s]: %s", m.topic(), m.partition(), err)
        return good

    def commit(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        """Synchronously commit ``{(topic, partition): next offset}``; False if refused."""
        if not next_offsets:
            return True
        try:
            answered = self._consumer.commit(offsets=_partitions(next_offsets), asynchronous=False)
            err = next((tp.error for tp in answered or [] if tp.error is not None), None)
        except KafkaException as exc:
            err = _kafka_error(exc)
        return self._taken(err)

    def commit_async(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        """Send a commit without waiting for it; its answer comes from :meth:`commit_answers`.

        False if the group refused it at once (rebalancing).
        """
        if not next_offsets:
            return True
        try:
            self._consumer.commit(offsets=_partitions(next_offsets), asynchronous=True)
        except KafkaException as exc:
            return self._taken(_kafka_error(exc))
        return True

    def commit_answers(self) -> list[tuple[dict[tuple[str, int], int], bool]]:
        """The answers to commits since the last call, served by :meth:`consume`:
        ``(offsets, taken)``. Not taken: the group moved on or the error is
        retriable (commit them again); any other error raises."""
        answers, self._answers = self._answers, []
        result = []
        for err, offsets in answers:
            if err is None:  # the request went through: a partition may still have failed
                err = next((e for *_, e in offsets if e is not None), None)
            if err is not None and err.retriable():
                log.warning("offset commit not taken (%s): it goes with the next", err.str())
                taken = False
            else:
                taken = self._taken(err)
            result.append(({(t, p): o for t, p, o, _ in offsets}, taken))
        return result

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Served by consume() for commit_async (a synchronous commit answers itself).
        self._answers.append(
            (err, [(tp.topic, tp.partition, tp.offset, tp.error) for tp in partitions or []])
        )

    def _taken(self, err: KafkaError | None) -> bool:
        """True for no error, False for a group that moved on; raises for anything else."""
        if err is None:
            return True
        if err.code() not in GROUP_MOVED_ON:
            raise InfrastructureError(f"offset commit failed: {err}")
        log.warning("group %s did not take the commit (%s): it is rebalancing or moved on",
                    self.group_id, err.str())  # fmt: skip
        return False

    def take_ends(self) -> list[tuple[str, int]]:
        """Partitions that reported their end since the last call (``enable.partition.eof``)."""
        ends, self._ends = self._ends, []
        return ends

    def starts_at(
        self, partitions: list[TopicPartition], timestamp_ms: int, timeout: float = 10.0
    ) -> list[TopicPartition]:
        """Where to read from for ``timestamp_ms`` on: the committed offset, else ListOffsets by
        time (-1 = end). Readers skip earlier stamps too: Tansu answers by append time."""
        try:
            committed = self._consumer.committed(partitions, timeout)
            lookup = [TopicPartition(tp.topic, tp.partition, timestamp_ms)
                      for tp in committed if tp.offset < 0]  # fmt: skip
            found = self._consumer.offsets_for_times(lookup, timeout) if lookup else []
        except KafkaException as exc:
            raise InfrastructureError(f"cannot look up offsets by time: {exc}") from exc
        by_time = {(tp.topic, tp.partition): tp.offset for tp in found}
        for tp in committed:
            tp.offset = by_time.get((tp.topic, tp.partition), tp.offset)
        return committed

    def assign_in_rebalance(self, partitions: list[TopicPartition]) -> None:
        """Take up ``partitions`` at their offsets, from inside ``on_assign`` (eager or not)."""
        take = self._consumer.incremental_assign if self.cooperative else self._consumer.assign
        take(partitions)

    def pause(self, partitions: Collection[tuple[str, int]]) -> None:
        """Stop fetching these assigned partitions (until a rebalance assigns them again)."""
        if partitions:
            self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def positions(self) -> dict[tuple[str, int], int]:
        """Next offset to be returned per assigned partition (unknown ones omitted)."""
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.position(assigned)
            if tp.offset >= 0
        }

    def assignment(self) -> list[TopicPartition]:
        return list(self._consumer.assignment())

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read these partitions from their offsets, outside the group: nothing joins."""
        self._consumer.assign(partitions)

    def assign_topic(
        self, topic: str, *, from_beginning: bool, timeout: float = 10.0
    ) -> list[TopicPartition]:
        """Read every partition of ``topic`` outside the group: nothing joins, nothing commits.

        From the first record still in the log, or from each partition's end as looked up
        now (not at the first fetch), so every record produced after this returns is read.
        A topic the cluster does not have is a :class:`ConfigError`: a name to fix.
        """
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise ConfigError(f"topic {topic} does not exist")
            partitions = []
            for p in sorted(described.partitions):
                offset = OFFSET_BEGINNING
                if not from_beginning:
                    tp = TopicPartition(topic, p)
                    _, offset = self._consumer.get_watermark_offsets(tp, timeout, cached=False)
                partitions.append(TopicPartition(topic, p, offset))
        except KafkaException as exc:
            raise InfrastructureError(f"cannot look up topic {topic}: {exc}") from exc
        self._consumer.assign(partitions)
        return partitions

    def close(self, *, leave_group: bool = True) -> None:
        """``leave_group=False``: no LeaveGroup (freed without librdkafka's consumer close)."""
        if leave_group:
            self._consumer.close()
        else:
            del self._consumer

    def offsets(self, topic: str, timeout: float = 10.0) -> list[PartitionOffsets]:
        """Committed offset and watermarks of every partition of ``topic`` for this group."""
        metadata = self._consumer.list_topics(topic, timeout=timeout)
        parts = metadata.topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        committed = {tp.partition: tp.offset for tp in self._consumer.committed(tps, timeout)}
        result = []
        for tp in tps:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            c = committed.get(tp.partition)
            result.append(
                PartitionOffsets(
                    topic, tp.partition, c if c is not None and c >= 0 else None, low, high
                )
            )
        return result
