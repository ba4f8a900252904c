"""The scoring stream end to end against a real broker (and the reference models)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer as PlainProducer

from connectors.kafka_admin import ensure_topics
from connectors.source import SourceOptions, run_source
from models.bundle import load_bundle
from models.datasets import shuttle
from models.runtime import OnnxModel
from schemas.serde import AvroSerde
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import read_topic

pytestmark = pytest.mark.integration

PREDICTION = AvroSerde("prediction")
AUDIT = AvroSerde("audit_event")


def _ids(records: list, serde: AvroSerde) -> Counter[str]:
    return Counter(serde.decode(r.value)["event_id"] for r in records)


def test_valid_and_invalid_events_are_all_accounted_for(make_settings) -> None:
    settings = make_settings()
    options = SourceOptions(count=3000, invalid_fraction=0.1, seed=11, run_id="mix")
    report = run_source(settings, options, keep_ids=True)
    n_valid, n_invalid = report.valid, sum(report.invalid_by_reason.values())
    assert n_valid + n_invalid == 3000 and n_invalid > 200

    summary = run_processor(settings, exit_when_idle=2)

    assert summary["events_in"] == 3000
    assert summary["predictions"] == n_valid
    assert summary["dead_letters_by_reason"] == dict(report.invalid_by_reason)
    predictions = read_topic(settings, settings.topics.predictions, n_valid)
    audits = read_topic(settings, settings.topics.audit, n_valid)
    dead = read_topic(settings, settings.topics.dlq, n_invalid)
    assert len(predictions) == n_valid and len(audits) == n_valid and len(dead) == n_invalid
    # Every valid event id exactly once on predictions and on audit.
    assert _ids(predictions, PREDICTION) == Counter(report.valid_ids)
    assert _ids(audits, AUDIT) == Counter(report.valid_ids)
    reasons = Counter(r.headers["__connect.errors.exception.class.name"].decode() for r in dead)
    assert reasons == report.invalid_by_reason
    for r in dead:
        assert r.headers["__connect.errors.topic"].decode() == settings.topics.events
        assert r.headers["__connect.errors.stage"] in (b"size", b"decode", b"validate")
        assert r.headers["__connect.errors.exception.message"]
        assert r.key is not None and r.key.startswith(b"sensor-")


def test_sigkill_mid_stream_loses_nothing(make_settings, tmp_path: Path) -> None:
    settings = make_settings(processor={"max_batch": 200, "commit_interval_ms": 200})
    n = 40_000
    report = run_source(settings, SourceOptions(count=n, seed=5, run_id="kill"), keep_ids=True)
    assert report.valid == n

    env = {
        **os.environ,
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "false",
        "STREAMSCORE_REDIS__URL": settings.redis.url,
        "STREAMSCORE_REDIS__EMBEDDED": "false",
        "STREAMSCORE_TOPICS__EVENTS": settings.topics.events,
        "STREAMSCORE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "STREAMSCORE_TOPICS__AUDIT": settings.topics.audit,
        "STREAMSCORE_TOPICS__DLQ": settings.topics.dlq,
        "STREAMSCORE_PROCESSOR__GROUP_ID": settings.processor.group_id,
        "STREAMSCORE_PROCESSOR__MAX_BATCH": "200",
        "STREAMSCORE_PROCESSOR__COMMIT_INTERVAL_MS": "200",
        "STREAMSCORE_MODELS__DIR": str(settings.models.dir),
        "STREAMSCORE_METRICS__ENABLED": "false",
        "STREAMSCORE_HOME": str(tmp_path),
    }
    command = [sys.executable, "-m", "streams", "run", "--json"]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE)
    # Wait until the first run is well into the stream, then kill it without warning.
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline:
        seen = len(read_topic(settings, settings.topics.predictions, 10**9, timeout=0.5))
        if seen >= 5000:
            break
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert 5000 <= seen < n, "the kill must land mid-stream"

    before_restart = len(read_topic(settings, settings.topics.predictions, 10**9, timeout=1.0))
    second = subprocess.run(
        [*command, "--exit-when-idle", "3"], env=env, cwd=tmp_path, capture_output=True, timeout=180
    )
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    resumed = json.loads(second.stdout.decode().strip().splitlines()[-1])

    predictions = read_topic(settings, settings.topics.predictions, n)
    ids = _ids(predictions, PREDICTION)
    lost = set(report.valid_ids) - set(ids)
    duplicates = sum(ids.values()) - len(ids)
    assert not lost, f"{len(lost)} events lost"
    # Duplicates are exactly what the second run re-scored from the first run's output,
    # bounded by what was in flight past the last commit.
    assert duplicates == before_restart + resumed["predictions"] - n
    assert duplicates <= before_restart
    assert resumed["events_in"] < n, "the second run resumed from committed offsets"


def test_json_from_a_plain_client_scores_like_avro(make_settings) -> None:
    avro_settings = make_settings()
    json_settings = make_settings(formats={"events": "json"})
    ensure_topics(json_settings)
    data = shuttle()
    rows = data.X[:500]
    # Avro through the source.
    run_source(avro_settings, SourceOptions(count=500, seed=3, run_id="same"), keep_ids=True)
    # JSON through a plain Kafka client, the way kcat or any producer would send it.
    from connectors.source import EventFactory
    from schemas.serde import JsonSerde

    factory = EventFactory(data.feature_names, data.X, JsonSerde("sensor_event"),
                           SourceOptions(count=500, seed=3, run_id="same"))  # fmt: skip
    plain = PlainProducer({"bootstrap.servers": json_settings.kafka.bootstrap_servers})
    for n in range(500):
        event = factory.event(n, 1_700_000_000_000)
        event["event_time"] = "2023-11-14T22:13:20Z"
        plain.produce(json_settings.topics.events, json.dumps(event).encode(), event["sensor_id"])
    plain.flush()
    assert rows.shape == (500, 9)

    for s in (avro_settings, json_settings):
        summary = run_processor(s, exit_when_idle=2)
        assert summary["predictions"] == 500
    by_format = []
    for s in (avro_settings, json_settings):
        records = [PREDICTION.decode(r.value) for r in read_topic(s, s.topics.predictions, 500)]
        by_format.append({r["event_id"]: (r["predicted_label"], r["score"]) for r in records})
    assert by_format[0] == by_format[1]
    assert len(by_format[0]) == 500


def test_streamed_predictions_equal_offline_onnxruntime(make_settings) -> None:
    settings = make_settings()
    options = SourceOptions(count=2000, seed=21, run_id="parity")
    run_source(settings, options, keep_ids=True)
    run_processor(settings, exit_when_idle=2)
    records = read_topic(settings, settings.topics.predictions, 2000)
    streamed = {r["event_id"]: r for r in (PREDICTION.decode(x.value) for x in records)}
    assert len(streamed) == 2000

    onnx_bytes, meta = load_bundle(settings.models.champion_path)
    model = OnnxModel(onnx_bytes, meta.feature_names, name=meta.name, version=meta.version,
                      classes=meta.classes)  # fmt: skip
    data = shuttle()
    order = np.random.default_rng(options.seed).permutation(len(data.X))
    rows = data.X[order[:2000]]
    offline = model.predict(rows.astype(np.float32))
    for n in range(2000):
        record = streamed[f"parity-{n}"]
        assert record["predicted_label"] == offline.labels[n]
        assert record["score"] == pytest.approx(float(offline.score[n]), abs=1e-7)
        assert record["model_name"] == meta.name and record["model_version"] == meta.version


def test_a_bare_onnx_file_serves_as_champion_with_features(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    report = run_source(settings, SourceOptions(count=300, seed=9, run_id="bare"), keep_ids=True)
    bare = tmp_path / "mine.onnx"
    onnx_bytes, meta = load_bundle(settings.models.dir / "champion")
    bare.write_bytes(onnx_bytes)
    env = {
        **os.environ,
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "false",
        "STREAMSCORE_TOPICS__EVENTS": settings.topics.events,
        "STREAMSCORE_TOPICS__PREDICTIONS": settings.topics.predictions,
        "STREAMSCORE_TOPICS__AUDIT": settings.topics.audit,
        "STREAMSCORE_TOPICS__DLQ": settings.topics.dlq,
        "STREAMSCORE_PROCESSOR__GROUP_ID": settings.processor.group_id,
        "STREAMSCORE_METRICS__ENABLED": "false",
        "STREAMSCORE_STORE__ENABLED": "false",
        "STREAMSCORE_SHADOW__MODE": "off",
        "STREAMSCORE_HOME": str(tmp_path),
    }
    command = [sys.executable, "-m", "streams", "run", "--champion", str(bare)]
    command += ["--features", ",".join(meta.feature_names), "--exit-when-idle", "2", "--json"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "no reference profile" in " ".join(done.stderr.decode().split())
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert summary["predictions"] == report.valid == 300
    assert summary["model"]["name"] == "mine"

    without = subprocess.run([*command[:6], "--exit-when-idle", "1"], env=env, cwd=tmp_path,
                             capture_output=True, timeout=60)  # fmt: skip
    assert without.returncode == 2
    assert "give the feature order" in without.stderr.decode()
