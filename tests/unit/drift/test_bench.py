"""The quick drift bench: numbers reported, PSI's detection targets met, the README table.

The two-sample tests' detection rates are the bench's to report, not this test's to
assert: only that every row, false-alarm count and goal is there.
"""

from __future__ import annotations

from streams.drift.bench import CHANGES, format_table, run_drift_bench

PSI_AND_ADWIN_TARGETS = (
    "psi: every mean shift >= 0.25 sd detected within two windows",
    "psi: zero alerts on stationary data",
    "adwin (error stream): <= 1 alarm per million stationary events",
)


def test_quick_bench_reports_numbers_and_meets_the_targets() -> None:
    result = run_drift_bench(seed=7, quick=True)
    rows = {(r["detector"], r["change"]): r for r in result["rows"]}
    for change in CHANGES:
        for detector in ("psi", "monitor", "distribution", "adwin"):
            assert rows[detector, change.name]["runs"] == 9
    assert rows["monitor", "mean +1 sd"]["raised_by"]  # which tests raised the first alerts
    for k in ("0.5", "1", "2"):
        row = rows["psi", f"mean +{k} sd"]
        assert row["within_two_windows"] == 1.0
        assert 0 < row["median_delay"] <= 2 * result["window_events"]
    assert rows["distribution", "decoupled (joint only)"]["runs"] == len(result["used_features"])
    assert rows["adwin", "SEA 8→7 abrupt"]["detection_rate"] == 1.0
    assert [fa["alarms"] for fa in result["false_alarms"] if fa["detector"] == "psi"] == [0]
    budgets = {fa["stream"]: fa["budget_per_million"] for fa in result["false_alarms"]}
    assert budgets["features + score"] == 1e6 / result["settings"]["false_alarm_events"]
    assert budgets["features + score, fresh reference samples"] == 10
    assert result["stationary_psi_max"] < 0.01
    assert set(result["cost_us_per_event"]) == {
        "default", "psi only", "before (psi + adwin on the score)",
    }  # fmt: skip
    for target in PSI_AND_ADWIN_TARGETS:
        assert result["targets"][target]
    assert len(result["targets"]) == 9
    table = format_table(result)
    assert "| psi | features | mean +0.5 sd | 9 | 100% | 100% |" in table
    assert "false alarms / 1M events" in table
    assert "| ks + chi2 | features + score |" in table
