"""ScoringPipeline on in-memory twins of polled batches, with the trained reference champion.

Guarantees are counted: N valid + M invalid in → exactly N predictions, N audit events,
M dead letters with the reasons the source reported, every event id accounted for once.
Scores are compared with onnxruntime run offline on the same rows, exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from connectors.source import EventFactory, SourceOptions
from models.bundle import MODEL_FILE
from models.datasets import shuttle
from models.serving import ServingModel
from schemas.serde import AvroSerde, JsonSerde, Serde
from streams.scoring.dead_letters import DLQ_HEADER_PREFIX
from streams.scoring.pipeline import (
    RawBatch,
    ScoringPipeline,
    input_digests,
    raw_batch_from,
)

T0 = 1_704_067_200_000
NOW = T0 + 60_000
ACTOR = "test-processor"


@pytest.fixture(scope="module")
def champion(models_dir: Path) -> ServingModel:
    return ServingModel.from_bundle(models_dir / "champion")


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return shuttle().X


def make_pipeline(event_serde: Serde | None = None, max_bytes: int = 65_536) -> ScoringPipeline:
    return ScoringPipeline(
        event_serde=event_serde or AvroSerde("sensor_event"),
        prediction_serde=AvroSerde("prediction"),
        audit_serde=AvroSerde("audit_event"),
        max_message_bytes=max_bytes,
        actor=ACTOR,
    )


def produced(
    factory: EventFactory, count: int
) -> tuple[list[bytes | None], list[bytes | None], list[str | None]]:
    """(keys, values, expected reason) of events 0..count-1, event n stamped T0 + n."""
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    reasons: list[str | None] = []
    for n in range(count):
        key, value, reason = factory.make(n, T0 + n)
        keys.append(key)
        values.append(value)
        reasons.append(reason)
    return keys, values, reasons


def offline_scores(champion: ServingModel, models_dir: Path, feats: list[dict[str, float]]) -> Any:
    """onnxruntime on the champion file, with no streamscore code in between."""
    matrix = np.array([[f[n] for n in champion.feature_names] for f in feats], dtype=np.float32)
    session = ort.InferenceSession(
        (models_dir / "champion" / MODEL_FILE).read_bytes(), providers=["CPUExecutionProvider"]
    )
    label, proba = session.run(None, {session.get_inputs()[0].name: matrix})
    return label, proba


# -- the guarantees, counted ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(champion: ServingModel, rows: np.ndarray) -> dict[str, Any]:
    """300 Avro events, about 20 % invalid of every kind, run as one polled batch."""
    factory = EventFactory(
        champion.feature_names,
        rows,
        AvroSerde("sensor_event"),
        SourceOptions(count=300, invalid_fraction=0.2, seed=11, run_id="run"),
    )
    keys, values, reasons = produced(factory, 300)
    raw = raw_batch_from(values, keys, topic="sensor.events", partition=2, first_offset=1000)
    out = make_pipeline().run(raw, champion, now_ms=NOW)
    return {"factory": factory, "raw": raw, "reasons": reasons, "out": out}


def test_n_valid_and_m_invalid_in_give_n_predictions_n_audits_m_dead_letters(
    mixed: dict[str, Any],
) -> None:
    reasons, out = mixed["reasons"], mixed["out"]
    expected = Counter(r for r in reasons if r is not None)
    n_valid = reasons.count(None)
    n_invalid = len(reasons) - n_valid
    # the seed gives every invalid kind at least once: the test covers them all
    assert set(expected) == {
        "Undecodable",
        "MissingFeature",
        "NonFiniteValue",
        "OutOfRange",
        "Oversized",
    }
    assert n_valid + n_invalid == 300
    assert len(out.prediction_values) == n_valid
    assert len(out.audit_values) == n_valid
    assert out.scored == n_valid
    assert len(out.dead_letters) == n_invalid
    assert Counter(d.rejection.reason for d in out.dead_letters) == expected
    # each dead letter has exactly the reason the source gave that event
    for dead in out.dead_letters:
        assert dead.rejection.reason == reasons[dead.rejection.index]


def test_every_event_id_is_accounted_for_once(mixed: dict[str, Any]) -> None:
    out, raw = mixed["out"], mixed["raw"]
    predictions = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    audits = [AvroSerde("audit_event").decode(v) for v in out.audit_values]
    predicted = [p["event_id"] for p in predictions]
    dead = [f"run-{raw.offsets[d.rejection.index] - 1000}" for d in out.dead_letters]
    everything = predicted + dead
    assert len(everything) == len(set(everything)) == 300
    assert set(everything) == {f"run-{n}" for n in range(300)}
    assert [a["event_id"] for a in audits] == predicted
    assert predicted == sorted(predicted, key=lambda e: int(e.split("-")[1]))  # input order


def test_predictions_carry_model_event_and_key(
    mixed: dict[str, Any], champion: ServingModel
) -> None:
    out, reasons = mixed["out"], mixed["reasons"]
    valid = [n for n, r in enumerate(reasons) if r is None]
    predictions = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    for n, p in zip(valid, predictions, strict=True):
        assert p["event_id"] == f"run-{n}"
        assert p["sensor_id"] == f"sensor-{n % 50:04d}"
        assert p["event_time"] == T0 + n
        assert p["model_name"] == "shuttle-gbm" == champion.name
        assert p["model_version"] == "1" == champion.version
        assert p["variant"] == "champion"
        assert p["processed_at"] == NOW
        assert set(p["probabilities"]) == {"0", "1"}
        assert p["score"] == p["probabilities"]["1"]
        assert p["predicted_label"] == max(p["probabilities"], key=p["probabilities"].get)
    # the Kafka key of each output is the input key
    assert out.keys == [f"sensor-{n % 50:04d}".encode() for n in valid]
    assert out.events.indices == valid


def test_audit_events_say_what_was_decided_for_which_input(mixed: dict[str, Any]) -> None:
    out, raw = mixed["out"], mixed["raw"]
    predictions = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    audits = [AvroSerde("audit_event").decode(v) for v in out.audit_values]
    for i, p, a in zip(out.events.indices, predictions, audits, strict=True):
        details = a.pop("details")
        assert details in ({}, {"variant": "champion"})
        assert a == {
            "action": "scored",
            "event_id": p["event_id"],
            "sensor_id": p["sensor_id"],
            "model_name": "shuttle-gbm",
            "model_version": "1",
            "decision": p["predicted_label"],
            "input_digest": hashlib.blake2b(raw.values[i], digest_size=16).hexdigest(),
            "source_topic": "sensor.events",
            "source_partition": 2,
            "source_offset": 1000 + i,
            "actor": ACTOR,
            "occurred_at": NOW,
        }


def test_dead_letters_keep_key_and_bytes_and_say_why_and_where(mixed: dict[str, Any]) -> None:
    out, raw = mixed["out"], mixed["raw"]
    indices = [d.rejection.index for d in out.dead_letters]
    assert indices == sorted(indices)
    stage_of = {
        "Oversized": "size",
        "Undecodable": "decode",
        "MissingFeature": "validate",
        "NonFiniteValue": "validate",
        "OutOfRange": "validate",
    }
    for dead in out.dead_letters:
        r = dead.rejection
        assert dead.key is raw.keys[r.index]
        assert dead.value is raw.values[r.index]
        assert r.stage == stage_of[r.reason]
        p = DLQ_HEADER_PREFIX
        assert dead.headers == [
            (p + "topic", b"sensor.events"),
            (p + "partition", b"2"),
            (p + "offset", str(1000 + r.index).encode()),
            (p + "stage", r.stage.encode()),
            (p + "class.name", b"streams.processor"),
            (p + "exception.class.name", r.reason.encode()),
            (p + "exception.message", r.message.encode()),
        ]
        assert r.message


# -- offline parity -------------------------------------------------------------------------------


def test_streamed_scores_equal_onnxruntime_offline_on_the_same_rows(
    mixed: dict[str, Any], champion: ServingModel, models_dir: Path
) -> None:
    out, reasons, factory = mixed["out"], mixed["reasons"], mixed["factory"]
    valid = [n for n, r in enumerate(reasons) if r is None]
    predictions = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    feats = [factory.event(n, T0 + n)["features"] for n in valid]
    label, proba = offline_scores(champion, models_dir, feats)
    assert [p["score"] for p in predictions] == proba[:, 1].astype(np.float64).tolist()
    assert [p["predicted_label"] for p in predictions] == [str(v) for v in label]
    assert [p["probabilities"]["0"] for p in predictions] == proba[:, 0].astype(float).tolist()
    # and the same as OnnxModel.predict on the pipeline's own matrix
    direct = champion.model.predict(out.matrix)
    np.testing.assert_array_equal(
        out.matrix.astype(np.float32),
        np.array([[f[n] for n in champion.feature_names] for f in feats], dtype=np.float32),
    )
    assert [p["score"] for p in predictions] == direct.score.tolist()


def test_json_input_scores_exactly_like_avro_input(
    champion: ServingModel, rows: np.ndarray
) -> None:
    factory = EventFactory(
        champion.feature_names, rows, AvroSerde("sensor_event"), SourceOptions(seed=5)
    )
    events = [factory.event(n, T0 + n) for n in range(120)]
    avro_values: list[bytes | None] = list(AvroSerde("sensor_event").encode_many(events))
    json_values: list[bytes | None] = list(JsonSerde("sensor_event").encode_many(events))
    avro = make_pipeline().run(raw_batch_from(avro_values), champion, now_ms=NOW)
    from_json = make_pipeline(JsonSerde("sensor_event")).run(
        raw_batch_from(json_values), champion, now_ms=NOW
    )
    assert avro.scored == from_json.scored == 120
    assert from_json.dead_letters == []
    assert from_json.prediction_values == avro.prediction_values  # byte for byte
    np.testing.assert_array_equal(from_json.matrix, avro.matrix)
    # the audit differs only by the digest of the (different) input bytes
    for a, j, jv in zip(avro.audit_values, from_json.audit_values, json_values, strict=True):
        a_rec, j_rec = AvroSerde("audit_event").decode(a), AvroSerde("audit_event").decode(j)
        assert j_rec["input_digest"] == hashlib.blake2b(jv or b"", digest_size=16).hexdigest()
        assert {**a_rec, "input_digest": None} == {**j_rec, "input_digest": None}


def test_json_events_from_a_plain_client(champion: ServingModel) -> None:
    """What kcat would send: ISO time, integer feature values, extra keys, no Kafka key."""
    features = {n: 0 for n in champion.feature_names}
    good = {
        "event_id": "kcat-1",
        "sensor_id": "s-1",
        "event_time": "2024-01-01T00:00:00.250Z",
        "features": {**features, "comment": "ignored"},
    }
    text = {**good, "event_id": "kcat-2", "features": {**features, "f1": "0"}}
    values: list[bytes | None] = [json.dumps(good).encode(), json.dumps(text).encode()]
    out = make_pipeline(JsonSerde("sensor_event")).run(raw_batch_from(values), champion)
    (prediction,) = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    assert (prediction["event_id"], prediction["event_time"]) == ("kcat-1", T0 + 250)
    assert out.keys == [b"s-1"]  # no input key: the sensor id
    assert [(d.rejection.index, d.rejection.reason) for d in out.dead_letters] == [
        (1, "NonNumericFeature")
    ]


# -- edges ------------------------------------------------------------------------------------


def test_empty_batch(champion: ServingModel) -> None:
    out = make_pipeline().run(raw_batch_from([]), champion, now_ms=NOW)
    assert (out.prediction_values, out.audit_values, out.keys, out.dead_letters) == ([], [], [], [])
    assert out.matrix.shape == (0, 9)
    assert set(out.stage_seconds) == {"size", "decode", "validate", "score", "encode"}


def test_all_invalid_batch(champion: ServingModel) -> None:
    values: list[bytes | None] = [b"garbage", None, b"x" * 200, b""]
    keys: list[bytes | None] = [b"k0", b"k1", None, b"k3"]
    out = make_pipeline(max_bytes=100).run(raw_batch_from(values, keys), champion, now_ms=NOW)
    assert out.scored == 0
    assert out.audit_values == []
    assert [
        (d.rejection.index, d.rejection.stage, d.rejection.reason) for d in out.dead_letters
    ] == [
        (0, "decode", "Undecodable"),
        (1, "decode", "EmptyValue"),
        (2, "size", "Oversized"),
        (3, "decode", "Undecodable"),
    ]
    assert [d.key for d in out.dead_letters] == keys
    assert [d.value for d in out.dead_letters] == values


def test_all_non_numeric_json_batch(champion: ServingModel) -> None:
    """Every event refused by the JSON type check: dead letters, no crash, no output."""
    features = {n: "1" for n in champion.feature_names}
    values: list[bytes | None] = [
        json.dumps(
            {"event_id": f"e{i}", "sensor_id": "s", "event_time": 1, "features": features}
        ).encode()
        for i in range(3)
    ]
    out = make_pipeline(JsonSerde("sensor_event")).run(raw_batch_from(values), champion)
    assert out.scored == 0
    assert [d.rejection.reason for d in out.dead_letters] == ["NonNumericFeature"] * 3
    assert out.matrix.shape == (0, 9)


def test_json_event_time_beyond_an_avro_long_is_a_dead_letter(champion: ServingModel) -> None:
    """A JSON integer time that no Avro long can hold is bad input, not a crash of the batch."""
    features = {n: 0.0 for n in champion.feature_names}
    ok = {"event_id": "ok", "sensor_id": "s", "event_time": T0, "features": features}
    huge = {**ok, "event_id": "huge", "event_time": 2**63}
    values: list[bytes | None] = [json.dumps(ok).encode(), json.dumps(huge).encode()]
    out = make_pipeline(JsonSerde("sensor_event")).run(raw_batch_from(values), champion)
    assert out.scored == 1
    assert [d.rejection.index for d in out.dead_letters] == [1]


def test_json_overlong_integer_is_a_dead_letter(champion: ServingModel) -> None:
    """Over 4300 digits Python's JSON parser raises ValueError: still one bad record."""
    value = b'{"event_id":"e","sensor_id":"s","event_time":' + b"9" * 5000 + b',"features":{}}'
    out = make_pipeline(JsonSerde("sensor_event")).run(raw_batch_from([value]), champion)
    assert [(d.rejection.stage, d.rejection.reason) for d in out.dead_letters] == [
        ("decode", "Undecodable")
    ]


