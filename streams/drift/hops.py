"""The two-sample tests over hopping windows: judged every hop, over the last window of events.

A window of PSI closes every ``window_events`` events; a change that starts just after
a close is reported a whole window later. :class:`HoppingTests` judges its targets every
``hop_events`` events (a hop) over the last ``hops_per_window`` hops — a ring of per-hop
bin-count vectors and their running sum, so a hop costs one vector add and one subtract
plus the tests of :class:`~streams.drift.twosample.BinnedTests` on the sum (tens of
microseconds for a dozen features, whatever the rate). Thresholds come from
:func:`~streams.drift.calibration.calibrate`.

A hop is judged only once the ring is full and every hop in it is complete (all its
events counted: a score target skips hops with events that carried no score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.profile import FeatureProfile
from streams.drift.calibration import Calibration, calibrate
from streams.drift.twosample import BinnedTests
from streams.drift.windows import Window

#: The span of a ring slot no hop has filled yet (never judged: such a ring is incomplete).
_NO_HOP = Window(
    index=-1, events=0, first_offset=None, last_offset=None, start_ms=None, end_ms=None
)


@dataclass(frozen=True, slots=True)
class HopResult:
    """The tests of every target over the last window of events, at one hop."""

    #: The events judged: the first hop's first offset / start to this hop's last.
    span: Window
    #: Per target (``NaN`` KS for a discrete one).
    ks: np.ndarray
    chi2: np.ndarray
    alarm: np.ndarray
    #: Flat bin counts of the span (for PSI and the top bins of a record).
    counts: np.ndarray

    def ratio(self, thresholds: Sequence[Calibration]) -> tuple[np.ndarray, np.ndarray]:
        """Each test's statistic over its threshold (``>= 1`` alarms; 0 where it does not run)."""
        ks = np.array([c.ks for c in thresholds])
        chi2 = np.array([c.chi2 for c in thresholds])
        return (
            np.where(np.isfinite(ks) & ~np.isnan(self.ks), np.nan_to_num(self.ks) / ks, 0.0),
            np.where(np.isfinite(chi2), self.chi2 / chi2, 0.0),
        )


class HoppingTests:
    """KS and chi-squared of every target in ``features``, every hop, with calibrated thresholds.

    ``hop_rate`` is the fraction of hops each target may spend above its thresholds
    on a stationary stream (its share of the false-alarm budget).

    >>> from models.profile import FeatureProfile
    >>> f = FeatureProfile(name="x", kind="continuous", edges=[0.0],
    ...                    reference_fractions=[0.5, 0.5], count=10_000, min=-1, max=1,
    ...                    mean=0, std=1, hard_min=-9, hard_max=9)
    >>> hops = HoppingTests([f], window_events=200, hop_events=100, hop_rate=1e-6)
    >>> results = []
    >>> for upper in (50, 50, 100):  # events of the hop in the upper bin
    ...     hops.add(np.array([100 - upper, upper]))
    ...     results.append(hops.close_hop(Window(0, 100, None, None, None, None)))
    >>> results[0] is None
    True
    >>> [(round(float(r.ks[0]), 2), bool(r.alarm[0])) for r in results[1:]]
    [(0.0, False), (0.25, True)]
    >>> round(float(hops.ks_thresholds[0]), 3), hops.alarm_onsets.tolist()
    (0.176, [1])
    """

    def __init__(
        self,
        features: Sequence[FeatureProfile],
        *,
        window_events: int,
        hop_events: int,
        hop_rate: float,
    ) -> None:
        self.features = list(features)
        self.hop_events = hop = max(1, min(hop_events, window_events))
        self.hops_per_window = max(1, window_events // hop)
        self.window_events = self.hops_per_window * hop
        self.hop_rate = hop_rate
        self.tests = BinnedTests(self.features, self.window_events)
        self.calibrations = [
            calibrate(f, hop_events=hop, hops_per_window=self.hops_per_window, hop_rate=hop_rate)
            for f in self.features
        ]
        self.ks_thresholds = np.array([c.ks for c in self.calibrations])
        self.chi2_thresholds = np.array([c.chi2 for c in self.calibrations])
        n_bins, k = self.tests.n_bins, self.hops_per_window
        self._ring = np.zeros((k, n_bins), dtype=np.int64)
        self._spans = [_NO_HOP] * k
        self._complete = np.zeros(k, dtype=bool)
        self._sum = np.zeros(n_bins, dtype=np.int64)
        self._open = np.zeros(n_bins, dtype=np.int64)
        self._position = 0
        self._previous = np.zeros(len(self.features), dtype=bool)
        #: Per target: hops judged above a threshold, and the first hops of such runs.
        self.alarm_hops = np.zeros(len(self.features), dtype=np.int64)
        self.alarm_onsets = np.zeros(len(self.features), dtype=np.int64)
        self.hops_judged = 0
        self.latest: HopResult | None = None

    def add(self, counts: np.ndarray) -> None:
        """Add flat bin counts (every target's) to the open hop."""
        self._open += counts

    def close_hop(self, hop: Window) -> HopResult | None:
        """End the open hop (``hop`` its bounds); the tests of the last window, once it is full."""
        i = self._position
        self._sum += self._open - self._ring[i]
        self._ring[i] = self._open
        # Every target counts every event of a complete hop.
        self._complete[i] = int(self._open[: self.tests.sizes[0]].sum()) == hop.events
        self._spans[i] = hop
        self._open = np.zeros_like(self._open)
        self._position = (i + 1) % self.hops_per_window
        if not self._complete.all():
            self._previous[:] = False
            return None
        oldest = self._spans[self._position]
        starts = [s.start_ms for s in self._spans if s.start_ms is not None]
        ends = [s.end_ms for s in self._spans if s.end_ms is not None]
        span = Window(
            index=hop.index,
            events=self.window_events,
            first_offset=oldest.first_offset,
            last_offset=hop.last_offset,
            start_ms=min(starts) if starts else None,
            end_ms=max(ends) if ends else None,
        )
        ks = self.tests.ks(self._sum, self.window_events)
        chi2 = self.tests.chi2(self._sum, self.window_events)
        # A discrete target's KS is NaN: never above its (infinite) threshold.
        alarm = (ks >= self.ks_thresholds) | (chi2 >= self.chi2_thresholds)
        self.hops_judged += 1
        self.alarm_hops += alarm
        self.alarm_onsets += alarm & ~self._previous
        self._previous = alarm
        self.latest = HopResult(span, ks, chi2, alarm, self._sum.copy())
        return self.latest
