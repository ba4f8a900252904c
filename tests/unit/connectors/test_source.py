"""The sensor source: deterministic events, invalid kinds that get exactly the DLQ reason
the factory reports, the feature shift, and the produce loop with an in-memory producer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.source import (
    INVALID_KINDS,
    JSON_ONLY_KINDS,
    EventFactory,
    SourceOptions,
    produce_events,
    rows_from_file,
)
from models.datasets import shuttle
from models.serving import ServingModel
from schemas.serde import AvroSerde, JsonSerde, Serde
from streams.scoring.pipeline import ScoringPipeline, raw_batch_from

T0 = 1_704_067_200_000
NAMES = ["a", "b", "c"]
SMALL = np.array([[0.0, 10.0, -1.0], [1.0, 20.0, -2.0], [2.0, 30.0, -3.0], [3.0, 40.0, -6.0]])


@pytest.fixture(scope="module")
def champion(models_dir: Path) -> ServingModel:
    return ServingModel.from_bundle(models_dir / "champion")


def serde_for(fmt: str) -> Serde:
    return AvroSerde("sensor_event") if fmt == "avro" else JsonSerde("sensor_event")


def pipeline_for(serde: Serde) -> ScoringPipeline:
    return ScoringPipeline(
        event_serde=serde,
        prediction_serde=AvroSerde("prediction"),
        audit_serde=AvroSerde("audit_event"),
        max_message_bytes=65_536,
        actor="test",
    )


# -- determinism ----------------------------------------------------------------------------------


def test_events_are_deterministic_for_a_seed() -> None:
    options = SourceOptions(seed=3, run_id="r", sensors=3, invalid_fraction=0.5)
    a = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), options)
    b = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), options)
    made_a = [a.make(n, T0) for n in range(40)]
    assert made_a == [b.make(n, T0) for n in range(40)]
    other = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), SourceOptions(seed=4))
    assert [other.event(n, T0)["features"] for n in range(4)] != [
        a.event(n, T0)["features"] for n in range(4)
    ]


def test_event_ids_sensors_and_rows() -> None:
    options = SourceOptions(seed=3, run_id="run7", sensors=3)
    factory = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), options)
    order = np.random.default_rng(3).permutation(4)
    for n in range(9):
        event = factory.event(n, T0 + n)
        assert event == {
            "event_id": f"run7-{n}",
            "sensor_id": f"sensor-{n % 3:04d}",
            "event_time": T0 + n,
            "features": dict(zip(NAMES, SMALL[order[n % 4]].tolist(), strict=True)),
        }
    key, value, reason = factory.make(5, T0)
    assert (key, reason) == (b"sensor-0002", None)
    assert AvroSerde("sensor_event").decode(value) == factory.event(5, T0)


def test_invalid_kinds_per_format() -> None:
    avro = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), SourceOptions())
    jsn = EventFactory(NAMES, SMALL, JsonSerde("sensor_event"), SourceOptions())
    assert avro.kinds == ["garbage", "missing_feature", "nan", "out_of_range", "oversized"]
    assert jsn.kinds == [*avro.kinds, "non_numeric"]
    assert {**INVALID_KINDS, **JSON_ONLY_KINDS} == {
        "garbage": "Undecodable",
        "missing_feature": "MissingFeature",
        "nan": "NonFiniteValue",
        "out_of_range": "OutOfRange",
        "oversized": "Oversized",
        "non_numeric": "NonNumericFeature",
    }


def test_invalid_fraction_zero_and_one() -> None:
    none = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), SourceOptions(seed=1))
    assert [none.make(n, T0)[2] for n in range(50)] == [None] * 50
    every = EventFactory(
        NAMES, SMALL, AvroSerde("sensor_event"), SourceOptions(seed=1, invalid_fraction=1.0)
    )
    assert None not in [every.make(n, T0)[2] for n in range(50)]


# -- each invalid kind gets exactly its reason through the pipeline -------------------------------


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("avro", k) for k in INVALID_KINDS]
    + [("json", k) for k in INVALID_KINDS]
    + [("json", k) for k in JSON_ONLY_KINDS],
)
def test_each_invalid_kind_is_rejected_with_the_reason_reported(
    champion: ServingModel, fmt: str, kind: str
) -> None:
    serde = serde_for(fmt)
    factory = EventFactory(
        champion.feature_names,
        shuttle().X,
        serde,
        SourceOptions(seed=21, run_id="k", invalid_fraction=1.0),
    )
    factory.kinds = [kind]
    made = [factory.make(n, T0 + n) for n in range(12)]
    expected = {**INVALID_KINDS, **JSON_ONLY_KINDS}[kind]
    assert [reason for _, _, reason in made] == [expected] * 12
    out = pipeline_for(serde).run(
        raw_batch_from([v for _, v, _ in made], [k for k, _, _ in made]), champion
    )
    assert out.scored == 0
    assert [(d.rejection.index, d.rejection.reason) for d in out.dead_letters] == [
        (i, expected) for i in range(12)
    ]


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_a_mixed_stream_gets_the_reasons_the_factory_counted(
    champion: ServingModel, fmt: str
) -> None:
    serde = serde_for(fmt)
    factory = EventFactory(
        champion.feature_names,
        shuttle().X,
        serde,
        SourceOptions(seed=8, run_id="mix", invalid_fraction=0.3),
    )
    made = [factory.make(n, T0 + n) for n in range(200)]
    reported = Counter(reason for _, _, reason in made if reason is not None)
    out = pipeline_for(serde).run(
        raw_batch_from([v for _, v, _ in made], [k for k, _, _ in made]), champion
    )
    assert set(reported) == set(INVALID_KINDS.values()) | (
        set(JSON_ONLY_KINDS.values()) if fmt == "json" else set()
    )
    assert out.scored == 200 - sum(reported.values())
    assert Counter(d.rejection.reason for d in out.dead_letters) == reported
    for dead in out.dead_letters:
        assert dead.rejection.reason == made[dead.rejection.index][2]


# -- shift ----------------------------------------------------------------------------------------


def test_shift_applies_from_shift_at_by_sigma_times_std() -> None:
    plain = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), SourceOptions(seed=2))
    shifted = EventFactory(
        NAMES,
        SMALL,
        AvroSerde("sensor_event"),
        SourceOptions(seed=2, shift_at=5, shift_feature="b", shift_sigma=2.0),
    )
    std_b = float(np.std(SMALL[:, 1]))  # population std of 10, 20, 30, 40
    assert std_b == pytest.approx(np.sqrt(125.0), abs=1e-12)
    for n in range(12):
        before = plain.event(n, T0)["features"]
        after = shifted.event(n, T0)["features"]
        assert after["a"] == before["a"]
        assert after["c"] == before["c"]
        if n < 5:
            assert after["b"] == before["b"]
        else:
            assert after["b"] == before["b"] + 2.0 * std_b
    # the factory's rows are never modified by a shift
    np.testing.assert_array_equal(shifted.rows, SMALL)


def test_shift_is_carried_into_the_encoded_bytes() -> None:
    shifted = EventFactory(
        NAMES,
        SMALL,
        JsonSerde("sensor_event"),
        SourceOptions(seed=2, shift_at=0, shift_feature="a", shift_sigma=-1.0),
    )
    _, value, _ = shifted.make(0, T0)
    event = json.loads(value)
    assert event["features"]["a"] == shifted.event(0, T0)["features"]["a"]
    assert event["features"]["a"] == SMALL[shifted.order[0], 0] - float(np.std(SMALL[:, 0]))


# -- produce loop with an in-memory producer ------------------------------------------------------


class TwinProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []
        self.flushes = 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, *_: Any) -> None:
        self.records.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 30.0) -> None:
        self.flushes += 1


def test_produce_events_reports_what_it_produced() -> None:
    options = SourceOptions(count=2500, seed=9, run_id="p", invalid_fraction=0.1)
    factory = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), options)
    twin = TwinProducer()
    progress: list[int] = []
    report = produce_events(
        twin,  # type: ignore[arg-type]
        "t.events",
        factory,
        progress=progress.append,
        keep_ids=True,
    )
    # the same seed made offline gives the reasons the report must count
    offline = EventFactory(NAMES, SMALL, AvroSerde("sensor_event"), options)
    reasons = [offline.make(n, T0)[2] for n in range(2500)]
    assert report.produced == len(twin.records) == 2500
    assert report.valid == reasons.count(None)
    assert report.invalid_by_reason == Counter(r for r in reasons if r is not None)
    assert report.valid_ids == [f"p-{n}" for n, r in enumerate(reasons) if r is None]
    assert {topic for topic, _, _ in twin.records} == {"t.events"}
    assert [key for _, _, key in twin.records][:3] == [
        b"sensor-0000",
        b"sensor-0001",
        b"sensor-0002",
    ]
    assert twin.flushes == 1
    assert progress == [1000, 2000, 2500]
    assert report.as_dict()["produced"] == 2500


# -- file replay ----------------------------------------------------------------------------------


def test_rows_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("sensor_id,t1,t2,label\ns1,1.5,2,0\ns2,-3,4.25,1\n", encoding="utf-8")
    names, matrix = rows_from_file(path)
    assert names == ["t1", "t2"]
    np.testing.assert_array_equal(matrix, [[1.5, 2.0], [-3.0, 4.25]])


def test_rows_from_jsonl_events_or_flat_objects(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"event_id": "e1", "features": {"x": 1.0, "y": 2.0}}\n\n'
        '{"event_id": "e2", "features": {"x": 3.0, "y": 4.0}}\n',
        encoding="utf-8",
    )
    names, matrix = rows_from_file(path)
    assert names == ["x", "y"]
    np.testing.assert_array_equal(matrix, [[1.0, 2.0], [3.0, 4.0]])
    flat = tmp_path / "flat.ndjson"
    flat.write_text('{"x": 1, "anomaly": 0}\n{"x": 2, "anomaly": 1}\n', encoding="utf-8")
    assert rows_from_file(flat)[0] == ["x"]
    empty = tmp_path / "empty.csv"
    empty.write_text("x,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no rows"):
        rows_from_file(empty)


def test_a_file_keeps_its_own_ids_times_and_labels(tmp_path: Path) -> None:
    from connectors.source import read_source_file

    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,sensor_id,event_time,f1,f2,label\n"
        "a-1,s-9,1700000000000,1.5,2,ok\n"
        "a-2,s-8,2026-11-22T10:00:00Z,3,4,anomaly\n"
    )
    names, rows, fields = read_source_file(path)
    assert names == ["f1", "f2"] and rows.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert fields.event_ids == ["a-1", "a-2"] and fields.labels == ["ok", "anomaly"]
    assert fields.event_times == [1700000000000, 1795341600000]
    factory = EventFactory(
        names, rows, AvroSerde("sensor_event"), SourceOptions(), np.asarray(fields.labels), fields
    )
    events = [factory.event(n, now_ms=5) for n in range(3)]
    assert [e["event_id"] for e in events] == ["a-1", "a-2", "a-1~1"]
    assert [e["sensor_id"] for e in events] == ["s-9", "s-8", "s-9"]
    assert [e["event_time"] for e in events] == [1700000000000, 1795341600000, 1700000000000]
    assert [factory.label(n) for n in range(2)] == ["ok", "anomaly"]


def test_without_identity_columns_ids_are_generated(tmp_path: Path) -> None:
    from connectors.source import read_source_file

    path = tmp_path / "rows.jsonl"
    path.write_text('{"features": {"x": 1}}\n{"features": {"x": 2}}\n')
    names, rows, fields = read_source_file(path)
    factory = EventFactory(names, rows, AvroSerde("sensor_event"), SourceOptions(run_id="r"))
    assert fields.event_ids is None
    assert factory.event(0, now_ms=7)["event_id"] == "r-0"
    assert factory.event(0, now_ms=7)["event_time"] == 7
