"""The evaluator's pure parts: windows, label decoding, per-variant scoring, additive
accumulators, replay idempotence, restorable paired comparisons, the report.

Expected values are worked out by hand (or in closed form) in each test.
"""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import numpy as np
import pytest

from connectors.redis_store import PredictionStore
from schemas.serde import AvroSerde, JsonSerde
from schemas.settings import ModelSettings, Settings
from streams.evaluation import quality
from streams.evaluation.evaluator import Evaluator, EvaluatorOptions, build_evaluator
from streams.evaluation.quality import (
    CLASSIFICATION,
    INVALID,
    REGRESSION,
    UNDECODABLE,
    LabelBatch,
    Prediction,
    QualityStats,
    VerdictPolicy,
    WindowSpec,
    advance_offsets,
    comparison_state,
    decode_labels,
    fresh_mask,
    hopping_starts,
    label_outcomes,
    new_comparison,
    paired_update,
    restore_comparison,
    score_variant,
    summarise_evaluations,
    tumbling_starts,
)
from streams.evaluation.verdict import (
    PairedComparison,
    PairedLossComparison,
    discordant_log_e_values,
)


def test_doctests() -> None:
    assert doctest.testmod(quality).failed == 0


# --------------------------------------------------------------------------- windows


def test_tumbling_window_bounds() -> None:
    ts = [0, 1, 59_999, 60_000, 119_999, 120_000, -1, -60_000, -60_001]
    assert tumbling_starts(ts, 60_000).tolist() == [
        0, 0, 0, 60_000, 60_000, 120_000, -60_000, -60_000, -120_000,
    ]  # fmt: skip


def test_hopping_windows_hold_the_timestamp_and_nothing_else() -> None:
    ts = np.array([0, 59_999, 60_000, 299_999, 1_234_567])
    starts = hopping_starts(ts, 300_000, 60_000)
    assert starts.shape == (5, 5)
    assert starts[2].tolist() == [60_000, 0, -60_000, -120_000, -180_000]
    # every listed window [s, s + size) holds its timestamp, and starts are step multiples
    assert ((starts <= ts[:, None]) & (ts[:, None] < starts + 300_000)).all()
    assert (starts % 60_000 == 0).all()
    # and no other step-aligned window does: the next one starts after ts, the one
    # before the oldest ends at or before ts
    assert (starts[:, 0] + 60_000 > ts).all()
    assert (starts[:, -1] - 60_000 + 300_000 <= ts).all()


def test_window_spec_validates_and_shapes() -> None:
    spec = WindowSpec(tumbling_s=60, hopping_s=120, hop_s=60, grace_s=5, retention_s=600)
    assert spec.starts("tumbling", [61_000]).tolist() == [[60_000]]
    assert spec.starts("hopping", [61_000]).tolist() == [[60_000, 0]]
    assert spec.size_ms("hopping") == 120_000 and spec.grace_ms == 5_000
    with pytest.raises(ValueError, match="multiple"):
        WindowSpec(hopping_s=100, hop_s=30)
    with pytest.raises(ValueError, match="tumbling_s"):
        WindowSpec(tumbling_s=0)
    with pytest.raises(ValueError, match="retention"):
        WindowSpec(grace_s=10, retention_s=5)


def test_cli_window_defaults_match_the_spec() -> None:
    from streams.cli.evaluate import _DEFAULT_WINDOWS

    spec = WindowSpec()
    expected = (spec.tumbling_s, spec.hopping_s, spec.hop_s, spec.grace_s, spec.retention_s)
    assert expected == _DEFAULT_WINDOWS


# --------------------------------------------------------------------------- labels


def _batch(
    truth: list[str | None],
    values: list[float | None] | None = None,
    *,
    partitions: list[int] | None = None,
    offsets: list[int] | None = None,
    labelled_at: list[int] | None = None,
) -> LabelBatch:
    n = len(truth)
    values = values or [None] * n
    kind = [
        CLASSIFICATION if t is not None else REGRESSION if v is not None else INVALID
        for t, v in zip(truth, values, strict=True)
    ]
    return LabelBatch(
        partitions=np.asarray(partitions or [0] * n, dtype=np.int64),
        offsets=np.asarray(offsets or list(range(n)), dtype=np.int64),
        event_ids=[f"e{i}" for i in range(n)],
        kind=np.asarray(kind, dtype=np.int8),
        truth=truth,
        values=np.asarray([np.nan if v is None else v for v in values], dtype=np.float64),
        labelled_at=np.asarray(labelled_at or [1000 * i for i in range(n)], dtype=np.int64),
    )


