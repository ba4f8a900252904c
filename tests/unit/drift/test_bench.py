"""The quick drift bench: numbers reported, detection targets met, the README table."""

from __future__ import annotations

from streams.drift.bench import CHANGES, format_table, run_drift_bench


def test_quick_bench_reports_numbers_and_meets_the_targets() -> None:
    result = run_drift_bench(seed=7, quick=True)
    rows = {(r["detector"], r["change"]): r for r in result["rows"]}
    for change in CHANGES:
        assert rows["psi", change.name]["runs"] == 9
    for k in ("0.5", "1", "2"):
        row = rows["psi", f"mean +{k} sd"]
        assert row["within_two_windows"] == 1.0
        assert 0 < row["median_delay"] <= 2 * result["window_events"]
    assert rows["adwin", "SEA 8→7 abrupt"]["detection_rate"] == 1.0
    assert [fa["alarms"] for fa in result["false_alarms"] if fa["detector"] == "psi"] == [0]
    assert result["stationary_psi_max"] < 0.01
    assert all(result["targets"].values())
    table = format_table(result)
    assert "| psi | features | mean +0.5 sd | 9 | 100% | 100% |" in table
    assert "false alarms / 1M events" in table
