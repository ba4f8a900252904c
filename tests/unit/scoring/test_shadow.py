"""ShadowScorer with real ONNX champions and challengers: counted agreement, exact records.

The challengers name their features in another order than the champions, so every
agreement count below also proves the champion matrix was re-aligned for them.
Most tests score synchronously (``worker=False``); the tests about falling behind
and failing challengers use the real background worker.
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from sklearn.linear_model import LinearRegression, LogisticRegression

from models.serving import ServingModel
from schemas.errors import SignatureMismatch
from schemas.serde import AvroSerde
from streams.ops.metrics import Metrics
from streams.scoring.pipeline import BatchOutput, raw_batch_from
from streams.scoring.shadow import ShadowScorer, score_psi
from tests.unit.scoring.conftest import (
    CHALLENGER_FEATURES,
    FEATURES,
    PROCESSED_AT,
    TO_CHALLENGER,
    MemoryStore,
    OutputFactory,
    classifier,
    metric,
    regressor,
    serving_model,
)

#: The shadow reads only the batch output; the raw batch is not looked at.
NO_RAW = raw_batch_from([])
SHADOW = AvroSerde("shadow_record")


class Emitted:
    """The ``emit`` callback: keeps what the shadow produced, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[bytes], list[bytes | None]]] = []

    def __call__(self, values: list[bytes], keys: list[bytes | None]) -> None:
        self.batches.append((values, keys))

    def records(self) -> list[dict[str, Any]]:
        return [SHADOW.decode(v) for values, _ in self.batches for v in values]


def make_scorer(
    challenger: ServingModel, metrics: Metrics, emit: Emitted, **options: Any
) -> ShadowScorer:
    """A scorer for a FEATURES champion; synchronous unless ``worker=True``."""
    options.setdefault("worker", False)
    return ShadowScorer(challenger, FEATURES, emit=emit, serde=SHADOW, metrics=metrics, **options)


@pytest.fixture(scope="module")
def regression_challenger(rows: np.ndarray) -> ServingModel:
    """The champion's line plus 0.1 * temp: differs from it by exactly 0.1 |temp| per row."""
    target = rows @ np.array([1.1, -1.0, 0.5]) + 0.25
    reordered = rows[:, TO_CHALLENGER]
    estimator = LinearRegression().fit(reordered.astype(np.float32), target)
    return regressor(estimator, reordered, CHALLENGER_FEATURES, name="lin-challenger", version="8")


