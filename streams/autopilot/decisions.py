"""What the controller should do, as pure functions of what it saw.

**Promote** (:func:`promotion_decision`): the evaluator's always-valid verdict says
``promote`` for the current (champion, challenger) pair and every guard of
:mod:`streams.autopilot.guards` holds.

**Roll back** (:func:`rollback_reason`), only a champion the autopilot promoted
itself (its :class:`~streams.autopilot.state.Watch`), at the first of:

1. *the replaced champion is better*: after a promotion the replaced champion
   is the challenger, so the same paired test now runs the other way; its
   ``promote`` verdict (with ``min_paired_labels``) means the new champion is
   significantly worse than the one it replaced;
2. *degraded*: the sequential degradation test
   (:func:`streams.evaluation.sequential.degraded`) of the champion's errors
   since the promotion against its error rate in the shadow (plus
   ``rollback_margin``, which absorbs the baseline's own uncertainty), at level
   ``rollback_alpha``; it is anytime-valid, so checking it at every look does
   not inflate false rollbacks;
3. *below the floor*: its realised accuracy since the promotion (at least
   ``floor_min_labels`` labels), or its estimated (CBPE) accuracy in the last
   closed window, below ``quality_floor``.

A rollback is never held back by the cooldown (safety first); flapping is
prevented the other way: a version the autopilot rolled back is never promoted
by it again, and a promotion waits ``cooldown_s`` after any move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.settings import AutopilotSettings
from streams.autopilot.cbpe import CbpeWindow
from streams.autopilot.guards import GuardCheck, GuardInputs, all_hold, promotion_guards
from streams.autopilot.state import Watch
from streams.autopilot.views import Quality
from streams.evaluation.sequential import degradation_log_e_values
from streams.evaluation.verdict import Verdict, should_promote

#: The degradation test needs a baseline strictly inside (0, 1).
_MIN_RATE = 1e-4


def verdict_details(verdict: Verdict) -> dict[str, str]:
    """The verdict's evidence as audit details (text)."""
    return {
        "verdict": verdict.decision,
        "labels": str(verdict.n),
        "challenger_wins": str(verdict.challenger_wins),
        "champion_wins": str(verdict.champion_wins),
        "effect": f"{verdict.effect:.6f}",
        "ci_low": f"{verdict.ci_low:.6f}",
        "ci_high": f"{verdict.ci_high:.6f}",
        "e_value": f"{verdict.e_value:.6g}",
        "p_value_sequential": f"{verdict.p_value_sequential:.6g}",
        "alpha": f"{verdict.alpha:g}",
        "mcnemar_p": f"{verdict.mcnemar_p:.6g}",
    }


def promotion_decision(
    inputs: GuardInputs, policy: AutopilotSettings
) -> tuple[bool, list[GuardCheck]]:
    """Whether to promote now, and every guard with its value.

    The verdict's own guard (:func:`streams.evaluation.verdict.should_promote`) must agree
    with the evidence guards: both only ever refuse, so the guarantee holds."""
    checks = promotion_guards(inputs, policy)
    v = inputs.verdict
    agreed = v is not None and should_promote(
        v, policy.min_paired_labels, min_effect=policy.min_effect, max_p_value=policy.max_p_value
    )
    return agreed and all_hold(checks), checks


@dataclass(frozen=True, slots=True)
class RollbackInputs:
    watch: Watch
    #: The verdict of (champion, replaced champion as challenger), when that is the pair.
    reverse: Verdict | None
    #: The champion's cumulative quality at its version.
    quality: Quality | None
    #: The champion's newest closed CBPE window.
    estimated: CbpeWindow | None


def degradation_e_value(watch: Watch, errors: int, labels: int, margin: float) -> float:
    """E-value that the champion's error rate since the promotion exceeds its baseline."""
    p0 = min(max(watch.baseline_error_rate + margin, _MIN_RATE), 1 - _MIN_RATE)
    return math.exp(float(degradation_log_e_values(p0, errors, labels)))


def rollback_reason(
    inputs: RollbackInputs, policy: AutopilotSettings
) -> tuple[str | None, dict[str, str]]:
    """The first rollback rule that fires (see the module docstring), and its evidence."""
    watch = inputs.watch
    evidence: dict[str, str] = {
        "baseline_error_rate": f"{watch.baseline_error_rate:.6f}",
        "baseline_labels": str(watch.baseline_labels),
    }
    reverse = inputs.reverse
    if reverse is not None:
        evidence.update({f"reverse.{k}": v for k, v in verdict_details(reverse).items()})
        if reverse.decision == "promote" and reverse.n >= policy.min_paired_labels:
            return "the replaced champion is significantly better", evidence
    quality = inputs.quality
    errors = None if quality is None else quality.errors
    if quality is not None and errors is not None:
        labels = quality.count - watch.labels_at_promotion
        wrong = max(errors - watch.errors_at_promotion, 0)
        if labels > 0:
            e_value = degradation_e_value(watch, wrong, labels, policy.rollback_margin)
            evidence.update(
                labels_since_promotion=str(labels),
                errors_since_promotion=str(wrong),
                accuracy_since_promotion=f"{1 - wrong / labels:.6f}",
                degradation_e_value=f"{e_value:.6g}",
                degradation_threshold=f"{1 / policy.rollback_alpha:g}",
            )
            if e_value >= 1 / policy.rollback_alpha:
                return "degraded: error rate above its shadow baseline", evidence
            floor = policy.quality_floor
            enough = labels >= policy.floor_min_labels
            if floor is not None and enough and 1 - wrong / labels < floor:
                evidence["quality_floor"] = f"{floor:g}"
                return "realised accuracy below the quality floor", evidence
    estimated = inputs.estimated
    if estimated is not None:
        value = estimated.metrics["estimated_accuracy"]
        evidence.update(
            estimated_accuracy=f"{value:.6f}",
            estimated_window_start=str(estimated.start_ms),
        )
        floor = policy.quality_floor
        if floor is not None and value < floor:
            evidence["quality_floor"] = f"{floor:g}"
            return "estimated (CBPE) accuracy below the quality floor", evidence
    return None, evidence
