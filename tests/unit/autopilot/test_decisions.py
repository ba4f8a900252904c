"""Rollback rules (replaced champion better, degraded, below the floor) and their evidence."""

from __future__ import annotations

import numpy as np

from schemas.settings import AutopilotSettings
from streams.autopilot.cbpe import CbpeWindow
from streams.autopilot.decisions import RollbackInputs, degradation_e_value, rollback_reason
from streams.autopilot.state import Watch
from streams.autopilot.views import Quality
from streams.evaluation.verdict import PairedComparison

WATCH = Watch(
    version="2", replaced="1", promoted_at_s=0.0, baseline_error_rate=0.05, baseline_labels=5000
)
POLICY = AutopilotSettings(min_paired_labels=500, rollback_margin=0.01, rollback_alpha=0.05)


def quality(count: int, accuracy: float) -> Quality:
    return Quality("champion", "2", count, {"accuracy": accuracy}, 0)


def test_nothing_fires_on_a_champion_as_good_as_its_baseline() -> None:
    reason, evidence = rollback_reason(
        RollbackInputs(WATCH, None, quality(2000, 0.95), None), POLICY
    )
    assert reason is None
    assert (
        evidence["errors_since_promotion"] == "100" and evidence["labels_since_promotion"] == "2000"
    )


def test_degraded_fires_once_the_errors_are_significantly_above_baseline_plus_margin() -> None:
    assert rollback_reason(RollbackInputs(WATCH, None, quality(300, 0.90), None), POLICY)[0] is None
    reason, evidence = rollback_reason(
        RollbackInputs(WATCH, None, quality(1000, 0.88), None), POLICY
    )
    assert reason == "degraded: error rate above its shadow baseline"
    assert float(evidence["degradation_e_value"]) >= 20
    # counts at the promotion are subtracted: the same totals with 900 labels before it
    earlier = Watch(**{**WATCH.__dict__, "labels_at_promotion": 900, "errors_at_promotion": 108})
    assert (
        rollback_reason(RollbackInputs(earlier, None, quality(1000, 0.88), None), POLICY)[0] is None
    )


def test_the_replaced_champion_significantly_better_rolls_back() -> None:
    rng = np.random.default_rng(3)
    comparison = PairedComparison()  # champion = the new one (worse), challenger = the old one
    comparison.update(rng.random(1500) < 0.80, rng.random(1500) < 0.90)
    reverse = comparison.verdict(min_samples=100)
    reason, evidence = rollback_reason(RollbackInputs(WATCH, reverse, None, None), POLICY)
    assert reason == "the replaced champion is significantly better"
    assert evidence["reverse.verdict"] == "promote"


def test_quality_floor_on_realised_and_on_estimated_accuracy() -> None:
    floor = AutopilotSettings(quality_floor=0.97, floor_min_labels=100, rollback_margin=0.5)
    assert (
        rollback_reason(RollbackInputs(WATCH, None, quality(200, 0.95), None), floor)[0]
        == "realised accuracy below the quality floor"
    )
    window = CbpeWindow("champion", "2", 0, 10_000, 500, {"estimated_accuracy": 0.96})
    assert (
        rollback_reason(RollbackInputs(WATCH, None, None, window), floor)[0]
        == "estimated (CBPE) accuracy below the quality floor"
    )
    fine = CbpeWindow("champion", "2", 0, 10_000, 500, {"estimated_accuracy": 0.99})
    assert rollback_reason(RollbackInputs(WATCH, None, None, fine), floor)[0] is None


def test_a_perfect_shadow_baseline_stays_a_valid_test() -> None:
    perfect = Watch(
        version="2", replaced="1", promoted_at_s=0.0, baseline_error_rate=0.0, baseline_labels=100
    )
    assert degradation_e_value(perfect, 0, 100, 0.0) < 1
    assert degradation_e_value(perfect, 10, 100, 0.0) > 1e6
