"""Two-sample tests beside PSI, from the same binned counts: Kolmogorov-Smirnov and chi-squared.

PSI says how far a feature's distribution moved, on a fixed scale (0.1 / 0.25). A spread
change or a vanished value often moves too little mass between the profile's coarse bins
to reach 0.1 although it is plain in 10,000 events. These tests ask instead whether a
window is still a sample of the reference, from the very counts PSI uses:

* **KS** (continuous features): ``D = max_i |F_window(e_i) - F_reference(e_i)|`` over the
  profile's edges ``e_i`` — the two-sample Kolmogorov-Smirnov distance of the window and
  the reference sample, both binned (scipy's ``ks_2samp`` on the binned values). It sees
  mass moving along the axis: location and spread.
* **chi-squared** (every feature; the only test of a few-valued one): Pearson's
  ``X² = sum_g (o_g - n r_g)² / (n r_g)`` of the window's counts against the reference
  fractions (scipy's ``chisquare``), the bins the window expects fewer than
  :data:`MIN_EXPECTED` events in pooled into one. It sees any bin's share change: a value
  that vanishes or appears, a spread change inside the bins.

:class:`BinnedTests` computes both for every feature of a profile at once, vectorised
over any leading axes (one window at run time, thousands of simulated windows at
calibration). The null tails below treat the reference as a sample of ``count`` events
of the same population as the stream (two-sample), so a small reference sample widens
the thresholds instead of raising false alarms:

* KS: ``P(D >= d) <= sum_i 2 Φ(-d / s_i)``, ``s_i² = F_i (1 - F_i) (1/n + 1/N)`` (a union
  bound over the edges: Kolmogorov's limit, made for continuous data, overstates the
  tail of a binned ``D`` by orders of magnitude);
* chi-squared: ``X² / (1 + n / N)`` is asymptotically chi-squared with ``groups - 1``
  degrees of freedom.

Which level they are read at is :mod:`streams.drift.calibration`'s job.

>>> from models.profile import FeatureProfile
>>> f = FeatureProfile(name="x", kind="continuous", edges=[0.0, 1.0],
...                    reference_fractions=[0.25, 0.5, 0.25], count=400, min=-1, max=2,
...                    mean=0.5, std=1, hard_min=-9, hard_max=9)
>>> tests = BinnedTests([f], window_events=100)
>>> counts = np.array([50, 30, 20])
>>> tests.ks(counts, 100).tolist(), tests.chi2(counts, 100).tolist()
([0.25], [34.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, special

from models.profile import FeatureProfile

#: chi-squared pools the bins a window expects fewer events than this in (the chi-squared
#: approximation of Pearson's statistic needs about 5 expected events per cell).
MIN_EXPECTED = 5.0
#: Floor of an expected count, so a bin the reference never saw stays finite (and alarms).
_EXPECTED_FLOOR = 1e-9


def pooled_groups(fractions: Sequence[float], window_events: int) -> list[list[int]]:
    """Bins of one feature grouped for chi-squared: rare bins pooled, the others alone.

    Every bin expected below :data:`MIN_EXPECTED` events in a window of
    ``window_events`` joins one pool, which takes the next rarest bins until it
    expects that many itself.

    >>> pooled_groups([0.5, 0.3, 0.0002, 0.1998, 0.0], 10_000)
    [[0], [1], [4, 2, 3]]
    >>> pooled_groups([0.5, 0.4, 0.06, 0.04], 100)
    [[0], [1], [3, 2]]
    """
    expected = np.asarray(fractions, dtype=np.float64) * window_events
    order = np.argsort(expected, kind="stable").tolist()
    pool = [i for i in order if expected[i] < MIN_EXPECTED]
    rest = [i for i in order if expected[i] >= MIN_EXPECTED]
    total = float(expected[pool].sum())
    while pool and rest and total < MIN_EXPECTED:
        pool.append(rest.pop(0))
        total += float(expected[pool[-1]])
    first = min(pool) if len(pool) > 1 else -1
    groups: list[list[int]] = []
    for i in range(len(expected)):
        if i == first:
            groups.append(pool)
        elif first < 0 or i not in pool:
            groups.append([i])
    return groups


class BinnedTests:
    """KS distance (continuous features) and Pearson's chi-squared (every feature) per window.

    ``counts`` are flat bin counts in profile feature order (the layout of
    :class:`~streams.drift.psi.PsiMonitor`), with any leading axes; ``reference``
    defaults to the profile's fractions and may carry leading axes too (a simulated
    reference sample per replicate), as may ``events`` (``[..., 1]``: a total per window).
    Results are ``[..., n_features]``; KS is NaN for discrete features.
    """

    def __init__(self, features: Sequence[FeatureProfile], window_events: int) -> None:
        self.features = list(features)
        self.window_events = window_events
        sizes = np.array([f.n_bins for f in self.features], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.sizes = sizes
        self.n_bins = int(sizes.sum())
        self.reference = np.concatenate(
            [np.asarray(f.reference_fractions, dtype=np.float64) for f in self.features]
        )
        self.continuous = np.array([f.kind == "continuous" for f in self.features])
        #: Reference sample size per feature (the profile's ``count``).
        self.reference_events = np.array([max(f.count, 1) for f in self.features], dtype=float)
        groups: list[list[int]] = []
        group_starts = []
        for f, start in zip(self.features, self.starts.tolist(), strict=True):
            group_starts.append(len(groups))
            groups += [
                [start + i for i in g] for g in pooled_groups(f.reference_fractions, window_events)
            ]
        #: One-hot pooling matrix: flat bin -> chi-squared group.
        self.pool = np.zeros((self.n_bins, len(groups)))
        for g, members in enumerate(groups):
            self.pool[members, g] = 1.0
        self.group_starts = np.array(group_starts, dtype=np.int64)
        #: chi-squared degrees of freedom per feature (groups - 1).
        self.degrees = np.diff([*group_starts, len(groups)]) - 1
        self._reference_cdf = self._feature_cumsum(self.reference)
        self._reference_pooled = self.reference @ self.pool

    def _feature_cumsum(self, fractions: np.ndarray) -> np.ndarray:
        """Cumulative fractions restarting at each feature's first bin."""
        total = np.cumsum(fractions, axis=-1)
        before = np.concatenate([np.zeros((*total.shape[:-1], 1)), total], axis=-1)
        base = np.take(before, self.starts, axis=-1)
        return total - np.repeat(base, self.sizes, axis=-1)

    def ks(
        self,
        counts: np.ndarray,
        events: float | np.ndarray,
        reference: np.ndarray | None = None,
    ) -> np.ndarray:
        """Two-sample KS distance per feature over the profile's edges."""
        reference_cdf = (
            self._reference_cdf if reference is None else self._feature_cumsum(reference)
        )
        gap = np.abs(self._feature_cumsum(np.asarray(counts) / events) - reference_cdf)
        distance = np.maximum.reduceat(gap, self.starts, axis=-1)
        return np.where(self.continuous, distance, np.nan)

    def chi2(
        self,
        counts: np.ndarray,
        events: float | np.ndarray,
        reference: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pearson's chi-squared per feature of the window against the reference fractions."""
        pooled = self._reference_pooled if reference is None else reference @ self.pool
        observed = np.asarray(counts, dtype=np.float64) @ self.pool
        expected = np.maximum(events * pooled, _EXPECTED_FLOOR)
        parts = (observed - expected) ** 2 / expected
        return np.add.reduceat(parts, self.group_starts, axis=-1)

    def edge_cdf(self, j: int) -> np.ndarray:
        """Reference CDF at feature ``j``'s interior edges (strictly between 0 and 1)."""
        start, size = int(self.starts[j]), int(self.sizes[j])
        cdf = np.cumsum(self.reference[start : start + size])[:-1]
        return cdf[(cdf > 1e-12) & (cdf < 1 - 1e-12)]


def _ks_scales(cdf: np.ndarray, events: float, reference_events: float) -> np.ndarray:
    return np.sqrt(cdf * (1 - cdf) * (1 / events + 1 / reference_events))


def ks_tail(
    distance: np.ndarray | float, cdf: np.ndarray, events: float, reference_events: float
) -> np.ndarray:
    """Upper bound of ``P(D >= distance)`` under the null: ``sum_i 2 Φ(-d / s_i)``, capped at 1.

    >>> round(float(ks_tail(0.1, np.array([0.5]), 100, 1e12)), 4)  # 2 Φ(-2): s = 0.05
    0.0455
    """
    scales = _ks_scales(cdf, events, reference_events)
    d = np.asarray(distance, dtype=np.float64)[..., None]
    if scales.size == 0:
        return np.ones(d.shape[:-1])
    return np.minimum(1.0, 2 * special.ndtr(-d / scales).sum(axis=-1))


def ks_threshold(level: float, cdf: np.ndarray, events: float, reference_events: float) -> float:
    """The distance whose :func:`ks_tail` is ``level`` (``inf`` when even 1 is more likely).

    >>> round(ks_threshold(0.0455, np.array([0.5]), 100, 1e12), 3)
    0.1
    """
    scales = _ks_scales(cdf, events, reference_events)
    if scales.size == 0 or level <= 0:
        return float("inf")
    target = np.log(level)

    def excess(d: float) -> float:
        logs = np.log(2) + special.log_ndtr(-d / scales)
        return float(special.logsumexp(logs)) - target

    if excess(1.0) > 0:
        return float("inf")
    if excess(0.0) <= 0:
        return 0.0
    return float(optimize.brentq(excess, 0.0, 1.0, xtol=1e-12, rtol=1e-10))


def chi2_tail(
    statistic: np.ndarray | float, degrees: int, events: float, reference_events: float
) -> np.ndarray:
    """``P(X² >= statistic)`` under the null, the reference a sample of ``reference_events``.

    >>> round(float(chi2_tail(3.841459, 1, 100, 1e12)), 4)
    0.05
    """
    if degrees < 1:
        return np.ones(np.shape(statistic))
    scaled = np.asarray(statistic, dtype=np.float64) / (1 + events / reference_events)
    return np.asarray(special.chdtrc(degrees, scaled))


def chi2_threshold(level: float, degrees: int, events: float, reference_events: float) -> float:
    """The statistic whose :func:`chi2_tail` is ``level``.

    >>> round(chi2_threshold(0.05, 1, 100, 100), 4)
    7.6829
    """
    if degrees < 1 or level <= 0:
        return float("inf")
    return float(special.chdtri(degrees, min(level, 1.0))) * (1 + events / reference_events)
