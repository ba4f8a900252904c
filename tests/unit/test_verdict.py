"""Statistical verdict: power, false-promotion control under continuous monitoring,
McNemar and intervals against exact values, degradation check, serialisation.

Simulations are seeded and vectorised. Rate assertions compare a count of runs
with a binomial bound: if a procedure's true error rate were exactly alpha, the
count over R runs would be Binomial(R, alpha), so its 99.9 % quantile is the
slack allowed (a correct procedure fails such a check for at most 1 seed in
1,000; a procedure that peeks at a fixed-horizon test lands far above it).
"""

from __future__ import annotations

import doctest
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from streams.evaluation import verdict as verdict_module
from streams.evaluation.verdict import (
    PairedComparison,
    PairedLossComparison,
    Verdict,
    degradation_log_e_values,
    degraded,
    discordant_log_e_values,
    mcnemar_p_value,
    paired_accuracy_interval,
    should_promote,
)

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


def test_running_maximum_keeps_a_crossing_inside_a_batch() -> None:
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


# ----------------------------------------------------------------- McNemar, interval


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
