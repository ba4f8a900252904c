"""Privacy end to end on the session's broker and Redis: the processor with identifiers
pseudonymised and dead letters encrypted, the Redis store, the evaluator's label join,
``dlq show``, ``privacy erase`` and ``audit verify``.

One stream is scored once (module fixture); each test reads what it left.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from connectors.kafka import Producer
from connectors.kafka_admin import Admin
from connectors.redis_store import INDEX_SUFFIX, PredictionStore
from connectors.source import SourceOptions, run_source
from models.bundle import load_bundle
from models.serving import ServingModel
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.cli.main import app
from streams.evaluation.app import build_evaluator
from streams.evaluation.labels import decode_labels, label_outcomes, score_variant
from streams.evaluation.options import EvaluatorOptions
from streams.privacy.chain import CHAIN_HEADER
from streams.privacy.crypto import is_sealed
from streams.privacy.keys import load_keyring, new_secret
from streams.privacy.pseudonym import Pseudonymiser, store_lookup
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import Record, read_topic

pytestmark = pytest.mark.integration

N = 1200
PREDICTION, AUDIT = AvroSerde("prediction"), AvroSerde("audit_event")
SHADOW, DRIFT, LABEL = AvroSerde("shadow_record"), AvroSerde("drift_event"), AvroSerde("label")


class Stream:
    """What the processor made of one pseudonymised stream."""

    def __init__(self, settings: Settings, env: dict[str, str], report: Any, summary: Any):
        self.settings, self.env, self.report, self.summary = settings, env, report, summary
        keyring = load_keyring(settings.privacy)
        self.keyring = keyring
        assert keyring.current is not None
        self.pseudonymiser = Pseudonymiser.for_key(keyring.current, settings.privacy)
        valid = report.valid
        self.predictions = [PREDICTION.decode(r.value) for r in self.read("predictions", valid)]
        self.audit_records = self.read("audit", valid)
        self.shadow_records = self.read("shadow", valid)
        self.dead = self.read("dlq", N - valid)

    def read(self, role: str, expected: int) -> list[Record]:
        topic = getattr(self.settings.topics, role)
        return read_topic(self.settings, topic, expected, timeout=30.0, settle=0.5)

    @property
    def sensors(self) -> set[str]:
        return {p["sensor_id"] for p in self.predictions}

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args), env=self.env)
        return result.exit_code, result.output


def _env(settings: Settings, home: Path) -> dict[str, str]:
    topics = {
        f"STREAMSCORE_TOPICS__{role.upper()}": t for role, t in settings.topics.by_role().items()
    }
    return {
        "STREAMSCORE_HOME": str(home),
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "false",
        "STREAMSCORE_REDIS__URL": settings.redis.url,
        "STREAMSCORE_REDIS__EMBEDDED": "false",
        "STREAMSCORE_METRICS__ENABLED": "false",
        "STREAMSCORE_PRIVACY__PSEUDONYMISE": json.dumps(settings.privacy.pseudonymise),
        "STREAMSCORE_PRIVACY__KEY_FILE": str(settings.privacy.key_file),
        "STREAMSCORE_DLQ__PAYLOAD": settings.dlq.payload,
        **topics,
    }


@pytest.fixture(scope="module")
def stream(
    make_settings_module: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> Stream:
    home = tmp_path_factory.mktemp("privacy")
    key_file = home / "privacy.key"
    key_file.write_text(new_secret() + "\n")
    probe = make_settings_module()
    feature = ServingModel.from_bundle(probe.models.champion_path).feature_names[0]
    settings = make_settings_module(
        privacy={"pseudonymise": ["sensor_id", "event_id"], "key_file": key_file},
        dlq={"payload": "encrypted"},
        drift={"window_events": 300, "min_window_events": 100},
    )
    options = SourceOptions(
        count=N, invalid_fraction=0.05, seed=21, run_id=f"priv{uuid.uuid4().hex[:6]}",
        shift_at=0, shift_feature=feature, shift_sigma=4.0,
    )  # fmt: skip
    report = run_source(settings, options, keep_ids=True)
    summary = run_processor(settings, exit_when_idle=2)
    assert summary["events_in"] == N
    return Stream(settings, _env(settings, home), report, summary)


@pytest.fixture(scope="module")
def make_settings_module(stack_settings: Settings, models_dir: Path) -> Callable[..., Settings]:
    """``make_settings`` for a module-scoped stream: fresh topics and group per call."""
    run = uuid.uuid4().hex[:8]

    def make(**overrides: Any) -> Settings:
        data = stack_settings.model_dump()
        data["topics"] = {
            **data["topics"],
            **{role: f"t{run}.{name}" for role, name in stack_settings.topics.by_role().items()},
        }
        data["processor"] = {**data["processor"], "group_id": f"g{run}", "commit_interval_ms": 100}
        data["models"] = {"dir": models_dir}
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value}
        return Settings(**data)

    return make


def test_predictions_keep_raw_ids_and_audit_shadow_drift_carry_none(stream: Stream) -> None:
    raw_sensors = stream.sensors
    assert len(stream.predictions) == stream.report.valid
    assert {p["event_id"] for p in stream.predictions} == set(stream.report.valid_ids)
    assert all(s.startswith("sensor-") for s in raw_sensors)
    pseudonym, raw_ids = stream.pseudonymiser.pseudonym, set(stream.report.valid_ids)
    assert len(stream.audit_records) == stream.report.valid
    for r in stream.audit_records:
        audit = AUDIT.decode(r.value)
        assert audit["sensor_id"] not in raw_sensors and audit["event_id"] not in raw_ids
        assert audit["sensor_id"].startswith(stream.pseudonymiser.key_id + ":")
        assert r.key == audit["sensor_id"].encode()
        assert CHAIN_HEADER in r.headers
    audited = {AUDIT.decode(r.value)["event_id"] for r in stream.audit_records}
    assert audited == {pseudonym(e) for e in stream.report.valid_ids}
    assert stream.shadow_records, "the challenger scored in the shadow"
    for r in stream.shadow_records:
        shadow = SHADOW.decode(r.value)
        assert shadow["sensor_id"] not in raw_sensors and not (r.key or b"").startswith(b"sensor-")
        assert shadow["event_id"] in audited
    drift = [DRIFT.decode(r.value) for r in stream.read("drift", 1)]
    assert drift, "the shifted feature raised a drift record"
    for record in drift:
        assert not any(s in json.dumps(record) for s in raw_sensors)


def test_redis_keeps_pseudonyms_only_and_labels_still_join(stream: Stream) -> None:
    settings = stream.settings
    client = redis.Redis.from_url(settings.redis.url)
    mine = {stream.pseudonymiser.pseudonym(e).encode() for e in stream.report.valid_ids}
    raw_ids = {e.encode() for e in stream.report.valid_ids}
    stored, indexed = 0, 0
    for key in client.scan_iter(match="streamscore:pred:*", count=1000):
        if key.endswith(INDEX_SUFFIX):
            for member in client.smembers(key):
                sensor, event = member.split(b"|", 1)
                assert event not in raw_ids
                if event in mine:
                    indexed += 1
                    assert sensor.startswith(stream.pseudonymiser.key_id.encode() + b":")
        else:
            for field in client.hkeys(key):
                event = field.rsplit(b"|", 1)[0]
                assert event not in raw_ids
                stored += event in mine
    assert indexed == stream.report.valid and stored >= stream.report.valid

    _, meta = load_bundle(settings.models.champion_path)
    truth = {p["event_id"]: p["predicted_label"] for p in stream.predictions}
    labels = [
        LABEL.encode({"event_id": e, "label": t, "value": None, "labelled_at": 1_700_000_000_000})
        for e, t in truth.items()
    ]
    options = EvaluatorOptions(app_id=f"{settings.processor.group_id}-eval", classes=meta.classes)
    evaluator = build_evaluator(settings, store=PredictionStore(settings.redis), options=options)
    batch, errors = decode_labels([(0, i, v) for i, v in enumerate(labels)], LABEL)
    assert not errors
    found = asyncio.run(evaluator.evaluator._lookup(batch))  # the evaluator's own lookup
    # what its tables count per label (``EvaluationTables.apply`` needs a running Faust app)
    champion = score_variant(batch, found, "champion", evaluator.evaluator.positive_label)
    assert int(champion.present.sum()) == len(labels)  # every label joined its prediction
    assert int(champion.correct.sum()) == len(labels)
    assert label_outcomes(batch, [champion]) == ["matched"] * len(labels)


def test_an_encrypted_dead_letter_opens_with_dlq_show(stream: Stream) -> None:
    assert stream.dead and len(stream.dead) == N - stream.report.valid
    for r in stream.dead:
        assert is_sealed(r.value) and b"sensor-" not in (r.value or b"")
        assert r.headers["streamscore.dlq.payload"] == b"encrypted"
        assert r.key is not None and not r.key.startswith(b"sensor-")
    code, out = stream.cli("dlq", "show", "--from-beginning", "--count", "5", "--timeout", "15")
    assert code == 0, out
    shown = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(shown) == 5
    for record in shown:
        opened = record["value"]
        assert opened["key_id"] == stream.pseudonymiser.key_id
        assert opened["original_key"].startswith("sensor-")
        assert record["headers"]["streamscore.dlq.payload"] == "encrypted"
    events = [r["value"]["payload"] for r in shown if isinstance(r["value"]["payload"], dict)]
    assert all(e["sensor_id"].startswith("sensor-") for e in events)
    undecodable = [r["value"] for r in shown if not isinstance(r["value"]["payload"], dict)]
    assert all(isinstance(v["payload"], str) for v in undecodable)


def test_erase_removes_the_sensors_store_entries_and_leaves_a_verified_tombstone(
    stream: Stream,
) -> None:
    settings = stream.settings
    victim = sorted(stream.sensors)[3]
    theirs = [p["event_id"] for p in stream.predictions if p["sensor_id"] == victim]
    others = [p["event_id"] for p in stream.predictions if p["sensor_id"] != victim][:50]
    lookup = store_lookup(
        PredictionStore(settings.redis).get_many, settings.privacy, stream.keyring
    )
    assert all(lookup(theirs, ["champion"])) and all(lookup(others, ["champion"]))

    code, out = stream.cli(
        "privacy", "erase", "--sensor-id", victim, "--reference", "T-1", "--json"
    )
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["entries_deleted"] >= len(theirs)
    assert not any(lookup(theirs, ["champion", "challenger"]))
    assert all(lookup(others, ["champion"]))

    audit = stream.read("audit", stream.report.valid + 1)
    tombstones = [
        AUDIT.decode(r.value) for r in audit if AUDIT.decode(r.value)["action"] == "erased"
    ]
    assert len(tombstones) == 1
    assert tombstones[0]["sensor_id"] == stream.pseudonymiser.pseudonym(victim)
    assert victim not in json.dumps(tombstones[0])

    code, out = stream.cli("audit", "verify", "--json", "--idle", "1.5")
    assert code == 0, out
    verified = json.loads(out.strip().splitlines()[-1])
    assert verified["ok"] and verified["unchained"] == 0
    assert verified["records"] == stream.report.valid + 1
    assert len(verified["chains"]) == 2  # the processor's and the erasure's


def test_audit_verify_reports_an_edited_copy(stream: Stream) -> None:
    settings = stream.settings
    copy = f"{settings.topics.audit}.copy"
    Admin(settings.kafka).ensure_topics([copy], partitions=settings.topics.partitions)
    producer = Producer(settings.kafka, client_id="test-tamper")
    records = sorted(stream.audit_records, key=lambda r: (r.partition, r.offset))
    for i, r in enumerate(records):
        value = r.value or b""
        if i == len(records) // 2:  # one bit of one record flipped
            value = value[:10] + bytes([value[10] ^ 1]) + value[11:]
        producer.produce(copy, value, r.key, list(r.headers.items()))
    producer.flush()
    code, out = stream.cli("audit", "verify", "--topic", copy, "--json", "--idle", "1.5")
    assert code == 1
    verified = json.loads(out.strip().splitlines()[-1])
    assert verified["first_break"]["kind"] == "break"
    assert "altered" in verified["first_break"]["message"]
