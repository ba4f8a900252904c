"""Event-time windows over the labels' ``labelled_at``: their bounds and lifecycle.

The evaluator keeps one table value per window (a plain key, not a Faust
windowed table, see :mod:`streams.evaluation.evaluator`); this module says which
windows a label falls in and when a window closes and expires. Pure: no Faust,
no Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

WindowKind = Literal["tumbling", "hopping", "cumulative"]
#: The kinds with a table of windows (``cumulative`` is one value per model version).
WINDOW_KINDS: tuple[WindowKind, ...] = ("tumbling", "hopping")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Event-time windows over ``labelled_at``.

    A window ``[start, end)`` *closes* once the watermark (the largest
    ``labelled_at`` seen) passes ``end + grace_s``: its record is emitted then.
    A label for a closed window still counts (the window is re-emitted as a
    correction and its ``late`` metric goes up) until the watermark passes
    ``end + retention_s``; then the window is dropped from its table and later
    labels for it are counted as expired (they still count in the cumulative
    table). Hopping windows start at every multiple of ``hop_s``, so each label
    falls in ``hopping_s / hop_s`` of them.
    """

    tumbling_s: float = 60.0
    hopping_s: float = 300.0
    hop_s: float = 60.0
    grace_s: float = 10.0
    retention_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("tumbling_s", "hopping_s", "hop_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.hopping_ms % self.hop_ms:
            raise ValueError(
                f"hopping_s ({self.hopping_s}) must be a multiple of hop_s ({self.hop_s})"
            )
        if self.retention_s < self.grace_s:
            raise ValueError("retention_s must be >= grace_s")

    @property
    def tumbling_ms(self) -> int:
        return round(self.tumbling_s * 1000)

    @property
    def hopping_ms(self) -> int:
        return round(self.hopping_s * 1000)

    @property
    def hop_ms(self) -> int:
        return round(self.hop_s * 1000)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    @property
    def retention_ms(self) -> int:
        return round(self.retention_s * 1000)

    def size_ms(self, kind: WindowKind) -> int:
        return self.tumbling_ms if kind == "tumbling" else self.hopping_ms

    def starts(self, kind: WindowKind, ts_ms: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Window starts for each timestamp: shape ``(n, k)``, k windows per label."""
        if kind == "tumbling":
            return tumbling_starts(ts_ms, self.tumbling_ms)[:, None]
        return hopping_starts(ts_ms, self.hopping_ms, self.hop_ms)


def tumbling_starts(ts_ms: npt.ArrayLike, size_ms: int) -> npt.NDArray[np.int64]:
    """Start of the tumbling window ``[start, start + size)`` holding each timestamp.

    >>> tumbling_starts([0, 59_999, 60_000, -1], 60_000).tolist()
    [0, 0, 60000, -60000]
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    return np.asarray(ts - np.mod(ts, size_ms), dtype=np.int64)


def hopping_starts(ts_ms: npt.ArrayLike, size_ms: int, step_ms: int) -> npt.NDArray[np.int64]:
    """Starts of the ``size / step`` hopping windows holding each timestamp, newest first.

    >>> hopping_starts([125_000], 300_000, 60_000).tolist()
    [[120000, 60000, 0, -60000, -120000]]
    """
    if size_ms % step_ms:
        raise ValueError("size_ms must be a multiple of step_ms")
    newest = tumbling_starts(ts_ms, step_ms)
    offsets = step_ms * np.arange(size_ms // step_ms, dtype=np.int64)
    return np.asarray(newest[:, None] - offsets[None, :], dtype=np.int64)
