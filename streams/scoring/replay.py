"""Replay and backfill: which records of a stretch of history to score, and when to end.

``streamscore run --from-timestamp T --until T2 --group-id G`` scores the records stamped
from T to T2 (both included) with the processor's usual guarantees, then exits by itself.
Per partition:

1. **start**: at the group's committed offset where it has one (a replay that was killed
   resumes), else at the broker's offset for T (ListOffsets by time, looked up when the
   partition is assigned: :meth:`connectors.kafka.Consumer.starts_at`);
2. **skip**: records stamped before T are committed unscored, and counted. The broker's
   offset need only be at or before the first record stamped T: the embedded broker (Tansu)
   looks up *append* time (and answers 0 for any time after its last record), so there the
   skip does the work from wherever the lookup lands;
3. **end**: at the first record stamped after T2, which is neither scored nor committed (a
   resumed replay ends there again), or at the partition's end once T2 has passed.

The run ends once every partition it holds has ended. Without ``--until``, T2 is the time
the run starts: the history up to then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from schemas.settings import ProcessorSettings

Key = tuple[str, int]


class StampedRecord(Protocol):
    """What a replay reads of a consumed record (a confluent-kafka ``Message``)."""

    def timestamp(self) -> tuple[int, int]: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


R = TypeVar("R", bound=StampedRecord)


def iso(ms: int) -> str:
    """``1700000000000`` → ``2023-11-14T22:13:20.000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass
class Replay:
    """The stretch ``[start_ms, stop_ms]`` (epoch ms) and the progress of each partition."""

    start_ms: int | None
    stop_ms: int
    clock: Callable[[], float] = time.time
    #: Records stamped before ``start_ms``, committed without being scored.
    skipped: int = 0
    #: Partitions that have ended (a record past ``stop_ms``, or their end once it passed).
    ended: set[Key] = field(default_factory=set)
    #: Ended partitions that still delivered records: to pause (see :meth:`take_pauses`).
    _pauses: set[Key] = field(default_factory=set)

    @classmethod
    def from_settings(
        cls, p: ProcessorSettings, clock: Callable[[], float] = time.time
    ) -> Replay | None:
        """The replay the settings ask for, or None for a normal run."""
        start, stop = p.start_from_timestamp_ms, p.stop_at_timestamp_ms
        if start is None and stop is None:
            return None
        return cls(start, stop if stop is not None else int(clock() * 1000), clock)

    def select(self, records: list[R]) -> tuple[list[R], list[tuple[str, int, int]]]:
        """Split a polled batch: (records to score, positions of skipped ones to commit).

        A record stamped after ``stop_ms`` ends its partition; it and every later record
        of that partition are in neither list.
        """
        start, stop, ended = self.start_ms, self.stop_ms, self.ended
        keep: list[R] = []
        skipped: list[tuple[str, int, int]] = []
        for r in records:
            key = (r.topic() or "", r.partition() or 0)
            if key in ended:
                self._pauses.add(key)
                continue
            stamped = r.timestamp()[1]
            if stamped > stop:
                ended.add(key)
                self._pauses.add(key)
            elif start is not None and stamped < start:
                skipped.append((key[0], key[1], r.offset() or 0))
            else:
                keep.append(r)
        self.skipped += len(skipped)
        return keep, skipped

    def reached_end(self, partitions: Iterable[Key]) -> None:
        """Partitions that reported their end: ended, once ``stop_ms`` has passed."""
        if self.clock() * 1000 < self.stop_ms:
            return  # later records may still be stamped within the stretch
        for key in partitions:
            self.ended.add(key)
            self._pauses.add(key)

    def take_pauses(self) -> set[Key]:
        """Ended partitions to stop fetching (again after a rebalance hands them back)."""
        pauses, self._pauses = self._pauses, set()
        return pauses

    def finished(self, held: Collection[Key]) -> bool:
        """Every partition this member holds has ended (and it holds some)."""
        return bool(held) and all(key in self.ended for key in held)

    def reason(self) -> str:
        return f"replay done: every partition passed {iso(self.stop_ms)}"

    def report(self) -> dict[str, Any]:
        return {
            "from": iso(self.start_ms) if self.start_ms is not None else None,
            "until": iso(self.stop_ms),
            "skipped_before_start": self.skipped,
            "partitions_ended": len(self.ended),
        }
