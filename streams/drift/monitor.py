"""Online drift detection for one model version: PSI and two-sample tests on the features,
the score's distribution, ADWIN on the error.

Pure and batch first: every ``update`` takes whole arrays of one micro-batch and
returns plain dicts; no Kafka, Redis or metrics imports. :class:`DriftMonitor`
composes the parts of this package:

* :class:`~streams.drift.windows.Windower` — the window clock (count, optionally event
  time) and a second, count-only one for the hops of the two-sample tests;
* :class:`~streams.drift.psi.PsiMonitor` — PSI of every feature of the reference
  profile at each window close (the default view: 0.1 warning, 0.25 alert);
* :class:`~streams.drift.hops.HoppingTests` — KS (continuous features) and chi-squared
  (every feature) of the last ``window_events`` events every ``check_events`` events,
  thresholds from the false-alarm budget (:mod:`~streams.drift.calibration`); the same
  for the champion's score against its first ``score_reference_events`` scores, a check
  on the joint distribution that no single feature shows (:attr:`score_tests`);
* :class:`~streams.drift.adwin.AdwinMonitor` — river's ADWIN on the evaluator's
  per-event error (and on the score if ``score_detector="adwin"``);
* :class:`~streams.drift.incidents.Incidents` — findings (:mod:`~streams.drift.findings`)
  turned into ``sensor.drift`` records, with hysteresis and a cooldown.

Choices, measured with ``streamscore drift bench`` (see the README table):

* **Cadence.** Incidents move once per window close (count or time). An alarm of a
  two-sample test at a hop inside the window opens an incident at once (a ``hop``
  record whose window fields bound the events judged); the window's close then
  counts it as any other. ADWIN detections inside a window are reported at its close.
* **One incident per target.** A feature's PSI, KS and chi-squared share its incident
  (detector ``psi``): the record's ``statistic`` stays PSI, ``trigger`` names the test
  that set the severity and ``tests`` holds each test's statistic and threshold.
* **ADWIN records.** ``statistic`` is the absolute change of the stream mean at the
  cut, ``threshold`` is ADWIN's ``delta``; ``top_bins`` holds one entry ``mean``.

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
from collections.abc import Callable
from typing import Any

import numpy as np

from models.profile import FeatureProfile, ReferenceProfile, profile_feature
from schemas.settings import DriftSettings
from streams.drift.adwin import AdwinDetection, AdwinMonitor
from streams.drift.findings import (
    TestVerdict,
    WindowMaxima,
    adwin_finding,
    feature_finding,
    judge_tests,
    score_finding,
    top_bins,
)
from streams.drift.hops import HoppingTests, HopResult
from streams.drift.incidents import Finding, Incidents
from streams.drift.psi import PsiMonitor, PsiWindow, psi
from streams.drift.windows import Window, Windower


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class DriftMonitor:
    """PSI and two-sample tests on the features, the score's distribution, ADWIN, as records.

    Construct one per champion model (a hot swap starts a new monitor with the new
    model's profile). ``profile=None`` watches streams only (the evaluator). Per
    batch, call :meth:`update`; it returns DriftEvent dicts ready for
    ``AvroSerde("drift_event")``. For metrics read :attr:`latest_psi` (per feature),
    :attr:`latest_tests` (statistic over threshold per target and test) and
    :attr:`emitted` (records by ``(detector, severity)``).
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

        two_sample = settings.two_sample
        self._watch_score = two_sample and settings.score_detector == "distribution"
        features = profile.features if profile is not None and two_sample else []
        self.hop_events = max(1, min(settings.check_events, settings.window_events))
        targets = len(features) + (1 if self._watch_score else 0)
        #: Each target's share of the false-alarm budget, as a fraction of hops.
        self.hop_rate = self.hop_events / (settings.false_alarm_events * max(targets, 1))
        #: KS and chi-squared of every feature (None without a profile or two-sample tests).
        self.tests: HoppingTests | None = None
        if features:
            self.tests = HoppingTests(
                features,
                window_events=settings.window_events,
                hop_events=self.hop_events,
                hop_rate=self.hop_rate,
            )
        #: The same on the champion's score, once its reference is in (``score_reference``).
        self.score_tests: HoppingTests | None = None
        self.score_reference: FeatureProfile | None = None
        self._score_warmup: list[np.ndarray] = []
        self._hopper = (
            Windower(self.hop_events) if self.tests is not None or self._watch_score else None
        )
        self._feature_maxima = WindowMaxima(len(features))
        self._score_maxima = WindowMaxima(1)
        self._score_latest: HopResult | None = None
        self._latest_tests: dict[tuple[str, str], float] | None = None

    @property
    def windows_closed(self) -> int:
        return self._windower.windows_closed

    @property
    def latest_tests(self) -> dict[tuple[str, str], float]:
        """Each test's statistic over its threshold (``>= 1`` alarms) at the latest judged hop,
        by (target, test): a feature's name or ``score``, and ``ks`` / ``chi2``."""
        if self._latest_tests is None:
            self._latest_tests = self._test_ratios()
        return self._latest_tests

    def _test_ratios(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for tests in (self.tests, self.score_tests):
            if tests is None or tests.latest is None:
                continue
            ks, chi2 = tests.latest.ratio(tests.calibrations)
            names = ["score"] if tests is self.score_tests else [f.name for f in tests.features]
            for j, name in enumerate(names):
                if np.isfinite(tests.ks_thresholds[j]):
                    out[name, "ks"] = float(ks[j])
                if np.isfinite(tests.chi2_thresholds[j]):
                    out[name, "chi2"] = float(chi2[j])
        return out

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
        score_values = None if scores is None else np.asarray(scores, dtype=np.float64)
        found: dict[str, list[AdwinDetection]] = {}
        if score_values is not None and self.settings.score_detector == "adwin":
            found["score"] = self.adwin["score"].update(score_values)
        if errors is not None:
            found["error"] = self.adwin["error"].update(errors)
        offsets_array = None if offsets is None else np.asarray(offsets)
        times = None if event_times is None else np.asarray(event_times, dtype=np.int64)
        windows = self._windower.split(n, offsets_array, times)
        hops = [] if self._hopper is None else self._hopper.split(n, offsets_array, times)
        records: list[dict[str, Any]] = []
        for start, stop, window, hop in _cut(n, windows, hops):
            if stop > start:
                if self.psi is not None and bins is not None:
                    counts = np.bincount(bins[start:stop].ravel(), minlength=self.psi.n_bins)
                    self.psi.add_counts(counts)
                    if self.tests is not None:
                        self.tests.add(counts)
                if score_values is not None and self._watch_score:
                    self._add_scores(score_values[start:stop])
                for stream, detections in found.items():
                    hits = [d for d in detections if start <= d.index < stop]
                    self._pending.setdefault(stream, []).extend(hits)
            if hop is not None:
                records.extend(self._hop(hop, at_close=window is not None))
            if window is not None:
                records.extend(self._close(window))
        return records

    # ------------------------------------------------------------------ hops

    def _add_scores(self, values: np.ndarray) -> None:
        if self.score_tests is None or self.score_reference is None:
            self._score_warmup.append(values)
            return
        bins = self.score_reference.bin_indices(values)
        self.score_tests.add(np.bincount(bins, minlength=self.score_reference.n_bins))

    def _hop(self, hop: Window, *, at_close: bool) -> list[dict[str, Any]]:
        """Judge the hop's window; alarms inside the window (not at its close) may open."""
        self._latest_tests = None
        findings: list[Finding] = []
        span: Window | None = None
        if self.tests is not None and self.psi is not None:
            result = self.tests.close_hop(hop)
            if result is not None:
                self._feature_maxima.add(result.ks, result.chi2)
                if not at_close and result.alarm.any():
                    findings += self._feature_alarms(result, self.psi, self.tests)
                    span = result.span
        if self._watch_score:
            if self.score_tests is None or self.score_reference is None:
                self._start_score_tests()
            else:
                result = self.score_tests.close_hop(hop)
                if result is not None:
                    self._score_latest = result
                    self._score_maxima.add(result.ks, result.chi2)
                    if not at_close and result.alarm[0]:
                        tests = judge_tests(
                            float(result.ks[0]),
                            float(result.chi2[0]),
                            self.score_tests.calibrations[0],
                        )
                        top = self._score_top(self.score_reference, result)
                        findings.append(score_finding(result, tests, top))
                        span = span or result.span
        if not findings or span is None:
            return []
        return self.incidents.open_now(findings, span, self.clock())

    def _start_score_tests(self) -> None:
        """Once enough scores are in (at a hop boundary), they become the score reference."""
        if sum(len(v) for v in self._score_warmup) < self.settings.score_reference_events:
            return
        scores = np.concatenate(self._score_warmup)
        self._score_warmup = []
        self.score_reference = profile_feature("score", scores, bins=self.settings.score_bins)
        self.score_tests = HoppingTests(
            [self.score_reference],
            window_events=self.settings.window_events,
            hop_events=self.hop_events,
            hop_rate=self.hop_rate,
        )

    def _feature_alarms(
        self, result: HopResult, psi: PsiMonitor, tests: HoppingTests
    ) -> list[Finding]:
        """Findings of the features alarming at this hop whose incident could open now."""
        alarming = [
            j
            for j in np.flatnonzero(result.alarm).tolist()
            if self.incidents.could_open("psi", psi.feature_names[j])
        ]
        if not alarming:
            return []
        judged = psi.evaluate(result.counts, result.span)
        return [
            self._feature_finding(
                psi,
                j,
                judged,
                judge_tests(float(result.ks[j]), float(result.chi2[j]), tests.calibrations[j]),
                hop=True,
            )
            for j in alarming
        ]

    def _feature_finding(
        self,
        psi: PsiMonitor,
        j: int,
        judged: PsiWindow,
        tests: TestVerdict | None,
        *,
        hop: bool = False,
    ) -> Finding:
        """Feature ``j``: PSI of ``judged`` (a window, or the span of a hop) and its tests."""
        feature = psi.profile.features[j]
        return feature_finding(
            feature.name,
            psi=float(judged.psi[j]),
            psi_severity=judged.severity[j],
            warning=float(psi.warning_thresholds[j]),
            alert=float(psi.alert_thresholds[j]),
            clear_ratio=self.settings.clear_ratio,
            top=top_bins(
                psi.bin_labels[j],
                feature.reference_fractions,
                judged.current[j],
                judged.contributions[j],
                self.settings.top_bins,
            ),
            tests=tests,
            hop=hop,
        )

    def _score_top(self, reference: FeatureProfile, result: HopResult) -> list[dict[str, Any]]:
        counts = result.counts
        _, parts = psi(reference.reference_fractions, counts, self.settings.epsilon)
        return top_bins(
            reference.bin_labels(),
            reference.reference_fractions,
            counts / counts.sum(),
            parts,
            self.settings.top_bins,
        )

    # ------------------------------------------------------------------ window close

    def _close(self, window: Window) -> list[dict[str, Any]]:
        now = self.clock()
        findings = [*self._psi_findings(window), *self._score_findings(), *self._adwin_findings()]
        return self.incidents.observe(findings, window, now)

    def _psi_findings(self, window: Window) -> list[Finding]:
        if self.psi is None:
            return []
        result = self.psi.close(window)
        self.latest_psi = self.psi.latest_psi
        maxima = self._feature_maxima
        findings = []
        for j in range(len(self.psi.feature_names)):
            tests = None
            if self.tests is not None and maxima.judged(j):
                tests = maxima.entries(j, self.tests.calibrations[j])
            findings.append(self._feature_finding(self.psi, j, result, tests))
        maxima.reset()
        return findings

    def _score_findings(self) -> list[Finding]:
        reference = self.score_reference
        if self.score_tests is None or reference is None or self.score_tests.hops_judged == 0:
            return []
        maxima = self._score_maxima
        tests = maxima.entries(0, self.score_tests.calibrations[0]) if maxima.judged(0) else None
        result = self._score_latest
        top = self._score_top(reference, result) if result is not None and tests else []
        maxima.reset()
        return [score_finding(result, tests, top)]

    def _adwin_findings(self) -> list[Finding]:
        findings = []
        for stream, detections in self._pending.items():
            findings.append(adwin_finding(stream, detections, self.adwin[stream].delta))
            detections.clear()
        return findings


def _cut(
    n: int,
    windows: list[tuple[int, int, Window | None]],
    hops: list[tuple[int, int, Window | None]],
) -> list[tuple[int, int, Window | None, Window | None]]:
    """The batch cut at every window and hop boundary: ``(start, stop, window, hop)``.

    ``window`` / ``hop`` is the one that closes at ``stop`` (at most one of each).

    >>> w, h = Window(0, 4, None, None, None, None), Window(0, 2, None, None, None, None)
    >>> [(a, b, x is w, y is h) for a, b, x, y in _cut(5, [(0, 4, w), (4, 5, None)],
    ...                                                 [(0, 2, h), (2, 4, h), (4, 5, None)])]
    [(0, 2, False, True), (2, 4, True, True), (4, 5, False, False)]
    """
    cuts: dict[int, list[Window | None]] = {}
    for _, stop, window in windows:
        if window is not None:
            cuts.setdefault(stop, [None, None])[0] = window
    for _, stop, hop in hops:
        if hop is not None:
            cuts.setdefault(stop, [None, None])[1] = hop
    out = []
    start = 0
    for stop in sorted(cuts):
        window, hop = cuts[stop]
        out.append((start, stop, window, hop))
        start = stop
    if start < n:
        out.append((start, n, None, None))
    return out


def _batch_length(*arrays: np.ndarray | None) -> int:
    lengths = {len(a) for a in arrays if a is not None}
    if len(lengths) > 1:
        raise ValueError(f"batch arrays of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0
