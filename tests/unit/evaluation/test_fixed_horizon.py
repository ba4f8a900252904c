"""McNemar against the exact binomial tail and chi-square, and the paired interval by hand
and by its coverage."""

from __future__ import annotations

import doctest
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from streams.evaluation import fixed_horizon
from streams.evaluation.fixed_horizon import mcnemar_p_value, paired_accuracy_interval


def test_doctests() -> None:
    result = doctest.testmod(fixed_horizon)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 6, Fraction(2 * (1 + 7), 2**7)),
        (0, 5, Fraction(2, 2**5)),
        (2, 10, Fraction(2 * (1 + 12 + 66), 2**12)),
        (3, 3, Fraction(1)),
        (7, 4, Fraction(2 * (1 + 11 + 55 + 165 + 330), 2**11)),
        (5, 6, Fraction(1)),  # 2 * P(X <= 5) = 2 * 1024 / 2048
        (0, 0, Fraction(1)),
    ],
)
def test_exact_mcnemar_equals_the_binomial_tail(b: int, c: int, expected: Fraction) -> None:
    assert mcnemar_p_value(b, c) == float(expected)
    if b + c:
        assert mcnemar_p_value(b, c) == pytest.approx(
            stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12
        )


def test_mcnemar_switches_to_chi_square_at_25_discordant_pairs() -> None:
    assert mcnemar_p_value(6, 18) == pytest.approx(stats.binomtest(6, 24).pvalue, rel=1e-12)
    # (|30 - 15| - 1)^2 / 45 on one degree of freedom: sf = erfc(sqrt(stat / 2)).
    assert mcnemar_p_value(30, 15) == pytest.approx(math.erfc(math.sqrt(196 / 90)), rel=1e-12)
    assert mcnemar_p_value(7, 18) == pytest.approx(math.erfc(math.sqrt(100 / 25 / 2)), rel=1e-12)
    assert mcnemar_p_value(7, 18, exact=True) == pytest.approx(
        stats.binomtest(7, 25).pvalue, rel=1e-12
    )
    assert mcnemar_p_value(20, 20) == 1.0


def test_paired_interval_by_hand_and_its_coverage() -> None:
    effect, low, high = paired_accuracy_interval(1000, 60, 30, alpha=0.05)
    p_b, p_c = 60.5 / 1002, 30.5 / 1002
    half = stats.norm.ppf(0.975) * math.sqrt((p_b + p_c - (p_b - p_c) ** 2) / 1002)
    assert effect == 0.03
    assert (low, high) == (pytest.approx(p_b - p_c - half), pytest.approx(p_b - p_c + half))

    # Coverage on 2,000 simulated fixed-horizon experiments, true difference 0.02.
    rng = np.random.default_rng(15)
    cells = rng.multinomial(400, [0.05, 0.03, 0.80, 0.12], size=2_000)
    covered = sum(
        low <= 0.02 <= high
        for _, low, high in (paired_accuracy_interval(400, int(b), int(c)) for b, c, *_ in cells)
    )
    assert 0.93 <= covered / 2_000 <= 0.97
