"""The tables' window lifecycle: close on the watermark, take late labels, expire; the
cumulative records and the verdict they carry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.redis_store import PredictionStore
from schemas.settings import ModelSettings, Settings
from streams.evaluation.app import build_evaluator
from streams.evaluation.evaluator import Evaluator
from streams.evaluation.labels import LabelBatch, Prediction
from streams.evaluation.options import EvaluatorOptions
from streams.evaluation.policy import VerdictPolicy
from streams.evaluation.windows import WindowSpec
from tests.unit.evaluation.batches import label_batch


@pytest.fixture
def evaluator(tmp_path: Path) -> Evaluator:
    """An evaluator whose Faust tables are swapped for dicts (their in-memory twins).

    The Faust app is built but never started: no broker is involved; ``apply`` and
    ``collect`` only read and write the tables.
    """
    settings = Settings(home=tmp_path, models=ModelSettings(dir=tmp_path / "no-models"))
    options = EvaluatorOptions(
        app_id="unit-evaluator",
        windows=WindowSpec(tumbling_s=60, hopping_s=120, hop_s=60, grace_s=10, retention_s=300),
        policy=VerdictPolicy(min_samples=0),
        classes=("0", "1"),
    )
    built = build_evaluator(settings, store=PredictionStore(settings.redis), options=options)
    ev = built.evaluator
    ev.quality, ev.comparisons, ev.labels, ev.progress = {}, {}, {}, {}
    ev.window_tables = {"tumbling": {}, "hopping": {}}
    return ev


class Feed:
    """Labels for the evaluator, each with its own offset, both variants right or wrong."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.offset = 0

    def batch(self, seconds: list[float], *, offsets: list[int] | None = None) -> LabelBatch:
        if offsets is None:
            offsets = list(range(self.offset, self.offset + len(seconds)))
            self.offset += len(seconds)
        return label_batch(
            ["1"] * len(seconds),
            offsets=offsets,
            labelled_at=[int(s * 1000) for s in seconds],
        )

    def apply(self, batch: LabelBatch) -> None:
        both = {"champion": Prediction("1", "1", 0.9), "challenger": Prediction("2", "0", 0.4)}
        self.evaluator.apply(batch, [dict(both) for _ in range(len(batch))])

    def send(self, seconds: list[float]) -> LabelBatch:
        batch = self.batch(seconds)
        self.apply(batch)
        return batch


def _by(records: list[dict], window: str, variant: str = "champion") -> dict[int, dict]:
    """Records of one window kind by start (the cumulative one under 0)."""
    return {
        0 if window == "cumulative" else r["window_start"]: r
        for r in records
        if r["window"] == window and r["variant"] == variant
    }


def test_windows_close_on_the_watermark_take_late_labels_then_expire(
    evaluator: Evaluator,
) -> None:
    feed = Feed(evaluator)
    feed.send([0, 20, 50])  # watermark 50 s: nothing closes (60 + 10 > 50)
    first = evaluator.collect()
    assert _by(first, "tumbling") == {} and _by(first, "hopping") == {}
    assert _by(first, "cumulative")[0]["count"] == 3

    feed.send([75])  # watermark 75 s: [0, 60) and hopping [-60, 60) close
    closed = evaluator.collect()
    assert {s: r["count"] for s, r in _by(closed, "tumbling").items()} == {0: 3}
    assert {s: r["count"] for s, r in _by(closed, "hopping").items()} == {-60_000: 3}
    assert _by(closed, "tumbling")[0]["metrics"]["late"] == 0
    assert evaluator.collect() == []  # nothing changed: nothing re-emitted

    late = feed.send([30])  # late for the closed [0, 60): counted there, re-emitted
    corrected = evaluator.collect()
    assert {s: r["count"] for s, r in _by(corrected, "tumbling").items()} == {0: 4}
    assert _by(corrected, "tumbling")[0]["metrics"]["late"] == 1
    assert _by(corrected, "hopping")[-60_000]["metrics"]["late"] == 1
    assert _by(corrected, "cumulative")[0]["count"] == 5

    feed.apply(late)  # the same label delivered again (a replay): absorbed once
    assert evaluator.collect() == []

    feed.send([400])  # watermark 400 s: windows ending <= 100 s are dropped
    evaluator.collect()

    def starts(kind: str) -> set[int]:
        return {v["start"] for v in evaluator.window_tables[kind].values()}

    assert starts("tumbling") == {60_000, 360_000}  # [0, 60) ended 340 s before: dropped
    assert starts("hopping") == {0, 60_000, 300_000, 360_000}

    feed.send([20])  # its windows are gone: counted as expired, and in the cumulative table
    records = evaluator.collect()
    assert "champion|1|0" not in evaluator.window_tables["tumbling"]
    counts = evaluator.labels["counts"]["counts"]
    assert counts["expired/tumbling"] == 1 and counts["expired/hopping"] == 1
    assert counts["received"] == 7 and counts["matched"] == 7
    assert _by(records, "cumulative")[0]["count"] == 7
    assert _by(records, "cumulative")[0]["metrics"]["labels/expired/tumbling"] == 1


def test_end_of_input_closes_every_window(evaluator: Evaluator) -> None:
    Feed(evaluator).send([0, 65, 130])
    records = evaluator.collect(end_of_input=True)
    assert {s: r["count"] for s, r in _by(records, "tumbling").items()} == {
        0: 1, 60_000: 1, 120_000: 1,
    }  # fmt: skip
    assert sum(r["count"] for r in _by(records, "hopping").values()) == 6
    assert all(v["closed"] for v in evaluator.window_tables["hopping"].values())


def test_cumulative_records_carry_the_verdict_of_the_current_pair(evaluator: Evaluator) -> None:
    Feed(evaluator).send([1, 2, 3, 4])  # champion right, challenger wrong, every time
    records = _by(evaluator.collect(), "cumulative", "challenger")[0]
    assert records["verdict"] in ("keep", "inconclusive")
    assert records["evidence"]["n"] == 4 and records["evidence"]["champion_wins"] == 4
    assert evaluator.progress["progress"]["pair"] == "accuracy|1|2"


def test_labels_without_any_prediction_still_reach_the_topic(evaluator: Evaluator) -> None:
    batch = label_batch(["1", "0", "1"])
    evaluator.apply(batch, [{}, {}, {}])
    records = evaluator.collect()
    assert [(r["variant"], r["model_version"], r["count"]) for r in records] == [
        ("champion", "", 0),
        ("challenger", "", 0),
    ]
    assert records[0]["metrics"]["labels/missing"] == 3
    assert records[0]["metrics"]["labels/missing/champion"] == 3
    assert evaluator.collect() == []
