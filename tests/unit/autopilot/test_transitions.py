"""Alias moves: done whole, undone on a failure, left pending only when the undo fails too."""

from __future__ import annotations

import pytest

from connectors.model_registry import RegistryUnavailable
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from streams.autopilot.transitions import (
    Move,
    MoveDeferred,
    MoveFailed,
    StaleMove,
    apply_move,
    reconcile,
)
from tests.unit.autopilot.conftest import NAME, MemoryRegistry

BEFORE = {CHAMPION: "1", CHALLENGER: "2"}


def test_a_promotion_puts_the_replaced_champion_in_the_shadow() -> None:
    registry = MemoryRegistry(BEFORE)
    events = apply_move(registry, NAME, Move("promote", BEFORE), actor="autopilot", now_s=1.0)
    assert registry.aliases == {CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"}
    assert [e.action for e in events] == ["promoted", "alias_set"]


def test_a_rollback_restores_the_previous_champion_and_shadows_the_rolled_back_one() -> None:
    before = {CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"}
    registry = MemoryRegistry(before)
    apply_move(registry, NAME, Move("rollback", before), actor="autopilot", now_s=1.0)
    assert registry.aliases == {CHAMPION: "1", CHALLENGER: "2"}


def test_aliases_moved_since_the_decision_change_nothing() -> None:
    registry = MemoryRegistry({CHAMPION: "1", CHALLENGER: "3"})
    with pytest.raises(StaleMove):
        apply_move(registry, NAME, Move("promote", BEFORE), actor="autopilot", now_s=1.0)
    assert registry.aliases == {CHAMPION: "1", CHALLENGER: "3"} and registry.writes == 0


@pytest.mark.parametrize("writes_before_failure", [0, 1, 2])
def test_a_failure_half_way_is_undone(writes_before_failure: int) -> None:
    """One write fails (after 0, 1 or 2 succeeded); MLflow answers again for the undo."""
    registry = MemoryRegistry(BEFORE)
    registry.fail_writes_after = writes_before_failure
    failing_check = registry._check

    def check(write: bool = False) -> None:
        try:
            failing_check(write)
        finally:
            if registry.down:  # the one failure happened: answer from now on
                registry.down, registry.fail_writes_after = False, None

    registry._check = check  # type: ignore[method-assign]
    with pytest.raises(MoveFailed) as failed:
        apply_move(registry, NAME, Move("promote", BEFORE), actor="autopilot", now_s=1.0)
    assert registry.aliases == BEFORE
    undone = [e.details["alias"] for e in failed.value.events if e.action == "alias_set"]
    expected = {0: [], 1: [PREVIOUS_CHAMPION], 2: [CHAMPION, PREVIOUS_CHAMPION]}
    assert sorted(undone) == sorted(expected[writes_before_failure])


def test_mlflow_gone_for_good_half_way_leaves_a_pending_move_that_settles_later() -> None:
    registry = MemoryRegistry(BEFORE)
    registry.fail_writes_after = 1  # previous-champion written, then MLflow is gone
    with pytest.raises(MoveDeferred) as deferred:
        apply_move(registry, NAME, Move("promote", BEFORE), actor="autopilot", now_s=1.0)
    pending = deferred.value.pending
    assert pending.before == BEFORE and pending.after == {CHAMPION: "2", CHALLENGER: "1"}
    assert registry.aliases == {**BEFORE, PREVIOUS_CHAMPION: "1"}  # half done
    with pytest.raises(RegistryUnavailable):
        reconcile(registry, NAME, pending, actor="autopilot")
    registry.down, registry.fail_writes_after = False, None
    outcome, events = reconcile(registry, NAME, pending, actor="autopilot")
    assert outcome == "undone" and registry.aliases == BEFORE
    assert [e.details.get("alias") for e in events] == [PREVIOUS_CHAMPION]


def test_reconcile_sees_a_move_finished_or_never_started() -> None:
    registry = MemoryRegistry({CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"})
    pending = Move("promote", BEFORE).pending(0.0)
    assert reconcile(registry, NAME, pending, actor="a") == ("completed", [])
    assert reconcile(MemoryRegistry(BEFORE), NAME, pending, actor="a") == ("untouched", [])
