"""Consumer-group lag for any group, read from the outside.

Lag is looked up through the admin API: the group's committed offsets
(``ListConsumerGroupOffsets``) and every partition's watermarks
(``ListOffsets``, earliest and latest, all partitions in one request each).
Nothing joins the group, so this works for groups that are not streamscore's
and while the group's members are down, which is when lag matters most.

Lag of a partition is ``end - committed``; a partition the group never
committed counts from its low watermark (everything still in the log is
unread). See :class:`connectors.kafka.PartitionOffsets`.

Against the embedded broker (Tansu) a partition's high watermark is the base
offset of the last produced batch + 1, so end offsets, and with them lag, are
**lower bounds**: understated by up to one producer batch. Against Apache
Kafka they are exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, OffsetSpec

from connectors.kafka import PartitionOffsets, TopicPartition
from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import KafkaSettings

__all__ = ["UnknownTopic", "group_lag", "list_groups"]


class UnknownTopic(ConfigError, LookupError):
    """A topic named for a lag lookup does not exist on the cluster."""


def _admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_properties())


def _result(future: Future[Any], timeout: float, what: str) -> Any:
    try:
        return future.result(timeout)
    except KafkaException as exc:
        raise InfrastructureError(f"{what} failed: {exc}") from exc
    except TimeoutError as exc:
        raise InfrastructureError(f"{what}: no answer from Kafka within {timeout:.0f}s") from exc


def list_groups(kafka: KafkaSettings, timeout: float = 10.0) -> list[str]:
    """Ids of every consumer group the cluster knows, sorted."""
    admin = _admin(kafka)
    listing = _result(
        admin.list_consumer_groups(request_timeout=timeout), timeout, "listing consumer groups"
    )
    if listing.errors:
        raise InfrastructureError(
            "listing consumer groups failed on some brokers: "
            + "; ".join(str(err) for err in listing.errors)
        )
    return sorted(group.group_id for group in listing.valid)


def _committed(admin: AdminClient, group: str, timeout: float) -> dict[tuple[str, int], int]:
    """``{(topic, partition): committed next offset}`` for every partition the group committed."""
    request = [ConsumerGroupTopicPartitions(group)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=timeout)
    answer = _result(futures[group], timeout, f"reading committed offsets of group {group!r}")
    committed: dict[tuple[str, int], int] = {}
    for tp in answer.topic_partitions or []:
        if tp.error is not None and tp.error.code() != KafkaError.NO_ERROR:
            raise InfrastructureError(
                f"committed offset of {tp.topic}[{tp.partition}] for group {group!r}: {tp.error}"
            )
        if tp.offset >= 0:
            committed[(tp.topic, tp.partition)] = tp.offset
    return committed


def _partitions(admin: AdminClient, topics: Iterable[str], timeout: float) -> list[tuple[str, int]]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise InfrastructureError(f"cannot reach Kafka: {exc}") from exc
    result: list[tuple[str, int]] = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or (meta.error is not None and meta.error.code() != KafkaError.NO_ERROR):
            raise UnknownTopic(f"topic {topic!r} does not exist")
        result.extend((topic, p) for p in sorted(meta.partitions))
    return result


def _watermarks(
    admin: AdminClient, partitions: list[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """``{(topic, partition): (low, high)}``: one ListOffsets request per side."""
    sides: dict[str, dict[tuple[str, int], int]] = {}
    for side, spec in (("low", OffsetSpec.earliest()), ("high", OffsetSpec.latest())):
        request = {TopicPartition(t, p): spec for t, p in partitions}
        futures = admin.list_offsets(request, request_timeout=timeout)
        sides[side] = {
            (tp.topic, tp.partition): _result(
                future, timeout, f"reading the {side} watermark of {tp.topic}[{tp.partition}]"
            ).offset
            for tp, future in futures.items()
        }
    return {key: (sides["low"][key], sides["high"][key]) for key in partitions}


def group_lag(
    kafka: KafkaSettings,
    group: str,
    topics: list[str] | None = None,
    timeout: float = 10.0,
) -> list[PartitionOffsets]:
    """Committed offset, watermarks and lag of every partition of a group's topics.

    ``topics=None`` means every topic the group has committed offsets for (an
    unknown group, or one that never committed, yields ``[]``). Named topics
    list all their partitions, committed or not. Sorted by topic, partition.
    """
    admin = _admin(kafka)
    committed = _committed(admin, group, timeout)
    wanted = sorted({t for t, _ in committed}) if topics is None else list(dict.fromkeys(topics))
    if not wanted:
        return []
    partitions = _partitions(admin, wanted, timeout)
    if not partitions:
        return []
    marks = _watermarks(admin, partitions, timeout)
    return [
        PartitionOffsets(
            topic, partition, committed.get((topic, partition)), *marks[(topic, partition)]
        )
        for topic, partition in partitions
    ]
