"""A challenger that fails, a corrupt one, a broker that goes away: the champion path goes on,
and metrics, /readyz and the audit trail say what happened (against the real broker)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from connectors.kafka_admin import Admin
from connectors.source import SourceOptions
from models.bundle import MODEL_FILE, load_bundle, save_bundle
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.ops.broker_probe import BrokerProbe
from streams.ops.metrics import Health, Metrics
from streams.scoring.compose import build_processor
from tests.conftest import free_port
from tests.integration.kafka_io import read_topic, running, sample, wait_until
from tests.integration.test_shadow_ab import copy_challenger, produce, versioned_models

pytestmark = pytest.mark.integration

PREDICTION = AvroSerde("prediction")
AUDIT = AvroSerde("audit_event")


def failing_challenger(models_dir: Path, folder: Path, version: str = "2") -> None:
    """A real ONNX model that loads and fits the features but fails on every batch
    whose size is not 4 (a fixed Reshape): the challenger that breaks at run time."""
    _, meta = load_bundle(models_dir / "champion")
    n = len(meta.feature_names)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["column"]),
            helper.make_node("Reshape", ["column", "shape"], ["value"]),
        ],
        "four_rows",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [n, 1], [0.01] * n),
            helper.make_tensor("shape", TensorProto.INT64, [1], [4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    broken = meta.model_copy(
        update={"name": "four-rows", "version": version, "task": "regression", "classes": []}
    )
    save_bundle(folder / "challenger", model.SerializeToString(), broken)


def _audits(settings: Settings, expected: int) -> Counter[str]:
    records = read_topic(settings, settings.topics.audit, expected, timeout=20)
    return Counter(AUDIT.decode(r.value)["action"] for r in records)


def test_ab_a_challenger_that_raises_falls_back_to_the_champion(
    make_settings, models_dir: Path, tmp_path: Path
) -> None:
    folder = versioned_models(tmp_path, models_dir, challenger=False)
    failing_challenger(models_dir, folder)
    settings = make_settings(
        models={"dir": folder},
        shadow={"mode": "ab", "ab_weights": {"champion": 0.5, "challenger": 0.5}},
        store={"enabled": False},
    )
    report = produce(settings, SourceOptions(count=2000, seed=3, run_id="abfail"))
    processor = build_processor(settings)
    with running(processor):
        wait_until(lambda: processor.summary.scored >= report.valid, "every event scored")
        assert "failing in A/B" in processor.health.problems["challenger"]
    summary = processor.summary
    assert summary.scored == report.valid and summary.challenger_fallbacks > 0
    fallbacks = sample(processor, "streamscore_challenger_fallback_events_total")
    assert fallbacks == summary.challenger_fallbacks
    predictions = read_topic(settings, settings.topics.predictions, report.valid)
    champion = load_bundle(folder / "champion")[1].version
    versions = Counter(PREDICTION.decode(r.value)["model_version"] for r in predictions)
    assert versions == {champion: report.valid}  # every row served, by the champion
    actions = _audits(settings, report.valid + 1)
    assert actions["challenger_failed"] == 1  # once per failing streak, not per batch
    assert actions["scored"] == report.valid


def test_shadow_failures_show_in_readyz_and_clear_when_a_good_version_replaces_it(
    make_settings, models_dir: Path, tmp_path: Path
) -> None:
    folder = versioned_models(tmp_path, models_dir, challenger=False)
    failing_challenger(models_dir, folder, version="9")  # the good one comes as v2
    settings = make_settings(
        models={"dir": folder}, store={"enabled": False}, registry={"poll_interval_s": 0.3}
    )
    first = produce(settings, SourceOptions(count=1000, seed=4, run_id="shfail"))
    processor = build_processor(settings)
    with running(processor):
        wait_until(lambda: processor.summary.scored >= first.valid, "first events scored")
        wait_until(lambda: "challenger" in processor.health.problems, "the failure to show")
        assert "failing in the shadow" in processor.health.problems["challenger"]
        shutil.rmtree(folder / "challenger")
        copy_challenger(models_dir, folder)  # the reference challenger, a version that works
        wait_until(lambda: processor.challenger is not None
                   and processor.challenger.name != "four-rows", "the good challenger")  # fmt: skip
        second = produce(settings, SourceOptions(count=1000, seed=5, run_id="shok"))
        wait_until(lambda: processor.summary.scored >= first.valid + second.valid, "second events")
        wait_until(lambda: "challenger" not in processor.health.problems, "the problem to clear")
    assert processor.summary.scored == first.valid + second.valid


def test_a_corrupt_challenger_at_start_is_refused_once(
    make_settings, models_dir: Path, tmp_path: Path
) -> None:
    folder = versioned_models(tmp_path, models_dir)
    (folder / "challenger" / MODEL_FILE).write_bytes(b"not an onnx model")
    settings = make_settings(
        models={"dir": folder}, store={"enabled": False}, registry={"poll_interval_s": 0.2}
    )
    report = produce(settings, SourceOptions(count=500, seed=6, run_id="corrupt"))
    processor = build_processor(settings)
    assert "not loaded" in processor.health.problems["challenger"]
    with running(processor):
        wait_until(lambda: processor.summary.scored >= report.valid, "events scored")
        assert processor.watcher is not None
        polls = processor.watcher.polls
        wait_until(lambda: processor.watcher.polls >= polls + 5, "five more watcher polls")
    assert sample(processor, "streamscore_model_load_failures_total", role="challenger") == 1
    actions = _audits(settings, report.valid + 1)
    assert actions["model_refused"] == 1


def test_the_broker_probe_follows_the_broker(stack_settings: Settings) -> None:
    metrics, health = Metrics(), Health()
    up = BrokerProbe(
        lambda: Admin(stack_settings.kafka, quiet=True).reachable(timeout=3.0),
        metrics,
        health,
        address=stack_settings.kafka.bootstrap_servers,
    )
    assert up.check() and health.broker_reachable and "kafka" not in health.problems
    gone = stack_settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    down = BrokerProbe(
        lambda: Admin(gone, quiet=True).reachable(timeout=1.0),
        metrics,
        health,
        address=gone.bootstrap_servers,
    )
    assert not down.check()
    assert not health.broker_reachable and gone.bootstrap_servers in health.problems["kafka"]
    value = metrics.registry.get_sample_value("streamscore_dependency_up", {"dependency": "kafka"})
    assert value == 0
    assert up.check() and health.broker_reachable and "kafka" not in health.problems
