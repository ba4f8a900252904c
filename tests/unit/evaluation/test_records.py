"""The shadow report over evaluation records: the newest per key, the verdict parsed back."""

from __future__ import annotations

from streams.evaluation.records import summarise_evaluations
from streams.evaluation.verdict import PairedComparison


def _record(variant: str, version: str, window: str, emitted_at: int, **extra: object) -> dict:
    return {
        "variant": variant,
        "model_version": version,
        "window": window,
        "window_start": extra.pop("start", 0),
        "window_end": 0,
        "count": extra.pop("count", 1),
        "metrics": extra.pop("metrics", {}),
        "verdict": extra.pop("verdict", None),
        "evidence": extra.pop("evidence", {}),
        "emitted_at": emitted_at,
    }


def test_summary_takes_the_newest_records_and_parses_the_verdict() -> None:
    comparison = PairedComparison()
    comparison.update([True, False, True, False], [True, True, True, True])
    evidence = comparison.verdict(min_samples=0).to_evidence()
    records = [
        _record("champion", "1", "cumulative", 100, count=10, metrics={"labels/received": 12.0}),
        _record("champion", "1", "cumulative", 200, count=20, metrics={"labels/received": 25.0},
                verdict="inconclusive", evidence=evidence),
        _record("challenger", "2", "cumulative", 150, count=18, verdict="inconclusive",
                evidence=evidence),
        _record("challenger", "1", "cumulative", 50, count=3),  # an older challenger version
        _record("champion", "1", "tumbling", 120, start=0),
        _record("champion", "1", "tumbling", 130, start=60_000),
        _record("champion", "1", "tumbling", 140, start=60_000),
    ]  # fmt: skip
    report = summarise_evaluations(records)
    assert [(v["variant"], v["model_version"], v["count"]) for v in report["variants"]] == [
        ("champion", "1", 20),
        ("challenger", "2", 18),
    ]
    verdict = report["verdict"]
    assert verdict["n"] == 4 and verdict["challenger_wins"] == 2 and verdict["champion_wins"] == 0
    assert verdict["versions"] == {"champion": "1", "challenger": "2"}
    assert verdict["decision"] == "inconclusive" and verdict["emitted_at"] == 200
    assert report["labels"] == {"received": 25.0}
    assert report["windows"] == {"tumbling": 2}
    assert report["records"] == 7


def test_summary_of_nothing() -> None:
    assert summarise_evaluations([]) == {
        "records": 0, "variants": [], "verdict": None, "labels": {}, "windows": {},
    }  # fmt: skip
