"""Online drift detection for one model version: PSI on the features, ADWIN on the outputs.

Pure and batch first: every ``update`` takes whole arrays of one micro-batch and
returns plain dicts; no Kafka, Redis or metrics imports. :class:`DriftMonitor`
composes the parts of this package:

* :class:`~streams.drift.windows.Windower` — the one window clock (count, and
  optionally event time);
* :class:`~streams.drift.psi.PsiMonitor` — PSI of every feature of the reference
  profile at each window close (data drift);
* :class:`~streams.drift.adwin.AdwinMonitor` — river's ADWIN on the champion's
  score and on the evaluator's per-event error;
* :class:`~streams.drift.incidents.Incidents` — findings turned into
  ``sensor.drift`` records, with hysteresis and a cooldown.

Choices, measured with ``streamscore drift bench`` (see the README table):

* **Cadence.** Incidents move once per window close (count or time): ADWIN
  detections inside a window are reported at its close, which bounds the extra
  delay by one window (0.2 s at 50k events/s; set ``window_seconds`` for slow
  streams) and keeps one clock for hysteresis, cooldown and retrain.
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
from typing import Any

import numpy as np

from models.profile import ReferenceProfile
from schemas.settings import DriftSettings
from streams.drift.adwin import AdwinDetection, AdwinMonitor
from streams.drift.incidents import Finding, Incidents
from streams.drift.psi import PsiMonitor
from streams.drift.windows import Window, Windower


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
        self.incidents = Incidents(
            model_name,
            model_version,
            clear_windows=settings.clear_windows,
            cooldown_windows=settings.cooldown_windows,
            retrain_after_windows=settings.retrain_after_windows,
        )
        #: Latest PSI per feature (updated at every window close).
        self.latest_psi: dict[str, float] = {}
        #: Drift found in the open window, per ADWIN stream.
        self._pending: dict[str, list[AdwinDetection]] = {}

    @property
    def windows_closed(self) -> int:
        return self._windower.windows_closed

    @property
    def open_incidents(self) -> list[tuple[str, str]]:
        """``(detector, target)`` of every open incident."""
        return self.incidents.open

    @property
    def emitted(self) -> Counter[tuple[str, str]]:
        """Records emitted, by (detector, severity)."""
        return self.incidents.emitted

    @property
    def raised(self) -> Counter[tuple[str, str]]:
        """Window evaluations at each severity before hysteresis, by (detector, severity)."""
        return self.incidents.raised

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
        return self.incidents.observe(findings, window, now)

    def _psi_findings(self, window: Window) -> list[Finding]:
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
                Finding(
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

    def _adwin_findings(self) -> list[Finding]:
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
                Finding(
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
