"""The commit protocol with in-memory twins of the producer and consumer that record calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas.errors import DeliveryFailed
from streams.scoring import checkpoint as checkpoint_module
from streams.scoring.checkpoint import OVERDUE, Checkpoint


class Journal:
    """One ordered record of what the twins were asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []


class TwinProducer:
    def __init__(self, journal: Journal, fail_next: int = 0) -> None:
        self.journal = journal
        self.fail_next = fail_next
        #: Records still queued or in flight (``settled`` is False while any are).
        self.in_flight = 0

    def settled(self) -> bool:
        self.journal.calls.append(("settled", self.in_flight))
        if self.fail_next and not self.in_flight:
            self.fail_next -= 1
            raise DeliveryFailed("1 output record(s) not delivered: broker said no")
        return self.in_flight == 0

    def flush(self, timeout: float = 30.0) -> None:
        self.journal.calls.append(("flush", timeout))
        if self.fail_next:
            self.fail_next -= 1
            raise DeliveryFailed("1 output record(s) not delivered: broker said no")


class TwinConsumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        self.journal.calls.append(("commit", dict(next_offsets)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(checkpoint_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def make(
    journal: Journal, *, interval_s: float = 1.0, fail_next: int = 0
) -> tuple[Checkpoint, TwinProducer]:
    producer = TwinProducer(journal, fail_next)
    return (
        Checkpoint(producer, TwinConsumer(journal), interval_s=interval_s, flush_timeout_s=12.5),
        producer,
    )


def test_next_offsets_are_max_offset_plus_one_per_partition(clock: Clock) -> None:
    cp, _ = make(Journal())
    cp.track([("events", 0, 5), ("events", 0, 3), ("events", 1, 0), ("events", 0, 9)])
    cp.track([("events", 1, 4), ("events", 0, 7), ("other", 0, 100)])
    assert cp.pending == {("events", 0): 10, ("events", 1): 5, ("other", 0): 101}


def test_flush_happens_before_commit(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal)
    cp.track([("events", 0, 0), ("events", 0, 1), ("events", 2, 41)])
    cp.commit()
    assert journal.calls == [
        ("flush", 12.5),
        ("commit", {("events", 0): 2, ("events", 2): 42}),
    ]
    assert cp.commits == 1
    assert cp.pending == {}


def test_failed_flush_commits_nothing_and_keeps_pending_offsets(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal, fail_next=1)
    cp.track([("events", 0, 7), ("events", 1, 3)])
    with pytest.raises(DeliveryFailed):
        cp.commit()
    assert journal.calls == [("flush", 12.5)]
    assert cp.commits == 0
    assert cp.pending == {("events", 0): 8, ("events", 1): 4}

    # the next batch adds to what is still pending; a good flush then commits all of it
    cp.track([("events", 0, 8)])
    cp.commit()
    assert journal.calls[1:] == [
        ("flush", 12.5),
        ("commit", {("events", 0): 9, ("events", 1): 4}),
    ]
    assert cp.commits == 1


def test_nothing_pending_means_no_flush_and_no_commit(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal)
    cp.commit()
    assert journal.calls == []
    assert cp.commits == 0


def test_commit_counts_and_offsets_only_move_forward(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal)
    for offsets in ([0, 1, 2], [3, 4], [5]):
        cp.track(("events", 0, o) for o in offsets)
        cp.commit()
    commits = [payload for name, payload in journal.calls if name == "commit"]
    assert commits == [{("events", 0): 3}, {("events", 0): 5}, {("events", 0): 6}]
    assert cp.commits == 3


def test_due_after_the_interval_only_when_something_is_pending(clock: Clock) -> None:
    cp, _ = make(Journal(), interval_s=0.5)
    assert not cp.due()  # nothing pending
    clock.now += 10
    assert not cp.due()  # still nothing pending, however long it has been
    cp.track([("events", 0, 0)])
    assert cp.due()
    cp.commit()
    assert not cp.due()

    cp.track([("events", 0, 1)])
    clock.now += 0.49
    assert not cp.due()
    clock.now += 0.01
    assert cp.due()  # exactly the interval


def test_a_commit_without_anything_pending_restarts_the_interval(clock: Clock) -> None:
    cp, _ = make(Journal(), interval_s=1.0)
    clock.now += 5
    cp.commit()  # nothing to do, but the interval starts again
    cp.track([("events", 0, 0)])
    assert not cp.due()
    clock.now += 1.0
    assert cp.due()


def test_zero_interval_is_due_whenever_something_is_pending(clock: Clock) -> None:
    cp, _ = make(Journal(), interval_s=0.0)
    assert not cp.due()
    cp.track([("events", 0, 0)])
    assert cp.due()


def test_forget_drops_only_the_lost_partitions(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal)
    cp.track([("events", 0, 4), ("events", 1, 9), ("events", 2, 1)])
    cp.forget([("events", 1), ("events", 7)])  # 7 was never pending: ignored
    assert cp.pending == {("events", 0): 5, ("events", 2): 2}
    cp.commit()
    assert journal.calls[-1] == ("commit", {("events", 0): 5, ("events", 2): 2})


def test_forget_everything_means_no_commit(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal)
    cp.track([("events", 0, 4)])
    cp.forget([("events", 0)])
    cp.commit()
    assert journal.calls == []
    assert not cp.due()


def test_pending_is_a_copy(clock: Clock) -> None:
    cp, _ = make(Journal())
    cp.track([("events", 0, 4)])
    snapshot = cp.pending
    snapshot[("events", 0)] = 0
    assert cp.pending == {("events", 0): 5}


# -- the loop's checkpoint: commit without waiting when outputs are already acknowledged ---------


def test_without_waiting_settled_outputs_are_committed_with_no_flush(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal, interval_s=1.0)
    cp.track([("events", 0, 3)])
    clock.now += 1.0
    cp.commit(wait=False)
    assert journal.calls == [("settled", 0), ("commit", {("events", 0): 4})]
    assert cp.commits == 1 and not cp.due()


def test_without_waiting_outputs_in_flight_are_tried_again_then_waited_for(clock: Clock) -> None:
    journal = Journal()
    cp, producer = make(journal, interval_s=1.0)
    cp.track([("events", 0, 3)])
    producer.in_flight = 7
    clock.now += 1.0
    cp.commit(wait=False)  # still in flight: nothing committed, nothing waited for
    assert journal.calls == [("settled", 7)]
    assert cp.due() and cp.commits == 0
    clock.now += OVERDUE - 1.0 - 0.01
    cp.commit(wait=False)
    assert journal.calls[-1] == ("settled", 7) and cp.commits == 0
    clock.now += 0.01  # overdue: this time it waits for delivery
    cp.commit(wait=False)
    assert journal.calls[-2:] == [("flush", 12.5), ("commit", {("events", 0): 4})]
    assert cp.commits == 1


def test_without_waiting_a_failed_delivery_raises_and_commits_nothing(clock: Clock) -> None:
    journal = Journal()
    cp, _ = make(journal, interval_s=1.0, fail_next=1)
    cp.track([("events", 0, 3)])
    clock.now += 1.0
    with pytest.raises(DeliveryFailed):
        cp.commit(wait=False)
    assert cp.commits == 0 and cp.pending == {("events", 0): 4}
    assert [name for name, _ in journal.calls] == ["settled"]


def test_a_revocation_or_shutdown_commit_always_waits(clock: Clock) -> None:
    journal = Journal()
    cp, producer = make(journal)
    producer.in_flight = 3
    cp.track([("events", 1, 0)])
    cp.commit()  # wait=True: the default
    assert journal.calls == [("flush", 12.5), ("commit", {("events", 1): 1})]
