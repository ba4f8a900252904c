"""Findings: PSI, KS and chi-squared of one target as one severity, trigger and test list."""

from __future__ import annotations

import doctest

import numpy as np

import streams.drift.findings
from streams.drift.adwin import AdwinDetection
from streams.drift.calibration import Calibration
from streams.drift.findings import (
    TestVerdict,
    adwin_finding,
    feature_finding,
    judge_tests,
    score_finding,
)
from streams.drift.incidents import Severity

CAL = Calibration(hop_rate=1e-7, level=1e-8, ks=0.05, chi2=60.0, simulated=False)
QUIET = judge_tests(0.01, 10.0, CAL)
LOUD = judge_tests(0.02, 90.0, CAL)


def finding(
    psi: float, severity: Severity, tests: TestVerdict | None, hop: bool = False
) -> tuple[object, ...]:
    f = feature_finding(
        "x", psi=psi, psi_severity=severity, warning=0.1, alert=0.25, clear_ratio=0.5, top=[],
        tests=tests, hop=hop,
    )  # fmt: skip
    return f.severity, f.trigger, f.statistic, f.threshold, f.clearing


def test_the_highest_severity_wins_and_psi_wins_a_tie() -> None:
    assert finding(0.01, "none", None) == ("none", None, 0.01, 0.1, True)
    assert finding(0.01, "none", QUIET) == ("none", None, 0.01, 0.1, True)
    assert finding(0.12, "warning", LOUD) == ("alert", "chi2", 0.12, 0.1, False)
    assert finding(0.3, "alert", LOUD) == ("alert", "psi", 0.3, 0.25, False)
    # Between the clear level (0.05) and the warning: not clearing, as before.
    assert finding(0.07, "none", QUIET) == ("none", None, 0.07, 0.1, False)
    # At a hop the tests raised it: PSI over the events judged is shown, not judged.
    assert finding(0.3, "alert", LOUD, hop=True) == ("alert", "chi2", 0.3, 0.25, False)


def test_entries_skip_tests_that_do_not_run() -> None:
    discrete = Calibration(hop_rate=1e-7, level=1e-8, ks=float("inf"), chi2=60.0, simulated=False)
    severity, best, entries = judge_tests(float("nan"), 61.0, discrete)
    assert (severity, best) == ("alert", "chi2")
    assert entries == [{"test": "chi2", "statistic": 61.0, "threshold": 60.0, "severity": "alert"}]


def test_score_and_adwin_findings() -> None:
    score = score_finding(None, LOUD, [])
    assert (score.detector, score.target, score.severity, score.trigger) == (
        "distribution", "score", "alert", "chi2",
    )  # fmt: skip
    assert (score.statistic, score.threshold) == (90.0, 60.0)
    quiet = score_finding(None, None, [])
    assert (quiet.severity, quiet.trigger, quiet.clearing, quiet.tests) == ("none", None, True, [])
    change = adwin_finding(
        "error", [AdwinDetection(5, 0.1, 0.3), AdwinDetection(9, 0.3, 0.2)], 0.002
    )
    assert (change.severity, change.trigger, change.threshold) == ("alert", "adwin", 0.002)
    assert np.isclose(change.statistic, 0.2)
    assert adwin_finding("error", [], 0.002).trigger is None


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.findings, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4
    assert result.failed == 0
