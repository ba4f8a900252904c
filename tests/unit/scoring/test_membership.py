"""Group membership: eager and cooperative rebalances, refused commits, a stuck join."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import TopicPartition

from schemas.settings import KafkaSettings, ProcessorSettings
from streams.ops.metrics import Health, Metrics
from streams.scoring import membership
from streams.scoring.checkpoint import Checkpoint
from streams.scoring.membership import GroupMember, join_timeout, leave_policy

T = "events"


def tps(*partitions: int, offset: int = -1001) -> list[TopicPartition]:
    return [TopicPartition(T, p, offset) for p in partitions]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TwinConsumer:
    """Records what the member asks of it."""

    group_id = "g"

    def __init__(self, *, refuse_commits: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.refuse_commits = refuse_commits
        self.by_time = {0: 40, 1: -1}

    def subscribe(self, topics: list[str], **callbacks: object) -> None:
        self.calls.append(("subscribe", topics))

    def close(self, *, leave_group: bool = True) -> None:
        self.calls.append(("close", leave_group))

    def commit(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        self.calls.append(("commit", dict(next_offsets)))
        return not self.refuse_commits

    def commit_async(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        self.calls.append(("commit_async", dict(next_offsets)))
        return not self.refuse_commits

    def commit_answers(self) -> list[tuple[dict[tuple[str, int], int], bool]]:
        return []  # a rebalance commits synchronously: no answers come later

    def starts_at(
        self, partitions: list[TopicPartition], timestamp_ms: int, timeout: float = 10.0
    ) -> list[TopicPartition]:
        self.calls.append(("starts_at", timestamp_ms))
        return [TopicPartition(tp.topic, tp.partition, self.by_time[tp.partition])
                for tp in partitions]  # fmt: skip

    def assign_in_rebalance(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("assign", [(tp.partition, tp.offset) for tp in partitions]))


class NoFlush:
    def flush(self, timeout: float = 30.0) -> None:
        pass

    def settled(self) -> bool:
        return True


def member(
    consumer: TwinConsumer, clock: Clock, **kwargs: object
) -> tuple[GroupMember, Checkpoint, Health]:
    checkpoint = Checkpoint(NoFlush(), consumer, interval_s=1.0)
    health = Health()
    group = GroupMember(
        consumer,
        metrics=Metrics(),
        health=health,
        commit=checkpoint.commit,
        forget=checkpoint.forget,
        join_timeout_s=10.0,
        clock=clock,
        **kwargs,
    )
    return group, checkpoint, health


def test_an_eager_rebalance_revokes_everything_then_assigns_anew() -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, checkpoint, health = member(consumer, clock)
    group.subscribe([T])
    group.on_assign(tps(0, 1, 2))
    checkpoint.track([(T, 0, 9), (T, 2, 4)])

    group.on_revoke(tps(0, 1, 2))

    assert ("commit", {(T, 0): 10, (T, 2): 5}) in consumer.calls
    assert group.held == set() and health.partitions_assigned == 0
    assert group.joining_since == clock.now
    group.on_assign(tps(1))
    assert group.held == {(T, 1)} and health.partitions_assigned == 1
    assert group.joining_since is None


def test_a_cooperative_revoke_keeps_the_partitions_not_named() -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, _checkpoint, health = member(consumer, clock)
    group.on_assign(tps(0, 1, 2))

    group.on_revoke(tps(2))
    assert group.held == {(T, 0), (T, 1)} and health.partitions_assigned == 2
    group.on_assign([])  # the end of that rebalance: nothing added
    group.on_assign(tps(3))  # a later one adds a partition

    assert group.held == {(T, 0), (T, 1), (T, 3)} and health.partitions_assigned == 3


def test_offsets_the_group_refused_stay_pending_until_a_revoke_forgets_them() -> None:
    consumer, clock = TwinConsumer(refuse_commits=True), Clock()
    group, checkpoint, _health = member(consumer, clock)
    group.on_assign(tps(0, 1))
    checkpoint.track([(T, 0, 9), (T, 1, 3)])

    checkpoint.commit()  # refused mid-rebalance: kept for the next try
    assert checkpoint.pending == {(T, 0): 10, (T, 1): 4} and checkpoint.commits == 0
    group.on_revoke(tps(1))  # refused again; partition 1 is someone else's now

    assert checkpoint.pending == {(T, 0): 10}
    consumer.refuse_commits = False
    checkpoint.commit()
    assert consumer.calls[-1] == ("commit", {(T, 0): 10}) and checkpoint.commits == 1


def test_a_lost_partition_is_forgotten_uncommitted() -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, checkpoint, _health = member(consumer, clock)
    group.on_assign(tps(0, 1))
    checkpoint.track([(T, 0, 9), (T, 1, 3)])

    group.on_lost(tps(0))

    assert checkpoint.pending == {(T, 1): 4}
    assert not [c for c in consumer.calls if c[0] == "commit"]
    assert group.held == {(T, 1)}


def test_a_replay_starts_partitions_where_the_consumer_says(caplog) -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, _checkpoint, _health = member(consumer, clock, start_ms=1_700_000_000_000)

    with caplog.at_level(logging.INFO):
        group.on_assign(tps(0, 1))

    assert ("starts_at", 1_700_000_000_000) in consumer.calls
    assert ("assign", [(0, 40), (1, -1)]) in consumer.calls
    assert group.held == {(T, 0), (T, 1)}
    group.on_assign([])  # an empty assignment needs no lookup
    assert [c for c in consumer.calls if c[0] == "starts_at"] == [("starts_at", 1_700_000_000_000)]


def test_a_join_that_does_not_end_is_reported_once_and_cleared_by_an_assignment(caplog) -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, _checkpoint, health = member(consumer, clock)
    group.subscribe([T])
    clock.now += 9.9
    group.check()
    assert "consumer_group" not in health.problems

    clock.now += 0.2
    with caplog.at_level(logging.ERROR):
        group.check()
        group.check()
    problem = health.problems["consumer_group"]
    assert problem.startswith("no assignment from group g 10s after joining")
    assert "streamscore down && streamscore up" in problem and "processor.group_id" in problem
    assert [r.message for r in caplog.records] == [problem]
    assert not health.ready()[0]

    group.on_assign(tps(0))
    assert "consumer_group" not in health.problems and not group.stuck


@pytest.mark.parametrize("leave", [True, False])
def test_close_leaves_with_a_leave_group_or_lets_the_session_expire(leave: bool) -> None:
    consumer, clock = TwinConsumer(), Clock()
    group, _checkpoint, _health = member(consumer, clock, leave_group=lambda: leave)
    group.on_assign(tps(0))

    group.close()

    assert consumer.calls[-1] == ("close", leave)


class StubAdmin:
    state: str | None = "STABLE"

    def __init__(self, kafka: KafkaSettings, *, quiet: bool = False) -> None:
        pass

    def group_state(self, group: str, timeout: float = 5.0) -> str | None:
        return self.state


@pytest.mark.parametrize(
    ("mode", "embedded", "state", "leaves"),
    [
        ("leave", True, "UNKNOWN", True),
        ("expire", False, "STABLE", False),
        ("auto", False, "UNKNOWN", True),  # Apache Kafka: always a LeaveGroup
        ("auto", True, "STABLE", True),  # the embedded broker, the group stable
        ("auto", True, "UNKNOWN", False),  # ... rebalancing: let the session expire
        ("auto", True, None, False),  # ... or when it cannot say
    ],
)
def test_the_leave_policy(
    monkeypatch: pytest.MonkeyPatch, mode: str, embedded: bool, state: str | None, leaves: bool
) -> None:
    monkeypatch.setattr(membership, "Admin", StubAdmin)
    StubAdmin.state = state
    processor = ProcessorSettings(leave_group=mode)
    kafka = KafkaSettings(embedded=embedded)

    assert leave_policy(processor, kafka)() is leaves


def test_the_join_timeout_defaults_to_five_session_timeouts_at_least_30s() -> None:
    assert join_timeout(None, 6000) == 30.0
    assert join_timeout(None, 45_000) == 225.0
    assert join_timeout(4.0, 45_000) == 4.0
