"""Fixed-horizon statistics of a paired comparison: McNemar's test and the effect intervals.

These are the classical answers, valid only when the number of labels was
fixed in advance and the result looked at once. The verdict reports them next
to the always-valid sequential test (:mod:`streams.evaluation.sequential`) and
never decides on them: watched after every label, a fixed-horizon test
promotes far more often than its level says.

* :func:`mcnemar_p_value`: exact binomial for few discordant pairs,
  chi-square with continuity correction otherwise;
* :func:`paired_accuracy_interval`: difference in accuracy (challenger -
  champion) with the Agresti-Min interval for paired proportions;
* :func:`scaled_mean_interval`: mean loss reduction with a t interval.
"""

from __future__ import annotations

import math
from fractions import Fraction

from scipy import stats

#: McNemar switches from the exact binomial test to chi-square at this many
#: discordant pairs (the usual rule: below 25 the chi-square approximation is poor).
EXACT_MCNEMAR_BELOW = 25


def mcnemar_p_value(
    challenger_wins: int, champion_wins: int, *, exact: bool | None = None
) -> float:
    """Two-sided McNemar p-value for a fixed horizon.

    ``exact=None`` picks the exact binomial test below ``EXACT_MCNEMAR_BELOW``
    discordant pairs and the chi-square test with continuity correction
    otherwise. The exact test is computed in rational arithmetic, so it is the
    exact binomial tail rounded once. The correction is ``max(|b - c| - 1, 0)``,
    so equal counts give p = 1.

    >>> mcnemar_p_value(1, 6)  # 2 * (C(7,0) + C(7,1)) / 2^7 = 16 / 128
    0.125
    >>> round(mcnemar_p_value(30, 15), 6)  # chi2 = (15 - 1)^2 / 45, one degree of freedom
    0.036888
    >>> mcnemar_p_value(0, 0)
    1.0
    """
    b, c = int(challenger_wins), int(champion_wins)
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}")
    discordant = b + c
    if discordant == 0:
        return 1.0
    if exact is None:
        exact = discordant < EXACT_MCNEMAR_BELOW
    if exact:
        tail = sum(math.comb(discordant, k) for k in range(min(b, c) + 1))
        return float(min(Fraction(1), Fraction(2 * tail, 2**discordant)))
    statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
    return float(stats.chi2.sf(statistic, df=1))


def paired_accuracy_interval(
    n: int, challenger_wins: int, champion_wins: int, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Accuracy difference (challenger - champion) and its ``1 - alpha`` interval.

    Returns ``(effect, low, high)``: the plain estimate ``(b - c) / n`` and the
    Agresti-Min interval, a Wald interval on the table with 1/2 added to each
    of the four cells, which keeps its coverage near nominal even with few
    discordant pairs and never degenerates to zero width. With no data it is
    wide but finite. The interval is fixed-horizon: do not gate on it while
    watching continuously (the sequential test is for that).

    >>> [round(v, 4) for v in paired_accuracy_interval(1000, 60, 30)]
    [0.03, 0.0114, 0.0485]
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n < challenger_wins + champion_wins:
        raise ValueError("n must be at least the number of discordant pairs")
    effect = (challenger_wins - champion_wins) / n if n else 0.0
    total = n + 2.0
    p_b = (challenger_wins + 0.5) / total
    p_c = (champion_wins + 0.5) / total
    centre = p_b - p_c
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt((p_b + p_c - centre**2) / total)
    return effect, max(-1.0, centre - half), min(1.0, centre + half)


def scaled_mean_interval(
    n: int, mean: float, m2: float, bound: float, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Mean paired difference and its ``1 - alpha`` t interval, within ``[-bound, bound]``.

    The differences were scaled to ``[-1, 1]`` by ``bound``; ``mean`` and ``m2``
    (sum of squared deviations from the mean) are their moments over ``n``
    pairs. Returns ``(effect, low, high)`` back in the original unit; with fewer
    than two pairs the interval is the whole range.

    >>> scaled_mean_interval(1, 0.5, 0.0, bound=4.0)
    (2.0, -4.0, 4.0)
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    effect = mean * bound
    if n < 2:
        return effect, -bound, bound
    std_error = math.sqrt(m2 / (n - 1) / n) * bound
    half = float(stats.t.ppf(1 - alpha / 2, df=n - 1)) * std_error
    return effect, max(-bound, effect - half), min(bound, effect + half)
