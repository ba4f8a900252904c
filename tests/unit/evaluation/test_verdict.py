"""Statistical verdict: power, false-promotion control under continuous monitoring,
regressors, serialisation, the promotion guards.

Simulations are seeded and vectorised; rate assertions use the binomial bound of
``simulation``.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import stats

from streams.evaluation import verdict as verdict_module
from streams.evaluation.fixed_horizon import mcnemar_p_value
from streams.evaluation.sequential import discordant_log_e_values
from streams.evaluation.verdict import (
    PairedComparison,
    PairedLossComparison,
    Verdict,
    should_promote,
)
from tests.unit.evaluation.simulation import ALPHA, HORIZON, RATE_BOUND, RUNS, paired_outcomes


def labels_to_decision(
    champion: np.ndarray, challenger: np.ndarray, decision: str, batch: int = 100
) -> float:
    """Labels fed (in evaluator-sized batches) until the verdict first says ``decision``."""
    comparison = PairedComparison()
    for start in range(0, champion.size, batch):
        comparison.update(champion[start : start + batch], challenger[start : start + batch])
        if comparison.verdict(ALPHA, min_samples=100).decision == decision:
            return float(comparison.n)
    return math.inf


def test_rate_bound_is_the_binomial_quantile() -> None:
    assert RATE_BOUND == 21  # alpha * RUNS = 10, standard deviation 3.1


def test_docstring_examples_run() -> None:
    result = doctest.testmod(verdict_module)
    assert result.attempted >= 15
    assert result.failed == 0


# ----------------------------------------------------------------- sequential test


def test_better_challenger_promotes_within_5000_labels() -> None:
    rng = np.random.default_rng(11)
    champion, challenger = paired_outcomes(rng, 0.85, 0.90, (50, HORIZON))
    needed = np.array(
        [labels_to_decision(champion[r], challenger[r], "promote") for r in range(50)]
    )
    assert np.isfinite(needed).all(), "every run promotes within 5,000 labels"
    assert needed.max() <= HORIZON
    assert np.median(needed) <= 1_000


def test_equal_challenger_is_promoted_in_at_most_alpha_of_runs_watched_continuously() -> None:
    rng = np.random.default_rng(12)
    champion, challenger = paired_outcomes(rng, 0.85, 0.85, (RUNS, HORIZON))
    false_promotions = 0
    for run in range(RUNS):
        comparison = PairedComparison()
        # One batch: the running maximum is tracked label by label, so this is
        # "looked at after every single label".
        comparison.update(champion[run], challenger[run])
        if comparison.verdict(ALPHA, min_samples=0).decision == "promote":
            false_promotions += 1
    assert false_promotions <= RATE_BOUND


def test_peeking_at_a_fixed_horizon_test_breaks_the_same_bound() -> None:
    # The rate check above can fail: a one-sided McNemar z-test looked at after
    # every label, on the same kind of data, promotes far more often than alpha.
    rng = np.random.default_rng(12)
    champion, challenger = paired_outcomes(rng, 0.85, 0.85, (RUNS, HORIZON))
    b = np.cumsum(~champion & challenger, axis=1)
    c = np.cumsum(champion & ~challenger, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (b - c) / np.sqrt(b + c)
    naive = int(np.any(z > stats.norm.ppf(1 - ALPHA), axis=1).sum())
    assert naive > 2 * RATE_BOUND


def test_worse_challenger_reaches_keep_and_is_never_promoted() -> None:
    rng = np.random.default_rng(13)
    champion, challenger = paired_outcomes(rng, 0.85, 0.80, (50, HORIZON))
    needed = np.array([labels_to_decision(champion[r], challenger[r], "keep") for r in range(50)])
    assert needed.max() <= HORIZON
    promoted = [labels_to_decision(champion[r], challenger[r], "promote") for r in range(50)]
    assert np.isinf(promoted).all()


def test_batching_does_not_change_the_verdict() -> None:
    rng = np.random.default_rng(14)
    champion, challenger = paired_outcomes(rng, 0.8, 0.84, (1, 3_000))
    whole = PairedComparison()
    whole.update(champion[0], challenger[0])
    pieces = PairedComparison()
    for start in range(0, 3_000, 7):
        pieces.update(champion[0, start : start + 7], challenger[0, start : start + 7])
    one_by_one = PairedComparison()
    for champion_ok, challenger_ok in zip(champion[0, :500], challenger[0, :500], strict=True):
        one_by_one.update_one(bool(champion_ok), bool(challenger_ok))
    head = PairedComparison()
    head.update(champion[0, :500], challenger[0, :500])
    assert whole.verdict() == pieces.verdict()
    assert one_by_one.verdict() == head.verdict()


def test_running_maximum_keeps_a_crossing_inside_alabel_batch() -> None:
    # 12 challenger wins then 12 champion wins: the e-value rises above 1/alpha
    # and falls back to about 1 within one batch; the crossing still counts.
    comparison = PairedComparison()
    comparison.update([False] * 12 + [True] * 12, [True] * 12 + [False] * 12)
    path, _ = discordant_log_e_values(np.arange(1, 13), np.zeros(12))
    assert math.exp(path.max()) >= 1 / ALPHA
    assert comparison.e_value < 1.5
    assert comparison.p_value_sequential == pytest.approx(math.exp(-path.max()))
    assert comparison.verdict(ALPHA, min_samples=0).decision == "promote"


def test_min_and_max_samples_rules() -> None:
    comparison = PairedComparison()
    comparison.update([False] * 40, [True] * 40)
    assert comparison.verdict(ALPHA, min_samples=41).decision == "inconclusive"
    assert comparison.verdict(ALPHA, min_samples=40).decision == "promote"

    equal = PairedComparison()
    equal.update([True, False] * 300, [False, True] * 300)
    assert equal.verdict(ALPHA, min_samples=100).decision == "inconclusive"
    assert equal.verdict(ALPHA, min_samples=100, max_samples=600).decision == "keep"


def test_inputs_are_checked() -> None:
    comparison = PairedComparison()
    with pytest.raises(ValueError, match="length"):
        comparison.update([True, False], [True])
    with pytest.raises(ValueError, match="0/1"):
        comparison.update([0, 2], [1, 1])
    with pytest.raises(ValueError, match="alpha"):
        comparison.verdict(alpha=1.5)
    comparison.update([0, 1], [1, 1])  # 0/1 integers are outcomes too
    assert (comparison.n, comparison.challenger_wins, comparison.champion_wins) == (2, 1, 0)


# ----------------------------------------------------------------- regressors


def test_loss_comparison_promotes_a_better_regressor_and_keeps_a_worse_one() -> None:
    rng = np.random.default_rng(16)
    champion_loss = np.abs(rng.normal(0.0, 1.0, HORIZON))
    better = PairedLossComparison(loss_bound=5.0)
    better.update(champion_loss, np.abs(rng.normal(0.0, 0.9, HORIZON)))
    verdict = better.verdict(ALPHA, min_samples=100)
    assert verdict.decision == "promote"
    assert verdict.metric == "loss"
    assert verdict.ci_low < 0.1 * math.sqrt(2 / math.pi) < verdict.ci_high

    worse = PairedLossComparison(loss_bound=5.0)
    worse.update(champion_loss, np.abs(rng.normal(0.0, 1.1, HORIZON)))
    assert worse.verdict(ALPHA, min_samples=100).decision == "keep"


def test_equal_regressor_is_promoted_in_at_most_alpha_of_runs() -> None:
    rng = np.random.default_rng(17)
    losses = np.abs(rng.normal(0.0, 1.0, (2, RUNS, HORIZON)))
    false_promotions = 0
    for run in range(RUNS):
        comparison = PairedLossComparison(loss_bound=5.0)
        comparison.update(losses[0, run], losses[1, run])
        false_promotions += comparison.verdict(ALPHA, min_samples=0).decision == "promote"
    assert false_promotions <= RATE_BOUND


def test_loss_batching_clipping_and_interval() -> None:
    rng = np.random.default_rng(18)
    champion = np.abs(rng.normal(0.0, 1.0, 2_000))
    challenger = np.abs(rng.normal(0.0, 0.95, 2_000))
    whole = PairedLossComparison(loss_bound=3.0)
    whole.update(champion, challenger)
    pieces = PairedLossComparison(loss_bound=3.0)
    for start in range(0, 2_000, 37):
        pieces.update(champion[start : start + 37], challenger[start : start + 37])
    a, b = whole.verdict(), pieces.verdict()
    assert (a.n, a.challenger_wins, a.champion_wins) == (b.n, b.challenger_wins, b.champion_wins)
    for name in ("effect", "ci_low", "ci_high", "e_value", "e_value_keep", "p_value_sequential"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name

    clipped_champion = np.clip(champion, 0.0, 3.0)
    clipped_challenger = np.clip(challenger, 0.0, 3.0)
    assert whole.clipped == int((champion > 3).sum() + (challenger > 3).sum()) > 0
    with pytest.raises(ValueError, match="length"):
        whole.update([4.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        whole.update([math.nan], [1.0])
    assert whole.verdict() == a  # a rejected batch leaves no trace
    differences = clipped_champion - clipped_challenger
    assert a.effect == pytest.approx(differences.mean(), rel=1e-12)
    interval = stats.t.interval(
        0.95, df=1_999, loc=differences.mean(), scale=stats.sem(differences)
    )
    assert (a.ci_low, a.ci_high) == (pytest.approx(interval[0]), pytest.approx(interval[1]))
    assert a.mcnemar_p == mcnemar_p_value(
        int((differences > 0).sum()), int((differences < 0).sum())
    )


# ----------------------------------------------------------------- verdict record


def test_verdict_round_trips_through_a_flat_float_map() -> None:
    comparison = PairedComparison()
    rng = np.random.default_rng(21)
    champion, challenger = paired_outcomes(rng, 0.80, 0.86, (1, 2_000))
    comparison.update(champion[0], challenger[0])
    verdict = comparison.verdict(ALPHA, min_samples=100)
    evidence = verdict.to_evidence()
    assert all(type(value) is float and math.isfinite(value) for value in evidence.values())
    assert evidence["decision"] == 1.0 and verdict.decision == "promote"
    assert Verdict.from_evidence(evidence) == verdict
    assert Verdict.from_evidence({**evidence, "extra": 3.0}) == verdict
    with pytest.raises(ValueError, match="decision"):
        Verdict.from_evidence({**evidence, "decision": 2.0})
    with pytest.raises(ValueError, match="lacks"):
        Verdict.from_evidence({k: v for k, v in evidence.items() if k != "mcnemar_p"})


def test_empty_comparison_gives_finite_evidence() -> None:
    for comparison in (PairedComparison(), PairedLossComparison(loss_bound=2.0)):
        verdict = comparison.verdict()
        assert verdict.decision == "inconclusive"
        assert (verdict.n, verdict.e_value, verdict.p_value_sequential, verdict.mcnemar_p) == (
            0,
            1.0,
            1.0,
            1.0,
        )
        assert all(math.isfinite(value) for value in verdict.to_evidence().values())


def test_should_promote_guards() -> None:
    comparison = PairedComparison()
    comparison.update([False] * 300 + [True] * 700, [True] * 300 + [True] * 700)
    verdict = comparison.verdict(ALPHA, min_samples=100)
    assert verdict.decision == "promote"
    assert should_promote(verdict, min_samples=1_000)
    assert not should_promote(verdict, min_samples=1_001)
    assert not should_promote(verdict, min_samples=100, min_effect=0.31)
    assert should_promote(verdict, min_samples=100, max_p_value=1e-6)
    assert not should_promote(verdict, min_samples=100, max_p_value=1e-200)
    keep = PairedComparison()
    keep.update([True] * 300, [False] * 300)
    assert not should_promote(keep.verdict(ALPHA), min_samples=0)


def test_reset_forgets_outcomes_but_keeps_parameters() -> None:
    comparison = PairedComparison(concentration=2.0)
    comparison.update([False] * 50, [True] * 50)
    comparison.reset()
    assert (comparison.n, comparison.e_value, comparison.concentration) == (0, 1.0, 2.0)