def test_raw_batch_from_is_a_polled_batch_twin() -> None:
    raw = raw_batch_from([b"a", None], [b"k", None], topic="t", partition=4, first_offset=10)
    assert raw == RawBatch(
        values=[b"a", None],
        keys=[b"k", None],
        topics=["t", "t"],
        partitions=[4, 4],
        offsets=[10, 11],
    )
    assert len(raw) == 2
    assert raw_batch_from([b"a"]).keys == [None]


# -- a regressor goes through the same loop -------------------------------------------------------


def test_a_regressor_is_scored_by_the_same_pipeline() -> None:
    from onnx import TensorProto, helper

    from models.bundle import BundleMeta
    from models.profile import build_profile

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [2, 1], [2.0, -1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = BundleMeta(
        name="lin",
        version="7",
        task="regression",
        feature_names=["u", "v"],
        profile=build_profile(np.array([[0.0, 0.0], [10.0, 10.0]]), ["u", "v"]),
    )
    serving = ServingModel.build(model.SerializeToString(), meta)
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = [
        serde.encode(
            {"event_id": "a", "sensor_id": "s", "event_time": 1, "features": {"u": 3.0, "v": 1.5}}
        ),
        serde.encode(
            {"event_id": "b", "sensor_id": "s", "event_time": 2, "features": {"u": 3.0, "v": 99.0}}
        ),
    ]
    out = make_pipeline().run(raw_batch_from(values), serving, now_ms=NOW)
    (p,) = [AvroSerde("prediction").decode(v) for v in out.prediction_values]
    assert (p["score"], p["predicted_label"], p["probabilities"]) == (4.5, None, None)
    assert (p["model_name"], p["model_version"]) == ("lin", "7")
    (a,) = [AvroSerde("audit_event").decode(v) for v in out.audit_values]
    assert a["decision"] == "4.5"
    assert [d.rejection.reason for d in out.dead_letters] == ["OutOfRange"]


def test_input_digests_are_blake2b_of_each_record_and_share_no_state() -> None:
    values: list[bytes | None] = [b"abc", None, b"", b"abc", b"x" * 10_000]
    want = [hashlib.blake2b(v or b"", digest_size=16).hexdigest() for v in values]
    assert input_digests(values, range(5)) == want
    assert input_digests(values, [3, 0]) == [want[3], want[0]]  # the blank one is unchanged
