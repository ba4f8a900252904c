"""What each detector says about a target, as :class:`~streams.drift.incidents.Finding` values.

One finding per target and window close (or per alarming hop), whatever ran on it:

* a **feature** (detector ``psi``): PSI of the window sets the ``statistic``, the
  ``threshold`` and the ``top_bins`` (the default view, 0.1 / 0.25); its KS and
  chi-squared over the window's hops join ``tests``; the severity is the highest of
  them, and ``trigger`` names the test that set it (PSI when it ties);
* the **score** (detector ``distribution``): its KS and chi-squared; ``statistic`` and
  ``threshold`` are those of the test closest to (or furthest over) its threshold;
* a score / error stream watched by ADWIN (detector ``adwin``): the strongest change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.drift.adwin import AdwinDetection
from streams.drift.calibration import Calibration
from streams.drift.hops import HopResult
from streams.drift.incidents import Finding, Severity

_RANK: dict[str, int] = {"none": 0, "warning": 1, "alert": 2}

#: What a target's tests say: severity, the test furthest over its threshold, the entries.
TestVerdict = tuple[Severity, str | None, list[dict[str, Any]]]


def top_bins(
    labels: Sequence[str],
    reference: Sequence[float] | np.ndarray,
    current: np.ndarray,
    contributions: np.ndarray,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Bins by PSI contribution, largest first (at most ``limit``)."""
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


class WindowMaxima:
    """The largest KS and chi-squared of each target over the hops judged in the open window.

    >>> from streams.drift.calibration import Calibration
    >>> cal = Calibration(hop_rate=1e-6, level=1e-7, ks=0.05, chi2=40.0, simulated=False)
    >>> maxima = WindowMaxima(1)
    >>> maxima.judged(0)
    False
    >>> maxima.add(np.array([0.02]), np.array([45.0]))
    >>> maxima.add(np.array([0.03]), np.array([12.0]))
    >>> maxima.entries(0, cal)
    ('alert', 'chi2', [{'test': 'ks', 'statistic': 0.03, 'threshold': 0.05, 'severity': 'none'}, \
{'test': 'chi2', 'statistic': 45.0, 'threshold': 40.0, 'severity': 'alert'}])
    """

    def __init__(self, targets: int) -> None:
        self._ks = np.full(targets, -np.inf)
        self._chi2 = np.full(targets, -np.inf)
        self._judged = np.zeros(targets, dtype=bool)

    def add(self, ks: np.ndarray, chi2: np.ndarray) -> None:
        self._ks = np.fmax(self._ks, ks)
        self._chi2 = np.maximum(self._chi2, chi2)
        self._judged[:] = True

    def judged(self, j: int) -> bool:
        """Whether any hop judged target ``j`` since the last reset."""
        return bool(self._judged[j])

    def reset(self) -> None:
        self._ks[:] = -np.inf
        self._chi2[:] = -np.inf
        self._judged[:] = False

    def entries(self, j: int, calibration: Calibration) -> TestVerdict:
        """Severity (``alert`` when a test crossed), the test furthest over, and the entries."""
        return judge_tests(float(self._ks[j]), float(self._chi2[j]), calibration)


def judge_tests(ks: float, chi2: float, calibration: Calibration) -> TestVerdict:
    """The tests of one target that ran (finite statistic and threshold), as record entries."""
    entries = []
    best, best_ratio = None, -np.inf
    for name, value, threshold in (("ks", ks, calibration.ks), ("chi2", chi2, calibration.chi2)):
        if not (np.isfinite(value) and np.isfinite(threshold)):
            continue
        crossed = value >= threshold
        entries.append(
            {
                "test": name,
                "statistic": value,
                "threshold": threshold,
                "severity": "alert" if crossed else "none",
            }
        )
        ratio = value / threshold if threshold > 0 else np.inf
        if ratio > best_ratio:
            best, best_ratio = name, ratio
    severity: Severity = "alert" if any(e["severity"] == "alert" for e in entries) else "none"
    return severity, best, entries


def feature_finding(
    name: str,
    *,
    psi: float,
    psi_severity: Severity,
    warning: float,
    alert: float,
    clear_ratio: float,
    top: list[dict[str, Any]],
    tests: TestVerdict | None,
    hop: bool = False,
) -> Finding:
    """One feature at a window close, or at a ``hop`` its tests alarmed at: PSI, the tests.

    At a hop PSI (of the events judged) is shown, not judged: the tests raised it.
    """
    threshold = alert if psi_severity == "alert" else warning
    entries: list[dict[str, Any]] = [
        {"test": "psi", "statistic": psi, "threshold": threshold, "severity": psi_severity}
    ]
    severity, trigger = psi_severity, "psi" if psi_severity != "none" else None
    tested_alarm = False
    if tests is not None:
        test_severity, best, more = tests
        entries += more
        tested_alarm = test_severity != "none"
        if _RANK[test_severity] > _RANK[psi_severity] or (hop and tested_alarm):
            severity, trigger = test_severity, best
    return Finding(
        detector="psi",
        target=name,
        severity=severity,
        statistic=psi,
        threshold=threshold,
        clearing=psi < clear_ratio * warning and not tested_alarm,
        top_bins=top,
        trigger=trigger,
        tests=entries,
    )


def score_finding(
    result: HopResult | None,
    tests: TestVerdict | None,
    top: list[dict[str, Any]],
) -> Finding:
    """The score's distribution: no judged hop in the window is quiet (and clearing)."""
    severity, best, entries = tests if tests is not None else ("none", None, [])
    chosen = next((e for e in entries if e["test"] == best), None)
    return Finding(
        detector="distribution",
        target="score",
        severity=severity,
        statistic=0.0 if chosen is None else chosen["statistic"],
        threshold=0.0 if chosen is None else chosen["threshold"],
        clearing=severity == "none",
        top_bins=top if result is not None else [],
        trigger=best if severity != "none" else None,
        tests=entries,
    )


def adwin_finding(stream: str, detections: Sequence[AdwinDetection], delta: float) -> Finding:
    """The strongest change ADWIN found on ``stream`` in the window, if any."""
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
    return Finding(
        detector="adwin",
        target=stream,
        severity="none" if strongest is None else "alert",
        statistic=0.0 if strongest is None else abs(strongest.shift),
        threshold=delta,
        clearing=strongest is None,
        top_bins=top,
        trigger=None if strongest is None else "adwin",
    )
