"""What the answer to a commit sent without waiting means: taken, to send again, or fatal.

librdkafka hands each answer to the consumer's ``on_commit`` callback during a later
``consume``; here that callback is given librdkafka's own error objects directly (the
real round trip against a broker is in tests/integration/test_lag.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, TopicPartition

from connectors.kafka import Consumer
from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    # Port 1 on the loopback: nothing is ever asked of a broker here.
    member = Consumer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), group_id="g", client_id="c")
    yield member
    member.close(leave_group=False)


def part(partition: int, offset: int, error: KafkaError | None = None) -> SimpleNamespace:
    return SimpleNamespace(topic="events", partition=partition, offset=offset, error=error)


def test_an_answer_without_errors_is_taken(consumer: Consumer) -> None:
    consumer._on_commit(None, [TopicPartition("events", 0, 4), TopicPartition("events", 1, 9)])
    assert consumer.commit_answers() == [({("events", 0): 4, ("events", 1): 9}, True)]
    assert consumer.commit_answers() == []  # each answer is given once


def test_a_group_that_moved_on_did_not_take_it(consumer: Consumer) -> None:
    consumer._on_commit(KafkaError(KafkaError.ILLEGAL_GENERATION), [part(0, 4)])
    consumer._on_commit(None, [part(1, 2, KafkaError(KafkaError.UNKNOWN_MEMBER_ID))])
    assert consumer.commit_answers() == [({("events", 0): 4}, False), ({("events", 1): 2}, False)]


def test_a_retriable_error_did_not_take_it(consumer: Consumer) -> None:
    busy = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)
    consumer._on_commit(busy, [part(0, 4)])
    assert consumer.commit_answers() == [({("events", 0): 4}, False)]


def test_any_other_error_is_an_infrastructure_failure(consumer: Consumer) -> None:
    denied = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "not authorised for the group")
    consumer._on_commit(None, [part(0, 4), part(1, 2, denied)])
    with pytest.raises(InfrastructureError, match=r"offset commit failed: .*not authorised"):
        consumer.commit_answers()


def test_nothing_to_send_is_taken_without_asking(consumer: Consumer) -> None:
    assert consumer.commit_async({}) is True
    assert consumer.commit_answers() == []
