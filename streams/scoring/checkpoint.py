"""The commit protocol, in one place.

    1. outputs produced      every prediction, audit, shadow and DLQ record of
                             the batches since the last checkpoint is queued;
    2. delivery confirmed    ``producer.flush()`` waits for the broker's
                             acknowledgement of all of them and raises
                             :class:`~schemas.errors.DeliveryFailed` if any failed;
    3. offsets committed     only then the next offsets of those batches are
                             committed, synchronously. A commit the group refuses
                             because it is rebalancing keeps them pending: they go
                             with the next commit, or are forgotten with a revoke.

A crash anywhere before step 3 leaves the offsets where they were: the batches
are consumed again (at-least-once) and nothing valid is lost. Duplicates are
bounded by what was consumed since the last checkpoint. A checkpoint is taken
every ``interval`` seconds, on partition revocation and on shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol


class _Flushable(Protocol):
    def flush(self, timeout: float = ...) -> None: ...


class _Committer(Protocol):
    def commit(self, next_offsets: dict[tuple[str, int], int]) -> bool | None:
        """Commit; False when the group refused it for a rebalance (nothing committed)."""
        ...


class Checkpoint:
    def __init__(
        self,
        producer: _Flushable,
        consumer: _Committer,
        *,
        interval_s: float,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self._producer = producer
        self._consumer = consumer
        self.interval_s = interval_s
        self.flush_timeout_s = flush_timeout_s
        self._pending: dict[tuple[str, int], int] = {}
        self._last = time.monotonic()
        self.commits = 0

    def track(self, positions: Iterable[tuple[str, int, int]]) -> None:
        """Record consumed (topic, partition, offset) whose outputs are now produced."""
        pending = self._pending
        for topic, partition, offset in positions:
            key = (topic, partition)
            if offset + 1 > pending.get(key, -1):
                pending[key] = offset + 1

    @property
    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._pending)

    def due(self) -> bool:
        return bool(self._pending) and time.monotonic() - self._last >= self.interval_s

    def commit(self) -> None:
        """Flush outputs, then commit offsets (steps 2 and 3 above)."""
        self._last = time.monotonic()
        if not self._pending:
            return
        self._producer.flush(self.flush_timeout_s)
        if self._consumer.commit(self._pending) is False:
            return
        self._pending = {}
        self.commits += 1

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop pending offsets of partitions this member no longer holds (lost, or
        revoked while the group refused their commit)."""
        for key in partitions:
            self._pending.pop(key, None)
