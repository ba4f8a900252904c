"""Hot swap of the processor's models while the stream flows (issue 3), on a real broker.

The model source is a real MLflow registry (sqlite store and artifact folder in
``tmp_path``) or bundle folders on disk. The processor runs on a thread; the
test moves aliases (or replaces a bundle folder) and reads the predictions and
audit topics back. Which version scored which event is decided from the
``scored`` audit records (they carry the source partition and offset) and the
``model_changed`` record (it carries the first offset per partition scored by
the new version). Every guarantee is a count: N valid events in, N predictions
out, each event id exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka_admin import ensure_topics
from connectors.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from connectors.source import ProduceReport, SourceOptions, run_source
from models.bundle import META_FILE, load_bundle
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.scoring.compose import build_processor
from streams.scoring.processor import Processor
from tests.integration.kafka_io import read_topic, running, sample, wait_until

pytestmark = [
    pytest.mark.integration,
    # MLflow's own sqlalchemy models trip a deprecation warning of sqlalchemy; not ours to fix.
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning"),
]

NAME = "shuttle-swap"
PREDICTION = AvroSerde("prediction")
AUDIT = AvroSerde("audit_event")
SHADOW = AvroSerde("shadow_record")


# -- helpers ----------------------------------------------------------------------------------


def swaps(processor: Processor, role: str = "champion") -> float:
    return sample(processor, "streamscore_model_swaps_total", role=role)


def produce(settings: Settings, count: int, run_id: str, **options: Any) -> ProduceReport:
    source = SourceOptions(count=count, run_id=run_id, seed=len(run_id), **options)
    report = run_source(settings, source, keep_ids=True)
    assert report.valid == count
    return report


def consumed(processor: Processor, count: int) -> None:
    wait_until(lambda: processor.summary.events_in >= count, f"{count} events consumed")


def decoded(settings: Settings, topic: str, serde: AvroSerde, expected: int) -> list[dict]:
    return [serde.decode(r.value) for r in read_topic(settings, topic, expected)]


def audit_actions(audits: list[dict], action: str) -> list[dict]:
    return [a for a in audits if a["action"] == action]


def versions_by_event(predictions: list[dict]) -> dict[str, str]:
    return {p["event_id"]: p["model_version"] for p in predictions}


def first_offsets(text: str) -> dict[tuple[str, int], int]:
    """``"topic[p]=offset,..."`` (the model_changed detail) as a dict."""
    found = {}
    for part in text.split(","):
        where, offset = part.rsplit("=", 1)
        topic, partition = where[:-1].rsplit("[", 1)
        found[(topic, int(partition))] = int(offset)
    return found


def register_reference(home: Path, models_dir: Path) -> ModelRegistry:
    """A real MLflow registry in ``home``: champion bundle = v1, challenger bundle = v2."""
    registry = ModelRegistry.open(home)
    for role in (CHAMPION, CHALLENGER):
        onnx_bytes, meta = load_bundle(models_dir / role)
        event = registry.log_and_register(onnx_bytes, meta, registered_name=NAME, actor="tester")
        registry.set_alias(NAME, role, event.model_version, actor="tester")
    assert registry.current_versions(NAME) == {CHAMPION: "1", CHALLENGER: "2"}
    return registry


def registry_settings(
    make_settings: Callable[..., Settings], home: Path, tracking_uri: str, **overrides: Any
) -> Settings:
    settings = make_settings(
        home=home,
        models={"source": "registry"},
        registry={"tracking_uri": tracking_uri, "model_name": NAME, "poll_interval_s": 0.5},
        **overrides,
    )
    ensure_topics(settings)
    return settings


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rewrite_version(bundle: Path, version: str) -> None:
    """Give a bundle folder a new version, atomically (a watcher may read it at any time)."""
    meta = json.loads((bundle / META_FILE).read_text("utf-8"))
    meta["version"] = version
    staged = bundle / f".{META_FILE}.new"
    staged.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(staged, bundle / META_FILE)


# -- registry: alias moved mid-stream -----------------------------------------------------------


def test_alias_moved_mid_stream_switches_at_the_recorded_offsets(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    registry = register_reference(tmp_path, models_dir)
    settings = registry_settings(make_settings, tmp_path, registry.tracking_uri)
    processor = build_processor(settings)
    assert processor.champion.version == "1"

    swapped = threading.Event()
    chunks: list[ProduceReport] = []
    source_failure: list[BaseException] = []

    def stream() -> None:
        """Events at a steady rate until the swap happened, and two more chunks after it."""
        after = 0
        try:
            while after < 2 and len(chunks) < 100:
                after += swapped.is_set()
                chunks.append(produce(settings, 200, f"flow{len(chunks)}", rate=800.0))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            source_failure.append(exc)

    with running(processor):
        source = threading.Thread(target=stream, name="source")
        source.start()
        try:
            consumed(processor, 900)
            promoted = registry.promote(NAME, actor="tester")
            wait_until(lambda: swaps(processor) == 1, "the champion swap")
        finally:
            swapped.set()
            source.join(120)
        assert not source_failure, source_failure
        assert (promoted.old_version, promoted.new_version) == ("1", "2")
        consumed(processor, 200 * len(chunks))

    valid_ids = [e for chunk in chunks for e in chunk.valid_ids]
    audits = decoded(settings, settings.topics.audit, AUDIT, len(valid_ids) + 1)
    changed = audit_actions(audits, "model_changed")
    assert len(changed) == 1
    details = changed[0]["details"]
    assert (details["role"], details["old_version"], details["new_version"]) == (
        "champion",
        "1",
        "2",
    )
    assert (changed[0]["model_name"], changed[0]["model_version"]) == (NAME, "2")
    switch = first_offsets(details["first_offsets"])
    events = settings.topics.events
    assert sorted(switch) == [(events, p) for p in range(settings.topics.partitions)]

    scored = audit_actions(audits, "scored")
    assert Counter(a["event_id"] for a in scored) == Counter(valid_ids)  # none lost, none twice
    wrong = [
        (a["event_id"], a["source_partition"], a["source_offset"], a["model_version"])
        for a in scored
        if a["model_version"]
        != ("1" if a["source_offset"] < switch[(events, a["source_partition"])] else "2")
    ]
    assert wrong == []
    by_version = Counter(a["model_version"] for a in scored)
    assert by_version["1"] >= 900 and by_version["2"] >= 400  # the last two chunks at least
    assert by_version["1"] + by_version["2"] == len(valid_ids)

    predictions = decoded(settings, settings.topics.predictions, PREDICTION, len(valid_ids))
    assert Counter(p["event_id"] for p in predictions) == Counter(valid_ids)
    assert versions_by_event(predictions) == {a["event_id"]: a["model_version"] for a in scored}
    assert {p["model_name"] for p in predictions} == {NAME}
    assert processor.summary.model_version == "2"


# -- registry: a corrupt version is refused -----------------------------------------------------


def test_corrupt_version_moved_to_champion_is_refused_and_the_current_one_keeps_serving(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    registry = register_reference(tmp_path, models_dir)
    _, meta = load_bundle(models_dir / CHAMPION)
    corrupt = registry.log_and_register(
        b"\x08\x07this is not an ONNX model" * 40,
        meta,
        registered_name=NAME,
        actor="tester",
        validate=False,
    )
    assert corrupt.model_version == "3"
    settings = registry_settings(make_settings, tmp_path, registry.tracking_uri)
    processor = build_processor(settings)
    watcher = processor.watcher
    assert watcher is not None

    with running(processor):
        before = produce(settings, 500, "before")
        consumed(processor, 500)
        registry.set_alias(NAME, CHAMPION, "3", actor="tester")
        wait_until(
            lambda: (
                sample(processor, "streamscore_model_load_failures_total", role="champion") >= 1
            ),
            "the refusal",
        )
        polls = watcher.polls
        after = produce(settings, 500, "after")
        consumed(processor, 1000)
        # The refusal is remembered: later polls do not retry (nor re-count) the same version.
        wait_until(lambda: watcher.polls >= polls + 3, "three more registry polls")
        assert "v3" in processor.health.problems["champion_refused"]
        refused_then = swaps(processor)
        # A good version replaces the refused one: /readyz no longer lists the refusal.
        registry.set_alias(NAME, CHAMPION, "2", actor="tester")
        wait_until(lambda: swaps(processor) > refused_then, "the good version's swap")
        assert "champion_refused" not in processor.health.problems

    assert sample(processor, "streamscore_model_load_failures_total", role="champion") == 1
    assert swaps(processor) == 1
    assert processor.champion.version == "2"

    valid_ids = before.valid_ids + after.valid_ids
    predictions = decoded(settings, settings.topics.predictions, PREDICTION, len(valid_ids))
    assert Counter(p["event_id"] for p in predictions) == Counter(valid_ids)
    assert Counter(p["model_version"] for p in predictions) == {"1": 1000}

    audits = decoded(settings, settings.topics.audit, AUDIT, len(valid_ids) + 1)
    assert [a["model_version"] for a in audit_actions(audits, "model_changed")] == ["2"]
    refused = audit_actions(audits, "model_refused")
    assert len(refused) == 1
    assert refused[0]["model_version"] == "1"  # the version that keeps serving
    assert refused[0]["details"]["role"] == "champion"
    assert refused[0]["details"]["refused_version"] == "3"
    assert refused[0]["details"]["reason"]


# -- registry: MLflow unreachable at start ----------------------------------------------------


def test_mlflow_unreachable_at_start_serves_the_cached_champion(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    registry = register_reference(tmp_path, models_dir)
    # Warm the cache (<home>/cache/models) the way a previous processor run would have.
    for role in (CHAMPION, CHALLENGER):
        assert registry.fetch(NAME, role).downloaded
    unreachable = f"http://127.0.0.1:{closed_port()}"
    settings = registry_settings(
        make_settings, tmp_path, unreachable, shadow={"max_pending_batches": 1000}
    )

    processor = build_processor(settings)

    assert processor.champion.version == "1"
    assert processor.challenger is not None and processor.challenger.version == "2"
    assert "mlflow" in processor.health.problems
    assert "unreachable" in processor.health.problems["mlflow"]
    assert sample(processor, "streamscore_dependency_up", dependency="mlflow") == 0
    report = produce(settings, 600, "offline")
    summary = processor.run(exit_when_idle=2)

    assert summary.scored == 600
    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 600)
    assert Counter(p["event_id"] for p in predictions) == Counter(report.valid_ids)
    assert {(p["model_name"], p["model_version"]) for p in predictions} == {(NAME, "1")}
    shadow = decoded(settings, settings.topics.shadow, SHADOW, 600)
    assert {(s["champion_version"], s["challenger_version"]) for s in shadow} == {("1", "2")}


# -- registry: promote then rollback ----------------------------------------------------------


def test_promote_then_rollback_swaps_back_to_the_exact_previous_version(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    registry = register_reference(tmp_path, models_dir)
    settings = registry_settings(make_settings, tmp_path, registry.tracking_uri)
    processor = build_processor(settings)

    phases: list[ProduceReport] = []
    with running(processor):
        phases.append(produce(settings, 400, "first"))
        consumed(processor, 400)
        registry.promote(NAME, actor="tester")
        wait_until(lambda: swaps(processor) == 1, "the swap to v2")
        phases.append(produce(settings, 400, "promoted"))
        consumed(processor, 800)
        rolled_back = registry.rollback(NAME, actor="tester")
        wait_until(lambda: swaps(processor) == 2, "the swap back to v1")
        phases.append(produce(settings, 400, "rolledback"))
        consumed(processor, 1200)

    assert (rolled_back.old_version, rolled_back.new_version) == ("2", "1")
    assert registry.current_versions(NAME)[CHAMPION] == "1"
    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 1200)
    versions = versions_by_event(predictions)
    assert len(predictions) == len(versions) == 1200
    for phase, expected in zip(phases, ("1", "2", "1"), strict=True):
        assert Counter(versions[e] for e in phase.valid_ids) == {expected: 400}
    audits = decoded(settings, settings.topics.audit, AUDIT, 1202)
    changed = [
        (a["details"]["role"], a["details"]["old_version"], a["details"]["new_version"])
        for a in audit_actions(audits, "model_changed")
    ]
    assert changed == [("champion", "1", "2"), ("champion", "2", "1")]


# -- files: replacing a bundle folder ---------------------------------------------------------


def test_replacing_bundle_folders_swaps_champion_and_challenger(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    shutil.copytree(models_dir, folder)
    settings = make_settings(
        models={"dir": folder},
        registry={"poll_interval_s": 0.5},
        shadow={"max_pending_batches": 1000},  # no shadow batch dropped: every event counted
    )
    ensure_topics(settings)
    processor = build_processor(settings)
    champion_name = processor.champion.name
    assert (processor.champion.version, processor.challenger and processor.challenger.version) == (
        "1",
        "1",
    )

    with running(processor):
        first = produce(settings, 300, "v1")
        consumed(processor, 300)
        rewrite_version(folder / CHAMPION, "2")
        wait_until(lambda: swaps(processor) == 1, "the champion swap")
        second = produce(settings, 300, "v2")
        consumed(processor, 600)
        rewrite_version(folder / CHALLENGER, "7")
        wait_until(lambda: swaps(processor, CHALLENGER) == 1, "the challenger swap")
        third = produce(settings, 300, "c7")
        consumed(processor, 900)

    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 900)
    versions = versions_by_event(predictions)
    assert len(predictions) == len(versions) == 900
    assert Counter(versions[e] for e in first.valid_ids) == {"1": 300}
    assert Counter(versions[e] for e in second.valid_ids + third.valid_ids) == {"2": 600}
    assert {p["model_name"] for p in predictions} == {champion_name}

    audits = decoded(settings, settings.topics.audit, AUDIT, 902)
    changed = audit_actions(audits, "model_changed")
    roles = [
        (a["details"]["role"], a["details"]["old_version"], a["details"]["new_version"])
        for a in changed
    ]
    assert sorted(roles) == [("challenger", "1", "7"), ("champion", "1", "2")]
    champion_change = next(a for a in changed if a["details"]["role"] == "champion")
    switch = first_offsets(champion_change["details"]["first_offsets"])
    scored = audit_actions(audits, "scored")
    wrong = [
        a["event_id"]
        for a in scored
        if (a["model_version"] == "2")
        != (a["source_offset"] >= switch[(settings.topics.events, a["source_partition"])])
    ]
    assert wrong == []

    shadow = decoded(settings, settings.topics.shadow, SHADOW, 900)
    challenger_by_event = {s["event_id"]: s["challenger_version"] for s in shadow}
    assert Counter(challenger_by_event[e] for e in first.valid_ids) == {"1": 300}
    assert Counter(challenger_by_event[e] for e in third.valid_ids) == {"7": 300}


def test_with_shadow_off_the_challenger_is_never_loaded_nor_swapped_in(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    shutil.copytree(models_dir, folder)
    settings = make_settings(
        models={"dir": folder}, registry={"poll_interval_s": 0.5}, shadow={"mode": "off"}
    )
    ensure_topics(settings)
    processor = build_processor(settings)
    watcher = processor.watcher
    assert processor.challenger is None and watcher is not None

    with running(processor):
        report = produce(settings, 200, "alone")
        consumed(processor, 200)
        polls = watcher.polls
        wait_until(lambda: watcher.polls >= polls + 3, "three more polls of the model folder")

    assert swaps(processor, CHALLENGER) == 0
    assert processor.challenger is None
    audits = decoded(settings, settings.topics.audit, AUDIT, 200)
    assert Counter(a["action"] for a in audits) == {"scored": 200}
    assert Counter(a["event_id"] for a in audits) == Counter(report.valid_ids)


def test_mlflow_back_after_an_offline_start_resumes_hot_swaps_and_reports_it(
    make_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    registry = register_reference(tmp_path, models_dir)
    for role in (CHAMPION, CHALLENGER):
        registry.fetch(NAME, role)
    database = tmp_path / "mlflow" / "mlflow.db"
    assert registry.tracking_uri == f"sqlite:///{database}"
    hidden = database.with_name("mlflow.db.away")
    database.rename(hidden)  # the registry's store is gone: MLflow unavailable
    settings = registry_settings(make_settings, tmp_path, registry.tracking_uri)
    processor = build_processor(settings)
    assert sample(processor, "streamscore_dependency_up", dependency="mlflow") == 0
    assert "mlflow" in processor.health.problems

    with running(processor):
        offline = produce(settings, 300, "offline")
        consumed(processor, 300)
        hidden.rename(database)  # MLflow is back
        registry.promote(NAME, actor="tester")
        wait_until(lambda: swaps(processor) == 1, "the swap once MLflow is back")
        online = produce(settings, 300, "online")
        consumed(processor, 600)

    predictions = decoded(settings, settings.topics.predictions, PREDICTION, 600)
    versions = versions_by_event(predictions)
    assert len(predictions) == len(versions) == 600
    assert Counter(versions[e] for e in offline.valid_ids) == {"1": 300}
    assert Counter(versions[e] for e in online.valid_ids) == {"2": 300}
    # Reachability is what ops alert on: once the registry answers again, it must say so.
    assert sample(processor, "streamscore_dependency_up", dependency="mlflow") == 1
    assert "mlflow" not in processor.health.problems
