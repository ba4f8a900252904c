"""The controller's reading of the topics: folded records, pure (fed decoded batches).

* :class:`EvaluationView` — from ``sensor.evaluation``: the verdict the evaluator
  published for a (champion, challenger) version pair, and each variant's
  cumulative quality per version. A verdict rides on the cumulative records of
  both variants of its pair, emitted together (same ``emitted_at``): that is
  how the pair's versions are known (the evidence itself carries none).
* :class:`IncidentView` — from ``sensor.drift``: incidents by id (open until
  ``closed``), the model version each was raised against, and the
  ``retrain_requested`` records not handed out yet.
* :class:`SplitView` — from ``sensor.predictions`` in A/B mode: the distinct
  sensors each variant served (the unit the routing randomises).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.evaluation.verdict import Verdict

#: Verdict-bearing emissions remembered (the newest matter; older ones are forgotten).
MAX_EMISSIONS = 2000


@dataclass(frozen=True, slots=True)
class PairVerdict:
    champion_version: str
    challenger_version: str
    verdict: Verdict
    emitted_at: int


@dataclass(frozen=True, slots=True)
class Quality:
    """The newest cumulative quality of one variant at one model version."""

    variant: str
    version: str
    count: int
    metrics: dict[str, float]
    emitted_at: int

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("accuracy")
        return None if value is None or not math.isfinite(value) else float(value)

    @property
    def errors(self) -> int | None:
        """Misclassified labels (from the accuracy and the count)."""
        accuracy = self.accuracy
        return None if accuracy is None else round((1.0 - accuracy) * self.count)


class EvaluationView:
    """Verdicts and cumulative quality from ``sensor.evaluation`` (see the module docs)."""

    def __init__(self) -> None:
        self._emissions: dict[int, dict[str, tuple[str, Mapping[str, float]]]] = {}
        self._quality: dict[tuple[str, str], Quality] = {}
        self.records = 0

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.records += 1
            if record.get("window") != "cumulative" or not record.get("model_version"):
                continue
            variant, version = str(record["variant"]), str(record["model_version"])
            at = int(record["emitted_at"])
            current = self._quality.get((variant, version))
            if current is None or at >= current.emitted_at:
                self._quality[(variant, version)] = Quality(
                    variant, version, int(record["count"]), dict(record["metrics"]), at
                )
            if record.get("verdict"):
                self._emissions.setdefault(at, {})[variant] = (version, record["evidence"])
        while len(self._emissions) > MAX_EMISSIONS:
            del self._emissions[min(self._emissions)]

    def verdict_for(self, champion: str, challenger: str) -> PairVerdict | None:
        """The newest verdict published for exactly this pair of versions."""
        for at in sorted(self._emissions, reverse=True):
            entry = self._emissions[at]
            ours, theirs = entry.get("champion"), entry.get("challenger")
            if ours is None or theirs is None:
                continue
            if ours[0] == champion and theirs[0] == challenger:
                return PairVerdict(champion, challenger, Verdict.from_evidence(theirs[1]), at)
        return None

    def quality(self, variant: str, version: str) -> Quality | None:
        return self._quality.get((variant, version))


@dataclass
class Incident:
    incident_id: str
    model_version: str
    detector: str
    target: str
    status: str
    #: Event time at which the window that opened it ended: the change began before it,
    #: so what comes after is the new regime (where a retraining window starts).
    opened_window_end: int | None
    severity: str = "none"

    @property
    def is_open(self) -> bool:
        return self.status != "closed"


@dataclass(frozen=True, slots=True)
class RetrainRequest:
    incident_id: str
    model_version: str
    target: str
    #: Where the new regime begins (event time, ms): the end of the incident's first window.
    since_ms: int | None
    detected_at: int


class IncidentView:
    """Drift incidents and retrain requests from ``sensor.drift``."""

    def __init__(self) -> None:
        self.incidents: dict[str, Incident] = {}
        self.requests: deque[RetrainRequest] = deque()

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            incident_id = str(record["incident_id"])
            status = str(record["status"])
            incident = self.incidents.get(incident_id)
            if incident is None:
                incident = self.incidents[incident_id] = Incident(
                    incident_id,
                    str(record["model_version"]),
                    str(record["detector"]),
                    str(record["target"]),
                    status,
                    record.get("window_end") if status == "open" else None,
                )
            if status == "open" and incident.opened_window_end is None:
                incident.opened_window_end = record.get("window_end")
            if status == "retrain_requested":
                self.requests.append(
                    RetrainRequest(
                        incident_id,
                        incident.model_version,
                        incident.target,
                        incident.opened_window_end or record.get("window_start"),
                        int(record["detected_at"]),
                    )
                )
                continue  # a request is not a state: the incident stays as it is
            incident.status = status
            if status != "closed":
                incident.severity = str(record.get("severity", incident.severity))

    def open_against(self, version: str) -> Incident | None:
        """An open incident raised against ``version`` (the first found), if any."""
        for incident in self.incidents.values():
            if incident.is_open and incident.model_version == version:
                return incident
        return None

    def open_count(self) -> int:
        return sum(1 for incident in self.incidents.values() if incident.is_open)


@dataclass
class SplitView:
    """A/B: the distinct sensors each variant served."""

    sensors: dict[str, set[str]] = field(default_factory=dict)

    def add(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.sensors.setdefault(str(record["variant"]), set()).add(str(record["sensor_id"]))

    def observed(self) -> dict[str, int]:
        return {variant: len(ids) for variant, ids in self.sensors.items()}