def only_batches_of_four(rows: np.ndarray) -> ServingModel:
    """A real ONNX regressor that onnxruntime can run only on batches of exactly 4 rows.

    value = rpm + 2 temp - pressure, reshaped to a fixed ``[4]``: any other batch size
    makes onnxruntime raise inside ``predict``.
    """
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["column"]),
            helper.make_node("Reshape", ["column", "shape"], ["value"]),
        ],
        "four_rows",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [3, 1], [1.0, 2.0, -1.0]),
            helper.make_tensor("shape", TensorProto.INT64, [1], [4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    reordered = rows[:, TO_CHALLENGER]
    return serving_model(
        model.SerializeToString(), reordered, CHALLENGER_FEATURES, name="four", version="9"
    )


# -- agreement --------------------------------------------------------------------------------


def test_binary_classifiers_agree_when_their_labels_match(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    assert scorer.columns.tolist() == TO_CHALLENGER
    scorer(make_output(binary_champion, rows), NO_RAW)

    champion = binary_champion.model.predict(rows)
    challenger = binary_challenger.model.predict(rows[:, TO_CHALLENGER])
    assert champion.labels is not None and challenger.labels is not None
    assert int((champion.labels == challenger.labels).sum()) == 186
    assert (scorer.compared, scorer.agreed) == (200, 186)
    assert metric(metrics, "streamscore_shadow_agreement_ratio") == 0.93
    assert metric(metrics, "streamscore_shadow_events_total", outcome="scored") == 200
    records = emitted.records()
    assert [r["agree"] for r in records] == (champion.labels == challenger.labels).tolist()
    assert [r["challenger_score"] for r in records] == challenger.score.tolist()
    assert [r["challenger_label"] for r in records] == challenger.labels.tolist()


def test_three_class_agreement_on_string_class_names(
    three_class_champion: ServingModel,
    three_class_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emitted = Emitted()
    scorer = make_scorer(three_class_challenger, metrics, emitted)
    scorer(make_output(three_class_champion, rows[:100]), NO_RAW)
    scorer(make_output(three_class_champion, rows[100:], first=100), NO_RAW)

    records = emitted.records()
    challenger = three_class_challenger.model.predict(rows[:, TO_CHALLENGER])
    assert challenger.labels is not None
    assert (scorer.compared, scorer.agreed) == (200, 153)
    assert sum(r["agree"] for r in records) == 153
    assert {r["champion_label"] for r in records} == {"low", "mid", "high"}
    assert {r["challenger_label"] for r in records} == {"low", "mid", "high"}
    assert [r["challenger_label"] for r in records] == challenger.labels.tolist()
    assert [r["agree"] for r in records] == [
        r["champion_label"] == r["challenger_label"] for r in records
    ]
    # the score of a multi-class prediction is the probability of its predicted class
    assert [r["challenger_score"] for r in records] == challenger.score.tolist()
    assert metric(metrics, "streamscore_shadow_agreement_ratio") == 0.765


@pytest.mark.parametrize(
    ("tolerance", "agreed"),
    [(1e-6, 0), (0.05, 80), (0.5, 200)],
    ids=["default", "temp-within-0.5", "everything"],
)
def test_regressors_agree_within_the_tolerance(
    regression_champion: ServingModel,
    regression_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
    tolerance: float,
    agreed: int,
) -> None:
    # the two lines differ by 0.1 |temp|: within 0.05 exactly when |temp| <= 0.5
    assert int((np.abs(rows[:, 0]) <= 0.5).sum()) == 80
    assert np.abs(np.abs(0.1 * rows[:, 0]) - 0.05).min() > 1e-4  # no row on the edge
    emitted = Emitted()
    scorer = make_scorer(regression_challenger, metrics, emitted, tolerance=tolerance)
    scorer(make_output(regression_champion, rows), NO_RAW)
    assert (scorer.compared, scorer.agreed) == (200, agreed)
    records = emitted.records()
    assert sum(r["agree"] for r in records) == agreed
    assert {(r["champion_label"], r["challenger_label"]) for r in records} == {(None, None)}
    difference = [abs(r["challenger_score"] - r["champion_score"]) for r in records]
    np.testing.assert_allclose(difference, 0.1 * np.abs(rows[:, 0]), atol=1e-5)


def test_the_same_regressor_agrees_with_itself_at_the_default_tolerance(
    regression_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    scorer = make_scorer(regression_champion, metrics, Emitted())
    scorer(make_output(regression_champion, rows), NO_RAW)
    assert (scorer.compared, scorer.agreed) == (200, 200)
    # every difference is 0: all 200 in the first bucket of the difference histogram
    bucket = "streamscore_shadow_score_difference_bucket"
    assert metric(metrics, bucket, le="0.001") == 200
    assert metric(metrics, "streamscore_shadow_score_difference_sum") == 0.0


# -- what it emits --------------------------------------------------------------------------


def test_records_say_both_sides_for_each_event_with_the_input_keys(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    out = make_output(binary_champion, rows[:5], first=40)
    scorer(out, NO_RAW)

    ((values, keys),) = emitted.batches
    assert keys == out.keys == [b"sensor-5", b"sensor-6", b"sensor-0", b"sensor-1", b"sensor-2"]
    champion = binary_champion.model.predict(rows[:5])
    challenger = binary_challenger.model.predict(rows[:5, TO_CHALLENGER])
    assert champion.labels is not None and challenger.labels is not None
    assert [SHADOW.decode(v) for v in values] == [
        {
            "event_id": f"e-{40 + i}",
            "sensor_id": f"sensor-{(40 + i) % 7}",
            "champion_version": "1",
            "challenger_version": "2",
            "champion_label": champion.labels[i],
            "challenger_label": challenger.labels[i],
            "champion_score": champion.score[i],
            "challenger_score": challenger.score[i],
            "agree": champion.labels[i] == challenger.labels[i],
            "processed_at": PROCESSED_AT,
        }
        for i in range(5)
    ]


@pytest.mark.parametrize(
    ("champion", "challenger"),
    [
        ("binary_champion", "binary_challenger"),
        ("three_class_champion", "three_class_challenger"),
        ("regression_champion", "regression_challenger"),
        ("binary_champion", "regression_challenger"),  # labels on one side only
    ],
)
def test_shadow_bytes_are_those_of_the_per_record_dicts(
    request: pytest.FixtureRequest,
    champion: str,
    challenger: str,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    """Shadow records are encoded from columns: the bytes fastavro gives their dicts."""
    import io

    import fastavro

    from schemas.catalog import load_schema

    champ: ServingModel = request.getfixturevalue(champion)
    chall: ServingModel = request.getfixturevalue(challenger)
    emitted = Emitted()
    make_scorer(chall, metrics, emitted)(make_output(champ, rows[:60]), NO_RAW)
    ((values, _),) = emitted.batches
    ours = champ.model.predict(rows[:60])
    theirs = chall.model.predict(rows[:60, TO_CHALLENGER])
    parsed = fastavro.parse_schema(load_schema("shadow_record"))
    expected = []
    for i in range(60):
        # agreement is the scorer's verdict, read back by fastavro (not by our codec)
        agree = fastavro.schemaless_reader(io.BytesIO(values[i]), parsed, None)["agree"]
        record = {
            "event_id": f"e-{i}",
            "sensor_id": f"sensor-{i % 7}",
            "champion_version": champ.version,
            "challenger_version": chall.version,
            "champion_label": None if ours.labels is None else ours.labels[i],
            "challenger_label": None if theirs.labels is None else theirs.labels[i],
            "champion_score": float(ours.score[i]),
            "challenger_score": float(theirs.score[i]),
            "agree": agree,
            "processed_at": PROCESSED_AT,
        }
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        expected.append(buf.getvalue())
    assert values == expected


def test_a_batch_with_nothing_scored_is_not_shadowed(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    metrics: Metrics,
) -> None:
    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    scorer(BatchOutput(), NO_RAW)
    scorer(BatchOutput(served=[("champion", binary_champion)], scores=None), NO_RAW)
    assert emitted.batches == []
    assert scorer.compared == 0


def test_challenger_predictions_go_to_the_store_and_a_store_outage_is_a_counted_gap(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store, emitted = MemoryStore(), Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted, store=store)
    scorer(make_output(binary_champion, rows[:3]), NO_RAW)
    challenger = binary_challenger.model.predict(rows[:3, TO_CHALLENGER])
    assert challenger.labels is not None
    assert store.calls == [
        (
            "challenger",
            "2",
            ["e-0", "e-1", "e-2"],
            challenger.labels.tolist(),
            challenger.score.tolist(),
        )
    ]
    store.down = True
    scorer(make_output(binary_champion, rows[3:10], first=3), NO_RAW)
    assert store.refused == 1
    assert metric(metrics, "streamscore_prediction_store_gap_events_total") == 7
    # the shadow records still went out, and the events still count as scored
    assert len(emitted.records()) == 10
    assert metric(metrics, "streamscore_shadow_events_total", outcome="scored") == 10


# -- sampling -------------------------------------------------------------------------------


def _kept(records: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in records]


def test_sampling_keeps_the_same_events_whatever_the_batches(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    whole, split = Emitted(), Emitted()
    make_scorer(binary_challenger, metrics, whole, sample_fraction=0.5)(
        make_output(binary_champion, rows), NO_RAW
    )
    replay = make_scorer(binary_challenger, Metrics(), split, sample_fraction=0.5)
    for start in range(0, 200, 30):
        replay(make_output(binary_champion, rows[start : start + 30], first=start), NO_RAW)

    kept = _kept(whole.records())
    assert len(kept) == 105
    assert kept == _kept(split.records())
    assert kept[:6] == ["e-1", "e-5", "e-8", "e-9", "e-10", "e-13"]
    # the sample is a fixed function of the event id (a 32-bit blake2b cut), nothing else
    cut = 2**31
    assert kept == [
        f"e-{n}"
        for n in range(200)
        if int.from_bytes(hashlib.blake2b(f"e-{n}".encode(), digest_size=4).digest(), "big") < cut
    ]
    # the kept rows are compared with their own champion scores, keys and sensors
    champion = binary_champion.model.predict(rows)
    rows_kept = [int(e.split("-")[1]) for e in kept]
    records = whole.records()
    assert [r["champion_score"] for r in records] == champion.score[rows_kept].tolist()
    assert [r["sensor_id"] for r in records] == [f"sensor-{n % 7}" for n in rows_kept]
    assert [k for _, keys in whole.batches for k in keys] == [
        f"sensor-{n % 7}".encode() for n in rows_kept
    ]
    assert metric(metrics, "streamscore_shadow_events_total", outcome="scored") == 105


def test_a_zero_sample_shadows_nothing(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted, sample_fraction=0.0)
    scorer(make_output(binary_champion, rows), NO_RAW)
    assert emitted.batches == []
    assert scorer.report()["shadow"]["compared"] == 0


# -- the score PSI window -------------------------------------------------------------------


def psi_by_hand(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI over ten equal-width probability bins, floored at 1e-4 (written out here)."""
    edges = np.linspace(0.0, 1.0, 11)
    ref = np.maximum(np.histogram(reference, edges)[0] / reference.size, 1e-4)
    cur = np.maximum(np.histogram(current, edges)[0] / current.size, 1e-4)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def test_score_psi_by_hand() -> None:
    reference = np.array([0.05] * 5 + [0.95] * 5)
    current = np.array([0.05] * 10)
    expected = 0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert score_psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert score_psi(reference, reference) == 0.0
    assert score_psi(np.array([]), current) == score_psi(reference, np.array([])) == 0.0
    # outside [0, 1] (regressors) the bins are pooled quantiles: a shift still shows
    values = np.linspace(-5.0, 5.0, 101)
    assert score_psi(values, values) == 0.0
    assert score_psi(values, values + 3.0) > 1.0


def test_score_psi_is_computed_once_per_full_window_then_starts_again(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    scorer = make_scorer(binary_challenger, metrics, Emitted(), window=120)
    champion = binary_champion.model.predict(rows).score
    challenger = binary_challenger.model.predict(rows[:, TO_CHALLENGER]).score
    gauge = "streamscore_shadow_score_psi"

    for start in (0, 40):
        scorer(make_output(binary_champion, rows[start : start + 40], first=start), NO_RAW)
    assert scorer.last_psi is None
    assert metric(metrics, gauge) == 0.0

    scorer(make_output(binary_champion, rows[80:120], first=80), NO_RAW)  # 120: the window is full
    first = psi_by_hand(champion[:120], challenger[:120])
    assert first == pytest.approx(2.2038, abs=1e-4)
    assert scorer.last_psi == pytest.approx(first, rel=1e-12)
    assert metric(metrics, gauge) == scorer.last_psi

    for start in (120, 160):  # 80 more since the window restarted: no new value
        scorer(make_output(binary_champion, rows[start : start + 40], first=start), NO_RAW)
    assert scorer.last_psi == pytest.approx(first, rel=1e-12)

    scorer(make_output(binary_champion, rows[:40], first=200), NO_RAW)  # 120 again
    second = psi_by_hand(
        np.concatenate([champion[120:], champion[:40]]),
        np.concatenate([challenger[120:], challenger[:40]]),
    )
    assert scorer.last_psi == pytest.approx(second, rel=1e-12)
    assert second != pytest.approx(first)
    assert metric(metrics, gauge) == scorer.last_psi
    assert scorer.report()["shadow"]["score_psi"] == scorer.last_psi


# -- the worker: falling behind, failing ------------------------------------------------------


class BlockingEmit(Emitted):
    """Holds the worker inside ``emit`` until released, so the queue fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, values: list[bytes], keys: list[bytes | None]) -> None:
        self.entered.set()
        assert self.release.wait(10), "the test never released the worker"
        super().__call__(values, keys)


def test_batches_are_dropped_and_counted_when_the_worker_is_behind(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emit = BlockingEmit()
    scorer = make_scorer(binary_challenger, metrics, emit, worker=True, max_pending=1)
    batches = [
        make_output(binary_champion, rows[i * 10 : i * 10 + 10], first=i * 10) for i in range(4)
    ]
    scorer(batches[0], NO_RAW)
    assert emit.entered.wait(10)  # the worker holds batch 0
    for out in batches[1:]:
        scorer(out, NO_RAW)  # batch 1 waits in the queue, batches 2 and 3 do not fit
    emit.release.set()
    scorer.close()

    assert metric(metrics, "streamscore_shadow_dropped_batches_total") == 2
    assert metric(metrics, "streamscore_shadow_events_total", outcome="dropped") == 20
    assert metric(metrics, "streamscore_shadow_events_total", outcome="scored") == 20
    assert _kept(emit.records()) == [f"e-{n}" for n in range(20)]
    report = scorer.report()["shadow"]
    assert (report["compared"], report["dropped_batches"], report["errors"]) == (20, 2, 0)


def test_a_queued_batch_keeps_the_challenger_and_columns_it_was_submitted_with(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    emit = BlockingEmit()
    scorer = make_scorer(binary_challenger, metrics, emit, worker=True, max_pending=2)
    scorer(make_output(binary_champion, rows[:3]), NO_RAW)
    assert emit.entered.wait(10)
    scorer(make_output(binary_champion, rows[3:6], first=3), NO_RAW)  # queued
    scorer.replace_challenger(binary_champion, FEATURES)  # swapped while batch 1 waits
    scorer(make_output(binary_champion, rows[6:9], first=6), NO_RAW)
    emit.release.set()
    scorer.close()
    records = emit.records()
    assert [r["challenger_version"] for r in records] == ["2"] * 6 + ["1"] * 3
    queued = binary_challenger.model.predict(rows[3:6, TO_CHALLENGER]).score.tolist()
    assert [r["challenger_score"] for r in records[3:6]] == queued
    assert [r["agree"] for r in records[6:]] == [True] * 3  # the champion against itself


def test_a_challenger_that_raises_is_counted_and_never_reaches_the_caller(
    regression_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    challenger = only_batches_of_four(rows)
    emitted = Emitted()
    scorer = make_scorer(challenger, metrics, emitted, worker=True, tolerance=100.0)
    scorer(make_output(regression_champion, rows[:4]), NO_RAW)
    scorer(make_output(regression_champion, rows[4:10], first=4), NO_RAW)  # 6 rows: raises
    scorer(make_output(regression_champion, rows[10:14], first=10), NO_RAW)
    scorer.close()

    assert metric(metrics, "streamscore_shadow_errors_total") == 1
    assert metric(metrics, "streamscore_shadow_events_total", outcome="error") == 6
    assert metric(metrics, "streamscore_shadow_events_total", outcome="scored") == 8
    assert scorer.worker is not None
    assert (scorer.worker.processed, scorer.worker.errors) == (2, 1)
    assert scorer.worker.last_error is not None and "Reshape" in scorer.worker.last_error
    expected = (rows[[*range(4), *range(10, 14)]] @ np.array([2.0, -1.0, 1.0])).tolist()
    records = emitted.records()
    assert _kept(records) == ["e-0", "e-1", "e-2", "e-3", "e-10", "e-11", "e-12", "e-13"]
    np.testing.assert_allclose([r["challenger_score"] for r in records], expected, rtol=1e-6)
    report = scorer.report()["shadow"]
    assert (report["compared"], report["errors"], report["dropped_batches"]) == (8, 1, 0)


# -- swapping models ------------------------------------------------------------------------


def test_a_champion_with_another_feature_order_re_aligns_the_challenger(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    order = [1, 2, 0]  # pressure, rpm, temp
    names = [FEATURES[i] for i in order]
    y = (rows @ np.array([1.0, -1.0, 0.5]) > 0).astype(int)
    estimator = LogisticRegression().fit(rows[:, order].astype(np.float32), y)
    new_champion = classifier(estimator, rows[:, order], names, name="lr-champion", version="3")

    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    scorer(make_output(binary_champion, rows[:100]), NO_RAW)
    scorer(make_output(new_champion, rows[100:, order], first=100), NO_RAW)

    assert scorer.champion_features == ["pressure", "rpm", "temp"]
    assert scorer.columns.tolist() == [1, 2, 0]
    challenger = binary_challenger.model.predict(rows[:, TO_CHALLENGER])
    records = emitted.records()
    assert [r["challenger_score"] for r in records] == challenger.score.tolist()
    assert [r["champion_version"] for r in records] == ["1"] * 100 + ["3"] * 100


def test_replace_challenger_checks_the_features_first(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    y = (rows[:, 0] > 0).astype(int)
    wide_rows = np.column_stack([rows, rows[:, 0]])
    estimator = LogisticRegression().fit(wide_rows.astype(np.float32), y)
    needs_humidity = classifier(
        estimator, wide_rows, [*FEATURES, "humidity"], name="humid", version="6"
    )

    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    with pytest.raises(SignatureMismatch, match=r"lacks: \['humidity'\]"):
        scorer.replace_challenger(needs_humidity, FEATURES)
    assert (scorer.challenger, scorer.columns.tolist()) == (binary_challenger, TO_CHALLENGER)

    scorer.replace_challenger(binary_champion, FEATURES)
    assert scorer.columns.tolist() == [0, 1, 2]
    scorer(make_output(binary_champion, rows), NO_RAW)
    assert (scorer.compared, scorer.agreed) == (200, 200)
    assert scorer.report()["shadow"]["challenger"] == "lr-champion v1"


def test_a_new_champion_without_a_feature_the_challenger_needs_never_fails_the_batch(
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    y = (rows[:, 0] > rows[:, 1]).astype(int)
    estimator = LogisticRegression().fit(rows[:, :2].astype(np.float32), y)
    narrow = classifier(estimator, rows[:, :2], ["temp", "pressure"], name="narrow", version="9")
    emitted = Emitted()
    scorer = make_scorer(binary_challenger, metrics, emitted)
    scorer(make_output(narrow, rows[:10, :2]), NO_RAW)  # the challenger needs rpm
    scorer(make_output(narrow, rows[10:20, :2]), NO_RAW)
    assert emitted.batches == []
    assert scorer.misaligned is not None and "rpm" in scorer.misaligned
    assert metric(metrics, "streamscore_shadow_errors_total") == 1  # once, not per batch
    scorer.replace_challenger(binary_challenger, FEATURES)  # a challenger that fits again
    assert scorer.misaligned is None


# -- the report -----------------------------------------------------------------------------


def test_report_before_and_after_scoring(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    scorer = make_scorer(binary_challenger, metrics, Emitted(), worker=True)
    assert scorer.report() == {
        "shadow": {
            "challenger": "lr-challenger v2",
            "compared": 0,
            "agreement": None,
            "score_psi": None,
            "dropped_batches": 0,
            "errors": 0,
        }
    }
    scorer(make_output(binary_champion, rows[:100]), NO_RAW)
    scorer.close()
    assert scorer.report() == {
        "shadow": {
            "challenger": "lr-challenger v2",
            "compared": 100,
            "agreement": 0.96,
            "score_psi": None,
            "dropped_batches": 0,
            "errors": 0,
        }
    }
    assert scorer.agreed == 96
