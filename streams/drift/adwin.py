"""ADWIN on one stream of floats: the champion's score, or the evaluator's per-event error.

**Every event goes through ADWIN** (measured with ``streamscore drift bench``, see
the README table). river's ADWIN (Rust core) costs ~0.25 µs per ``update`` and
~0.33 µs with the ``drift_detected`` check in the Python loop: 15-20 ms per second
at 50k events/s, under 2 % of a core. Feeding it per-batch or fixed sub-batch
means was measured and rejected: ADWIN's cut bound has a term that assumes values
in [0, 1] and does not shrink with the variance of a mean, so 32-event means
detected a 0.10 → 0.13 error-rate change 4-5x later than per-event updates and
500-event means not at all within 200k events. The whole drift monitor (PSI on 9
features + ADWIN on the score) measured 0.6-0.7 µs per event on 2 cores, ~3 % of
a core at 50k events/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from river import drift as river_drift


@dataclass(frozen=True, slots=True)
class AdwinDetection:
    """One change ADWIN found: where in the batch, and the stream mean either side."""

    index: int
    mean_before: float
    mean_after: float

    @property
    def shift(self) -> float:
        return self.mean_after - self.mean_before


class AdwinMonitor:
    """river's ADWIN over one stream of floats, fed a whole batch at a time.

    Every value goes through ``ADWIN.update`` (see the module doc for why not a
    summary). river resets ADWIN after a detection, so the window restarts there.

    >>> rng = np.random.default_rng(1)
    >>> monitor = AdwinMonitor("error")
    >>> monitor.update((rng.random(5000) < 0.1).astype(float))
    []
    >>> [(d.index, round(d.mean_before, 3), round(d.mean_after, 3))
    ...  for d in monitor.update((rng.random(5000) < 0.3).astype(float))]
    [(183, 0.101, 0.158)]
    """

    def __init__(
        self,
        target: str = "score",
        delta: float = 0.002,
        clock: int = 32,
        grace_period: int = 10,
        min_window_length: int = 5,
    ) -> None:
        self.target = target
        self.delta = delta
        self.clock = clock
        self.grace_period = grace_period
        self.min_window_length = min_window_length
        self._adwin = river_drift.ADWIN(
            delta=delta,
            clock=clock,
            grace_period=grace_period,
            min_window_length=min_window_length,
        )
        self._seen = 0
        self._detections = 0

    @property
    def n_seen(self) -> int:
        return self._seen

    @property
    def n_detections(self) -> int:
        """Changes detected since construction (river's own count restarts at each reset)."""
        return self._detections

    @property
    def estimation(self) -> float:
        """ADWIN's current estimate of the stream mean."""
        return float(self._adwin.estimation)

    def update(self, values: np.ndarray | Sequence[float]) -> list[AdwinDetection]:
        """Feed every value in order; returns the changes detected in this batch."""
        array = np.asarray(values, dtype=np.float64)
        adwin = self._adwin
        # Sum and count of ADWIN's window just before values[base]: river restarts an
        # ADWIN whose previous update detected a change.
        if adwin.drift_detected:
            base_total, base_width = 0.0, 0
        else:
            base_total, base_width = float(adwin.total), int(adwin.width)
        base = 0
        cumulative = np.concatenate([[0.0], np.cumsum(array)])
        detections = []
        update = adwin.update
        for i, value in enumerate(array.tolist()):
            update(value)
            if adwin.drift_detected:
                total = base_total + float(cumulative[i + 1] - cumulative[base])
                width = base_width + (i + 1 - base)
                kept_total, kept_width = float(adwin.total), int(adwin.width)
                dropped = width - kept_width
                before = (total - kept_total) / dropped if dropped > 0 else kept_total
                after = kept_total / kept_width if kept_width else before
                detections.append(AdwinDetection(index=i, mean_before=before, mean_after=after))
                base_total, base_width, base = 0.0, 0, i + 1
        self._seen += int(array.size)
        self._detections += len(detections)
        return detections
