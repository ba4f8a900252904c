"""Label decoding and per-variant scoring against stored predictions.

Expected values are worked out by hand (or in closed form) in each test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.serde import AvroSerde, JsonSerde
from streams.evaluation import labels
from streams.evaluation.labels import (
    CLASSIFICATION,
    INVALID,
    REGRESSION,
    UNDECODABLE,
    Prediction,
    decode_labels,
    label_outcomes,
    score_variant,
)
from streams.evaluation.quality import QualityStats
from tests.unit.evaluation.batches import label_batch


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


def test_binary_classifier_metrics_exact() -> None:
    # positive class "1"; the stored score is P("1")
    batch = label_batch(["1", "0", "1", "0"])
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
    batch = label_batch(["1"])
    outcomes = score_variant(batch, [{"c": Prediction("1", "0", 0.0)}], "c", positive_label="1")
    assert outcomes.log_loss[0] == pytest.approx(-math.log(labels.EPS))
    assert outcomes.brier[0] == 1.0


def test_multiclass_gets_accuracy_and_confusion_but_no_probability_metrics() -> None:
    batch = label_batch(["a", "b", "c"])
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
    batch = label_batch([None, None, None], [1.0, 2.0, 3.0])
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
    batch = label_batch(["1", None, "0", None], [None, 4.0, None, None])
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
    batch = label_batch(["1", "1", "1"])
    predictions = [
        {"a": Prediction("1", "1", 0.9), "b": Prediction("2", "1", 0.8)},
        {"a": Prediction("1", "1", 0.9)},
        {},
    ]
    outcomes = [score_variant(batch, predictions, v, "1") for v in ("a", "b")]
    assert label_outcomes(batch, outcomes) == ["matched", "partial", "missing"]
