"""score_partition against the stream's own ScoringPipeline on the same rows.

The same events go to both: as Avro (or JSON) records through ScoringPipeline, and
as table rows (Arrow-backed, as Dask reads Parquet; or all text, as it reads CSV)
through score_partition. Predictions must be equal field for field, and every
rejected row must carry the dead letter's stage, reason and message.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from models.datasets import shuttle
from models.serving import ServingModel
from schemas.serde import AvroSerde, JsonSerde, Serde
from streams.batch.partition import (
    PREDICTION_SCHEMA,
    REJECTED_SCHEMA,
    missing_columns,
    score_partition,
)
from streams.scoring.pipeline import BatchOutput, ScoringPipeline, raw_batch_from

T0 = 1_704_067_200_000
NOW = T0 + 60_000
PREDICTIONS = AvroSerde("prediction")


@pytest.fixture(scope="module")
def champion(models_dir: Path) -> ServingModel:
    return ServingModel.from_bundle(models_dir / "champion")


def events(count: int, seed: int = 3) -> list[dict[str, Any]]:
    """``count`` SensorEvents drawn from the Shuttle rows, ids ``e-<n>``, time T0 + n."""
    data = shuttle()
    rows = data.X[np.random.default_rng(seed).integers(0, len(data.X), size=count)]
    return [
        {
            "event_id": f"e-{n}",
            "sensor_id": f"sensor-{n % 7}",
            "event_time": T0 + n,
            "features": dict(zip(data.feature_names, row, strict=True)),
        }
        for n, row in enumerate(rows.tolist())
    ]


def arrow_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Table rows as ``dd.read_parquet(..., dtype_backend="pyarrow")`` hands them over."""
    flat = [{**{k: v for k, v in e.items() if k != "features"}, **e["features"]} for e in rows]
    return pa.Table.from_pylist(flat).to_pandas(types_mapper=pd.ArrowDtype)


def csv_frame(text: str) -> pd.DataFrame:
    """CSV text read the way the batch driver reads it: every cell text, only "" null."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])


def stream(values: list[bytes | None], serde: Serde, model: ServingModel) -> BatchOutput:
    pipeline = ScoringPipeline(
        event_serde=serde,
        prediction_serde=PREDICTIONS,
        audit_serde=AvroSerde("audit_event"),
        max_message_bytes=65_536,
        actor="test",
    )
    return pipeline.run(raw_batch_from(values), model, now_ms=NOW)


def as_records(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow prediction rows as the stream's decoded Prediction records."""
    records = table.to_pylist()
    for r in records:
        if r["probabilities"] is not None:
            r["probabilities"] = dict(r["probabilities"])
    return records


def verdicts(out: BatchOutput) -> list[tuple[str, str, str, str]]:
    return [
        (d.rejection.stage, d.rejection.reason, d.rejection.message, str(d.rejection.index))
        for d in out.dead_letters
    ]


# -- predictions ----------------------------------------------------------------------------------


def test_predictions_equal_the_streams_field_for_field(champion: ServingModel) -> None:
    sample = events(600)
    batch = score_partition(arrow_frame(sample), champion, processed_at=NOW)
    streamed = stream(
        AvroSerde("sensor_event").encode_many(sample), AvroSerde("sensor_event"), champion
    )

    assert batch.predictions.schema == PREDICTION_SCHEMA
    assert batch.rejected.num_rows == 0 and not streamed.dead_letters
    expected = [PREDICTIONS.decode(v) for v in streamed.prediction_values]
    assert as_records(batch.predictions) == expected
    assert len(expected) == 600
    assert {r["predicted_label"] for r in expected} == {"0", "1"}  # both classes are compared


def test_csv_text_scores_exactly_like_numbers(champion: ServingModel) -> None:
    sample = events(200, seed=9)
    as_csv = arrow_frame(sample).to_csv(index=False)
    from_text = score_partition(csv_frame(as_csv), champion, processed_at=NOW)
    from_numbers = score_partition(arrow_frame(sample), champion, processed_at=NOW)
    assert from_text.predictions.equals(from_numbers.predictions)
    assert from_text.predictions.num_rows == 200


