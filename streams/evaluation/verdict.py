"""Champion vs challenger: a statistical verdict on paired outcomes.

Both models score the *same* events, so their outcomes are paired: per event,
each side is right or wrong (classifiers) or has a loss (regressors). Pairing
removes the between-event noise that an unpaired A/B comparison would pay for;
only the events where the two disagree carry evidence.

What this module answers, and how:

* **Can we promote yet?** An always-valid sequential test. For classifiers it is
  a mixture SPRT (mSPRT) on the discordant pairs: under "the challenger is no
  better", an event the challenger alone got right is at most as likely as one
  the champion alone got right. For regressors it is a betting e-process on the
  paired loss difference, clipped to ``[-loss_bound, loss_bound]``. Both give an
  *e-process*: a nonnegative supermartingale under the null, so by Ville's
  inequality ``P(sup_t E_t >= 1/alpha) <= alpha``. The dashboard may therefore be
  watched after every label, and the evaluator may stop at any time it likes:
  the false-promotion rate stays <= alpha, at every stopping time. The
  always-valid p-value is ``min(1, 1 / max_t E_t)``.
* **What would a classical fixed-horizon test say?** McNemar's test (exact
  binomial for few discordant pairs, chi-square with continuity correction
  otherwise). It is valid only when the sample size was fixed in advance and the
  result looked at once; it is reported, never used to decide.
* **How big is the difference?** Difference in accuracy (challenger - champion)
  with an Agresti-Min confidence interval for paired proportions, or the mean
  loss reduction with a t interval. These intervals are fixed-horizon too.

Assumptions behind the guarantee: the paired outcomes arrive in an order that
does not depend on the outcomes themselves (label delay is fine; holding back
labels *because* the challenger got them wrong is not), and, conditionally on
the past, each new pair obeys the null (for example independent, identically
distributed pairs). The two models must be compared on the same events: feed
only events for which both predictions and the label are known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import special, stats

Decision = Literal["promote", "keep", "inconclusive"]
Metric = Literal["accuracy", "loss"]

FloatArray = npt.NDArray[np.float64]
_Code = TypeVar("_Code", bound=str)

#: Mixture prior of the discordant-pair mSPRT: a Beta(a, a) on the probability
#: that a discordant pair favours the challenger, truncated to one side of 1/2.
#: a = 5 puts most mass on shares of 0.5-0.8, where real challengers sit. The
#: choice is not delicate: on simulated 0.85-vs-0.90 streams the median number of
#: labels to promote stayed within 1.5x of the best for every a in [0.5, 50].
DEFAULT_CONCENTRATION = 5.0
#: Prior concentration of the degradation test (a Beta with mean at the baseline
#: error rate and this many pseudo-observations, truncated to "worse").
DEFAULT_DEGRADATION_CONCENTRATION = 30.0
#: McNemar switches from the exact binomial test to chi-square at this many
#: discordant pairs (the usual rule: below 25 the chi-square approximation is poor).
EXACT_MCNEMAR_BELOW = 25
#: Log e-values saturate here (e^700 ~ 1e304) so that they stay finite floats:
#: far beyond any decision threshold, and JSON/Avro can carry them.
MAX_LOG_E_VALUE = 700.0

_LOG2 = math.log(2.0)
_DECISION_CODES: dict[Decision, float] = {"keep": -1.0, "inconclusive": 0.0, "promote": 1.0}
_METRIC_CODES: dict[Metric, float] = {"accuracy": 0.0, "loss": 1.0}


# --------------------------------------------------------------------------- tests


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


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True, slots=True)
class Verdict:
    """The champion-vs-challenger decision and its evidence.

    ``effect`` is positive when the challenger is better: the accuracy gain for
    classifiers, the mean (clipped) loss reduction for regressors; ``ci_low`` /
    ``ci_high`` bound it (fixed-horizon). ``e_value`` is the current value of
    the promote e-process and ``p_value_sequential = min(1, 1 / max_t E_t)``;
    ``e_value_keep`` / ``p_value_keep`` are the same for "the champion is
    better". ``challenger_wins`` / ``champion_wins`` are the discordant counts.
    """

    decision: Decision
    metric: Metric
    alpha: float
    n: int
    challenger_wins: int
    champion_wins: int
    effect: float
    ci_low: float
    ci_high: float
    e_value: float
    p_value_sequential: float
    e_value_keep: float
    p_value_keep: float
    mcnemar_p: float

    @property
    def discordant(self) -> int:
        """Events on which exactly one side was better."""
        return self.challenger_wins + self.champion_wins

    def to_evidence(self) -> dict[str, float]:
        """A flat ``str -> float`` map (the ``evidence`` field of ``sensor.evaluation``).

        The decision and metric are encoded as numbers too (promote 1, keep -1,
        inconclusive 0; accuracy 0, loss 1), so the map alone round-trips.
        """
        evidence: dict[str, float] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "decision":
                evidence[field.name] = _DECISION_CODES[value]
            elif field.name == "metric":
                evidence[field.name] = _METRIC_CODES[value]
            else:
                evidence[field.name] = float(value)
        return evidence

    @classmethod
    def from_evidence(cls, evidence: Mapping[str, float]) -> Verdict:
        """Rebuild a verdict from :meth:`to_evidence` output (extra keys are ignored)."""
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in evidence]
        if missing:
            raise ValueError(f"evidence lacks {missing}")
        decision = _decode(_DECISION_CODES, evidence["decision"], "decision")
        metric = _decode(_METRIC_CODES, evidence["metric"], "metric")
        return cls(
            decision=decision,
            metric=metric,
            alpha=float(evidence["alpha"]),
            n=_as_count(evidence["n"], "n"),
            challenger_wins=_as_count(evidence["challenger_wins"], "challenger_wins"),
            champion_wins=_as_count(evidence["champion_wins"], "champion_wins"),
            effect=float(evidence["effect"]),
            ci_low=float(evidence["ci_low"]),
            ci_high=float(evidence["ci_high"]),
            e_value=float(evidence["e_value"]),
            p_value_sequential=float(evidence["p_value_sequential"]),
            e_value_keep=float(evidence["e_value_keep"]),
            p_value_keep=float(evidence["p_value_keep"]),
            mcnemar_p=float(evidence["mcnemar_p"]),
        )


def _decode(codes: dict[_Code, float], code: float, name: str) -> _Code:
    for label, value in codes.items():
        if value == code:
            return label
    raise ValueError(f"unknown {name} code {code}")


def _as_count(value: float, name: str) -> int:
    if value < 0 or value != int(value):
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def should_promote(
    verdict: Verdict,
    min_samples: int,
    *,
    min_effect: float = 0.0,
    max_p_value: float | None = None,
) -> bool:
    """Guard for automatic promotion: act on ``promote`` only with enough evidence.

    Requires the ``promote`` decision, at least ``min_samples`` paired events
    (so a fast start on a few hundred labels, or a label join still warming up,
    cannot swap the model), an estimated effect of at least ``min_effect``
    (statistically better is not always worth a swap), and optionally a
    stricter sequential p-value for unattended promotion than for a report.
    These guards only ever refuse promotions, so they keep the false-promotion
    guarantee of the sequential test.

    >>> v = PairedComparison().verdict()
    >>> should_promote(v, min_samples=1000)
    False
    """
    if verdict.decision != "promote" or verdict.n < min_samples:
        return False
    if verdict.effect < min_effect:
        return False
    return max_p_value is None or verdict.p_value_sequential <= max_p_value


def _decide(
    p_promote: float,
    p_keep: float,
    n: int,
    alpha: float,
    min_samples: int,
    max_samples: int | None,
) -> Decision:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if min_samples < 0:
        raise ValueError(f"min_samples must be >= 0, got {min_samples}")
    if n < min_samples:
        return "inconclusive"
    promote, keep = p_promote <= alpha, p_keep <= alpha
    if promote and not keep:
        return "promote"
    # Conflicting evidence (both rejected: the stream is likely not stationary)
    # and an exhausted label budget both keep the champion: refusing a promotion
    # can never raise the false-promotion rate.
    if keep or (max_samples is not None and n >= max_samples):
        return "keep"
    return "inconclusive"


class _SequentialState:
    """Current and running-maximum log e-values of the two one-sided tests."""

    def __init__(self) -> None:
        self.log_e_promote = 0.0
        self.log_e_keep = 0.0
        self.max_log_e_promote = 0.0
        self.max_log_e_keep = 0.0

    def advance(self, log_promote: FloatArray, log_keep: FloatArray) -> None:
        if log_promote.size == 0:
            return
        self.log_e_promote = float(log_promote[-1])
        self.log_e_keep = float(log_keep[-1])
        self.max_log_e_promote = max(self.max_log_e_promote, float(log_promote.max()))
        self.max_log_e_keep = max(self.max_log_e_keep, float(log_keep.max()))

    @property
    def p_promote(self) -> float:
        return min(1.0, math.exp(-self.max_log_e_promote))

    @property
    def p_keep(self) -> float:
        return min(1.0, math.exp(-self.max_log_e_keep))


def _as_outcomes(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1")
        array = array.astype(np.bool_)
    return array


class PairedComparison:
    """Accumulates paired right/wrong outcomes and gives a :class:`Verdict`.

    Feed it batches of the events whose label has arrived, in the same order
    for both sides: ``champion_correct[i]`` and ``challenger_correct[i]`` refer
    to the same event. The e-processes are updated label by label inside each
    batch, so the running maximum (and the always-valid p-value) does not
    depend on how the labels were batched.

    Parameters
    ----------
    concentration
        ``a`` of the Beta(a, a) mixture prior over the share of discordant pairs
        won by the challenger (see :func:`discordant_log_e_values`).

    >>> cmp = PairedComparison()
    >>> rng = np.random.default_rng(7)
    >>> champion = rng.random(3000) < 0.80
    >>> challenger = rng.random(3000) < 0.88
    >>> cmp.update(champion, challenger)
    >>> v = cmp.verdict(alpha=0.05, min_samples=500)
    >>> v.decision, v.n, v.p_value_sequential < 0.05
    ('promote', 3000, True)
    """

    metric: Metric = "accuracy"
    _n: int
    _challenger_wins: int
    _champion_wins: int
    _sequential: _SequentialState

    def __init__(self, concentration: float = DEFAULT_CONCENTRATION) -> None:
        if concentration <= 0:
            raise ValueError(f"concentration must be > 0, got {concentration}")
        self.concentration = concentration
        self.reset()

    def update(self, champion_correct: npt.ArrayLike, challenger_correct: npt.ArrayLike) -> None:
        """Add a batch of paired outcomes (booleans, or 0/1)."""
        champion = _as_outcomes(champion_correct, "champion_correct")
        challenger = _as_outcomes(challenger_correct, "challenger_correct")
        if champion.shape != challenger.shape:
            raise ValueError(
                f"paired outcomes differ in length: {champion.size} vs {challenger.size}"
            )
        discordant = champion != challenger
        challenger_won = challenger[discordant]
        wins = self._challenger_wins + np.cumsum(challenger_won)
        losses = self._champion_wins + np.cumsum(~challenger_won)
        self._sequential.advance(*discordant_log_e_values(wins, losses, self.concentration))
        self._n += champion.size
        if challenger_won.size:
            self._challenger_wins = int(wins[-1])
            self._champion_wins = int(losses[-1])

    def update_one(self, champion_correct: bool, challenger_correct: bool) -> None:
        """Add one paired outcome (a thin wrapper over :meth:`update`)."""
        self.update([champion_correct], [challenger_correct])

    @property
    def n(self) -> int:
        """Paired events seen."""
        return self._n

    @property
    def challenger_wins(self) -> int:
        """Events the challenger got right and the champion wrong."""
        return self._challenger_wins

    @property
    def champion_wins(self) -> int:
        """Events the champion got right and the challenger wrong."""
        return self._champion_wins

    @property
    def e_value(self) -> float:
        """Current e-value against "the challenger is no better"."""
        return math.exp(self._sequential.log_e_promote)

    @property
    def p_value_sequential(self) -> float:
        """Always-valid p-value for "the challenger is no better"."""
        return self._sequential.p_promote

    def effect_interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """Accuracy difference (challenger - champion) and its interval."""
        return paired_accuracy_interval(self._n, self._challenger_wins, self._champion_wins, alpha)

    def verdict(
        self, alpha: float = 0.05, min_samples: int = 100, max_samples: int | None = None
    ) -> Verdict:
        """The decision at level ``alpha``.

        ``promote`` when the promote e-process has reached ``1/alpha`` (and the
        keep one has not), ``keep`` when the keep e-process has, or when
        ``max_samples`` paired events have passed without a promotion (the
        futility budget: an equal challenger would otherwise stay inconclusive
        forever), else ``inconclusive``; always ``inconclusive`` below
        ``min_samples``. A rejection is final: the decision uses the running
        maximum of each e-process, which is the stopping rule Ville's
        inequality bounds. Call :meth:`reset` to start a fresh experiment.
        """
        return _verdict(self, alpha, min_samples, max_samples)

    def reset(self) -> None:
        """Forget every outcome (for example after the aliases moved); keep the parameters."""
        self._n = 0
        self._challenger_wins = 0
        self._champion_wins = 0
        self._sequential = _SequentialState()


class PairedLossComparison:
    """Accumulates paired per-event losses (regressors) and gives a :class:`Verdict`.

    Losses are clipped to ``[0, loss_bound]`` (the clipped count is kept in
    :attr:`clipped`); the test, the effect and its interval are all about the
    clipped losses, so pick ``loss_bound`` as an upper bound of plausible losses
    (for example a high quantile of the champion's loss on reference data).

    The sequential test bets on the scaled difference
    ``x = (champion_loss - challenger_loss) / loss_bound`` in ``[-1, 1]``: the
    wealth ``prod(1 + lambda_i * x_i)`` with ``lambda_i`` in ``[0, max_bet]``
    chosen from the past only (the aGRAPA rule ``m / (v + m^2)`` on running
    estimates) is a nonnegative supermartingale whenever the challenger's
    expected loss is no lower, so the same Ville guarantee holds without any
    distributional assumption beyond boundedness. The keep test bets on ``-x``.
    ``challenger_wins`` / ``champion_wins`` count strictly lower losses, and
    ``mcnemar_p`` is then the sign test (McNemar on "who was better").

    >>> cmp = PairedLossComparison(loss_bound=10.0)
    >>> rng = np.random.default_rng(3)
    >>> champion_loss = np.abs(rng.normal(0.0, 1.0, 4000))  # absolute errors
    >>> challenger_loss = np.abs(rng.normal(0.0, 0.7, 4000))
    >>> cmp.update(champion_loss, challenger_loss)
    >>> v = cmp.verdict(min_samples=500)
    >>> v.decision, round(v.effect, 2), v.ci_low > 0
    ('promote', 0.24, True)
    """

    metric: Metric = "loss"
    _n: int
    _challenger_wins: int
    _champion_wins: int
    _clipped: int
    _mean: float
    _m2: float
    _bet_sum: float
    _bet_deviation: float
    _sequential: _SequentialState

    def __init__(self, loss_bound: float, max_bet: float = 0.5) -> None:
        if not (loss_bound > 0 and math.isfinite(loss_bound)):
            raise ValueError(f"loss_bound must be a finite number > 0, got {loss_bound}")
        if not 0 < max_bet < 1:
            raise ValueError(f"max_bet must be in (0, 1), got {max_bet}")
        self.loss_bound = loss_bound
        self.max_bet = max_bet
        self.reset()

    def reset(self) -> None:
        """Forget every loss (for example after the aliases moved); keep the parameters."""
        self._n = 0
        self._challenger_wins = 0
        self._champion_wins = 0
        self._clipped = 0
        # Scaled-difference statistics: plain mean and M2 (for the interval),
        # and the predictable estimates that choose the bets.
        self._mean = 0.0
        self._m2 = 0.0
        self._bet_sum = 0.0
        self._bet_deviation = 0.0
        self._sequential = _SequentialState()

    def update(self, champion_loss: npt.ArrayLike, challenger_loss: npt.ArrayLike) -> None:
        """Add a batch of paired losses (finite floats; larger is worse)."""
        champion, champion_clipped = self._clip(champion_loss, "champion_loss")
        challenger, challenger_clipped = self._clip(challenger_loss, "challenger_loss")
        if champion.shape != challenger.shape:
            raise ValueError(
                f"paired losses differ in length: {champion.size} vs {challenger.size}"
            )
        if champion.size == 0:
            return
        self._clipped += champion_clipped + challenger_clipped
        x = (champion - challenger) / self.loss_bound
        self._advance_bets(x)
        self._merge_moments(x)
        self._n += x.size
        self._challenger_wins += int(np.count_nonzero(x > 0))
        self._champion_wins += int(np.count_nonzero(x < 0))

    def _clip(self, values: npt.ArrayLike, name: str) -> tuple[FloatArray, int]:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} must be finite")
        outside = int(np.count_nonzero((array < 0) | (array > self.loss_bound)))
        return np.clip(array, 0.0, self.loss_bound), outside

    def _advance_bets(self, x: FloatArray) -> None:
        # Predictable estimates after i observations (one pseudo-observation at
        # mean 0, variance 1/4 keeps the first bets small): the bet on x_i uses
        # only x_1 .. x_{i-1}.
        seen = self._n + np.arange(1, x.size + 1, dtype=np.float64)
        sums = self._bet_sum + np.cumsum(x)
        means = sums / (seen + 1.0)
        deviations = self._bet_deviation + np.cumsum((x - means) ** 2)
        variances = (0.25 + deviations) / (seen + 1.0)
        prev_means = np.concatenate(([self._bet_mean()], means[:-1]))
        prev_vars = np.concatenate(([self._bet_variance()], variances[:-1]))
        raw = prev_means / (prev_vars + prev_means**2)
        bet_up = np.clip(raw, 0.0, self.max_bet)
        bet_down = np.clip(-raw, 0.0, self.max_bet)
        log_promote = self._sequential.log_e_promote + np.cumsum(np.log1p(bet_up * x))
        log_keep = self._sequential.log_e_keep + np.cumsum(np.log1p(-bet_down * x))
        self._sequential.advance(
            np.minimum(log_promote, MAX_LOG_E_VALUE), np.minimum(log_keep, MAX_LOG_E_VALUE)
        )
        self._bet_sum = float(sums[-1])
        self._bet_deviation = float(deviations[-1])

    def _bet_mean(self) -> float:
        return self._bet_sum / (self._n + 1.0)

    def _bet_variance(self) -> float:
        return (0.25 + self._bet_deviation) / (self._n + 1.0)

    def _merge_moments(self, x: FloatArray) -> None:
        # Chan et al.'s parallel update: exact merge of (count, mean, M2).
        count = x.size
        batch_mean = float(x.mean())
        batch_m2 = float(((x - batch_mean) ** 2).sum())
        total = self._n + count
        delta = batch_mean - self._mean
        self._mean += delta * count / total
        self._m2 += batch_m2 + delta**2 * self._n * count / total

    @property
    def n(self) -> int:
        """Paired events seen."""
        return self._n

    @property
    def clipped(self) -> int:
        """Losses (of either side) that fell outside ``[0, loss_bound]``."""
        return self._clipped

    @property
    def challenger_wins(self) -> int:
        """Events where the challenger's loss was strictly lower."""
        return self._challenger_wins

    @property
    def champion_wins(self) -> int:
        """Events where the champion's loss was strictly lower."""
        return self._champion_wins

    @property
    def e_value(self) -> float:
        """Current e-value against "the challenger's expected loss is no lower"."""
        return math.exp(self._sequential.log_e_promote)

    @property
    def p_value_sequential(self) -> float:
        """Always-valid p-value for "the challenger's expected loss is no lower"."""
        return self._sequential.p_promote

    def effect_interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """Mean loss reduction (champion - challenger) and its t interval."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        bound = self.loss_bound
        effect = self._mean * bound
        if self._n < 2:
            return effect, -bound, bound
        std_error = math.sqrt(self._m2 / (self._n - 1) / self._n) * bound
        half = float(stats.t.ppf(1 - alpha / 2, df=self._n - 1)) * std_error
        return effect, max(-bound, effect - half), min(bound, effect + half)

    def verdict(
        self, alpha: float = 0.05, min_samples: int = 100, max_samples: int | None = None
    ) -> Verdict:
        """The decision at level ``alpha`` (same rules as :meth:`PairedComparison.verdict`)."""
        return _verdict(self, alpha, min_samples, max_samples)


def _verdict(
    comparison: PairedComparison | PairedLossComparison,
    alpha: float,
    min_samples: int,
    max_samples: int | None,
) -> Verdict:
    sequential = comparison._sequential
    decision = _decide(
        sequential.p_promote, sequential.p_keep, comparison.n, alpha, min_samples, max_samples
    )
    effect, low, high = comparison.effect_interval(alpha)
    return Verdict(
        decision=decision,
        metric=comparison.metric,
        alpha=alpha,
        n=comparison.n,
        challenger_wins=comparison.challenger_wins,
        champion_wins=comparison.champion_wins,
        effect=effect,
        ci_low=low,
        ci_high=high,
        e_value=math.exp(sequential.log_e_promote),
        p_value_sequential=sequential.p_promote,
        e_value_keep=math.exp(sequential.log_e_keep),
        p_value_keep=sequential.p_keep,
        mcnemar_p=mcnemar_p_value(comparison.challenger_wins, comparison.champion_wins),
    )
