"""Calibration: thresholds from the false-alarm budget, by simulation on the reference profile.

Deterministic (the simulation is seeded); expected values follow from the simulated
p-values and the null tails, never from a detection rate.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import streams.drift.calibration
from models.profile import FeatureProfile
from streams.drift.calibration import (
    MIN_HITS,
    REPLICATES,
    WINDOWS_PER_REPLICATE,
    calibrate,
    simulated_p_values,
)
from streams.drift.twosample import BinnedTests, chi2_threshold, ks_threshold

WINDOWS = REPLICATES * WINDOWS_PER_REPLICATE


def feature(kind: str = "continuous", count: int = 40_000) -> FeatureProfile:
    fractions = [0.3, 0.25, 0.2, 0.15, 0.1]
    extra = {"edges": [1.0, 2.0, 3.0, 4.0]} if kind == "continuous" else {"values": [1, 2, 3, 4]}
    if kind == "discrete":
        fractions = [*fractions[:-1], 0.1]  # the last bin is "other"
    return FeatureProfile(
        name="x", kind=kind, reference_fractions=fractions, count=count, min=0, max=5,
        mean=2, std=1, hard_min=-9, hard_max=9, **extra,
    )  # fmt: skip


def test_the_simulation_is_seeded() -> None:
    tests = BinnedTests([feature()], 2_000)
    first = simulated_p_values(tests, 500, 4)
    np.testing.assert_array_equal(first, simulated_p_values(tests, 500, 4))
    assert first.shape == (WINDOWS,)
    assert first.min() > 0 and first.max() <= 1


def test_a_reachable_budget_is_the_simulated_quantile() -> None:
    f = feature()
    rate = 4 * MIN_HITS / WINDOWS
    found = calibrate(f, hop_events=500, hops_per_window=4, hop_rate=rate)
    p = simulated_p_values(BinnedTests([f], 2_000), 500, 4)
    assert p.shape == (WINDOWS,)
    assert found.simulated is True
    assert found.level == pytest.approx(float(np.quantile(p, rate)), rel=1e-12)
    assert np.mean(p < found.level) == pytest.approx(rate, abs=1 / WINDOWS)


def test_a_deep_budget_is_extrapolated_along_the_p_value_scale() -> None:
    f = feature()
    rate = 1e-8
    found = calibrate(f, hop_events=500, hops_per_window=4, hop_rate=rate)
    p = np.sort(simulated_p_values(BinnedTests([f], 2_000), 500, 4))
    assert found.simulated is False
    assert found.level == pytest.approx(rate * WINDOWS * p[MIN_HITS - 1] / MIN_HITS, rel=1e-12)
    tests = BinnedTests([f], 2_000)
    assert found.chi2 == pytest.approx(chi2_threshold(found.level, 4, 2_000, 40_000))
    assert found.ks == pytest.approx(ks_threshold(found.level, tests.edge_cdf(0), 2_000, 40_000))


def test_thresholds_rise_with_the_budget_and_a_smaller_reference() -> None:
    f = feature()
    levels = [
        calibrate(f, hop_events=500, hops_per_window=4, hop_rate=rate)
        for rate in (1e-3, 1e-6, 1e-9)
    ]
    assert [c.chi2 for c in levels] == sorted(c.chi2 for c in levels)
    assert [c.ks for c in levels] == sorted(c.ks for c in levels)
    small = calibrate(feature(count=2_000), hop_events=500, hops_per_window=4, hop_rate=1e-6)
    assert small.chi2 > levels[1].chi2 and small.ks > levels[1].ks


def test_a_discrete_target_has_no_ks_and_calibration_is_cached() -> None:
    f = feature("discrete")
    found = calibrate(f, hop_events=1_000, hops_per_window=10, hop_rate=1e-7)
    assert found.ks == float("inf")
    assert np.isfinite(found.chi2)
    assert calibrate(f, hop_events=1_000, hops_per_window=10, hop_rate=1e-7) is found


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.calibration, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5
    assert result.failed == 0
