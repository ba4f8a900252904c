"""Online drift detection: PSI per feature (data drift) and ADWIN on output streams.

Pure and batch first: every ``update`` takes whole arrays of one micro-batch and
returns plain dicts; no Kafka, Redis or metrics imports. Four layers:

* :func:`psi` — the Population Stability Index of one feature's counts against
  its reference fractions;
* :class:`PsiMonitor` — every feature of a :class:`~models.profile.ReferenceProfile`,
  binned per batch (one ``searchsorted`` per feature column, one ``bincount`` per
  window segment), windows of ``window_events`` events (a batch straddling a
  boundary is split exactly) and optionally tumbling event-time windows;
* :class:`AdwinMonitor` — river's ADWIN on one stream of floats (the champion's
  score, or the evaluator's per-event error);
* :class:`DriftMonitor` — both, turned into ``sensor.drift`` records
  (``schemas/drift_event.avsc``) through :class:`IncidentTracker`: hysteresis
  (open at warning, close only after ``clear_windows`` quiet windows below a lower
  clear threshold) and a cooldown, so a persisting drift is *one* incident with
  ``update`` records, not an alert per window.

Choices, measured with ``streamscore drift bench`` (see the README table):

* **Epsilon.** Fractions are floored at ``epsilon`` (default 1e-4, i.e. less than
  one event of a 10,000-event window) on both sides before ``(c - r) ln(c / r)``,
  without renormalising. Every contribution stays finite and non-negative; a bin
  that empties completely (reference 10 %) contributes ~0.69, an alert on its own,
  while a handful of unseen values in a discrete feature's ``other`` bin do not.
* **ADWIN per event.** river's ADWIN (Rust core) costs ~0.25 µs per ``update`` and
  ~0.33 µs with the ``drift_detected`` check in the Python loop: 15-20 ms per second
  at 50k events/s, under 2 % of a core. Feeding it per-batch or fixed sub-batch
  means was measured and rejected: ADWIN's cut bound has a term that assumes values
  in [0, 1] and does not shrink with the variance of a mean, so 32-event means
  detected a 0.10 → 0.13 error-rate change 4-5x later than per-event updates and
  500-event means not at all within 200k events. So ADWIN sees every event; the
  whole monitor (PSI on 9 features + ADWIN on the score) measured 0.6-0.7 µs per
  event on 2 cores, ~3 % of a core at 50k events/s.
* **Cadence.** Incidents move once per window close (count or time): ADWIN
  detections inside a window are reported at its close, which bounds the extra
  delay by one window (0.2 s at 50k events/s; set ``window_seconds`` for slow
  streams) and keeps one clock for hysteresis, cooldown and retrain.
* **Offsets.** ``window_first_offset`` / ``window_last_offset`` are the offsets of
  the first and last event of the window in arrival order; a member reading
  several partitions mixes their offsets, so they locate a window, not a range.
* **ADWIN records.** ``statistic`` is the absolute change of the stream mean at the
  cut (ADWIN's older vs. newer sub-window), ``threshold`` is ADWIN's ``delta``
  (its confidence, there is no threshold on the statistic), severity is ``alert``;
  ``top_bins`` holds one entry ``mean`` with the two means and their difference.

Example (a feature whose values all move to the top bin):

>>> from models.profile import FeatureProfile, ReferenceProfile
>>> f = FeatureProfile(name="t", kind="continuous", edges=[1.0], reference_fractions=[0.5, 0.5],
...                    count=2, min=0, max=2, mean=1, std=1, hard_min=-10, hard_max=10)
>>> monitor = DriftMonitor(ReferenceProfile(features=[f]), "m", "1",
...                        DriftSettings(window_events=4, min_window_events=1),
...                        clock=lambda: 0)
>>> records = monitor.update(np.array([[0.0], [2.0], [0.0], [2.0]]), None, np.arange(4))
>>> records
[]
>>> records = monitor.update(np.full((4, 1), 5.0), None, np.arange(4, 8))
>>> [(r["status"], r["target"], r["severity"], round(r["statistic"], 3)) for r in records]
[('open', 't', 'alert', 4.604)]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np
from river import drift as river_drift

from models.profile import ReferenceProfile
from schemas.errors import ConfigError
from schemas.settings import DriftSettings, FeatureThresholds

Severity = Literal["none", "warning", "alert"]
Status = Literal["open", "update", "closed", "retrain_requested"]
Detector = Literal["psi", "adwin"]

#: Floor of a bin fraction in :func:`psi`: below one event of a 10,000-event window.
DEFAULT_EPSILON = DriftSettings().epsilon

_SEVERITY_RANK: dict[str, int] = {"none": 0, "warning": 1, "alert": 2}


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


# --------------------------------------------------------------------------- windows


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


# --------------------------------------------------------------------------- PSI


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
        for j, feature in enumerate(self.profile.features):
            out[:, j] = feature.bin_indices(matrix[:, j])
        out += self._bin_offsets
        return out

    def accumulate(self, bins: np.ndarray) -> None:
        """Add rows of :meth:`bin_batch` output to the open window."""
        if bins.size:
            self._counts += np.bincount(bins.ravel(), minlength=self._n_bins)

    def close(self, window: Window) -> PsiWindow:
        """PSI of every feature over the counts accumulated since the last close."""
        events = int(window.events)
        if events <= 0:
            raise ValueError("closing an empty window")
        current = np.maximum(self._counts / events, self.epsilon)
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
        fractions = self._counts / events
        result = PsiWindow(
            window=window,
            psi=values,
            severity=severity,
            current=[fractions[a:b] for a, b in spans],
            contributions=[parts[a:b] for a, b in spans],
        )
        self._counts = np.zeros(self._n_bins, dtype=np.int64)
        self._latest = values
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


# --------------------------------------------------------------------------- ADWIN


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

    @property
    def width(self) -> int:
        return int(self._adwin.width)

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


# --------------------------------------------------------------------------- incidents


class IncidentTracker:
    """Hysteresis and cooldown of one (detector, target), fed once per window.

    ``observe`` returns the statuses to emit for this window: ``open`` when the
    severity first reaches warning; ``update`` every further window of an open
    incident; ``closed`` after ``clear_windows`` consecutive clearing windows
    (then ``cooldown_windows`` windows without a new incident); and one
    ``retrain_requested`` when alert severity lasts ``retrain_after_windows``.

    >>> tracker = IncidentTracker(clear_windows=2, cooldown_windows=1)
    >>> [tracker.observe(s, clearing=s == "none") for s in
    ...  ["warning", "alert", "none", "none", "alert", "alert"]]
    [['open'], ['update'], ['update'], ['closed'], [], ['open']]
    >>> tracker.suppressed
    1
    """

    def __init__(
        self,
        clear_windows: int = 3,
        cooldown_windows: int = 5,
        retrain_after_windows: int | None = None,
    ) -> None:
        if clear_windows < 1 or cooldown_windows < 0:
            raise ValueError("clear_windows must be >= 1 and cooldown_windows >= 0")
        self.clear_windows = clear_windows
        self.cooldown_windows = cooldown_windows
        self.retrain_after_windows = retrain_after_windows
        self._state: Literal["idle", "open", "cooldown"] = "idle"
        self._cooldown_left = 0
        self._clear_run = 0
        self._alert_run = 0
        self._retrain_sent = False
        self._peak: Severity = "none"
        self._windows = 0
        self._incidents = 0
        self._suppressed = 0

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def peak_severity(self) -> Severity:
        """Highest severity of the open (or last) incident."""
        return self._peak

    @property
    def incident_windows(self) -> int:
        """Windows observed in the open (or last) incident."""
        return self._windows

    @property
    def incidents(self) -> int:
        """Incidents opened so far."""
        return self._incidents

    @property
    def suppressed(self) -> int:
        """Drifting windows that opened nothing because of the cooldown."""
        return self._suppressed

    def observe(self, severity: Severity, *, clearing: bool) -> list[Status]:
        if self._state == "cooldown":
            if self._cooldown_left > 0:
                self._cooldown_left -= 1
                if severity != "none":
                    self._suppressed += 1
                return []
            self._state = "idle"
        if self._state == "idle":
            if severity == "none":
                return []
            self._state = "open"
            self._incidents += 1
            self._clear_run = 0
            self._alert_run = 1 if severity == "alert" else 0
            self._retrain_sent = False
            self._peak = severity
            self._windows = 1
            return ["open", *self._retrain()]
        self._windows += 1
        self._clear_run = self._clear_run + 1 if clearing else 0
        self._alert_run = self._alert_run + 1 if severity == "alert" else 0
        if _SEVERITY_RANK[severity] > _SEVERITY_RANK[self._peak]:
            self._peak = severity
        if self._clear_run >= self.clear_windows:
            self._state = "cooldown"
            self._cooldown_left = self.cooldown_windows
            return ["closed"]
        return ["update", *self._retrain()]

    def _retrain(self) -> list[Status]:
        limit = self.retrain_after_windows
        if limit is not None and not self._retrain_sent and self._alert_run >= limit:
            self._retrain_sent = True
            return ["retrain_requested"]
        return []


# --------------------------------------------------------------------------- facade


@dataclass(frozen=True, slots=True)
class _Finding:
    """What one detector says about one target at a window close."""

    detector: Detector
    target: str
    severity: Severity
    statistic: float
    threshold: float
    #: Counts towards closing an open incident (below the clear threshold / no change).
    clearing: bool
    top_bins: list[dict[str, Any]]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class DriftMonitor:
    """PSI on the features and ADWIN on the score / error streams, as drift records.

    Construct one per champion model (a hot swap starts a new monitor with the
    new model's profile). ``profile=None`` watches streams only (the evaluator).
    Per batch, call :meth:`update`; it returns DriftEvent dicts ready for
    ``AvroSerde("drift_event")``. For metrics read :attr:`latest_psi` (gauge per
    feature) and :attr:`emitted` (records by ``(detector, severity)``).
    """

    def __init__(
        self,
        profile: ReferenceProfile | None,
        model_name: str,
        model_version: str,
        settings: DriftSettings | None = None,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.profile = profile
        self.model_name = model_name
        self.model_version = model_version
        self.settings = settings = settings or DriftSettings()
        self.clock = clock or _wall_clock_ms
        self.psi: PsiMonitor | None = None
        if profile is not None:
            self.psi = PsiMonitor(
                profile,
                window_events=settings.window_events,
                window_seconds=settings.window_seconds,
                min_window_events=settings.min_window_events,
                epsilon=settings.epsilon,
                warning=settings.warning,
                alert=settings.alert,
                thresholds=settings.thresholds,
            )
        self.adwin: dict[str, AdwinMonitor] = {
            stream: AdwinMonitor(stream, delta=settings.adwin_delta, clock=settings.adwin_clock)
            for stream in ("score", "error")
        }
        self._windower = Windower(
            settings.window_events, settings.window_seconds, settings.min_window_events
        )
        self._trackers: dict[tuple[str, str], IncidentTracker] = {}
        self._incident_ids: dict[tuple[str, str], str] = {}
        #: Latest PSI per feature (updated at every window close).
        self.latest_psi: dict[str, float] = {}
        #: Records emitted, by (detector, severity).
        self.emitted: Counter[tuple[str, str]] = Counter()
        #: Window evaluations at each severity before hysteresis, by (detector, severity).
        self.raised: Counter[tuple[str, str]] = Counter()
        #: Drift found in the open window, per ADWIN stream.
        self._pending: dict[str, list[AdwinDetection]] = {}

    @property
    def windows_closed(self) -> int:
        return self._windower.windows_closed

    @property
    def open_incidents(self) -> list[tuple[str, str]]:
        """``(detector, target)`` of every open incident."""
        return [key for key, tracker in self._trackers.items() if tracker.is_open]

    def update(
        self,
        matrix: np.ndarray | None,
        scores: np.ndarray | None,
        offsets: np.ndarray | None = None,
        event_times: np.ndarray | None = None,
        *,
        errors: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """Add one batch (rows aligned across arguments); returns drift records to produce.

        ``matrix`` is the validated float matrix in profile feature order (required
        when the monitor has a profile), ``scores`` the champion's score per event,
        ``errors`` the per-event error (evaluator), ``offsets`` the input offsets and
        ``event_times`` epoch ms (needed for time windows and window times).
        """
        if not self.settings.enabled:
            return []
        n = _batch_length(matrix, scores, offsets, event_times, errors)
        if n == 0:
            return []
        bins = None
        if self.psi is not None:
            if matrix is None:
                raise ValueError("a monitor with a reference profile needs the feature matrix")
            bins = self.psi.bin_batch(np.asarray(matrix))
        found: dict[str, list[AdwinDetection]] = {}
        for stream, values in (("score", scores), ("error", errors)):
            if values is not None:
                found[stream] = self.adwin[stream].update(values)
        offsets_array = None if offsets is None else np.asarray(offsets)
        times = None if event_times is None else np.asarray(event_times, dtype=np.int64)
        records: list[dict[str, Any]] = []
        for start, stop, window in self._windower.split(n, offsets_array, times):
            if self.psi is not None and bins is not None:
                self.psi.accumulate(bins[start:stop])
            for stream, detections in found.items():
                hits = [d for d in detections if start <= d.index < stop]
                self._pending.setdefault(stream, []).extend(hits)
            if window is not None:
                records.extend(self._close(window))
        return records

    def _close(self, window: Window) -> list[dict[str, Any]]:
        now = self.clock()
        findings = [*self._psi_findings(window), *self._adwin_findings()]
        records = []
        for finding in findings:
            self.raised[finding.detector, finding.severity] += 1
            tracker = self._tracker(finding.detector, finding.target)
            for status in tracker.observe(finding.severity, clearing=finding.clearing):
                records.append(self._record(status, finding, window, now))
        return records

    def _psi_findings(self, window: Window) -> list[_Finding]:
        if self.psi is None:
            return []
        result = self.psi.close(window)
        self.latest_psi = self.psi.latest_psi
        findings = []
        for j, feature in enumerate(self.psi.profile.features):
            severity = result.severity[j]
            value = float(result.psi[j])
            warning = float(self.psi.warning_thresholds[j])
            alert = float(self.psi.alert_thresholds[j])
            top = _top_bins(
                self.psi.bin_labels[j],
                feature.reference_fractions,
                result.current[j],
                result.contributions[j],
                self.settings.top_bins,
            )
            findings.append(
                _Finding(
                    detector="psi",
                    target=feature.name,
                    severity=severity,
                    statistic=value,
                    threshold=alert if severity == "alert" else warning,
                    clearing=value < self.settings.clear_ratio * warning,
                    top_bins=top,
                )
            )
        return findings

    def _adwin_findings(self) -> list[_Finding]:
        findings = []
        for stream, detections in self._pending.items():
            strongest = max(detections, key=lambda d: abs(d.shift), default=None)
            top = []
            if strongest is not None:
                top.append(
                    {
                        "bin": "mean",
                        "reference": strongest.mean_before,
                        "current": strongest.mean_after,
                        "contribution": strongest.shift,
                    }
                )
            findings.append(
                _Finding(
                    detector="adwin",
                    target=stream,
                    severity="none" if strongest is None else "alert",
                    statistic=0.0 if strongest is None else abs(strongest.shift),
                    threshold=self.adwin[stream].delta,
                    clearing=strongest is None,
                    top_bins=top,
                )
            )
            detections.clear()
        return findings

    def _tracker(self, detector: str, target: str) -> IncidentTracker:
        key = (detector, target)
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = IncidentTracker(
                clear_windows=self.settings.clear_windows,
                cooldown_windows=self.settings.cooldown_windows,
                retrain_after_windows=self.settings.retrain_after_windows,
            )
        return tracker

    def _record(
        self, status: Status, finding: _Finding, window: Window, now: int
    ) -> dict[str, Any]:
        key = (finding.detector, finding.target)
        if status == "open":
            anchor = window.first_offset if window.first_offset is not None else window.index
            self._incident_ids[key] = ":".join(
                [self.model_name, self.model_version, *key, str(anchor), str(now)]
            )
        severity = "none" if status == "closed" else finding.severity
        self.emitted[finding.detector, severity] += 1
        return {
            "incident_id": self._incident_ids[key],
            "status": status,
            "detector": finding.detector,
            "target": finding.target,
            "statistic": finding.statistic,
            "threshold": finding.threshold,
            "severity": severity,
            "window_first_offset": window.first_offset,
            "window_last_offset": window.last_offset,
            "window_start": window.start_ms,
            "window_end": window.end_ms,
            "window_events": window.events,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "top_bins": finding.top_bins,
            "detected_at": now,
        }


def _batch_length(*arrays: np.ndarray | None) -> int:
    lengths = {len(a) for a in arrays if a is not None}
    if len(lengths) > 1:
        raise ValueError(f"batch arrays of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _top_bins(
    labels: list[str],
    reference: Sequence[float],
    current: np.ndarray,
    contributions: np.ndarray,
    limit: int | None,
) -> list[dict[str, Any]]:
    order = np.argsort(-contributions, kind="stable")
    if limit is not None:
        order = order[:limit]
    return [
        {
            "bin": labels[i],
            "reference": float(reference[i]),
            "current": float(current[i]),
            "contribution": float(contributions[i]),
        }
        for i in order.tolist()
    ]
