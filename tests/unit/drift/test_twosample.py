"""Two-sample tests from binned counts: KS and chi-squared against scipy, pooling, null tails.

Seeded throughout; scipy's ks_2samp, chisquare and distributions are the reference.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats

import streams.drift.twosample
from models.profile import FeatureProfile
from streams.drift.twosample import (
    MIN_EXPECTED,
    BinnedTests,
    chi2_tail,
    chi2_threshold,
    ks_tail,
    ks_threshold,
    pooled_groups,
)


def integer_feature(reference: np.ndarray, values: int, name: str = "x") -> FeatureProfile:
    """A continuous profile with a bin per integer 0..values-1 (edges at the half-integers)."""
    counts = np.bincount(reference, minlength=values)
    return FeatureProfile(
        name=name, kind="continuous", edges=[i + 0.5 for i in range(values - 1)],
        reference_fractions=(counts / counts.sum()).tolist(), count=int(counts.sum()),
        min=0, max=values - 1, mean=float(reference.mean()), std=float(reference.std()),
        hard_min=-100, hard_max=100,
    )  # fmt: skip


def test_ks_distance_is_scipys_ks_2samp_on_the_binned_values() -> None:
    rng = np.random.default_rng(5)
    reference = rng.binomial(9, 0.4, 5_000)
    feature = integer_feature(reference, 10)
    tests = BinnedTests([feature], window_events=2_000)
    for shift in (0.4, 0.45, 0.55):
        current = rng.binomial(9, shift, 2_000)
        counts = feature.bin_counts(current.astype(float))
        expected = stats.ks_2samp(reference, current).statistic
        assert tests.ks(counts, 2_000)[0] == pytest.approx(expected, abs=1e-12)


def test_chi2_is_scipys_chisquare_against_the_reference_fractions() -> None:
    rng = np.random.default_rng(6)
    reference = rng.integers(0, 6, 20_000)
    feature = integer_feature(reference, 6)
    tests = BinnedTests([feature], window_events=3_000)
    current = rng.integers(0, 6, 3_000)
    counts = feature.bin_counts(current.astype(float))
    expected = np.asarray(feature.reference_fractions) * 3_000
    found = stats.chisquare(counts, expected)
    assert tests.degrees.tolist() == [5]
    assert tests.chi2(counts, 3_000)[0] == pytest.approx(found.statistic, rel=1e-12)
    # With a reference far larger than the window the null is scipy's chi-squared.
    tail = chi2_tail(found.statistic, 5, 3_000, 1e15)
    assert float(tail) == pytest.approx(found.pvalue, rel=1e-9)


def test_rare_bins_are_pooled_and_the_statistic_is_chisquare_of_the_pooled_counts() -> None:
    fractions = [0.5, 0.3, 0.1993, 0.0004, 0.0003, 0.0]
    groups = pooled_groups(fractions, 10_000)
    assert groups == [[0], [1], [2], [5, 4, 3]]
    feature = FeatureProfile(
        name="code", kind="discrete", values=[1, 2, 3, 4, 5], reference_fractions=fractions,
        count=10_000, min=1, max=5, mean=1.7, std=0.8, hard_min=0, hard_max=9,
    )  # fmt: skip
    tests = BinnedTests([feature], window_events=10_000)
    counts = np.array([4_900, 3_050, 2_020, 10, 8, 12])  # 12 values never seen in the reference
    observed = [4_900, 3_050, 2_020, 30]
    expected = [5_000, 3_000, 1_993, 7]
    assert tests.chi2(counts, 10_000)[0] == pytest.approx(
        stats.chisquare(observed, expected).statistic, rel=1e-12
    )
    assert tests.degrees.tolist() == [3]
    assert np.isnan(tests.ks(counts, 10_000)[0])  # no KS for a few-valued feature


def test_pooling_keeps_every_group_at_the_minimum_expected_count() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        fractions = rng.dirichlet(np.full(12, 0.3))
        groups = pooled_groups(fractions.tolist(), 2_000)
        assert sorted(i for g in groups for i in g) == list(range(12))
        pooled = [fractions[g].sum() * 2_000 for g in groups]
        assert min(pooled) >= MIN_EXPECTED or len(groups) == 1


def test_every_feature_at_once_and_any_leading_axes() -> None:
    rng = np.random.default_rng(8)
    a = integer_feature(rng.integers(0, 4, 1_000), 4, "a")
    b = integer_feature(rng.binomial(7, 0.5, 1_000), 8, "b")
    both = BinnedTests([a, b], window_events=500)
    alone = [BinnedTests([f], window_events=500) for f in (a, b)]
    windows = np.concatenate(
        [rng.multinomial(500, a.reference_fractions, (3, 2)),
         rng.multinomial(500, b.reference_fractions, (3, 2))], axis=-1,
    )  # fmt: skip
    ks, chi2 = both.ks(windows, 500), both.chi2(windows, 500)
    assert ks.shape == chi2.shape == (3, 2, 2)
    for j, (tests, part) in enumerate(
        zip(alone, (windows[..., :4], windows[..., 4:]), strict=True)
    ):
        np.testing.assert_allclose(ks[..., j], tests.ks(part, 500)[..., 0], rtol=1e-12)
        np.testing.assert_allclose(chi2[..., j], tests.chi2(part, 500)[..., 0], rtol=1e-12)
    # A reference per leading index (a simulated reference sample per replicate).
    references = np.broadcast_to(both.reference, (3, 1, both.n_bins))
    np.testing.assert_allclose(both.chi2(windows, 500, references), chi2, rtol=1e-12)


def test_ks_tail_is_the_normal_tail_per_edge_and_the_threshold_inverts_it() -> None:
    one = np.array([0.5])
    scale = np.sqrt(0.25 * (1 / 400 + 1 / 1_600))
    for d in (0.02, 0.05, 0.1):
        assert float(ks_tail(d, one, 400, 1_600)) == pytest.approx(2 * stats.norm.sf(d / scale))
    cdf = np.array([0.1, 0.35, 0.6, 0.9])
    for level in (1e-3, 1e-7, 1e-12):
        d = ks_threshold(level, cdf, 10_000, 40_000)
        assert float(ks_tail(d, cdf, 10_000, 40_000)) == pytest.approx(level, rel=1e-6)
    assert ks_threshold(1e-300, one, 10, 10) == float("inf")  # beyond a distance of 1


def test_chi2_threshold_inverts_the_two_sample_tail() -> None:
    for degrees, level in ((1, 0.05), (4, 1e-6), (9, 1e-9)):
        x = chi2_threshold(level, degrees, 10_000, 40_000)
        assert x == pytest.approx(stats.chi2.isf(level, degrees) * 1.25, rel=1e-9)
        assert float(chi2_tail(x, degrees, 10_000, 40_000)) == pytest.approx(level, rel=1e-6)
    assert chi2_threshold(0.01, 0, 100, 100) == float("inf")


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.twosample, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8
    assert result.failed == 0
