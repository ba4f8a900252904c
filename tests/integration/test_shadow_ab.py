"""Shadow challenger, A/B split and the prediction store (issue 4), on a real broker and Redis.

The reference bundles are copied into ``tmp_path`` with the challenger given
version ``2``, so every record says unambiguously which model produced it.
A faulty challenger is the real challenger wrapped so that its ``predict``
raises or stalls: a broken model, not a mock of any infrastructure. Every
guarantee is a count: N valid events in, N champion predictions out, in the
same order per partition as a run without a challenger.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.embedded import EmbeddedStack
from connectors.kafka_admin import ensure_topics
from connectors.redis_store import PredictionStore
from connectors.source import ProduceReport, SourceOptions, run_source
from models.bundle import META_FILE
from models.runtime import OnnxModel, Scores
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.ops.metrics import serve
from streams.scoring.compose import build_processor
from streams.scoring.processor import Processor
from tests.conftest import free_port
from tests.integration.kafka_io import read_topic, running, sample, wait_until

pytestmark = pytest.mark.integration

PREDICTION = AvroSerde("prediction")
AUDIT = AvroSerde("audit_event")
SHADOW = AvroSerde("shadow_record")
VARIANTS = ("champion", "challenger")


# -- helpers ----------------------------------------------------------------------------------


def versioned_models(tmp_path: Path, models_dir: Path, *, challenger: bool = True) -> Path:
    """The reference bundles, the challenger as version 2 (or absent)."""
    folder = tmp_path / "models"
    shutil.copytree(models_dir / "champion", folder / "champion")
    if challenger:
        copy_challenger(models_dir, folder)
    return folder


def copy_challenger(models_dir: Path, folder: Path) -> None:
    """Put the challenger bundle (as version 2) in place with one atomic rename."""
    staged = folder / ".challenger-staged"
    shutil.copytree(models_dir / "challenger", staged)
    meta = json.loads((staged / META_FILE).read_text("utf-8"))
    meta["version"] = "2"
    (staged / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    staged.rename(folder / "challenger")


def produce(settings: Settings, options: SourceOptions) -> ProduceReport:
    ensure_topics(settings)
    return run_source(settings, options, keep_ids=True)


def decoded(
    settings: Settings, topic: str, serde: AvroSerde, expected: int, timeout: float = 30.0
) -> list[dict]:
    return [serde.decode(r.value) for r in read_topic(settings, topic, expected, timeout=timeout)]


def per_partition(settings: Settings, expected: int) -> dict[int, list[tuple[Any, ...]]]:
    """The champion's predictions as (event id, label, score, version), in order, per partition."""
    order: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for r in read_topic(settings, settings.topics.predictions, expected):
        p = PREDICTION.decode(r.value)
        order[r.partition].append(
            (p["event_id"], p["predicted_label"], p["score"], p["model_version"])
        )
    return dict(order)


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class FaultyModel:
    """The real challenger model, except that ``predict`` raises or stalls."""

    def __init__(self, real: OnnxModel, fault: str) -> None:
        self._real = real
        self.fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def predict(self, matrix: np.ndarray) -> Scores:
        if self.fault == "raises":
            raise RuntimeError("the challenger's session failed")
        time.sleep(0.5)
        return self._real.predict(matrix)


# -- shadow mode ------------------------------------------------------------------------------


def test_shadow_mode_every_valid_event_gets_a_shadow_record_and_stored_predictions(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        models={"dir": versioned_models(tmp_path, models_dir)},
        # Room for every batch: this test counts records, not the drop policy.
        shadow={"mode": "shadow", "max_pending_batches": 1000},
        store={"max_pending_batches": 1000},
    )
    run_id = f"shadow{uuid.uuid4().hex[:6]}"
    report = produce(settings, SourceOptions(count=2000, invalid_fraction=0.05, run_id=run_id))
    n = report.valid
    assert 1800 < n < 2000

    processor = build_processor(settings)
    summary = processor.run(exit_when_idle=2)

    assert summary.scored == n
    predictions = {
        p["event_id"]: p for p in decoded(settings, settings.topics.predictions, PREDICTION, n)
    }
    shadow = decoded(settings, settings.topics.shadow, SHADOW, n)
    assert Counter(s["event_id"] for s in shadow) == Counter(report.valid_ids)
    assert {(s["champion_version"], s["challenger_version"]) for s in shadow} == {("1", "2")}
    for s in shadow:
        champion = predictions[s["event_id"]]
        assert (s["sensor_id"], s["champion_label"]) == (
            champion["sensor_id"],
            champion["predicted_label"],
        )
        assert s["champion_score"] == champion["score"]
        assert s["challenger_label"] in ("0", "1")
        assert s["agree"] == (s["champion_label"] == s["challenger_label"])
    agreed = sum(s["agree"] for s in shadow)
    assert sample(processor, "streamscore_shadow_events_total", outcome="scored") == n
    assert sample(processor, "streamscore_shadow_dropped_batches_total") == 0
    assert sample(processor, "streamscore_shadow_errors_total") == 0
    assert sample(processor, "streamscore_shadow_agreement_ratio") == pytest.approx(agreed / n)
    assert sample(processor, "streamscore_records_produced_total", role="shadow") == n

    stored = PredictionStore(settings.redis).get_many(report.valid_ids, VARIANTS)
    by_event = {s["event_id"]: s for s in shadow}
    for event_id, entry in zip(report.valid_ids, stored, strict=True):
        champion, challenger = predictions[event_id], by_event[event_id]
        assert set(entry) == set(VARIANTS), event_id
        assert (entry["champion"].model_version, entry["champion"].label) == (
            "1",
            champion["predicted_label"],
        )
        assert entry["champion"].score == pytest.approx(champion["score"])
        assert (entry["challenger"].model_version, entry["challenger"].label) == (
            "2",
            challenger["challenger_label"],
        )
        assert entry["challenger"].score == pytest.approx(challenger["challenger_score"])
    assert sample(processor, "streamscore_prediction_store_gap_events_total") == 0


