"""The promotion guards: each holds or refuses with its value and limit."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from schemas.settings import AutopilotSettings
from streams.autopilot.guards import (
    ChallengerCounts,
    GuardInputs,
    failing,
    guard_details,
    promotion_guards,
    sample_ratio_p_value,
)
from streams.evaluation.verdict import PairedComparison, Verdict

POLICY = AutopilotSettings(min_paired_labels=1000, min_shadow_s=60, cooldown_s=300)


def promote_verdict(n: int = 2000) -> Verdict:
    rng = np.random.default_rng(1)
    comparison = PairedComparison()
    comparison.update(rng.random(n) < 0.80, rng.random(n) < 0.90)
    verdict = comparison.verdict(min_samples=100)
    assert verdict.decision == "promote"
    return verdict


def inputs(**changes: object) -> GuardInputs:
    base = GuardInputs(
        verdict=promote_verdict(),
        now_s=1000.0,
        challenger_since_s=900.0,
        counts=ChallengerCounts(0.0, 0.0, ("2",)),
        challenger_version="2",
        open_incident=None,
        observed_split=None,
        ab_weights={},
        last_move_s=None,
        rolled_back=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_every_guard_holds_for_a_clean_promotion() -> None:
    checks = promotion_guards(inputs(), POLICY)
    assert failing(checks) == []
    assert [c.name for c in checks] == [
        "verdict",
        "paired_labels",
        "effect",
        "shadow_time",
        "errors",
        "drops",
        "served",
        "drift",
        "cooldown",
        "not_rolled_back",
    ]
    assert guard_details(checks)["guard.shadow_time"] == "ok 100s (limit >= 60s)"


def test_each_guard_refuses_on_its_own() -> None:
    cases = {
        "verdict": inputs(verdict=replace(promote_verdict(), decision="inconclusive")),
        "paired_labels": inputs(verdict=promote_verdict(600)),
        "shadow_time": inputs(challenger_since_s=990.0),
        "errors": inputs(counts=ChallengerCounts(3.0, 0.0, ("2",))),
        "drops": inputs(counts=ChallengerCounts(0.0, 1.0, ("2",))),
        "served": inputs(counts=ChallengerCounts(0.0, 0.0, ("2", "1"))),
        "drift": inputs(open_incident="m:2:psi:f1:0:1"),
        "cooldown": inputs(last_move_s=800.0),
        "not_rolled_back": inputs(rolled_back=True),
    }
    for guard, case in cases.items():
        assert failing(promotion_guards(case, POLICY)) == [guard], guard


def test_min_effect_and_a_stricter_p_value_refuse() -> None:
    strict = AutopilotSettings(min_paired_labels=1000, min_effect=0.5)
    assert "effect" in failing(promotion_guards(inputs(), strict))
    stricter = AutopilotSettings(min_paired_labels=1000, max_p_value=1e-300)
    assert "effect" in failing(promotion_guards(inputs(), stricter))


def test_unreadable_counts_refuse_and_none_means_not_checked() -> None:
    checks = promotion_guards(inputs(counts="http://p:9108/metrics unreachable"), POLICY)
    assert failing(checks) == ["errors"]
    assert [
        c.value for c in promotion_guards(inputs(counts=None), POLICY) if c.name == "errors"
    ] == ["not checked"]


def test_sample_ratio_mismatch_is_tested_on_sensors() -> None:
    weights = {"champion": 0.9, "challenger": 0.1}
    assert sample_ratio_p_value({"champion": 90, "challenger": 10}, weights) == 1.0
    p = sample_ratio_p_value({"champion": 70, "challenger": 30}, weights)
    assert math.isclose(p, 2.6168e-11, rel_tol=1e-3)  # chi2 = 400/90 + 400/10
    ab = inputs(observed_split={"champion": 70, "challenger": 30}, ab_weights=weights)
    assert failing(promotion_guards(ab, POLICY)) == ["srm"]
    assert sample_ratio_p_value({}, weights) == 1.0
