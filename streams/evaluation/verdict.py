"""Champion vs challenger: a statistical verdict on paired outcomes.

Both models score the *same* events, so their outcomes are paired: per event,
each side is right or wrong (classifiers) or has a loss (regressors). Pairing
removes the between-event noise that an unpaired A/B comparison would pay for;
only the events where the two disagree carry evidence.

What a verdict answers, and how:

* **Can we promote yet?** An always-valid sequential test. For classifiers it is
  a mixture SPRT (mSPRT) on the discordant pairs: under "the challenger is no
  better", an event the challenger alone got right is at most as likely as one
  the champion alone got right. For regressors it is a betting e-process on the
  paired loss difference, clipped to ``[-loss_bound, loss_bound]``. Both give an
  *e-process*: a nonnegative supermartingale under the null, so by Ville's
  inequality ``P(sup_t E_t >= 1/alpha) <= alpha``. The dashboard may therefore be
  watched after every label, and the evaluator may stop at any time it likes:
  the false-promotion rate stays <= alpha, at every stopping time. The
  always-valid p-value is ``min(1, 1 / max_t E_t)``. The e-values are computed
  in :mod:`streams.evaluation.sequential`.
* **What would a classical fixed-horizon test say?** McNemar's test (exact
  binomial for few discordant pairs, chi-square with continuity correction
  otherwise). It is valid only when the sample size was fixed in advance and the
  result looked at once; it is reported, never used to decide.
* **How big is the difference?** Difference in accuracy (challenger - champion)
  with an Agresti-Min confidence interval for paired proportions, or the mean
  loss reduction with a t interval. These intervals are fixed-horizon too
  (both are in :mod:`streams.evaluation.fixed_horizon`).

This module holds the two paired comparisons that accumulate the outcomes
(:class:`PairedComparison` for classifiers, :class:`PairedLossComparison` for
regressors, over one :class:`PairedTest` base), the :class:`Verdict` they give,
and their exact state as JSON-ready values (:func:`comparison_state`), which
the evaluator keeps in a table.

Assumptions behind the guarantee: the paired outcomes arrive in an order that
does not depend on the outcomes themselves (label delay is fine; holding back
labels *because* the challenger got them wrong is not), and, conditionally on
the past, each new pair obeys the null (for example independent, identically
distributed pairs). The two models must be compared on the same events: feed
only events for which both predictions and the label are known.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from streams.evaluation.fixed_horizon import (
    mcnemar_p_value,
    paired_accuracy_interval,
    scaled_mean_interval,
)
from streams.evaluation.sequential import (
    DEFAULT_CONCENTRATION,
    MAX_LOG_E_VALUE,
    FloatArray,
    SequentialState,
    betting_log_e_increments,
    discordant_log_e_values,
)

Decision = Literal["promote", "keep", "inconclusive"]
Metric = Literal["accuracy", "loss"]

_Code = TypeVar("_Code", bound=str)

_DECISION_CODES: dict[Decision, float] = {"keep": -1.0, "inconclusive": 0.0, "promote": 1.0}
_METRIC_CODES: dict[Metric, float] = {"accuracy": 0.0, "loss": 1.0}


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


# --------------------------------------------------------------------------- comparisons


class PairedTest(ABC):
    """What both paired comparisons share: the counts, the two e-processes, the verdict.

    A subclass accumulates its own kind of paired outcome in ``update`` and
    gives its effect estimate in :meth:`effect_interval`; the decision rules
    are the same for both.
    """

    metric: ClassVar[Metric]
    _n: int
    _challenger_wins: int
    _champion_wins: int
    _sequential: SequentialState

    def reset(self) -> None:
        """Forget every pair (for example after the aliases moved); keep the parameters."""
        self._n = 0
        self._challenger_wins = 0
        self._champion_wins = 0
        self._sequential = SequentialState()

    @property
    def n(self) -> int:
        """Paired events seen."""
        return self._n

    @property
    def challenger_wins(self) -> int:
        """Events on which only the challenger was better (right where the champion was
        wrong; a strictly lower loss)."""
        return self._challenger_wins

    @property
    def champion_wins(self) -> int:
        """Events on which only the champion was better."""
        return self._champion_wins

    @property
    def e_value(self) -> float:
        """Current e-value against "the challenger is no better"."""
        return math.exp(self._sequential.log_e_promote)

    @property
    def p_value_sequential(self) -> float:
        """Always-valid p-value for "the challenger is no better"."""
        return self._sequential.p_promote

    @abstractmethod
    def effect_interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """The effect (positive: the challenger is better) and its fixed-horizon interval."""

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
        sequential = self._sequential
        decision = _decide(
            sequential.p_promote, sequential.p_keep, self.n, alpha, min_samples, max_samples
        )
        effect, low, high = self.effect_interval(alpha)
        return Verdict(
            decision=decision,
            metric=self.metric,
            alpha=alpha,
            n=self.n,
            challenger_wins=self.challenger_wins,
            champion_wins=self.champion_wins,
            effect=effect,
            ci_low=low,
            ci_high=high,
            e_value=math.exp(sequential.log_e_promote),
            p_value_sequential=sequential.p_promote,
            e_value_keep=math.exp(sequential.log_e_keep),
            p_value_keep=sequential.p_keep,
            mcnemar_p=mcnemar_p_value(self.challenger_wins, self.champion_wins),
        )


def _as_outcomes(values: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1")
        array = array.astype(np.bool_)
    return array


class PairedComparison(PairedTest):
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
        won by the challenger (see
        :func:`streams.evaluation.sequential.discordant_log_e_values`).

    >>> cmp = PairedComparison()
    >>> rng = np.random.default_rng(7)
    >>> champion = rng.random(3000) < 0.80
    >>> challenger = rng.random(3000) < 0.88
    >>> cmp.update(champion, challenger)
    >>> v = cmp.verdict(alpha=0.05, min_samples=500)
    >>> v.decision, v.n, v.p_value_sequential < 0.05
    ('promote', 3000, True)
    """

    metric = "accuracy"

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

    def effect_interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """Accuracy difference (challenger - champion) and its interval."""
        return paired_accuracy_interval(self._n, self._challenger_wins, self._champion_wins, alpha)