def test_faulty_challenger_never_changes_the_champion_output_count_or_order(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    folder = versioned_models(tmp_path, models_dir)
    options = {"count": 2000, "seed": 31, "run_id": f"faulty{uuid.uuid4().hex[:6]}"}

    def run(fault: str | None, **shadow: Any) -> tuple[Processor, dict[int, list[tuple]]]:
        settings = make_settings(
            models={"dir": folder},
            processor={"max_batch": 50},  # many batches: a stalled challenger must fall behind
            shadow={"mode": "off" if fault is None else "shadow", **shadow},
        )
        report = produce(settings, SourceOptions(**options))
        assert report.valid == 2000
        processor = build_processor(settings)
        if fault is not None:
            assert processor.shadow is not None
            real = processor.shadow.challenger
            processor.shadow.challenger = dataclasses.replace(
                real, model=FaultyModel(real.model, fault)
            )
        summary = processor.run(exit_when_idle=2)
        assert summary.scored == 2000
        return processor, per_partition(settings, 2000)

    _, baseline = run(None)
    assert sum(len(v) for v in baseline.values()) == 2000
    assert len({e for v in baseline.values() for e, *_ in v}) == 2000

    raising, order = run("raises", max_pending_batches=1000)
    assert order == baseline
    worker = raising.shadow.worker if raising.shadow else None
    assert worker is not None and worker.submitted >= 2000 // 50
    assert (worker.errors, worker.dropped, worker.processed) == (worker.submitted, 0, 0)
    assert sample(raising, "streamscore_shadow_errors_total") == worker.submitted
    assert sample(raising, "streamscore_shadow_events_total", outcome="error") == 2000
    assert sample(raising, "streamscore_records_produced_total", role="shadow") == 0

    stalling, order = run("stalls", max_pending_batches=1)
    assert order == baseline
    worker = stalling.shadow.worker if stalling.shadow else None
    assert worker is not None and worker.dropped >= 1
    dropped = sample(stalling, "streamscore_shadow_events_total", outcome="dropped")
    scored = sample(stalling, "streamscore_shadow_events_total", outcome="scored")
    assert sample(stalling, "streamscore_shadow_dropped_batches_total") == worker.dropped
    assert dropped > 0 and dropped + scored == 2000
    assert sample(stalling, "streamscore_records_produced_total", role="shadow") == scored


def test_challenger_appearing_after_start_is_shadow_scored(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    folder = versioned_models(tmp_path, models_dir, challenger=False)
    settings = make_settings(
        models={"dir": folder},
        registry={"poll_interval_s": 0.5},
        shadow={"mode": "shadow", "max_pending_batches": 1000},
    )
    ensure_topics(settings)
    processor = build_processor(settings)
    assert processor.challenger is None and "challenger" in processor.health.problems

    with running(processor):
        copy_challenger(models_dir, folder)
        wait_until(
            lambda: sample(processor, "streamscore_model_swaps_total", role="challenger") == 1,
            "the challenger to be loaded",
        )
        report = produce(settings, SourceOptions(count=300, run_id="late"))
        wait_until(lambda: processor.summary.events_in >= 300, "300 events consumed")

    assert processor.challenger is not None and processor.challenger.version == "2"
    # Shadow records are flushed by the final commit: they are all in the topic by now.
    shadow = decoded(settings, settings.topics.shadow, SHADOW, 300, timeout=5)
    assert Counter(s["event_id"] for s in shadow) == Counter(report.valid_ids)


# -- A/B mode ---------------------------------------------------------------------------------


def test_ab_split_is_stable_per_sensor_and_matches_the_weights(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        models={"dir": versioned_models(tmp_path, models_dir)},
        shadow={"mode": "ab", "ab_weights": {"champion": 0.7, "challenger": 0.3}},
        store={"max_pending_batches": 1000},
    )
    run_id = f"ab{uuid.uuid4().hex[:6]}"
    report = produce(settings, SourceOptions(count=4000, sensors=2000, run_id=run_id, seed=3))
    assert report.valid == 4000
    first = build_processor(settings)
    assert first.challenger is not None
    names = {"champion": first.champion.name, "challenger": first.challenger.name}
    assert first.run(exit_when_idle=2).scored == 4000
    # A second process (another group) replays the same stream: same variants.
    replay_group = settings.processor.model_copy(
        update={"group_id": settings.processor.group_id + "-replay"}
    )
    replay = build_processor(settings.model_copy(update={"processor": replay_group}))
    assert replay.run(exit_when_idle=2).scored == 4000

    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 8000)
    assert len(predictions) == 8000
    assert Counter(p["event_id"] for p in predictions) == Counter(report.valid_ids * 2)
    served = {(p["variant"], p["model_name"], p["model_version"]) for p in predictions}
    assert served == {
        ("champion", names["champion"], "1"),
        ("challenger", names["challenger"], "2"),
    }
    variants_of: dict[str, set[str]] = defaultdict(set)
    for p in predictions:
        variants_of[p["sensor_id"]].add(p["variant"])
    assert len(variants_of) == 2000
    assert [s for s, v in variants_of.items() if len(v) != 1] == []
    share = Counter(next(iter(v)) for v in variants_of.values())
    # Binomial(2000, 0.3): standard deviation ~20 sensors; 4 of them either side.
    assert abs(share["challenger"] - 600) <= 82
    assert share["champion"] + share["challenger"] == 2000

    variant_of_event = {p["event_id"]: p["variant"] for p in predictions}
    audits = decoded(settings, settings.topics.audit, AUDIT, 8000)
    scored = [a for a in audits if a["action"] == "scored"]
    assert len(scored) == 8000
    mislabelled = [a for a in scored if a["details"]["variant"] != variant_of_event[a["event_id"]]]
    assert mislabelled == []
    stored = PredictionStore(settings.redis).get_many(report.valid_ids, VARIANTS)
    assert [
        e
        for e, entry in zip(report.valid_ids, stored, strict=True)
        if set(entry) != {variant_of_event[e]}
    ] == []


# -- Redis down -------------------------------------------------------------------------------


def test_redis_down_scoring_goes_on_the_backlog_is_written_when_it_returns(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there yet
    settings = make_settings(
        models={"dir": versioned_models(tmp_path, models_dir)},
        redis={"url": redis_url, "embedded": False},
        shadow={"mode": "off"},
        store={"max_pending_batches": 1000},
    )
    run_id = f"noredis{uuid.uuid4().hex[:6]}"
    down = produce(settings, SourceOptions(count=1500, run_id=run_id + "a", seed=1))
    processor = build_processor(settings)
    assert "redis" in processor.health.problems
    assert sample(processor, "streamscore_dependency_up", dependency="redis") == 0
    gap = "streamscore_prediction_store_gap_events_total"
    backlog = "streamscore_prediction_store_backlog_events"
    # A real Redis started later on that port (the embedded stack's binary, Kafka left alone).
    redis_home = tmp_path / "redis-home"
    redis_stack = EmbeddedStack(
        settings.model_copy(
            update={
                "home": redis_home,
                "kafka": settings.kafka.model_copy(update={"embedded": False}),
                "redis": settings.redis.model_copy(update={"embedded": True}),
            }
        )
    )
    port = free_port()
    server = serve(processor.metrics, processor.health, "127.0.0.1", port)
    try:
        with running(processor):
            wait_until(lambda: processor.summary.events_in >= 1500, "1500 events consumed")
            wait_until(lambda: sample(processor, backlog) >= 1500, "the writes to be backlogged")
            status_down, body_down = ready(port)
            redis_stack.up()
            back = produce(settings, SourceOptions(count=500, run_id=run_id + "b", seed=2))
            wait_until(lambda: processor.summary.events_in >= 2000, "2000 events consumed")
            store = PredictionStore(settings.redis)
            wait_until(
                lambda: all(store.get_many(down.valid_ids + back.valid_ids, ["champion"])),
                "every prediction, those made while Redis was down too, to be stored",
            )
            status_back, body_back = ready(port)
    finally:
        server.shutdown()
        server.server_close()
        redis_stack.down()

    assert processor.summary.scored == 2000
    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 2000)
    assert Counter(p["event_id"] for p in predictions) == Counter(down.valid_ids + back.valid_ids)
    assert sample(processor, gap) == 0  # the outage cost nothing: the backlog was written
    assert status_down == 200  # Redis is not needed to serve: ready, with the problem named
    assert "unreachable" in body_down["problems"]["redis"]
    assert sample(processor, "streamscore_dependency_up", dependency="redis") == 1
    assert status_back == 200
    assert "redis" not in body_back.get("problems", {}), body_back
