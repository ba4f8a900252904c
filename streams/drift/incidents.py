"""Incidents: hysteresis and cooldown over per-window judgements, and the drift records.

A detector judges every target at every window close (a :class:`Finding`:
severity ``none`` / ``warning`` / ``alert``, the statistic, the threshold, the top
bins). An :class:`IncidentTracker` per (detector, target) turns those judgements
into statuses: it opens at warning, closes only after ``clear_windows`` quiet
windows below a lower clear threshold and then stays shut for
``cooldown_windows``, so a persisting drift is *one* incident with ``update``
records, not an alert per window. :class:`Incidents` keeps the trackers of one
model version and writes each status as a ``sensor.drift`` record
(``schemas/drift_event.avsc``) under a stable incident id.

The two-sample tests also judge every hop inside the open window; an alarm there may
open an incident at once (:meth:`Incidents.open_now`, only where the window's close
could open one: idle, or the cooldown over). Everything else — updates, the clear
run, the cooldown, the retrain request — still moves once per window close, so a
target has one incident at a time, whichever detector saw it first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.drift.windows import Window

Severity = Literal["none", "warning", "alert"]
Status = Literal["open", "update", "closed", "retrain_requested"]
#: ``psi`` — a feature (PSI, with its KS and chi-squared in ``tests``); ``distribution`` — the
#: champion's score against its reference (KS, chi-squared); ``adwin`` — a score / error stream.
Detector = Literal["psi", "distribution", "adwin"]

_SEVERITY_RANK: dict[str, int] = {"none": 0, "warning": 1, "alert": 2}


@dataclass(frozen=True, slots=True)
class Finding:
    """What one detector says about one target at a window close."""

    detector: Detector
    target: str
    severity: Severity
    statistic: float
    threshold: float
    #: Counts towards closing an open incident (below the clear threshold / no change).
    clearing: bool
    top_bins: list[dict[str, Any]]
    #: The test that set the severity (``psi``, ``ks``, ``chi2``, ``adwin``; None at none).
    trigger: str | None = None
    #: Every test run on the target: ``{"test", "statistic", "threshold", "severity"}``.
    tests: list[dict[str, Any]] = field(default_factory=list)


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
        self._incidents = 0
        self._suppressed = 0

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    @property
    def can_open_now(self) -> bool:
        """Whether :meth:`open_now` would open an incident (idle, or the cooldown run out)."""
        return self._state == "idle" or (self._state == "cooldown" and self._cooldown_left == 0)

    @property
    def peak_severity(self) -> Severity:
        """Highest severity of the open (or last) incident."""
        return self._peak

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
            return ["open", *self._retrain()]
        self._clear_run = self._clear_run + 1 if clearing else 0
        self._alert_run = self._alert_run + 1 if severity == "alert" else 0
        if _SEVERITY_RANK[severity] > _SEVERITY_RANK[self._peak]:
            self._peak = severity
        if self._clear_run >= self.clear_windows:
            self._state = "cooldown"
            self._cooldown_left = self.cooldown_windows
            return ["closed"]
        return ["update", *self._retrain()]

    def open_now(self, severity: Severity) -> list[Status]:
        """An alarm inside the open window: ``open`` if this window's close could open one.

        That is when idle or the cooldown has run out; the window is still counted (alert
        run, clear run, retrain) at its close by :meth:`observe`, as any other window.

        >>> tracker = IncidentTracker(clear_windows=1, cooldown_windows=1)
        >>> tracker.open_now("alert"), tracker.open_now("alert")
        (['open'], [])
        >>> tracker.observe("alert", clearing=False)
        ['update']
        >>> tracker.observe("none", clearing=True), tracker.open_now("alert")
        (['closed'], [])
        """
        if not self.can_open_now or severity == "none":
            return []
        self._state = "open"
        self._incidents += 1
        self._clear_run = 0
        self._alert_run = 0
        self._retrain_sent = False
        self._peak = severity
        return ["open"]

    def _retrain(self) -> list[Status]:
        limit = self.retrain_after_windows
        if limit is not None and not self._retrain_sent and self._alert_run >= limit:
            self._retrain_sent = True
            return ["retrain_requested"]
        return []


class Incidents:
    """The incidents of one model version, as DriftEvent records.

    :meth:`observe` takes every finding of one window close, in order, and
    returns the records to produce, ready for ``AvroSerde("drift_event")``. An
    incident's id is ``model:version:detector:target:anchor:opened_at``, the
    anchor being the first offset of the window that opened it (its index when
    offsets are not given).
    """

    def __init__(
        self,
        model_name: str,
        model_version: str,
        *,
        clear_windows: int = 3,
        cooldown_windows: int = 5,
        retrain_after_windows: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.clear_windows = clear_windows
        self.cooldown_windows = cooldown_windows
        self.retrain_after_windows = retrain_after_windows
        #: One tracker per (detector, target), created at its first finding.
        self.trackers: dict[tuple[str, str], IncidentTracker] = {}
        #: Records emitted, by (detector, severity).
        self.emitted: Counter[tuple[str, str]] = Counter()
        #: Findings at each severity before hysteresis, by (detector, severity).
        self.raised: Counter[tuple[str, str]] = Counter()
        self._ids: dict[tuple[str, str], str] = {}

    @property
    def open(self) -> list[tuple[str, str]]:
        """``(detector, target)`` of every open incident."""
        return [key for key, tracker in self.trackers.items() if tracker.is_open]

    def observe(
        self, findings: Iterable[Finding], window: Window, now: int
    ) -> list[dict[str, Any]]:
        records = []
        for finding in findings:
            self.raised[finding.detector, finding.severity] += 1
            tracker = self._tracker(finding.detector, finding.target)
            for status in tracker.observe(finding.severity, clearing=finding.clearing):
                records.append(self._record(status, finding, window, now))
        return records

    def could_open(self, detector: str, target: str) -> bool:
        """Whether an alarm inside the open window would open an incident on ``target`` now."""
        tracker = self.trackers.get((detector, target))
        return tracker is None or tracker.can_open_now

    def open_now(self, findings: Iterable[Finding], span: Window, now: int) -> list[dict[str, Any]]:
        """Records of the incidents that alarms inside the open window open (``span``: the events
        judged). Not counted in :attr:`raised`, which counts window closes."""
        records = []
        for finding in findings:
            tracker = self._tracker(finding.detector, finding.target)
            for status in tracker.open_now(finding.severity):
                records.append(self._record(status, finding, span, now, hop=True))
        return records

    def _tracker(self, detector: str, target: str) -> IncidentTracker:
        key = (detector, target)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = IncidentTracker(
                clear_windows=self.clear_windows,
                cooldown_windows=self.cooldown_windows,
                retrain_after_windows=self.retrain_after_windows,
            )
        return tracker

    def _record(
        self, status: Status, finding: Finding, window: Window, now: int, *, hop: bool = False
    ) -> dict[str, Any]:
        key = (finding.detector, finding.target)
        if status == "open":
            anchor = window.first_offset if window.first_offset is not None else window.index
            self._ids[key] = ":".join(
                [self.model_name, self.model_version, *key, str(anchor), str(now)]
            )
        severity = "none" if status == "closed" else finding.severity
        self.emitted[finding.detector, severity] += 1
        return {
            "incident_id": self._ids[key],
            "status": status,
            "detector": finding.detector,
            "target": finding.target,
            "statistic": finding.statistic,
            "threshold": finding.threshold,
            "severity": severity,
            "trigger": None if severity == "none" else finding.trigger,
            "hop": hop,
            "tests": finding.tests,
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