def test_a_regressor_has_no_label_and_no_probabilities() -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    from models.bundle import BundleMeta
    from models.profile import build_profile

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(100, 2)).astype(np.float32).astype(np.float64)
    estimator = LinearRegression().fit(rows, rows @ np.array([2.0, -1.0]))
    onx = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, 2]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    meta = BundleMeta(
        name="lin",
        version="3",
        task="regression",
        feature_names=["a", "b"],
        profile=build_profile(rows, ["a", "b"]),
    )
    model = ServingModel.build(onx.SerializeToString(), meta)
    sample = [
        {"event_id": f"r-{i}", "sensor_id": "s", "event_time": T0, "features": {"a": a, "b": b}}
        for i, (a, b) in enumerate(rows[:5].tolist())
    ]
    batch = score_partition(arrow_frame(sample), model, processed_at=NOW)
    streamed = stream(
        JsonSerde("sensor_event").encode_many(sample), JsonSerde("sensor_event"), model
    )
    expected = [PREDICTIONS.decode(v) for v in streamed.prediction_values]
    assert as_records(batch.predictions) == expected
    assert all(r["predicted_label"] is None and r["probabilities"] is None for r in expected)


# -- rejected rows --------------------------------------------------------------------------------


def test_rejected_rows_carry_the_dead_letters_stage_reason_and_message(
    champion: ServingModel,
) -> None:
    """Each spoilt row against the JSON event a producer would have sent for it."""
    good = events(7, seed=5)
    f1_high = float(champion.upper[0]) + 1000.0

    def changed(n: int, features: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        return {**good[n], **fields, "features": {**good[n]["features"], **(features or {})}}

    table_rows = [
        changed(0, {"f1": None}),  # a null cell ...
        changed(1, {"f2": math.nan}),
        changed(2, {"f3": math.inf}),
        changed(3, {"f1": f1_high}),
        changed(4, event_id=""),
        changed(5, sensor_id=None),
        changed(6, event_time=None),
    ]
    sent = [dict(row, features=dict(row["features"])) for row in table_rows]
    del sent[0]["features"]["f1"]  # ... is a feature the event does not carry
    batch = score_partition(arrow_frame(table_rows), champion, processed_at=NOW, chunk=4)
    json_serde = JsonSerde("sensor_event")
    streamed = stream([json.dumps(e).encode() for e in sent], json_serde, champion)

    assert batch.predictions.num_rows == 0 and streamed.scored == 0
    assert batch.rejected.schema == REJECTED_SCHEMA
    rejected = batch.rejected.to_pylist()
    assert [(r["stage"], r["reason"], r["message"], str(r["row"])) for r in rejected] == verdicts(
        streamed
    )
    assert [r["reason"] for r in rejected] == [
        "MissingFeature",
        "NonFiniteValue",
        "NonFiniteValue",
        "OutOfRange",
        "InvalidField",
        "InvalidField",
        "InvalidField",
    ]
    assert {r["chunk"] for r in rejected} == {4}
    assert [r["event_id"] for r in rejected] == ["e-0", "e-1", "e-2", "e-3", "", "e-5", "e-6"]
    first = json.loads(rejected[0]["record"])  # the row itself, as strict JSON
    assert first["f1"] is None and first["f2"] == good[0]["features"]["f2"]
    assert json.loads(rejected[1]["record"])["f2"] == "nan"


def test_csv_cells_are_judged_like_json_values(champion: ServingModel) -> None:
    header = "event_id,sensor_id,event_time," + ",".join(champion.feature_names)
    base = [float(v) for v in events(1, seed=2)[0]["features"].values()]

    def line(event_id: str, event_time: str, **cells: str) -> str:
        values = [cells.get(n, repr(v)) for n, v in zip(champion.feature_names, base, strict=True)]
        return ",".join([event_id, "sensor-1", event_time, *values])

    text = "\n".join(
        [
            header,
            line("ok-int", str(T0)),
            line("ok-iso", "2024-01-01T00:00:01Z"),
            line("ok-naive-iso", "2024-01-01T00:00:02"),
            line("bad-word", str(T0), f4="abc"),
            line("bad-bool", str(T0), f5="true"),
            line("bad-empty", str(T0), f6=""),
            line("bad-nan", str(T0), f7="nan"),
            line("bad-time", "yesterday"),
            line("bad-time-float", "1.5"),
        ]
    )
    batch = score_partition(csv_frame(text), champion, processed_at=NOW)
    predictions = {r["event_id"]: r for r in batch.predictions.to_pylist()}
    assert predictions["ok-int"]["event_time"] == T0
    assert predictions["ok-iso"]["event_time"] == T0 + 1000
    assert predictions["ok-naive-iso"]["event_time"] == T0 + 2000  # no zone: UTC
    rejected = {
        r["event_id"]: (r["stage"], r["reason"], r["message"]) for r in batch.rejected.to_pylist()
    }
    assert rejected == {
        "bad-word": ("validate", "NonNumericFeature", "feature f4 is not a number: 'abc'"),
        "bad-bool": ("validate", "NonNumericFeature", "feature f5 is not a number: 'true'"),
        "bad-empty": ("validate", "MissingFeature", "missing feature(s): f6"),
        "bad-nan": ("validate", "NonFiniteValue", "feature f7 is nan"),
        "bad-time": ("decode", "Undecodable", "event_time is not ISO-8601: 'yesterday'"),
        "bad-time-float": ("decode", "Undecodable", "event_time is not ISO-8601: '1.5'"),
    }
    # The JSON stream says the same of the same values.
    feats = dict(zip(champion.feature_names, base, strict=True))
    sent = [
        {
            "event_id": "bad-word",
            "sensor_id": "s",
            "event_time": T0,
            "features": {**feats, "f4": "abc"},
        },
        {"event_id": "bad-time", "sensor_id": "s", "event_time": "yesterday", "features": feats},
    ]
    streamed = stream(
        JsonSerde("sensor_event").encode_many(sent), JsonSerde("sensor_event"), champion
    )
    assert [v[:3] for v in verdicts(streamed)] == [rejected["bad-word"], rejected["bad-time"]]


def test_typed_columns_of_the_wrong_kind_are_rejected_row_by_row(champion: ServingModel) -> None:
    sample = events(3, seed=4)
    frame = arrow_frame(sample)
    frame["event_id"] = pd.array([1, 2, 3], dtype=pd.ArrowDtype(pa.int64()))
    frame["f1"] = pd.array([True, False, True], dtype=pd.ArrowDtype(pa.bool_()))
    batch = score_partition(frame, champion, processed_at=NOW)
    assert batch.predictions.num_rows == 0
    assert {(r["reason"], r["message"]) for r in batch.rejected.to_pylist()} == {
        ("InvalidField", "event_id must be a non-empty string")
    }
    frame["event_id"] = pd.array(["a", "b", "c"], dtype=pd.ArrowDtype(pa.string()))
    batch = score_partition(frame, champion, processed_at=NOW)
    assert [(r["reason"], r["message"]) for r in batch.rejected.to_pylist()] == [
        ("NonNumericFeature", "feature f1 is not a number: True"),
        ("NonNumericFeature", "feature f1 is not a number: False"),
        ("NonNumericFeature", "feature f1 is not a number: True"),
    ]


def test_timestamp_event_times_are_epoch_milliseconds(champion: ServingModel) -> None:
    sample = events(2, seed=6)
    frame = arrow_frame(sample)
    frame["event_time"] = pd.to_datetime([T0 + 5, T0 + 6], unit="ms", utc=True)
    batch = score_partition(frame, champion, processed_at=NOW)
    assert batch.predictions.column("event_time").to_pylist() == [T0 + 5, T0 + 6]


def test_a_partition_with_no_valid_row_gives_empty_predictions(champion: ServingModel) -> None:
    sample = events(2)
    for e in sample:
        e["features"]["f9"] = math.nan
    batch = score_partition(arrow_frame(sample), champion, processed_at=NOW)
    assert batch.predictions.num_rows == 0 and batch.predictions.schema == PREDICTION_SCHEMA
    assert batch.rejected.column("row").to_pylist() == [0, 1]
    assert batch.rows == 2


def test_missing_columns_are_named_envelope_first() -> None:
    assert missing_columns(["event_id", "f2", "other"], ["f1", "f2"]) == [
        "sensor_id",
        "event_time",
        "f1",
    ]
    assert missing_columns(["event_id", "sensor_id", "event_time", "f1"], ["f1"]) == []
