"""The HTTP door (issue 13) against a real uvicorn server, a real broker and a real MLflow registry.

One server per module on a free port, serving the MLflow aliases of a registry in a
temporary home (champion = the reference champion as v1, challenger = v2). An Open
Inference Protocol client this project did not write (Triton's ``tritonclient``)
lists, checks and infers; its scores are compared with :class:`ScoringPipeline` run
directly on the same rows. Then hostile bodies, API keys, and a promotion through the
API that a processor running on a thread follows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from connectors.kafka_admin import ensure_topics
from connectors.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from models.bundle import load_bundle
from models.datasets import shuttle
from models.serving import ServingModel
from schemas.serde import AvroSerde, JsonSerde
from schemas.settings import Settings
from streams.scoring.compose import build_processor
from streams.scoring.pipeline import ScoringPipeline, raw_batch_from
from streams.serve.keys import add_key, revoke_key
from streams.serve.server import HttpServer
from tests.integration.kafka_io import read_topic, running, sample, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

NAME = "shuttle-serve"
AUDIT = AvroSerde("audit_event")


@dataclass
class Served:
    settings: Settings
    server: HttpServer
    registry: ModelRegistry
    keys_file: Path
    operator: str
    reader: str
    champion: ServingModel

    @property
    def address(self) -> str:
        return self.server.url.removeprefix("http://")

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30)


def _settings(stack: Settings, models_dir: Path, home: Path, registry: ModelRegistry) -> Settings:
    """Fresh topics and group on the session's broker (as ``make_settings`` builds them)."""
    run = uuid.uuid4().hex[:8]
    data = stack.model_dump()
    data["topics"] = {
        **data["topics"],
        **{r: f"t{run}.{n}" for r, n in stack.topics.by_role().items()},
    }
    data["processor"] = {**data["processor"], "group_id": f"g{run}", "commit_interval_ms": 100}
    data.update(
        home=home,
        models={"dir": models_dir, "source": "registry"},
        registry={
            "tracking_uri": registry.tracking_uri,
            "model_name": NAME,
            "poll_interval_s": 0.5,
        },
        shadow={"mode": "off"},
        store={"enabled": False},
        serve={"port": 0, "keys_file": home / "keys.json", "max_queue_delay_ms": 2.0},
    )
    return Settings(**data)