class PairedLossComparison(PairedTest):
    """Accumulates paired per-event losses (regressors) and gives a :class:`Verdict`.

    Losses are clipped to ``[0, loss_bound]`` (the clipped count is kept in
    :attr:`clipped`); the test, the effect and its interval are all about the
    clipped losses, so pick ``loss_bound`` as an upper bound of plausible losses
    (for example a high quantile of the champion's loss on reference data).

    The sequential test bets on the scaled difference
    ``x = (champion_loss - challenger_loss) / loss_bound`` in ``[-1, 1]``: the
    wealth ``prod(1 + lambda_i * x_i)`` with ``lambda_i`` in ``[0, max_bet]``
    chosen from the past only (the aGRAPA rule ``m / (v + m^2)`` on running
    estimates, see :func:`streams.evaluation.sequential.betting_log_e_increments`)
    is a nonnegative supermartingale whenever the challenger's expected loss is
    no lower, so the same Ville guarantee holds without any distributional
    assumption beyond boundedness. The keep test bets on ``-x``.
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

    metric = "loss"
    _clipped: int
    _mean: float
    _m2: float
    _bet_sum: float
    _bet_deviation: float

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
        super().reset()
        self._clipped = 0
        # Scaled-difference statistics: plain mean and M2 (for the interval),
        # and the predictable estimates that choose the bets.
        self._mean = 0.0
        self._m2 = 0.0
        self._bet_sum = 0.0
        self._bet_deviation = 0.0

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
        sequential = self._sequential
        promote, keep, self._bet_sum, self._bet_deviation = betting_log_e_increments(
            x, self._n, self._bet_sum, self._bet_deviation, self.max_bet
        )
        sequential.advance(
            np.minimum(sequential.log_e_promote + promote, MAX_LOG_E_VALUE),
            np.minimum(sequential.log_e_keep + keep, MAX_LOG_E_VALUE),
        )

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
    def clipped(self) -> int:
        """Losses (of either side) that fell outside ``[0, loss_bound]``."""
        return self._clipped

    def effect_interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """Mean loss reduction (champion - challenger) and its t interval."""
        return scaled_mean_interval(self._n, self._mean, self._m2, self.loss_bound, alpha)


Comparison = PairedComparison | PairedLossComparison


# --------------------------------------------------------------------------- saved state


_SEQUENTIAL = ("log_e_promote", "log_e_keep", "max_log_e_promote", "max_log_e_keep")


def _state_fields(comparison: Comparison) -> list[str]:
    annotations: dict[str, Any] = {}
    for klass in reversed(type(comparison).__mro__):
        annotations.update(getattr(klass, "__annotations__", {}))
    return [name for name in annotations if name.startswith("_") and name != "_sequential"]


def comparison_state(comparison: Comparison) -> dict[str, Any]:
    """Everything needed to continue ``comparison`` exactly, as JSON-ready values.

    The e-processes depend on the path, not only on the counts: the verdict
    uses the running *maximum* of each log e-value (and the loss test's bets
    use running moments), so those are saved with the counts.
    """
    if isinstance(comparison, PairedComparison):
        params: dict[str, float] = {"concentration": comparison.concentration}
    else:
        params = {"loss_bound": comparison.loss_bound, "max_bet": comparison.max_bet}
    sequential = comparison._sequential
    return {
        "metric": comparison.metric,
        "params": params,
        "fields": {name: getattr(comparison, name) for name in _state_fields(comparison)},
        "sequential": {name: getattr(sequential, name) for name in _SEQUENTIAL},
    }


def restore_comparison(state: Mapping[str, Any]) -> Comparison:
    """The comparison saved by :func:`comparison_state`, ready to take more pairs."""
    params = state["params"]
    comparison: Comparison
    if state["metric"] == "accuracy":
        comparison = PairedComparison(float(params["concentration"]))
    else:
        comparison = PairedLossComparison(float(params["loss_bound"]), float(params["max_bet"]))
    expected = set(_state_fields(comparison))
    if set(state["fields"]) != expected:
        raise ValueError(
            f"saved comparison fields {sorted(state['fields'])} do not match {sorted(expected)}"
        )
    for name, value in state["fields"].items():
        setattr(comparison, name, value)
    for name in _SEQUENTIAL:
        setattr(comparison._sequential, name, float(state["sequential"][name]))
    return comparison
