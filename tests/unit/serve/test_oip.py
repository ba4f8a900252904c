"""Tensors to feature matrices and back (JSON and the binary extension), and the http audit."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from models.runtime import Scores
from models.serving import ServingModel
from schemas.serde import AvroSerde, JsonSerde
from streams.scoring.pipeline import ScoringPipeline, raw_batch_from
from streams.scoring.stages import EventBatch, check_matrix
from streams.serve.oip import (
    HEADER_LENGTH,
    OipError,
    encode_response,
    parse_request,
    request_matrix,
    score_outputs,
)

NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def reference_model() -> ServingModel:
    """A small logistic regression on NAMES (classes "0" / "1"), seeded."""
    from sklearn.linear_model import LogisticRegression

    from tests.unit.scoring.conftest import classifier

    rows = np.random.default_rng(7).normal(size=(200, 3)).astype(np.float32).astype(np.float64)
    estimator = LogisticRegression().fit(
        rows.astype(np.float32), (rows.sum(axis=1) > 0).astype(int)
    )
    return classifier(estimator, rows, NAMES, name="lr", version="1")


def _matrix(document: dict, tail: bytes = b"", header: str | None = None) -> np.ndarray:
    body = json.dumps(document).encode()
    request, rest = parse_request(body + tail, str(len(body)) if tail or header else header)
    return request_matrix(request, rest, NAMES)


def test_one_tensor_flat_or_nested_and_one_tensor_per_feature() -> None:
    flat = {
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]
    }
    nested = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}
        ]
    }
    columns = {"inputs": [
        {"name": n, "shape": [2], "datatype": "FP32", "data": v}
        for n, v in (("c", [3, 6]), ("a", [1, 4]), ("b", [2, 5]))
    ]}  # fmt: skip
    expected = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert _matrix(flat).tolist() == expected
    assert _matrix(nested).tolist() == expected
    assert _matrix(columns).tolist() == expected


def test_binary_tensor_data() -> None:
    rows = np.array([[1.5, 2.5, 3.5]], dtype="<f4")
    document = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                            "parameters": {"binary_data_size": rows.nbytes}}]}  # fmt: skip
    assert _matrix(document, rows.tobytes()).tolist() == [[1.5, 2.5, 3.5]]
    with pytest.raises(OipError, match="binary_data_size"):
        _matrix({"inputs": [{**document["inputs"][0], "parameters": {"binary_data_size": 4}}]},
                rows.tobytes())  # fmt: skip


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}], "columns"),
        ([{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}], "INT64"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": ["1", "2", "3"]}], "numbers"),
        ([{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3]}], "do not fill"),
        ([{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}], "MissingFeature"),
        ([{"name": "x", "shape": [9999, 99999, 9], "datatype": "FP64", "data": []}], "shape"),
    ],
)
def test_unreadable_tensors_are_protocol_errors(inputs: list[dict], message: str) -> None:
    with pytest.raises(OipError, match=message):
        _matrix({"inputs": inputs})


def test_invalid_json_and_a_wrong_header_length() -> None:
    with pytest.raises(OipError, match="not JSON"):
        parse_request(b'{"inputs": [', None)
    with pytest.raises(OipError, match=HEADER_LENGTH):
        parse_request(b"{}", "99")


def test_responses_in_json_and_binary() -> None:
    scores = Scores(score=np.array([0.25, 0.75]), labels=np.array(["no", "yes"], dtype=object),
                    probabilities=np.array([[0.75, 0.25], [0.25, 0.75]]))  # fmt: skip
    outputs = score_outputs(scores, ["no", "yes"])
    tensor = {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}
    request, _ = parse_request(json.dumps({"id": "r", "inputs": [tensor]}).encode(), None)
    body, header = encode_response(request, outputs, model_name="m", model_version="2")
    assert header is None
    document = json.loads(body)
    assert document["id"] == "r" and document["model_version"] == "2"
    assert [o["data"] for o in document["outputs"]] == [["no", "yes"], [0.25, 0.75],
                                                         [0.75, 0.25, 0.25, 0.75]]  # fmt: skip
    request.parameters = {"binary_data_output": True}
    body, header = encode_response(request, outputs, model_name="m", model_version="2")
    assert header is not None
    tail = body[header:]
    label_size = json.loads(body[:header])["outputs"][0]["parameters"]["binary_data_size"]
    assert tail[:label_size] == struct.pack("<I", 2) + b"no" + struct.pack("<I", 3) + b"yes"
    score = np.frombuffer(tail[label_size : label_size + 16], dtype="<f8")
    assert score.tolist() == [0.25, 0.75]


def test_check_matrix_gives_the_dlq_reasons() -> None:
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([10.0, 10.0, 10.0])
    matrix = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0], [1.0, 2.0, 30.0]])
    keep, refused = check_matrix(matrix, NAMES, lo, hi)
    assert keep.tolist() == [0]
    assert [(r.index, r.stage, r.reason) for r in refused] == [
        (1, "validate", "NonFiniteValue"),
        (2, "validate", "OutOfRange"),
    ]
    assert refused[1].message == "feature c=30 outside [0, 10]"


def test_http_audit_records_say_their_channel_and_have_no_source(
    reference_model: ServingModel,
) -> None:
    model = reference_model
    pipeline = ScoringPipeline(
        event_serde=JsonSerde("sensor_event"), prediction_serde=JsonSerde("prediction"),
        audit_serde=AvroSerde("audit_event"), max_message_bytes=65_536, actor="t", channel="http",
    )  # fmt: skip
    matrix = np.clip(np.zeros((2, len(model.feature_names))), model.lower, model.upper)
    events = EventBatch([0, 1], ["r:0", "r:1"], ["r", "r"], [1, 2], [{}, {}])
    raw = raw_batch_from([row.tobytes() for row in matrix], topic="http")
    out = pipeline.score_decoded(raw, events, matrix, model, now_ms=5)
    audits = [AvroSerde("audit_event").decode(v) for v in out.audit_values]
    assert [
        (a["event_id"], a["source_topic"], a["source_offset"], a["details"]) for a in audits
    ] == [
        ("r:0", None, None, {"channel": "http"}),
        ("r:1", None, None, {"channel": "http"}),
    ]
    assert [json.loads(v)["processed_at"] for v in out.prediction_values] == [5, 5]
    plain = pipeline.run(raw_batch_from([b'{"event_id":"e","sensor_id":"s","event_time":1,'
                                         b'"features":{}}']), model)  # fmt: skip
    assert plain.dead_letters[0].rejection.reason == "MissingFeature"