@pytest.fixture(scope="module")
def served(
    stack_settings: Settings, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("serve-home")
    registry = ModelRegistry.open(home)
    for role in (CHAMPION, CHALLENGER):
        onnx_bytes, meta = load_bundle(models_dir / role)
        event = registry.log_and_register(onnx_bytes, meta, registered_name=NAME, actor="tester")
        registry.set_alias(NAME, role, event.model_version, actor="tester")
    settings = _settings(stack_settings, models_dir, home, registry)
    ensure_topics(settings)
    keys_file = settings.serve.keys_file
    assert keys_file is not None
    operator, _ = add_key(keys_file, "alice", "operator")
    reader, _ = add_key(keys_file, "bob", "reader")
    server = HttpServer(settings).start()
    try:
        yield Served(settings, server, registry, keys_file, operator, reader,
                     ServingModel.from_bundle(models_dir / CHAMPION))  # fmt: skip
    finally:
        server.stop()
    assert not keys_file.read_text().count(operator[4:]), "a key in clear in the keys file"


def _rows(n: int, seed: int = 3) -> np.ndarray:
    X = shuttle().X
    return X[np.random.default_rng(seed).choice(len(X), n, replace=False)].astype(np.float64)


def _processor_predictions(model: ServingModel, rows: np.ndarray) -> list[dict]:
    """What the processor's pipeline produces for ``rows`` as sensor events (JSON in and out)."""
    pipeline = ScoringPipeline(
        event_serde=JsonSerde("sensor_event"),
        prediction_serde=JsonSerde("prediction"),
        audit_serde=AvroSerde("audit_event"),
        max_message_bytes=65_536,
        actor="test",
    )
    out = pipeline.run(
        raw_batch_from([json.dumps(e).encode() for e in _events(model, rows)]), model
    )
    assert not out.dead_letters
    return [json.loads(v) for v in out.prediction_values]


def _events(model: ServingModel, rows: np.ndarray) -> list[dict]:
    return [
        {"event_id": f"e{i}", "sensor_id": f"s{i % 7}", "event_time": 1_767_225_600_000 + i,
         "features": dict(zip(model.feature_names, row.tolist(), strict=True))}
        for i, row in enumerate(rows)
    ]  # fmt: skip


# -- the Open Inference Protocol, with a client this project did not write --------------------


def test_oip_client_lists_checks_and_scores_as_the_processor(served: Served) -> None:
    client = triton.InferenceServerClient(served.address)
    auth = {"X-API-Key": served.reader}
    assert client.is_server_live() and client.is_server_ready()
    index = client.get_model_repository_index(headers=auth)
    assert [(m["name"], m["version"], m["state"]) for m in index] == [(NAME, "1", "READY")]
    assert client.is_model_ready(NAME, headers=auth)
    assert client.is_model_ready(NAME, "1", headers=auth)
    assert not client.is_model_ready(NAME, "7", headers=auth)
    metadata = client.get_model_metadata(NAME, headers=auth)
    n_features = len(served.champion.feature_names)
    assert metadata["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, n_features]}
    assert [o["name"] for o in metadata["outputs"]] == ["label", "score", "probabilities"]

    rows = _rows(40)
    expected = _processor_predictions(served.champion, rows)
    for binary in (True, False):  # the client's default (binary tensors), then JSON
        tensor = triton.InferInput("input", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary)
                   for n in ("label", "score", "probabilities")]  # fmt: skip
        # A fresh dict each call: the client adds its binary header to the one it is given.
        result = client.infer(NAME, [tensor], outputs=outputs, headers=dict(auth), request_id="r1")
        assert result.get_response()["model_version"] == "1"
        assert result.as_numpy("score").tolist() == [p["score"] for p in expected]
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [p["predicted_label"] for p in expected]
        probabilities = result.as_numpy("probabilities")
        assert probabilities.tolist() == [list(p["probabilities"].values()) for p in expected]

    # One tensor per feature, FP32: the scores of the FP32 rows.
    tensors = []
    for j, feature in enumerate(served.champion.feature_names):
        column = triton.InferInput(feature, [len(rows)], "FP32")
        column.set_data_from_numpy(rows[:, j].astype(np.float32))
        tensors.append(column)
    result = client.infer(NAME, tensors, headers=dict(auth))
    as_fp32 = _processor_predictions(served.champion, rows.astype(np.float32).astype(np.float64))
    assert result.as_numpy("score").tolist() == [p["score"] for p in as_fp32]


def test_json_door_answers_the_processors_prediction_records(served: Served) -> None:
    rows = _rows(25, seed=5)
    expected = _processor_predictions(served.champion, rows)
    with served.http() as http:
        answer = http.post(
            "/v1/score", json=_events(served.champion, rows), headers={"X-API-Key": served.reader}
        )
    assert answer.status_code == 200, answer.text
    got = answer.json()["predictions"]
    strip = [{k: v for k, v in p.items() if k not in ("processed_at", "model_name")} for p in got]
    assert strip == [{k: v for k, v in p.items() if k not in ("processed_at", "model_name")}
                     for p in expected]  # fmt: skip
    assert {p["model_name"] for p in got} == {NAME} and {p["model_version"] for p in got} == {"1"}

    # Every scored event has the processor's `scored` audit record, with channel=http.
    audits = [
        AUDIT.decode(r.value) for r in read_topic(served.settings, served.settings.topics.audit, 25)
    ]
    scored = [
        a
        for a in audits
        if a["action"] == "scored" and a["event_id"] in {p["event_id"] for p in got}
    ]
    assert len(scored) >= 25
    assert {a["details"]["channel"] for a in scored} == {"http"}
    assert {a["source_topic"] for a in scored} == {None}


# -- hostile bodies ------------------------------------------------------------------------------


def test_hostile_bodies_get_4xx_with_a_reason_and_the_server_keeps_serving(served: Served) -> None:
    auth = {"X-API-Key": served.reader}
    n = len(served.champion.feature_names)
    infer = f"/v2/models/{NAME}/infer"
    good = [float(v) for v in _rows(1)[0]]

    def tensor(data: object, shape: list[int], datatype: str = "FP64", name: str = "input") -> dict:
        return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}

    nan_body = json.dumps(tensor(good, [1, n])).replace(str(good[0]), "NaN", 1).encode()
    event = _events(served.champion, _rows(1))[0]
    hostile: list[tuple[str, str, dict | bytes, int, str]] = [
        ("wrong shape", infer, tensor(good[:5], [1, 5]), 400, "columns"),
        ("shape and data disagree", infer, tensor(good, [2, n]), 400, "do not fill"),
        ("wrong datatype", infer, tensor([int(v) for v in good], [1, n], "INT64"), 400, "INT64"),
        ("strings as numbers", infer, tensor([str(v) for v in good], [1, n]), 400, "numbers"),
        ("NaN", infer, nan_body, 400, "NonFiniteValue"),
        ("out of range", infer, tensor([1e12] * n, [1, n]), 400, "OutOfRange"),
        (
            "a feature tensor missing",
            infer,
            {"inputs": [{"name": "f1", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            400,
            "MissingFeature",
        ),
        ("no inputs", infer, {"inputs": []}, 400, "inputs"),
        ("invalid JSON", infer, b'{"inputs": [', 400, "not JSON"),
        ("invalid JSON event", "/v1/score", b"{nope", 400, "Undecodable"),
        (
            "missing feature",
            "/v1/score",
            {**event, "features": {"f1": 1.0}},
            422,
            "MissingFeature",
        ),
        (
            "not a number",
            "/v1/score",
            {**event, "features": {**event["features"], "f2": "x"}},
            422,
            "NonNumericFeature",
        ),
        ("no event id", "/v1/score", {**event, "event_id": ""}, 422, "InvalidField"),
        ("10 MB body", infer, b"[" + b"1," * (5 * 2**20) + b"1]", 413, "max_body_bytes"),
    ]
    with served.http() as http:
        for what, path, body, status, reason in hostile:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            answer = http.post(path, content=content,
                               headers={**auth, "Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code == status, (what, answer.status_code, answer.text[:300])
            assert reason in answer.text, (what, answer.text[:300])
            assert answer.json().get("error"), what
        ok = http.post(infer, json=tensor(good, [1, n]), headers=auth)
        assert ok.status_code == 200, ok.text
        metrics = http.get("/metrics").text
    assert 'streamscore_dead_letters_total{channel="http",reason="MissingFeature"' in metrics


# -- API keys ------------------------------------------------------------------------------------


def test_api_keys_missing_wrong_or_reader_on_a_mutating_endpoint_change_nothing(
    served: Served,
) -> None:
    before = served.registry.current_versions(NAME)
    promote = f"/v1/models/{NAME}/promote"
    wrong = served.operator[:-4] + ("aaaa" if not served.operator.endswith("aaaa") else "bbbb")
    with served.http() as http:
        assert http.post(promote).status_code == 401
        assert http.post(promote, headers={"X-API-Key": "not-a-key"}).status_code == 401
        assert http.post(promote, headers={"X-API-Key": wrong}).status_code == 401
        assert http.post(promote, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        refused = http.post(promote, headers={"X-API-Key": served.reader})
        assert refused.status_code == 403 and "operator" in refused.json()["error"]
        assert http.get("/v1/models").status_code == 401
        listed = http.get("/v1/models", headers={"X-API-Key": served.reader})
        assert listed.status_code == 200
        versions = {v["version"]: v["aliases"] for v in listed.json()["versions"]}
        assert versions == {"1": [CHAMPION], "2": [CHALLENGER]}
        assert http.get(f"/v2/models/{NAME}").status_code == 401
        assert http.get("/v2/health/ready").status_code == 200  # open
        assert http.get("/metrics").status_code == 200  # open
        # Revoked while the server runs: refused within a second or two.
        _, _ = add_key(served.keys_file, "carol", "reader")
        temporary, _ = add_key(served.keys_file, "dave", "reader")
        assert http.get("/v1/models", headers={"X-API-Key": temporary}).status_code in (200, 401)
        wait_until(
            lambda: http.get("/v1/models", headers={"X-API-Key": temporary}).status_code == 200,
            "the new key to be accepted", timeout=10,
        )  # fmt: skip
        revoke_key(served.keys_file, "dave")
        wait_until(
            lambda: http.get("/v1/models", headers={"X-API-Key": temporary}).status_code == 401,
            "the revoked key to be refused", timeout=10,
        )  # fmt: skip
    assert served.registry.current_versions(NAME) == before


# -- promote through the API: the alias moves, a running processor swaps ------------------------


def test_promote_through_the_api_moves_the_alias_and_a_processor_swaps(served: Served) -> None:
    processor = build_processor(served.settings)
    assert processor.champion.version == "1"
    with running(processor), served.http() as http:
        answer = http.post(f"/v1/models/{NAME}/promote", headers={"X-API-Key": served.operator})
        assert answer.status_code == 200, answer.text
        assert answer.json()["actor"] == "alice"
        assert served.registry.current_versions(NAME)[CHAMPION] == "2"
        wait_until(
            lambda: sample(processor, "streamscore_model_swaps_total", role="champion") == 1,
            "the processor to swap", timeout=30,
        )  # fmt: skip
        assert processor.champion.version == "2"

        def serving_v2() -> bool:
            meta = http.get(f"/v2/models/{NAME}", headers={"X-API-Key": served.reader}).json()
            return bool(meta["versions"] == ["2"])

        wait_until(serving_v2, "the server to swap", timeout=30)
        rows = _rows(3)
        body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP64",
                            "data": rows.ravel().tolist()}]}  # fmt: skip
        scored = http.post(
            f"/v2/models/{NAME}/infer", json=body, headers={"X-API-Key": served.reader}
        )
        assert scored.json()["model_version"] == "2"
        rolled = http.post(f"/v1/models/{NAME}/rollback", headers={"X-API-Key": served.operator})
        assert rolled.status_code == 200 and rolled.json()["model_version"] == "1"
    deadline = time.monotonic() + 30
    lifecycle: list[dict] = []
    while time.monotonic() < deadline and len(lifecycle) < 2:
        records = read_topic(served.settings, served.settings.topics.audit, 1, settle=0.5)
        audits = [AUDIT.decode(r.value) for r in records]
        lifecycle = [a for a in audits if a["action"] in ("promoted", "rolled_back")]
    assert [(a["action"], a["actor"], a["details"]["channel"]) for a in lifecycle] == [
        ("promoted", "alice", "http"),
        ("rolled_back", "alice", "http"),
    ]
