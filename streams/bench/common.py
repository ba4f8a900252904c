"""What every phase of the bench shares: its error, its progress callback, its limits."""

from __future__ import annotations

from collections.abc import Callable

from schemas.errors import StreamscoreError

#: Seconds a loop may sit without input (after its group join) before it gives up.
IDLE_LIMIT_S = 30.0
#: Share of a latency run's records (earliest event times) left out as warm-up.
LATENCY_WARMUP = 0.05

Progress = Callable[[str], None]


class BenchError(StreamscoreError):
    """A bench phase did not see what it had to (records missing, a helper process failed)."""
