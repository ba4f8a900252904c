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
        #: Commits sent without waiting whose answer has not come yet, oldest first.
        self.in_flight: list[dict[tuple[str, int], int]] = []
        self.answers: list[tuple[dict[tuple[str, int], int], bool]] = []
        self.refuse_at_once = False
        self.refuse_sync = False

    def commit(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        self.journal.calls.append(("commit", dict(next_offsets)))
        return not self.refuse_sync

    def commit_async(self, next_offsets: dict[tuple[str, int], int]) -> bool:
        self.journal.calls.append(("commit_async", dict(next_offsets)))
        if self.refuse_at_once:
            return False
        self.in_flight.append(dict(next_offsets))
        return True

    def answer(self, *, taken: bool = True, newest: bool = False) -> None:
        """The broker answers a commit in flight (the oldest unless ``newest``)."""
        self.answers.append((self.in_flight.pop(-1 if newest else 0), taken))

    def commit_answers(self) -> list[tuple[dict[tuple[str, int], int], bool]]:
        answers, self.answers = self.answers, []
        return answers


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
    cp, producer, _ = make_with_consumer(journal, interval_s=interval_s, fail_next=fail_next)
    return cp, producer


def make_with_consumer(
    journal: Journal, *, interval_s: float = 1.0, fail_next: int = 0
) -> tuple[Checkpoint, TwinProducer, TwinConsumer]:
    producer = TwinProducer(journal, fail_next)
    consumer = TwinConsumer(journal)
    cp = Checkpoint(producer, consumer, interval_s=interval_s, flush_timeout_s=12.5)
    return cp, producer, consumer


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
    cp, _, consumer = make_with_consumer(journal, interval_s=1.0)
    cp.track([("events", 0, 3)])
    clock.now += 1.0
    cp.commit(wait=False)
    assert journal.calls == [("settled", 0), ("commit_async", {("events", 0): 4})]
    assert cp.commits == 0 and cp.pending == {}  # sent; it counts once the broker answers
    consumer.answer(taken=True)
    clock.now += 1.0
    assert cp.due()  # an answer to settle
    cp.commit(wait=False)
    assert cp.commits == 1 and not cp.due()
    assert journal.calls[-1] == ("commit_async", {("events", 0): 4})  # nothing new sent


def test_without_waiting_outputs_in_flight_are_tried_again_then_waited_for(clock: Clock) -> None:
    journal = Journal()
    cp, producer, consumer = make_with_consumer(journal, interval_s=1.0)
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
    assert journal.calls[-2:] == [("flush", 12.5), ("commit_async", {("events", 0): 4})]
    consumer.answer()
    cp.commit(wait=False)
    assert cp.commits == 1


# -- commits sent without waiting: what their answers do -------------------------------------------


def in_flight(
    clock: Clock, positions: list[tuple[str, int, int]]
) -> tuple[Checkpoint, TwinConsumer, Journal]:
    """A checkpoint whose commit of ``positions`` was sent without waiting, not yet answered."""
    journal = Journal()
    cp, _, consumer = make_with_consumer(journal, interval_s=1.0)
    cp.track(positions)
    clock.now += 1.0
    cp.commit(wait=False)
    return cp, consumer, journal


def test_a_refused_answer_puts_its_offsets_back_and_the_next_commit_carries_them(
    clock: Clock,
) -> None:
    cp, consumer, journal = in_flight(clock, [("events", 0, 3), ("events", 1, 8)])
    consumer.answer(taken=False)  # rebalancing, or a retriable error
    cp.track([("events", 1, 9)])
    clock.now += 1.0
    cp.commit(wait=False)
    assert journal.calls[-1] == ("commit_async", {("events", 0): 4, ("events", 1): 10})
    assert cp.commits == 0
    consumer.answer(taken=True)
    clock.now += 1.0
    cp.commit(wait=False)
    assert cp.commits == 1 and cp.pending == {} and not cp.due()


def test_a_refused_answer_superseded_by_a_later_commit_is_not_sent_again(clock: Clock) -> None:
    cp, consumer, journal = in_flight(clock, [("events", 0, 3)])
    cp.track([("events", 0, 6)])
    clock.now += 1.0
    cp.commit(wait=False)  # a second commit in flight carries partition 0 further
    assert journal.calls[-1] == ("commit_async", {("events", 0): 7})
    consumer.answer(taken=True, newest=True)  # the later one lands first
    consumer.answer(taken=False)  # the earlier one is refused: the later one carried it
    clock.now += 1.0
    cp.commit(wait=False)
    assert cp.pending == {} and cp.commits == 1
    assert [name for name, _ in journal.calls].count("commit_async") == 2


def test_answers_settled_at_once_each_count(clock: Clock) -> None:
    cp, consumer, journal = in_flight(clock, [("events", 0, 3)])
    cp.track([("events", 1, 5)])
    clock.now += 1.0
    cp.commit(wait=False)  # another partition: both commits matter
    consumer.answer()
    consumer.answer()
    clock.now += 1.0
    cp.commit(wait=False)
    assert cp.commits == 2 and not cp.due()
    assert [name for name, _ in journal.calls].count("commit_async") == 2


def test_a_commit_refused_at_once_stays_pending(clock: Clock) -> None:
    journal = Journal()
    cp, _, consumer = make_with_consumer(journal, interval_s=1.0)
    consumer.refuse_at_once = True
    cp.track([("events", 0, 3)])
    clock.now += 1.0
    cp.commit(wait=False)
    assert cp.pending == {("events", 0): 4} and cp.commits == 0 and not consumer.in_flight


def test_a_waiting_commit_carries_the_offsets_still_in_flight(clock: Clock) -> None:
    cp, consumer, journal = in_flight(clock, [("events", 0, 3), ("events", 1, 5)])
    cp.track([("events", 0, 4)])
    cp.commit()  # shutdown or revoke: the last word, synchronous
    assert journal.calls[-2:] == [
        ("flush", 12.5),
        ("commit", {("events", 0): 5, ("events", 1): 6}),
    ]
    assert cp.commits == 1
    consumer.answer(taken=False)  # the old answer, late: changes nothing any more
    cp.commit()
    assert cp.pending == {} and cp.commits == 1
    assert journal.calls[-1] == ("commit", {("events", 0): 5, ("events", 1): 6})


def test_a_waiting_commit_with_only_offsets_in_flight_still_commits_them(clock: Clock) -> None:
    cp, _, journal = in_flight(clock, [("events", 0, 3)])
    cp.commit()
    assert journal.calls[-2:] == [("flush", 12.5), ("commit", {("events", 0): 4})]
    assert cp.commits == 1


def test_a_refused_waiting_commit_keeps_the_in_flight_offsets_pending(clock: Clock) -> None:
    cp, consumer, _ = in_flight(clock, [("events", 0, 3)])
    consumer.refuse_sync = True
    cp.commit()
    assert cp.pending == {("events", 0): 4} and cp.commits == 0
    cp.forget([("events", 0)])  # revoked: the next holder reads them again
    assert cp.pending == {} and not cp.due()


def test_forget_drops_offsets_in_flight_and_their_late_answer(clock: Clock) -> None:
    cp, consumer, journal = in_flight(clock, [("events", 0, 3), ("events", 1, 5)])
    cp.forget([("events", 0)])
    consumer.answer(taken=False)
    cp.commit()
    assert cp.pending == {}
    assert journal.calls[-1] == ("commit", {("events", 1): 6})  # partition 0 is not ours


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