@pytest.mark.parametrize("serde", [AvroSerde("label"), JsonSerde("label")], ids=["avro", "json"])
def test_decode_labels_keeps_every_slot(serde: AvroSerde | JsonSerde) -> None:
    good = serde.encode({"event_id": "a", "label": "1", "value": None, "labelled_at": 5})
    value = serde.encode({"event_id": "b", "label": None, "value": 2.5, "labelled_at": 6})
    empty = serde.encode({"event_id": "c", "label": None, "value": None, "labelled_at": 7})
    batch, errors = decode_labels(
        [(0, 10, good), (1, 3, b"\x00garbage"), (1, 4, value), (2, 0, None), (0, 11, empty)],
        serde,
    )
    assert batch.kind.tolist() == [CLASSIFICATION, UNDECODABLE, REGRESSION, UNDECODABLE, INVALID]
    assert batch.event_ids == ["a", "", "b", "", "c"]
    assert batch.truth == ["1", None, None, None, None]
    assert batch.values[2] == 2.5 and np.isnan(batch.values[0])
    assert batch.labelled_at.tolist() == [5, 0, 6, 0, 7]
    assert batch.partitions.tolist() == [0, 1, 1, 2, 0]
    assert batch.offsets.tolist() == [10, 3, 4, 0, 11]
    assert len(errors) == 2 and errors[0].startswith("partition 1 offset 3")
    assert batch.valid.tolist() == [True, False, True, False, False]


# --------------------------------------------------------------------------- scoring


def test_binary_classifier_metrics_exact() -> None:
    # positive class "1"; the stored score is P("1")
    batch = _batch(["1", "0", "1", "0"])
    predictions = [
        {"champion": Prediction("3", "1", 0.9)},  # right, P(true) = 0.9
        {"champion": Prediction("3", "0", 0.2)},  # right, P(true) = 0.8
        {"champion": Prediction("3", "0", 0.4)},  # wrong, P(true) = 0.4
        {"champion": Prediction("3", "1", 0.6)},  # wrong, P(true) = 0.4
    ]
    outcomes = score_variant(batch, predictions, "champion", positive_label="1")
    assert outcomes.present.tolist() == [True] * 4
    assert outcomes.correct.tolist() == [True, True, False, False]
    stats = QualityStats()
    stats.add(outcomes, batch, np.arange(4))
    m = stats.metrics()
    assert m["n"] == 4 and m["correct"] == 2 and m["accuracy"] == 0.5 and m["error_rate"] == 0.5
    expected_log_loss = -(math.log(0.9) + math.log(0.8) + 2 * math.log(0.4)) / 4
    assert m["log_loss"] == pytest.approx(expected_log_loss, rel=1e-12)
    assert m["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.6**2 + 0.6**2) / 4, rel=1e-12)
    assert m["confusion/1/1"] == 1 and m["confusion/1/0"] == 1
    assert m["confusion/0/0"] == 1 and m["confusion/0/1"] == 1
    assert "mae" not in m
    assert (stats.first_ms, stats.last_ms) == (0, 3000)


def test_log_loss_clips_certain_mistakes() -> None:
    batch = _batch(["1"])
    outcomes = score_variant(batch, [{"c": Prediction("1", "0", 0.0)}], "c", positive_label="1")
    assert outcomes.log_loss[0] == pytest.approx(-math.log(quality.EPS))
    assert outcomes.brier[0] == 1.0


def test_multiclass_gets_accuracy_and_confusion_but_no_probability_metrics() -> None:
    batch = _batch(["a", "b", "c"])
    predictions = [
        {"v": Prediction("1", "a", 0.7)},
        {"v": Prediction("1", "c", 0.5)},
        {"v": Prediction("1", "c", 0.9)},
    ]
    stats = QualityStats()
    stats.add(score_variant(batch, predictions, "v", positive_label=None), batch, [0, 1, 2])
    m = stats.metrics()
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion/b/c"] == 1 and m["confusion/c/c"] == 1
    assert "log_loss" not in m and "brier" not in m and stats.prob_n == 0


def test_regressor_metrics_exact() -> None:
    batch = _batch([None, None, None], [1.0, 2.0, 3.0])
    predictions = [
        {"v": Prediction("7", None, 1.5)},
        {"v": Prediction("7", None, 2.0)},
        {"v": Prediction("7", None, 1.0)},
    ]
    outcomes = score_variant(batch, predictions, "v", positive_label="1")
    assert outcomes.error.tolist() == [0.5, 0.0, -2.0]
    stats = QualityStats()
    stats.add(outcomes, batch, [0, 1, 2])
    m = stats.metrics()
    assert m["mae"] == pytest.approx(2.5 / 3, rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 4.0) / 3), rel=1e-12)
    assert "accuracy" not in m and stats.reg_n == 3


