"""Population Stability Index: the formula, and every feature of a profile per window.

* :func:`psi` — the PSI of one feature's counts against its reference fractions;
  :func:`psi_from_counts` and :func:`psi_from_samples` — the same over two count
  vectors or two raw samples (the shadow scorer's score histograms);
* :class:`PsiMonitor` — every feature of a :class:`~models.profile.ReferenceProfile`,
  binned per batch (one ``searchsorted`` per feature column, one ``bincount`` per
  window segment) into one flat count vector, and the PSI of all of them computed
  at once at each window close.

**Epsilon** (measured with ``streamscore drift bench``, see the README table).
Fractions are floored at ``epsilon`` (default 1e-4, i.e. less than one event of a
10,000-event window) on both sides before ``(c - r) ln(c / r)``, without
renormalising. Every contribution stays finite and non-negative; a bin that
empties completely (reference 10 %) contributes ~0.69, an alert on its own, while
a handful of unseen values in a discrete feature's ``other`` bin do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from models.profile import FeatureProfile, ReferenceProfile
from schemas.errors import ConfigError
from schemas.settings import DriftSettings, FeatureThresholds
from streams.drift.incidents import Severity
from streams.drift.windows import Window, Windower

#: Floor of a bin fraction in :func:`psi`: below one event of a 10,000-event window.
DEFAULT_EPSILON = DriftSettings().epsilon


def psi(
    reference_fractions: Sequence[float] | np.ndarray,
    current_counts: Sequence[float] | np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
) -> tuple[float, np.ndarray]:
    """PSI of ``current_counts`` against ``reference_fractions``, and each bin's share.

    ``PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`` with both fractions floored at
    ``epsilon`` (no renormalisation), so empty bins stay finite.

    >>> value, parts = psi([0.5, 0.5], [75, 25])
    >>> round(value, 6), parts.round(6).tolist()
    (0.274653, [0.101366, 0.173287])
    >>> psi([0.5, 0.5], [50, 50])[0]
    0.0
    """
    reference = np.maximum(np.asarray(reference_fractions, dtype=np.float64), epsilon)
    counts = np.asarray(current_counts, dtype=np.float64)
    if reference.shape != counts.shape:
        raise ValueError(f"{counts.shape[0]} current bins for {reference.shape[0]} reference bins")
    total = counts.sum()
    if total <= 0:
        raise ValueError("PSI of an empty window")
    current = np.maximum(counts / total, epsilon)
    contributions = (current - reference) * np.log(current / reference)
    return float(contributions.sum()), contributions


def psi_from_counts(
    reference_counts: Sequence[float] | np.ndarray,
    current_counts: Sequence[float] | np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """PSI of two count vectors over the same bins, each normalised to fractions.

    The formula and the ``epsilon`` floor are those of :func:`psi`.

    >>> round(psi_from_counts([50, 50], [75, 25]), 6)
    0.274653
    """
    reference = np.asarray(reference_counts, dtype=np.float64)
    total = reference.sum()
    if total <= 0:
        raise ValueError("PSI against an empty reference")
    return psi(reference / total, current_counts, epsilon)[0]


def psi_from_samples(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """PSI of two samples of one variable, binned at ``edges``.

    Bin ``i`` is ``(edges[i - 1], edges[i]]`` (``searchsorted``); the first and
    last bins are unbounded. Without ``edges``, the deciles of both samples
    pooled (duplicates dropped). ``0.0`` when either sample is empty: there is
    nothing to compare.

    >>> round(psi_from_samples([0.1, 0.2, 0.7, 0.8], [0.7, 0.8, 0.9, 0.95], [0.5]), 3)
    4.604
    >>> psi_from_samples([], [0.5])
    0.0
    """
    ref, cur = np.asarray(reference), np.asarray(current)
    if ref.size == 0 or cur.size == 0:
        return 0.0
    if edges is None:
        deciles = np.linspace(0, 1, 11)[1:-1]
        cuts = np.unique(np.quantile(np.concatenate([ref, cur]), deciles))
    else:
        cuts = np.asarray(edges)
    n_bins = len(cuts) + 1
    return psi_from_counts(
        np.bincount(np.searchsorted(cuts, ref), minlength=n_bins),
        np.bincount(np.searchsorted(cuts, cur), minlength=n_bins),
        epsilon,
    )


@dataclass(frozen=True, slots=True)
class PsiWindow:
    """PSI of every feature at one window close (arrays in profile feature order)."""

    window: Window
    psi: np.ndarray
    severity: list[Severity]
    #: Per feature: current fractions and per-bin contributions.
    current: list[np.ndarray]
    contributions: list[np.ndarray]


class PsiMonitor:
    """PSI of every feature of ``profile``, per window.

    >>> from models.profile import build_profile
    >>> rng = np.random.default_rng(0)
    >>> profile = build_profile(rng.normal(size=(5000, 2)), ["a", "b"])
    >>> monitor = PsiMonitor(profile, window_events=1000)
    >>> shifted = rng.normal(size=(1500, 2)) + [0.0, 1.0]
    >>> [(w.window.index, w.severity) for w in monitor.update(shifted)]
    [(0, ['none', 'alert'])]
    >>> monitor.window_events_seen
    500
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        window_events: int = 10_000,
        window_seconds: float | None = None,
        min_window_events: int = 1_000,
        epsilon: float = DEFAULT_EPSILON,
        warning: float = 0.1,
        alert: float = 0.25,
        thresholds: dict[str, FeatureThresholds] | None = None,
    ) -> None:
        self.profile = profile
        self.window_events = window_events
        self.window_seconds = window_seconds
        self.min_window_events = min_window_events
        self.epsilon = epsilon
        self.warning = warning
        self.alert = alert
        self.thresholds = thresholds or {}
        self.feature_names = profile.names
        features = profile.features
        self.bin_labels = [f.bin_labels() for f in features]
        sizes = np.array([f.n_bins for f in features], dtype=np.int64)
        #: Start of each feature's bins in the flat count vector.
        self._bin_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        #: Each feature's binning of a column, its edges as an array once (not per batch).
        self._binners = [_binner(f) for f in profile.features]
        self._n_bins = int(sizes.sum())
        self._reference = np.concatenate(
            [np.asarray(f.reference_fractions, dtype=np.float64) for f in features]
        )
        self._reference_floor = np.maximum(self._reference, epsilon)
        unknown = sorted(set(self.thresholds) - set(self.feature_names))
        if unknown:
            raise ConfigError(f"PSI thresholds for features not in the profile: {unknown}")
        defaults = FeatureThresholds(warning=warning, alert=alert)
        limits = [self.thresholds.get(name, defaults) for name in self.feature_names]
        self.warning_thresholds = np.array([t.warning for t in limits])
        self.alert_thresholds = np.array([t.alert for t in limits])
        self._counts = np.zeros(self._n_bins, dtype=np.int64)
        self._windower = Windower(window_events, window_seconds, min_window_events)
        self._latest: np.ndarray | None = None

    @property
    def window_events_seen(self) -> int:
        """Events accumulated in the window still open."""
        return self._windower.events_in_window

    @property
    def latest_psi(self) -> dict[str, float]:
        """PSI of each feature at the last window close (empty before the first)."""
        if self._latest is None:
            return {}
        return dict(zip(self.feature_names, self._latest.tolist(), strict=True))

    def bin_batch(self, matrix: np.ndarray) -> np.ndarray:
        """Flat bin index of every cell: ``[N, n_features]`` into the flat count vector."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ValueError(
                f"matrix of shape {matrix.shape}, expected [N, {len(self.feature_names)}]"
            )
        out = np.empty(matrix.shape, dtype=np.int64)
        for j, binner in enumerate(self._binners):
            out[:, j] = binner(matrix[:, j])
        out += self._bin_offsets
        return out

    def accumulate(self, bins: np.ndarray) -> None:
        """Add rows of :meth:`bin_batch` output to the open window."""
        if bins.size:
            self.add_counts(np.bincount(bins.ravel(), minlength=self._n_bins))

    def add_counts(self, counts: np.ndarray) -> None:
        """Add flat bin counts (one ``bincount`` of :meth:`bin_batch` rows) to the open window."""
        self._counts += counts

    @property
    def n_bins(self) -> int:
        """Length of the flat count vector (every feature's bins, in profile order)."""
        return self._n_bins

    def evaluate(self, counts: np.ndarray, window: Window) -> PsiWindow:
        """PSI of every feature over flat ``counts`` of ``window.events`` events (pure)."""
        events = int(window.events)
        if events <= 0:
            raise ValueError("closing an empty window")
        current = np.maximum(counts / events, self.epsilon)
        parts = (current - self._reference_floor) * np.log(current / self._reference_floor)
        values = np.add.reduceat(parts, self._bin_offsets)
        severity: list[Severity] = [
            "alert" if v >= a else "warning" if v >= w else "none"
            for v, w, a in zip(
                values.tolist(),
                self.warning_thresholds.tolist(),
                self.alert_thresholds.tolist(),
                strict=True,
            )
        ]
        spans = list(pairwise([*self._bin_offsets.tolist(), self._n_bins]))
        fractions = counts / events
        return PsiWindow(
            window=window,
            psi=values,
            severity=severity,
            current=[fractions[a:b] for a, b in spans],
            contributions=[parts[a:b] for a, b in spans],
        )

    def close(self, window: Window) -> PsiWindow:
        """PSI of every feature over the counts accumulated since the last close."""
        result = self.evaluate(self._counts, window)
        self._counts = np.zeros(self._n_bins, dtype=np.int64)
        self._latest = result.psi
        return result

    def update(
        self,
        matrix: np.ndarray,
        offsets: np.ndarray | None = None,
        event_times: np.ndarray | None = None,
    ) -> list[PsiWindow]:
        """Add one batch; returns the windows it closed (usually none, at most a few)."""
        bins = self.bin_batch(np.asarray(matrix))
        closed = []
        for start, stop, window in self._windower.split(len(bins), offsets, event_times):
            self.accumulate(bins[start:stop])
            if window is not None:
                closed.append(self.close(window))
        return closed


def _binner(feature: FeatureProfile) -> Callable[[np.ndarray], np.ndarray]:
    """``feature.bin_indices``, with a continuous feature's edges made an array up front."""
    if feature.kind != "continuous":
        return feature.bin_indices
    edges = np.asarray(feature.edges, dtype=np.float64)

    def bins(values: np.ndarray) -> np.ndarray:
        return edges.searchsorted(values, side="left")

    return bins
