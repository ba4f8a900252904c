"""Always-valid sequential tests: the e-processes behind the verdict and the rollback guard.

An *e-process* is a nonnegative supermartingale under its null hypothesis, so by
Ville's inequality ``P(sup_t E_t >= 1/alpha) <= alpha``: it may be checked after
every label, and acted on at its first crossing of ``1/alpha``, with the error
rate still <= alpha at every stopping time. The always-valid p-value is
``min(1, 1 / max_t E_t)``, which is why :class:`SequentialState` keeps the running
maximum of each log e-value, not only its current value.

* :func:`discordant_log_e_values`: the mixture SPRT (mSPRT) on the discordant
  pairs of two classifiers (champion vs challenger);
* :func:`betting_log_e_increments`: the betting e-process on the bounded paired
  loss difference of two regressors;
* :func:`degradation_log_e_values` / :func:`degraded`: a promoted champion
  checked against its own baseline error rate.

Everything here is vectorised over a whole path of cumulative counts (or of
observations); the comparisons in :mod:`streams.evaluation.verdict` feed them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]

#: Mixture prior of the discordant-pair mSPRT: a Beta(a, a) on the probability
#: that a discordant pair favours the challenger, truncated to one side of 1/2.
#: a = 5 puts most mass on shares of 0.5-0.8, where real challengers sit. The
#: choice is not delicate: on simulated 0.85-vs-0.90 streams the median number of
#: labels to promote stayed within 1.5x of the best for every a in [0.5, 50].
DEFAULT_CONCENTRATION = 5.0
#: Prior concentration of the degradation test (a Beta with mean at the baseline
#: error rate and this many pseudo-observations, truncated to "worse").
DEFAULT_DEGRADATION_CONCENTRATION = 30.0
#: Log e-values saturate here (e^700 ~ 1e304) so that they stay finite floats:
#: far beyond any decision threshold, and JSON/Avro can carry them.
MAX_LOG_E_VALUE = 700.0

_LOG2 = math.log(2.0)


def discordant_log_e_values(
    challenger_wins: npt.ArrayLike,
    champion_wins: npt.ArrayLike,
    concentration: float = DEFAULT_CONCENTRATION,
) -> tuple[FloatArray, FloatArray]:
    """Log e-values of the discordant-pair mSPRT, for promote and for keep.

    ``challenger_wins`` (b) counts events the challenger alone got right,
    ``champion_wins`` (c) those the champion alone got right; pass cumulative
    counts to get the whole path at once (the function is vectorised).

    The promote e-value mixes the likelihood ratio ``(2q)^b (2(1-q))^c`` over
    ``q ~ Beta(a, a)`` truncated to ``q >= 1/2``; each ratio with ``q >= 1/2`` is a
    supermartingale whenever the challenger is *no better* than the champion
    (not only when they are equal), so the promote test controls false
    promotions over that whole composite null. Closed form::

        E+ = 2^(b+c+1) B(a+b, a+c) / B(a, a) * P(Beta(a+b, a+c) > 1/2)

    and the keep e-value is the mirror image (``q <= 1/2``).

    >>> promote, keep = discordant_log_e_values([0, 30], [0, 10])
    >>> [round(float(v), 3) for v in np.exp(promote)], [round(float(v), 3) for v in np.exp(keep)]
    ([1.0, 58.508], [1.0, 0.111])
    """
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    b = np.asarray(challenger_wins, dtype=np.float64)
    c = np.asarray(champion_wins, dtype=np.float64)
    a = float(concentration)
    base = (b + c + 1.0) * _LOG2 + special.betaln(a + b, a + c) - special.betaln(a, a)
    with np.errstate(divide="ignore"):
        # P(Beta(a+b, a+c) > 1/2) = I_{1/2}(a+c, a+b), by the symmetry of I_{1/2}.
        log_promote = base + np.log(special.betainc(a + c, a + b, 0.5))
        log_keep = base + np.log(special.betainc(a + b, a + c, 0.5))
    return (
        np.minimum(log_promote, MAX_LOG_E_VALUE),
        np.minimum(log_keep, MAX_LOG_E_VALUE),
    )


def betting_log_e_increments(
    x: FloatArray, seen: int, bet_sum: float, bet_deviation: float, max_bet: float
) -> tuple[FloatArray, FloatArray, float, float]:
    """Cumulative log-wealth of the promote and keep bets on ``x`` in ``[-1, 1]``.

    The promote wealth is ``prod(1 + lambda_i * x_i)``, the keep wealth
    ``prod(1 - mu_i * x_i)``, with bets in ``[0, max_bet]`` chosen by the aGRAPA
    rule ``m / (v + m^2)`` on *predictable* estimates: the bet on ``x_i`` uses
    only the observations before it. ``seen`` observations came before ``x``,
    summarised by ``bet_sum`` (their sum) and ``bet_deviation`` (their squared
    deviations from the running means); one pseudo-observation at mean 0,
    variance 1/4 keeps the first bets small. Returns both log-wealth paths
    (relative to the wealth before ``x``) and the updated ``bet_sum`` and
    ``bet_deviation``.

    Each wealth is a nonnegative supermartingale whenever the mean of ``x`` is
    <= 0 (promote) or >= 0 (keep), with no assumption beyond boundedness.

    >>> up, down, _, _ = betting_log_e_increments(np.array([1.0, 1.0]), 0, 0.0, 0.0, 0.5)
    >>> [round(float(v), 4) for v in up], [round(float(v), 4) for v in down]
    ([0.0, 0.4055], [0.0, 0.0])
    """
    observed = seen + np.arange(1, x.size + 1, dtype=np.float64)
    sums = bet_sum + np.cumsum(x)
    means = sums / (observed + 1.0)
    deviations = bet_deviation + np.cumsum((x - means) ** 2)
    variances = (0.25 + deviations) / (observed + 1.0)
    prev_means = np.concatenate(([bet_sum / (seen + 1.0)], means[:-1]))
    prev_vars = np.concatenate(([(0.25 + bet_deviation) / (seen + 1.0)], variances[:-1]))
    raw = prev_means / (prev_vars + prev_means**2)
    bet_up = np.clip(raw, 0.0, max_bet)
    bet_down = np.clip(-raw, 0.0, max_bet)
    return (
        np.cumsum(np.log1p(bet_up * x)),
        np.cumsum(np.log1p(-bet_down * x)),
        float(sums[-1]),
        float(deviations[-1]),
    )


def degradation_log_e_values(
    baseline_error_rate: float,
    errors: npt.ArrayLike,
    n: npt.ArrayLike,
    *,
    margin: float = 0.0,
    concentration: float = DEFAULT_DEGRADATION_CONCENTRATION,
) -> FloatArray:
    """Log e-values that the error rate exceeds ``baseline_error_rate + margin``.

    ``errors`` out of ``n`` labelled events since the promotion (vectorised:
    pass cumulative counts for a whole path). The e-value mixes the binomial
    likelihood ratio over error rates ``q >= p0 = baseline + margin`` with a
    Beta prior of mean ``p0`` and ``concentration`` pseudo-observations,
    truncated to ``q >= p0``. Each ratio is a supermartingale whenever the true
    rate is ``<= p0``, so checking it after every batch and acting on the first
    crossing of ``1/alpha`` raises a false alarm with probability <= alpha.
    The baseline is treated as known: estimate it on many labels, or use
    ``margin`` to absorb its uncertainty and ignore harmless drifts.

    >>> log_e = degradation_log_e_values(0.1, errors=[0, 10, 30], n=[0, 100, 100])
    >>> [round(float(v), 2) for v in np.exp(log_e)]
    [1.0, 0.51, 210987.75]
    """
    p0 = baseline_error_rate + margin
    if not 0 < p0 < 1:
        raise ValueError(f"baseline_error_rate + margin must be in (0, 1), got {p0}")
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, got {concentration}")
    k = np.asarray(errors, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > total):
        raise ValueError("errors must be within [0, n]")
    a0, b0 = concentration * p0, concentration * (1 - p0)
    ok = total - k
    with np.errstate(divide="ignore"):
        log_e = (
            special.betaln(k + a0, ok + b0)
            - special.betaln(a0, b0)
            + np.log(special.betaincc(k + a0, ok + b0, p0))
            - math.log(special.betaincc(a0, b0, p0))
            - k * math.log(p0)
            - ok * math.log1p(-p0)
        )
    return np.asarray(np.minimum(log_e, MAX_LOG_E_VALUE), dtype=np.float64)


def degraded(
    baseline_error_rate: float,
    current_errors: int,
    n: int,
    alpha: float = 0.05,
    *,
    margin: float = 0.0,
    concentration: float = DEFAULT_DEGRADATION_CONCENTRATION,
) -> bool:
    """Whether a promoted champion is now worse than its baseline error rate.

    Feed cumulative counts since the promotion, call after every batch, and roll
    back at the first ``True``: that rule is anytime-valid, its false-rollback
    probability is <= alpha however long the model runs (see
    :func:`degradation_log_e_values`).

    >>> degraded(0.10, current_errors=12, n=100)
    False
    >>> degraded(0.10, current_errors=25, n=100)
    True
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    log_e = degradation_log_e_values(
        baseline_error_rate, current_errors, n, margin=margin, concentration=concentration
    )
    return bool(log_e >= -math.log(alpha))


class SequentialState:
    """Current and running-maximum log e-values of the two one-sided tests."""

    def __init__(self) -> None:
        self.log_e_promote = 0.0
        self.log_e_keep = 0.0
        self.max_log_e_promote = 0.0
        self.max_log_e_keep = 0.0

    def advance(self, log_promote: FloatArray, log_keep: FloatArray) -> None:
        """Move along the paths of both log e-values (one value per new observation)."""
        if log_promote.size == 0:
            return
        self.log_e_promote = float(log_promote[-1])
        self.log_e_keep = float(log_keep[-1])
        self.max_log_e_promote = max(self.max_log_e_promote, float(log_promote.max()))
        self.max_log_e_keep = max(self.max_log_e_keep, float(log_keep.max()))

    @property
    def p_promote(self) -> float:
        """Always-valid p-value of the promote test: ``min(1, 1 / max_t E_t)``."""
        return min(1.0, math.exp(-self.max_log_e_promote))

    @property
    def p_keep(self) -> float:
        """Always-valid p-value of the keep test."""
        return min(1.0, math.exp(-self.max_log_e_keep))