def test_wrong_kind_and_missing_predictions_are_not_scored() -> None:
    batch = _batch(["1", None, "0", None], [None, 4.0, None, None])
    predictions = [
        {"champion": Prediction("1", None, 0.3)},  # class label, but a regressor's prediction
        {"champion": Prediction("1", "1", 0.9)},  # value, but a classifier's prediction
        {},  # nothing stored (or expired)
        {"champion": Prediction("1", "1", 0.9)},  # label record with neither label nor value
    ]
    champion = score_variant(batch, predictions, "champion", positive_label="1")
    challenger = score_variant(batch, predictions, "challenger", positive_label="1")
    assert champion.found.tolist() == [True, True, False, True]
    assert champion.present.tolist() == [False, False, False, False]
    assert label_outcomes(batch, [champion, challenger]) == [
        "invalid", "invalid", "missing", "invalid",
    ]  # fmt: skip


def test_label_outcomes() -> None:
    batch = _batch(["1", "1", "1"])
    predictions = [
        {"a": Prediction("1", "1", 0.9), "b": Prediction("2", "1", 0.8)},
        {"a": Prediction("1", "1", 0.9)},
        {},
    ]
    outcomes = [score_variant(batch, predictions, v, "1") for v in ("a", "b")]
    assert label_outcomes(batch, outcomes) == ["matched", "partial", "missing"]


# --------------------------------------------------------------------------- accumulators


def test_replayed_labels_are_absorbed_once() -> None:
    batch = _batch(["1", "0", "1", "0"], partitions=[0, 1, 0, 1], offsets=[10, 20, 11, 21])
    predictions = [{"v": Prediction("1", t, 0.5)} for t in ("1", "1", "1", "1")]
    outcomes = score_variant(batch, predictions, "v", "1")
    stats, seen = QualityStats(), dict[str, int]()
    for _ in range(3):  # the same batch delivered three times
        fresh = np.flatnonzero(fresh_mask(batch.partitions, batch.offsets, seen))
        stats.add(outcomes, batch, fresh)
        seen = advance_offsets(seen, batch.partitions[fresh], batch.offsets[fresh])
    assert seen == {"0": 11, "1": 21}
    assert (stats.n, stats.correct) == (4, 2)
    # a partial replay (only offsets 11 and 21 are new) adds exactly those
    part = fresh_mask(batch.partitions, batch.offsets, {"0": 10, "1": 20})
    assert part.tolist() == [False, False, True, True]


def test_stats_round_trip_through_json_and_merge_like_one_add() -> None:
    batch = _batch(["1", "0", "1", "0", "1"])
    predictions = [{"v": Prediction("1", p, s)} for p, s in
                   [("1", 0.9), ("1", 0.7), ("0", 0.1), ("0", 0.3), ("1", 0.55)]]  # fmt: skip
    outcomes = score_variant(batch, predictions, "v", "1")
    whole, first, second = QualityStats(), QualityStats(), QualityStats()
    whole.add(outcomes, batch, range(5))
    first.add(outcomes, batch, [0, 1])
    second.add(outcomes, batch, [2, 3, 4])
    restored = QualityStats.from_dict(json.loads(json.dumps(first.to_dict())))
    assert restored == first
    restored.merge(second)
    assert restored.n == whole.n and restored.correct == whole.correct
    assert restored.confusion == whole.confusion
    assert (restored.first_ms, restored.last_ms) == (whole.first_ms, whole.last_ms)
    assert restored.metrics() == pytest.approx(whole.metrics(), rel=1e-12)


# --------------------------------------------------------------------------- paired state


