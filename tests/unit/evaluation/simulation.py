"""Seeded simulations of paired outcomes, and the bound their rate assertions use.

Rate assertions compare a count of runs with a binomial bound: if a procedure's
true error rate were exactly alpha, the count over R runs would be
Binomial(R, alpha), so its 99.9 % quantile is the slack allowed (a correct
procedure fails such a check for at most 1 seed in 1,000; a procedure that
peeks at a fixed-horizon test lands far above it).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

ALPHA = 0.05
RUNS = 200
HORIZON = 5_000
#: Largest count of false decisions over RUNS runs compatible with a rate of ALPHA.
RATE_BOUND = int(stats.binom.ppf(0.999, RUNS, ALPHA))


def paired_outcomes(
    rng: np.random.Generator, champion_accuracy: float, challenger_accuracy: float, shape: tuple
) -> tuple[np.ndarray, np.ndarray]:
    """Independent right/wrong outcomes (the hardest case: many discordant pairs)."""
    return rng.random(shape) < champion_accuracy, rng.random(shape) < challenger_accuracy
