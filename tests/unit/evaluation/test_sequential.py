"""The sequential tests: the mSPRT e-values against their closed form, and the degradation
check's false-alarm rate and power (seeded, see ``simulation``).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import stats

from streams.evaluation import sequential
from streams.evaluation.sequential import (
    degradation_log_e_values,
    degraded,
    discordant_log_e_values,
)
from tests.unit.evaluation.simulation import ALPHA, HORIZON, RATE_BOUND, RUNS


def test_doctests() -> None:
    result = doctest.testmod(sequential)
    assert result.attempted >= 8 and result.failed == 0


def test_e_values_match_their_closed_form_and_start_at_one() -> None:
    promote, keep = discordant_log_e_values([0, 30, 10], [0, 10, 30])
    assert promote[0] == pytest.approx(0.0, abs=1e-12)
    assert keep[0] == pytest.approx(0.0, abs=1e-12)
    # Mirror symmetry: swapping the counts swaps the two tests.
    assert promote[1] == pytest.approx(keep[2], rel=1e-12)
    assert keep[1] == pytest.approx(promote[2], rel=1e-12)
    # Numerical integration of the mixture, prior Beta(5, 5) truncated to q >= 1/2.
    q = np.linspace(0.5, 1.0, 200_001)
    integrand = (2 * q) ** 30 * (2 * (1 - q)) ** 10 * 2 * stats.beta.pdf(q, 5, 5)
    assert math.exp(promote[1]) == pytest.approx(np.trapezoid(integrand, q), rel=1e-6)


# ----------------------------------------------------------------- degradation


def first_alarm(errors: np.ndarray, baseline: float, margin: float = 0.0) -> np.ndarray:
    """Label count at the first alarm per run (inf if none), checking after every label.

    The e-value only rises when an error arrives, so evaluating it at the
    errors finds every first crossing while computing ~baseline as many points.
    """
    counts = np.cumsum(errors, axis=1)
    runs, labels = np.nonzero(errors)
    log_e = degradation_log_e_values(baseline, counts[runs, labels], labels + 1, margin=margin)
    crossed = log_e >= -math.log(ALPHA)
    first = np.full(errors.shape[0], np.inf)
    np.minimum.at(first, runs[crossed], labels[crossed] + 1.0)
    return first


def test_degradation_fires_on_a_degraded_stream_and_not_on_a_stable_one() -> None:
    rng = np.random.default_rng(19)
    stable = first_alarm(rng.random((RUNS, HORIZON)) < 0.10, baseline=0.10)
    worse = first_alarm(rng.random((RUNS, HORIZON)) < 0.15, baseline=0.10)
    assert int(np.isfinite(stable).sum()) <= RATE_BOUND
    assert worse.max() <= 2_000
    assert np.median(worse) <= 500


def test_degradation_margin_tolerates_small_drifts() -> None:
    rng = np.random.default_rng(20)
    drifted = first_alarm(rng.random((RUNS, HORIZON)) < 0.11, baseline=0.10, margin=0.02)
    assert int(np.isfinite(drifted).sum()) <= RATE_BOUND


def test_degraded_agrees_with_the_vectorised_e_values() -> None:
    for errors, n in [(0, 0), (12, 100), (18, 100), (25, 100), (160, 1_000), (130, 1_000)]:
        log_e = float(degradation_log_e_values(0.10, errors, n))
        assert degraded(0.10, errors, n, ALPHA) == (log_e >= math.log(20))
    assert not degraded(0.10, 160, 1_000, margin=0.06)
    assert degraded(0.10, 160, 1_000)
    with pytest.raises(ValueError, match="within"):
        degraded(0.10, 11, 10)