def test_paired_comparison_restored_mid_stream_continues_exactly() -> None:
    rng = np.random.default_rng(11)
    champion = rng.random(3000) < 0.80
    challenger = rng.random(3000) < 0.86
    straight = PairedComparison()
    straight.update(champion, challenger)
    resumed = new_comparison("accuracy", VerdictPolicy())
    for lo, hi in ((0, 700), (700, 1900), (1900, 3000)):
        resumed.update(champion[lo:hi], challenger[lo:hi])
        resumed = restore_comparison(json.loads(json.dumps(comparison_state(resumed))))
    assert resumed.verdict(min_samples=500) == straight.verdict(min_samples=500)
    # the path matters: the restored running maximum, not the final counts, gives the p-value
    final = float(np.exp(discordant_log_e_values([resumed.challenger_wins],
                                                 [resumed.champion_wins])[0][0]))  # fmt: skip
    assert resumed.e_value == pytest.approx(final, rel=1e-12)
    assert resumed.p_value_sequential <= 1 / resumed.e_value


def test_paired_loss_comparison_restored_mid_stream_continues_exactly() -> None:
    rng = np.random.default_rng(5)
    champion = np.abs(rng.normal(0, 1.0, 2000))
    challenger = np.abs(rng.normal(0, 0.8, 2000))
    straight = PairedLossComparison(loss_bound=5.0)
    resumed = new_comparison("loss", VerdictPolicy(loss_bound=5.0))
    assert isinstance(resumed, PairedLossComparison)
    # same batches (the loss test's float sums depend on batching), one side restored
    # from JSON between batches: the restored one must match to the last bit
    for lo, hi in ((0, 333), (333, 1500), (1500, 2000)):
        straight.update(champion[lo:hi], challenger[lo:hi])
        resumed.update(champion[lo:hi], challenger[lo:hi])
        resumed = restore_comparison(json.loads(json.dumps(comparison_state(resumed))))
    assert isinstance(resumed, PairedLossComparison)
    assert resumed.verdict() == straight.verdict()
    assert resumed.clipped == straight.clipped


def test_regressor_comparison_needs_a_loss_bound() -> None:
    with pytest.raises(ValueError, match="loss_bound"):
        new_comparison("loss", VerdictPolicy())


def test_paired_update_feeds_correctness_or_absolute_errors() -> None:
    batch = _batch(["1", "1", "0"])
    predictions = [
        {"a": Prediction("1", "1", 0.9), "b": Prediction("2", "0", 0.2)},
        {"a": Prediction("1", "0", 0.4), "b": Prediction("2", "1", 0.8)},
        {"a": Prediction("1", "0", 0.3), "b": Prediction("2", "0", 0.1)},
    ]
    a, b = (score_variant(batch, predictions, v, "1") for v in ("a", "b"))
    comparison = new_comparison("accuracy", VerdictPolicy())
    paired_update(comparison, a, b, batch, [0, 1, 2])
    assert (comparison.n, comparison.challenger_wins, comparison.champion_wins) == (3, 1, 1)


# --------------------------------------------------------------------------- report


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


# --------------------------------------------------------------------------- window lifecycle


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
        return _batch(
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
    batch = _batch(["1", "0", "1"])
    evaluator.apply(batch, [{}, {}, {}])
    records = evaluator.collect()
    assert [(r["variant"], r["model_version"], r["count"]) for r in records] == [
        ("champion", "", 0),
        ("challenger", "", 0),
    ]
    assert records[0]["metrics"]["labels/missing"] == 3
    assert records[0]["metrics"]["labels/missing/champion"] == 3
    assert evaluator.collect() == []


def test_broker_credentials_follow_the_security_protocol() -> None:
    import faust

    from schemas.errors import ConfigError
    from schemas.settings import KafkaSettings
    from streams.evaluation.evaluator import broker_credentials

    assert broker_credentials(KafkaSettings()) is None
    sasl = broker_credentials(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="eval",
            sasl_password="secret",  # type: ignore[arg-type]
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == (
        "eval", "secret", "SCRAM-SHA-256",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="sasl_username"):
        broker_credentials(KafkaSettings(security_protocol="SASL_SSL"))


def test_positive_class_is_the_last_class(tmp_path: Path) -> None:
    from streams.evaluation.evaluator import positive_class

    settings = Settings(home=tmp_path, models=ModelSettings(dir=tmp_path / "none"))
    assert positive_class(settings, ("neg", "pos")) == ("pos", "classification")
    assert positive_class(settings, ("a", "b", "c")) == (None, "classification")
    assert positive_class(settings, None) == (None, "unknown")
