"""This member's place in its consumer group: the rebalance callbacks, the partitions it
holds, where a replay starts, and a join that never ends.

Eager (``range``) and cooperative-sticky rebalances come through the same three callbacks:
``on_assign`` adds partitions and ``on_revoke`` / ``on_lost`` take some away (all of them
in an eager rebalance, the ones changing hands in a cooperative one). What the member holds
is therefore kept here as a set, updated by each callback, instead of read from the consumer
in the middle of a rebalance (where it is the old assignment). A revoke commits first:
the outputs of everything consumed so far are flushed, then their offsets committed.

The embedded broker (Tansu) strands a group for good when a member leaves (LeaveGroup)
while the group rebalances, whether or not that member had rejoined yet: measured, members
stopped 0.5-1.5 s apart left a group in which a fresh member never got partitions. Members
that vanish without a word (killed, or closed without a LeaveGroup) it handles: the group
rebalances once their session times out. Two defences here:

- on the embedded broker a stopping member sends its LeaveGroup only while the group is
  stable (``processor.leave_group``, :func:`leave_policy`); during a rebalance it lets its
  session expire instead: its partitions move a session timeout later, as after a crash,
  but nothing is lost (it commits first) and nothing is stranded;
- a member left without an assignment for the join timeout says so, once: a ``/readyz``
  problem and an error line naming the cause and the fix (:meth:`GroupMember.check`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from connectors.kafka import TopicPartition
from connectors.kafka_admin import Admin
from schemas.settings import KafkaSettings, ProcessorSettings
from streams.ops.metrics import Health, Metrics

log = logging.getLogger(__name__)

Key = tuple[str, int]

#: ``processor.assignment_strategy`` → librdkafka's ``partition.assignment.strategy``.
ASSIGNORS = {"eager-range": "range", "cooperative-sticky": "cooperative-sticky"}


class GroupConsumer(Protocol):
    """What the member needs of the consumer (``connectors.kafka.Consumer``)."""

    group_id: str

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: Callable[[list[TopicPartition]], None] | None = ...,
        on_revoke: Callable[[list[TopicPartition]], None] | None = ...,
        on_lost: Callable[[list[TopicPartition]], None] | None = ...,
    ) -> None: ...

    def close(self, *, leave_group: bool = ...) -> None: ...

    def starts_at(
        self, partitions: list[TopicPartition], timestamp_ms: int, timeout: float = ...
    ) -> list[TopicPartition]: ...

    def assign_in_rebalance(self, partitions: list[TopicPartition]) -> None: ...


def join_timeout(configured_s: float | None, session_timeout_ms: int) -> float:
    """``processor.join_timeout_s``, else max(30 s, 5 session timeouts): a join after a
    member dies takes a session timeout to notice plus the join itself (~10 s measured)."""
    return configured_s if configured_s is not None else max(30.0, 5 * session_timeout_ms / 1000)


def leave_policy(processor: ProcessorSettings, kafka: KafkaSettings) -> Callable[[], bool]:
    """Asked when the member stops: send a LeaveGroup (True), or let the session expire?"""
    mode = processor.leave_group
    if mode == "leave" or (mode == "auto" and not kafka.is_embedded):
        return lambda: True
    if mode == "expire":
        return lambda: False
    admin, group = Admin(kafka, quiet=True), processor.group_id
    return lambda: admin.group_state(group) == "STABLE"


def _names(partitions: Iterable[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


class GroupMember:
    """Handles this member's rebalances; the loop calls :meth:`check`, then :meth:`close`."""

    def __init__(
        self,
        consumer: GroupConsumer,
        *,
        metrics: Metrics,
        health: Health,
        commit: Callable[[], None],
        forget: Callable[[Iterable[Key]], None],
        join_timeout_s: float,
        leave_group: Callable[[], bool] = lambda: True,
        start_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.health = health
        self.commit = commit
        self.forget = forget
        self.join_timeout_s = join_timeout_s
        #: Asked by :meth:`close`: send a LeaveGroup? (:func:`leave_policy`)
        self.leave_group = leave_group
        #: Replay: partitions without a committed offset start at this time (epoch ms).
        self.start_ms = start_ms
        self.clock = clock
        #: The partitions this member holds now.
        self.held: set[Key] = set()
        #: When the last assignment arrived (None before the first).
        self.assigned_at: float | None = None
        #: Since when a join is under way (subscribed or revoked, no assignment since).
        self.joining_since: float | None = None
        self.stuck = False

    def subscribe(self, topics: list[str]) -> None:
        self.joining_since = self.clock()
        self.consumer.subscribe(
            topics, on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(kind="assign").inc()
        if self.start_ms is not None and partitions:
            partitions = self.consumer.starts_at(partitions, self.start_ms)
            self.consumer.assign_in_rebalance(partitions)
            log.info("replay starts at %s",
                     {f"{tp.topic}[{tp.partition}]": tp.offset for tp in partitions})  # fmt: skip
        self.held |= {(tp.topic, tp.partition) for tp in partitions}
        self._held_changed()
        self.assigned_at = self.clock()
        self.joining_since = None
        if self.stuck:
            self.stuck = False
            self.health.problems.pop("consumer_group", None)
            log.warning("group %s assigned partitions again", self.consumer.group_id)
        log.info("assigned %s; holding %d partition(s)", _names(partitions), len(self.held))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(kind="revoke").inc()
        self.commit()  # outputs of everything consumed so far are flushed, then committed
        # What the group refused to commit is not ours to commit later: the next holder
        # reads it again (duplicates, bounded by what was consumed since the last commit).
        self.forget((tp.topic, tp.partition) for tp in partitions)
        self._let_go(partitions)
        log.info("revoked %s; holding %d partition(s)", _names(partitions), len(self.held))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(kind="lost").inc()
        self.forget((tp.topic, tp.partition) for tp in partitions)
        self._let_go(partitions)
        log.warning("lost %s; their uncommitted batches will be replayed", _names(partitions))

    def _let_go(self, partitions: list[TopicPartition]) -> None:
        self.held -= {(tp.topic, tp.partition) for tp in partitions}
        self._held_changed()
        self.joining_since = self.clock()  # the assignment that ends this rebalance is due

    def _held_changed(self) -> None:
        self.health.partitions_assigned = len(self.held)
        self.metrics.assigned_partitions.set(len(self.held))

    def check(self) -> None:
        """Report, once, a join that has not ended within the join timeout."""
        since = self.joining_since
        if since is None or self.stuck:
            return
        waited = self.clock() - since
        if waited < self.join_timeout_s:
            return
        self.stuck = True
        group = self.consumer.group_id
        after = "joining" if self.assigned_at is None else "its last revoke"
        problem = (
            f"no assignment from group {group} {waited:.0f}s after {after}: the join has not "
            "ended. The embedded broker keeps a group stuck once a member leaves during a "
            "rebalance; fix: restart it (`streamscore down && streamscore up`, its storage is "
            "in memory) or set a new processor.group_id. Elsewhere, check the broker's group "
            "coordinator."
        )
        self.health.problems["consumer_group"] = problem
        log.error(problem)

    def close(self) -> None:
        """Leave the group: with a LeaveGroup, or by letting the session expire."""
        leave = self.leave_group()
        if not leave:
            log.info("leaving group %s without a LeaveGroup (processor.leave_group): its %d "
                     "partition(s) move once the session times out",
                     self.consumer.group_id, len(self.held))  # fmt: skip
        self.consumer.close(leave_group=leave)
