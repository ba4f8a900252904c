"""What every phase of the bench shares: its error, its progress callback, its limits."""

from __future__ import annotations

from collections.abc import Callable

from schemas.errors import StreamscoreError

#: Seconds a loop may sit without input (after its group join) before it gives up.
IDLE_LIMIT_S = 30.0
#: Share of a latency run's records (earliest event times) left out as warm-up...
LATENCY_WARMUP = 0.05
#: ... or its first seconds of sending, whichever is longer: the group's first fetches,
#: the first batches' backlog and the processes' warming up are a start, not the steady
#: state a latency target is about.
LATENCY_WARMUP_S = 2.0
#: A latency run sends for at least this long, whatever ``--latency-events`` asks: at
#: 30,000 events/s, 20,000 events are 0.7 s, which is all start and no steady state.
LATENCY_MIN_S = 10.0

Progress = Callable[[str], None]


class BenchError(StreamscoreError):
    """A bench phase did not see what it had to (records missing, a helper process failed)."""
