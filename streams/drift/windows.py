"""Windows over a stream of micro-batches: count-based, optionally also event-time.

The one clock of drift detection: PSI is computed, and incidents move, once per
window close. :class:`Windower` cuts each batch into segments at the window
boundaries (a batch straddling one is split exactly), so the result does not
depend on how the stream was batched.

``Window.first_offset`` / ``Window.last_offset`` are the offsets of the first and
last event of the window in arrival order; a member reading several partitions
mixes their offsets, so they locate a window, not a range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Window:
    """Bounds of one closed window. Offsets and times are ``None`` when not given."""

    index: int
    events: int
    first_offset: int | None
    last_offset: int | None
    #: Earliest and latest event time (epoch ms) seen in the window.
    start_ms: int | None
    end_ms: int | None


class Windower:
    """Cuts a stream of batches into windows: count-based, optionally also event-time.

    ``split`` returns the batch as segments ``(start, stop, closed)``, where
    ``closed`` is the :class:`Window` that ends at ``stop`` (or ``None``). With
    ``window_seconds`` a window also closes at the first event whose time reaches
    the next epoch-aligned boundary, provided it holds ``min_window_events``;
    an event belongs to the window open when it arrives (late events are not
    re-assigned), and a window only closes when an event arrives.

    >>> w = Windower(window_events=4)
    >>> [(a, b, c.index if c else None) for a, b, c in w.split(6)]
    [(0, 4, 0), (4, 6, None)]
    >>> [(a, b, c.events if c else None) for a, b, c in w.split(3)]
    [(0, 2, 4), (2, 3, None)]
    """

    def __init__(
        self,
        window_events: int = 10_000,
        window_seconds: float | None = None,
        min_window_events: int = 1,
    ) -> None:
        if window_events < 1 or min_window_events < 1:
            raise ValueError("window_events and min_window_events must be at least 1")
        self.window_events = window_events
        self.window_seconds = window_seconds
        self.min_window_events = min_window_events
        self._period_ms = None if window_seconds is None else max(int(window_seconds * 1000), 1)
        self._index = 0
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._first_offset: int | None = None
        self._last_offset: int | None = None
        self._start_ms: int | None = None
        self._end_ms: int | None = None
        self._deadline_ms: int | None = None

    @property
    def events_in_window(self) -> int:
        """Events in the window still open."""
        return self._count

    @property
    def windows_closed(self) -> int:
        return self._index

    def split(
        self,
        n: int,
        offsets: np.ndarray | None = None,
        event_times: np.ndarray | None = None,
    ) -> list[tuple[int, int, Window | None]]:
        segments: list[tuple[int, int, Window | None]] = []
        period = self._period_ms if event_times is not None else None
        pos = 0
        while pos < n:
            stop = min(n, pos + self.window_events - self._count)
            close = self._count + (stop - pos) >= self.window_events
            if period is not None and event_times is not None:
                if self._deadline_ms is None:
                    self._deadline_ms = (int(event_times[pos]) // period + 1) * period
                late = np.flatnonzero(event_times[pos:stop] >= self._deadline_ms)
                if late.size:
                    k = pos + int(late[0])
                    if self._count + (k - pos) >= self.min_window_events:
                        stop, close = k, True
                    else:
                        # Too few events to judge yet: stay open until the next boundary.
                        self._deadline_ms = (int(event_times[k]) // period + 1) * period
                        continue
            if stop > pos:
                self._extend(pos, stop, offsets, event_times)
            window = self._close() if close else None
            segments.append((pos, stop, window))
            pos = stop
        return segments

    def _extend(
        self, start: int, stop: int, offsets: np.ndarray | None, times: np.ndarray | None
    ) -> None:
        self._count += stop - start
        if offsets is not None:
            if self._first_offset is None:
                self._first_offset = int(offsets[start])
            self._last_offset = int(offsets[stop - 1])
        if times is not None:
            lo, hi = int(times[start:stop].min()), int(times[start:stop].max())
            self._start_ms = lo if self._start_ms is None else min(self._start_ms, lo)
            self._end_ms = hi if self._end_ms is None else max(self._end_ms, hi)

    def _close(self) -> Window:
        window = Window(
            index=self._index,
            events=self._count,
            first_offset=self._first_offset,
            last_offset=self._last_offset,
            start_ms=self._start_ms,
            end_ms=self._end_ms,
        )
        self._index += 1
        self._reset()
        return window
