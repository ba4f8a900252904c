"""Replay: which records of a stretch are scored, skipped or past it, and when it ends."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.settings import ProcessorSettings
from streams.scoring.replay import Replay, iso

START, STOP = 1_700_000_060_000, 1_700_000_060_599


@dataclass(frozen=True)
class Stamped:
    p: int
    o: int
    ts: int

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)  # CreateTime

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def test_records_before_the_stretch_are_skipped_and_past_it_end_their_partition() -> None:
    replay = Replay(START, STOP)
    batch = [
        Stamped(0, 0, START - 1),  # before: skipped, committed unscored
        Stamped(1, 0, START),  # in (the first moment counts)
        Stamped(0, 1, START + 5),  # in
        Stamped(0, 2, STOP + 1),  # past: partition 0 ends here
        Stamped(1, 1, STOP),  # in (the last moment counts)
        Stamped(0, 3, START + 7),  # after its partition ended: neither
    ]

    scored, skipped = replay.select(batch)

    assert scored == [batch[1], batch[2], batch[4]]
    assert skipped == [("events", 0, 0)]
    assert replay.skipped == 1
    assert replay.ended == {("events", 0)}
    assert replay.take_pauses() == {("events", 0)} and replay.take_pauses() == set()
    assert not replay.finished({("events", 0), ("events", 1)})
    assert replay.finished({("events", 0)})


def test_an_ended_partition_handed_back_by_a_rebalance_is_paused_again() -> None:
    replay = Replay(None, STOP)
    replay.select([Stamped(0, 7, STOP + 1)])
    replay.take_pauses()

    scored, _ = replay.select([Stamped(0, 7, STOP + 1)])  # read again from its commit

    assert scored == [] and replay.take_pauses() == {("events", 0)}


def test_a_partition_at_its_end_has_ended_only_once_the_stretch_is_over() -> None:
    now = [STOP / 1000 - 5]
    replay = Replay(START, STOP, clock=lambda: now[0])
    replay.reached_end([("events", 2)])
    assert replay.ended == set()  # later records may still fall in the stretch

    now[0] = STOP / 1000 + 1
    replay.reached_end([("events", 2)])
    assert replay.ended == {("events", 2)} and replay.finished({("events", 2)})


def test_holding_nothing_is_not_finished() -> None:
    assert not Replay(START, STOP).finished(set())


def test_from_settings_a_normal_run_has_no_replay_and_until_defaults_to_now() -> None:
    assert Replay.from_settings(ProcessorSettings()) is None
    replay = Replay.from_settings(
        ProcessorSettings(start_from_timestamp_ms="2023-11-14T22:14:20Z"), clock=lambda: 1.8e9
    )
    assert replay is not None
    assert (replay.start_ms, replay.stop_ms) == (START, 1_800_000_000_000)
    only_until = Replay.from_settings(ProcessorSettings(stop_at_timestamp_ms=STOP))
    assert only_until is not None and only_until.start_ms is None


def test_the_report_names_the_stretch_in_utc() -> None:
    replay = Replay(START, STOP)
    replay.select([Stamped(0, 0, START - 1)])

    assert replay.report() == {
        "from": "2023-11-14T22:14:20.000Z",
        "until": "2023-11-14T22:14:20.599Z",
        "skipped_before_start": 1,
        "partitions_ended": 0,
    }
    assert replay.reason() == "replay done: every partition passed 2023-11-14T22:14:20.599Z"
    assert iso(0) == "1970-01-01T00:00:00.000Z"
