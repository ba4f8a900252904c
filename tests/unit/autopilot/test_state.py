"""The controller's saved state: a round trip, written atomically."""

from __future__ import annotations

from pathlib import Path

from streams.autopilot.state import AutopilotState, PendingMove, StateFile, Watch


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    file = StateFile(tmp_path, "m")
    assert file.load() == AutopilotState()
    state = AutopilotState(
        challenger="3",
        challenger_since_s=5.0,
        last_move_s=7.0,
        rolled_back=["2"],
        watch=Watch("3", "1", 7.0, 0.01, 900, 0, 0),
        pending=PendingMove("promote", {"champion": "1"}, {"champion": "3"}, {"a": "b"}, 6.0),
        answered_requests=["i"],
        last_retrain_s=4.0,
        retrained={"3": "1"},
        recommended=["k"],
    )
    file.save(state)
    assert file.load() == state
    assert [p.name for p in file.path.parent.iterdir()] == ["m.json"]  # no temporary left
