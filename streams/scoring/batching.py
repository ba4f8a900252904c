"""How many records the scoring loop takes next: latency-aware batching.

The loop never waits for a batch to fill: :meth:`connectors.kafka.Consumer.consume` returns
as soon as one record is there, with whatever else has already arrived. What this module
decides is the *cap* on that batch, so that one setting, ``processor.latency_target_ms``,
is met without tuning ``max_batch`` (the idea of Triton's dynamic batcher with its
``max_queue_delay``, turned around: the delay is the goal, the batch size follows):

* **keeping up** (the last batch came back smaller than the cap): the cap is the number of
  records the loop processes in half the target, from its measured cost per record. A
  record then waits at most one batch behind the one in hand and is processed within its
  own: consumed → produced stays within the target;
* **backlog** (the batch came back full): the cap doubles, batch after batch, up to
  ``max_batch``: bigger batches cost less per record, and that is how a backlog drains.
  The target is missed while it does, and the loop says so.

``max_batch`` and ``max_wait_ms`` stay upper bounds: the cap never exceeds ``max_batch``,
and ``max_wait_ms`` is how long ``consume`` waits for the first record.

Whether the target is met is judged on the records themselves: a record misses it when its
batch took longer than the target from consumed to produced. :class:`LatencyTarget`
counts them, for the run summary (the whole run) and a gauge (a sliding window).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The cap never goes below this many records (a batch this small costs more per
#: record than it saves in latency).
MIN_BATCH = 16
#: Weight of the newest batch in the moving estimate of the cost per record.
COST_WEIGHT = 0.2
#: Share of the records allowed over the target for it to count as met (the p99).
ALLOWED_OVER = 0.01


class BatchSizer:
    """The cap of the next batch, from the target, the cost per record and the backlog.

    >>> sizer = BatchSizer(target_ms=20, max_batch=1000)
    >>> sizer.observe(taken=100, seconds=0.001)   # 10 µs per record, keeping up
    >>> sizer.limit                               # 10 ms of work at 10 µs per record
    1000
    >>> sizer = BatchSizer(target_ms=20, max_batch=5000, initial=400)
    >>> sizer.observe(taken=400, seconds=0.02)    # 50 µs per record, batch came back full
    >>> sizer.limit                               # backlog: doubled, not cut to 200
    800
    >>> sizer.observe(taken=300, seconds=0.015)   # caught up: back to the latency cap
    >>> sizer.limit
    200
    """

    def __init__(self, *, target_ms: float, max_batch: int, initial: int | None = None) -> None:
        self.target_s = target_ms / 1000
        self.max_batch = max_batch
        self.min_batch = min(MIN_BATCH, max_batch)
        #: Seconds of loop work per record (moving estimate); None before the first batch.
        self.cost_s: float | None = None
        #: Records the loop asks for next.
        self.limit = max(self.min_batch, min(max_batch, initial if initial else max_batch))
        #: True while batches come back full (more was waiting than the cap let in).
        self.backlog = False

    @property
    def latency_cap(self) -> int:
        """Records processed in half the target at the measured cost (clamped)."""
        if self.cost_s is None or self.cost_s <= 0:
            return self.max_batch
        fits = int(round(self.target_s / 2 / self.cost_s, 6))  # 999.9999... is 1000
        return max(self.min_batch, min(self.max_batch, fits))

    def observe(self, *, taken: int, seconds: float) -> None:
        """A batch of ``taken`` records took ``seconds`` of loop work: set the next cap."""
        if taken <= 0:
            return
        cost = seconds / taken
        self.cost_s = (
            cost if self.cost_s is None else ((1 - COST_WEIGHT) * self.cost_s + COST_WEIGHT * cost)
        )
        self.backlog = taken >= self.limit
        if self.backlog:
            self.limit = min(self.max_batch, max(2 * self.limit, self.latency_cap))
        else:
            self.limit = self.latency_cap


@dataclass
class LatencyTarget:
    """Records whose batch took longer than the target (consumed → produced), counted.

    ``window`` is a sliding share (each batch's weight decays), for a live gauge; the run
    totals are for the summary.
    """

    target_ms: float
    records: int = 0
    over: int = 0
    #: Decayed record and over-target counts: the last few thousand records weigh most.
    _recent: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def observe(self, records: int, seconds: float, *, decay: float = 0.9) -> None:
        over = records if seconds * 1000 > self.target_ms else 0
        self.records += records
        self.over += over
        self._recent[0] = self._recent[0] * decay + records
        self._recent[1] = self._recent[1] * decay + over

    @property
    def met_now(self) -> bool:
        """At most 1 % of the recent records over the target."""
        total, over = self._recent
        return total == 0 or over / total <= ALLOWED_OVER

    @property
    def met(self) -> bool:
        """At most 1 % of the run's records over the target (its p99 within it)."""
        return self.records == 0 or self.over / self.records <= ALLOWED_OVER

    def as_dict(self, sizer: BatchSizer) -> dict[str, Any]:
        return {
            "target_ms": self.target_ms,
            "met": self.met,
            "records_over_target": self.over,
            "share_over_target": round(self.over / self.records, 5) if self.records else 0.0,
            "batch_limit": sizer.limit,
            "cost_us_per_record": round(sizer.cost_s * 1e6, 3) if sizer.cost_s else None,
        }
