"""The model autopilot on the session's broker and Redis, a real MLflow registry (sqlite in
the test's home) and Prefect's local API (one home for the session).

* end to end (slow): a shift, the drift incident, ``retrain_requested``, the Prefect
  retraining, the retrained challenger in the shadow, delayed labels, the evaluator's
  verdict, the automatic promotion and the processor's hot swap, with every event scored;
* an equally good challenger is not promoted over a long seeded stream of verdicts;
* a promoted champion that degrades is rolled back, and not promoted again (no flapping);
* retraining with too few labels, a failing fit or a worse candidate changes no alias; a
  good one registers the challenger with its lineage;
* MLflow down during a promotion: nothing half-done, and the promotion happens once it is
  back (fully down; failing half-way and undone; failing half-way and gone for a while).

The verdicts of the non-end-to-end tests are the evaluator's own statistics
(:class:`PairedComparison`) on seeded paired outcomes, published to ``sensor.evaluation``
as the evaluator's cumulative records; everything else is the real thing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.kafka_admin import ensure_topics
from connectors.model_registry import ModelRegistry, RegistryUnavailable
from connectors.schema_registry import topic_serde
from connectors.source import SourceOptions, run_source
from connectors.topic_reader import read_topic_from_start
from models.bundle import load_bundle
from models.lifecycle import LifecycleEvent
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.settings import Settings
from streams.autopilot.app import build_controller, run_autopilot
from streams.autopilot.audit import TopicSink, audit_sink, evaluation_sink
from streams.autopilot.controller import Controller
from streams.autopilot.demo import Source
from streams.autopilot.feeds import Feeds, TopicTail, challenger_counts
from streams.autopilot.guards import ChallengerCounts
from streams.autopilot.retrain import RetrainJob, run_retrain
from streams.evaluation.verdict import PairedComparison, Verdict
from streams.scoring.compose import build_processor
from tests.integration.kafka_io import read_topic, running, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning"),
]

NAME = "shuttle-autopilot"


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the session: its local API starts once."""
    return tmp_path_factory.mktemp("prefect")


@pytest.fixture
def autopilot_settings(
    make_settings: Callable[..., Settings], tmp_path: Path, prefect_home: Path
) -> Callable[..., Settings]:
    def make(**autopilot: Any) -> Settings:
        settings = make_settings(
            home=tmp_path,
            models={"source": "registry"},
            registry={"model_name": NAME, "poll_interval_s": 0.5},
            autopilot={
                "mode": "auto",
                "interval_s": 0.5,
                "min_paired_labels": 500,
                "min_shadow_s": 0.0,
                "cooldown_s": 3600.0,
                "prefect_home": str(prefect_home),
                "cbpe": {"enabled": False},
                **autopilot,
            },
        )
        ensure_topics(settings)
        return settings

    return make


def register_reference(settings: Settings, models_dir: Path, *roles: str) -> ModelRegistry:
    """v1 = the reference champion bundle; each further role registers a version of a bundle
    (``champion`` again: an equally good model) and gets that alias."""
    registry = ModelRegistry.open(settings.home)
    for alias, role in zip((CHAMPION, CHALLENGER), roles, strict=False):
        onnx_bytes, meta = load_bundle(models_dir / role)
        event = registry.log_and_register(onnx_bytes, meta, registered_name=NAME, actor="test")
        registry.set_alias(NAME, alias, event.model_version, actor="test")
    return registry


def controller_for(settings: Settings, registry: Any) -> Controller:
    kafka, topics = settings.kafka, settings.topics
    return Controller(
        settings,
        registry=registry,
        feeds=Feeds(
            TopicTail(
                kafka, topics.evaluation, topic_serde(settings, "evaluation"), from_beginning=True
            ),
            TopicTail(kafka, topics.drift, topic_serde(settings, "drift"), from_beginning=True),
        ),
        audit=audit_sink(settings),
        evaluations=evaluation_sink(settings),
    )


def publish_verdict(
    sink: TopicSink, versions: tuple[str, str], verdict: Verdict, accuracies: tuple[float, float]
) -> None:
    """Both variants' cumulative records with the verdict, as one evaluator emission."""
    at = int(time.time() * 1000)
    sink.publish(
        [
            {
                "variant": variant,
                "model_version": version,
                "window": "cumulative",
                "window_start": 0,
                "window_end": at,
                "count": verdict.n,
                "metrics": {"accuracy": accuracy},
                "verdict": verdict.decision,
                "evidence": verdict.to_evidence(),
                "emitted_at": at,
            }
            for variant, version, accuracy in zip(
                (CHAMPION, CHALLENGER), versions, accuracies, strict=True
            )
        ]
    )


def publish_quality(
    sink: TopicSink, variant: str, version: str, count: int, accuracy: float
) -> None:
    at = int(time.time() * 1000)
    sink.publish(
        [
            {
                "variant": variant,
                "model_version": version,
                "window": "cumulative",
                "window_start": 0,
                "window_end": at,
                "count": count,
                "metrics": {"accuracy": accuracy},
                "verdict": None,
                "evidence": {},
                "emitted_at": at,
            }
        ]
    )


def paired(n: int, champion: float, challenger: float, seed: int) -> Verdict:
    rng = np.random.default_rng(seed)
    comparison = PairedComparison()
    comparison.update(rng.random(n) < champion, rng.random(n) < challenger)
    return comparison.verdict(min_samples=100)


def tick_until(controller: Controller, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        controller.tick()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {controller.status()}")
        time.sleep(0.2)


def actions(controller: Controller) -> list[str]:
    sink = controller.audit
    assert isinstance(sink, TopicSink)
    return [r["action"] for r in sink.published]


def audited(settings: Settings) -> list[dict[str, Any]]:
    serde = topic_serde(settings, "audit")
    return [
        serde.decode(r.value)
        for r in read_topic_from_start(settings.kafka, settings.topics.audit, idle_s=1.0)
        if r.value is not None
    ]


# --------------------------------------------------------------------------- the verdict


def test_an_equally_good_challenger_is_not_promoted_over_a_long_stream(
    autopilot_settings: Callable[..., Settings], models_dir: Path
) -> None:
    settings = autopilot_settings()
    registry = register_reference(settings, models_dir, "champion", "champion")
    controller = controller_for(settings, registry)
    sink = evaluation_sink(settings)
    rng = np.random.default_rng(2024)
    comparison = PairedComparison()
    for _ in range(40):  # 20,000 paired labels, the controller looking after each 500
        comparison.update(rng.random(500) < 0.9, rng.random(500) < 0.9)
        verdict = comparison.verdict(min_samples=100)
        publish_verdict(sink, ("1", "2"), verdict, (0.9, 0.9))
        n = comparison.n
        tick_until(
            controller,
            lambda n=n: controller.pair is not None and controller.pair.verdict.n == n,
            f"the verdict on {n} labels",
        )
    assert comparison.n == 20_000 and controller.pair is not None
    assert controller.pair.verdict.decision != "promote"
    assert registry.current_versions(NAME) == {CHAMPION: "1", CHALLENGER: "2"}
    assert "promoted" not in actions(controller)


def test_a_degraded_promoted_champion_is_rolled_back_and_not_promoted_again(
    autopilot_settings: Callable[..., Settings], models_dir: Path
) -> None:
    settings = autopilot_settings()
    registry = register_reference(settings, models_dir, "champion", "challenger")
    controller = controller_for(settings, registry)
    sink = evaluation_sink(settings)
    publish_verdict(sink, ("1", "2"), paired(3000, 0.85, 0.95, seed=1), (0.85, 0.95))
    tick_until(controller, lambda: registry.version_for(NAME, CHAMPION) == "2", "the promotion")
    assert registry.current_versions(NAME) == {
        CHAMPION: "2",
        CHALLENGER: "1",
        PREVIOUS_CHAMPION: "1",
    }
    # As champion, v2 errs on 20 % of its labels; in the shadow it erred on 5 %.
    publish_quality(sink, CHAMPION, "2", 800, 0.80)
    tick_until(controller, lambda: registry.version_for(NAME, CHAMPION) == "1", "the rollback")
    assert registry.current_versions(NAME) == {CHAMPION: "1", CHALLENGER: "2"}
    tags = registry.describe(NAME, "2").tags
    assert tags["streamscore.autopilot.rollback_reason"].startswith("degraded")
    # The evaluator still finds v2 better than v1 in the shadow: it is not promoted again.
    publish_verdict(sink, ("1", "2"), paired(6000, 0.85, 0.95, seed=2), (0.85, 0.95))
    tick_until(
        controller,
        lambda: controller.pair is not None and controller.pair.verdict.n == 6000,
        "the new verdict",
    )
    for _ in range(3):
        controller.tick()
    assert registry.version_for(NAME, CHAMPION) == "1"
    records = audited(settings)
    assert [r["action"] for r in records if r["action"] in ("promoted", "rolled_back")] == [
        "promoted",
        "rolled_back",
    ]
    rolled = next(r for r in records if r["action"] == "rolled_back")
    assert rolled["actor"] == "autopilot" and rolled["details"]["errors_since_promotion"] == "160"
    blocked = [r for r in records if r["action"] == "promotion_recommended"][-1]
    assert "not_rolled_back" in blocked["details"]["blocked_by"]


# --------------------------------------------------------------------------- MLflow down


class FlakyRegistry:
    """The real registry, failing as if MLflow were unreachable: every call while ``down``;
    with ``break_challenger_write``, the next write of the challenger alias (the last write
    of a promotion), after which MLflow stays away when ``stay_down``."""

    def __init__(self, real: ModelRegistry) -> None:
        self.real = real
        self.down = False
        self.break_challenger_write = False
        self.stay_down = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise RegistryUnavailable(f"{name}: MLflow unreachable (test)")
            return method(*args, **kwargs)

        return call

    def set_alias(self, name: str, alias: str, version: str, *, actor: str) -> LifecycleEvent:
        if self.down:
            raise RegistryUnavailable("set_alias: MLflow unreachable (test)")
        if alias == CHALLENGER and self.break_challenger_write:
            self.break_challenger_write = False
            self.down = self.stay_down
            raise RegistryUnavailable("set_alias: MLflow went away half-way (test)")
        return self.real.set_alias(name, alias, version, actor=actor)


def test_mlflow_down_during_a_promotion_changes_nothing_and_it_is_retried(
    autopilot_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    settings = autopilot_settings()
    real = register_reference(settings, models_dir, "champion", "challenger")
    flaky = FlakyRegistry(real)
    controller = controller_for(settings, flaky)
    before = {CHAMPION: "1", CHALLENGER: "2"}
    publish_verdict(
        evaluation_sink(settings), ("1", "2"), paired(3000, 0.85, 0.95, seed=3), (0.85, 0.95)
    )

    # 1. fully down (the registry database is gone): nothing happens
    db = tmp_path / "mlflow" / "mlflow.db"
    moved = db.with_suffix(".away")
    shutil.move(db, moved)
    tick_until(
        controller, lambda: controller.evaluations.verdict_for("1", "2") is not None, "the verdict"
    )
    up = controller.metrics.registry.get_sample_value("streamscore_autopilot_registry_up")
    assert up == 0 and "promoted" not in actions(controller)
    shutil.move(moved, db)
    assert real.current_versions(NAME) == before

    # 2. failing half-way (the challenger alias), MLflow answering the undo: aliases as before
    flaky.break_challenger_write = True
    controller.tick()
    assert real.current_versions(NAME) == before
    assert actions(controller)[-1] == "move_failed"

    # 3. failing half-way and gone for a while: the move waits, is undone, then done whole
    flaky.break_challenger_write = flaky.stay_down = True
    controller.tick()
    assert controller.state.pending is not None and actions(controller)[-1] == "move_deferred"
    controller.tick()
    assert controller.state.pending is not None
    flaky.down = False
    controller.tick()
    assert controller.state.pending is None
    assert real.current_versions(NAME) == {CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"}
    assert actions(controller)[-2:] == ["promoted", "alias_set"]


# --------------------------------------------------------------------------- retraining


def test_retraining_changes_no_alias_unless_the_candidate_is_not_worse(
    autopilot_settings: Callable[..., Settings], models_dir: Path
) -> None:
    settings = autopilot_settings(retrain={"min_labels": 1000, "retries": 0})
    registry = register_reference(settings, models_dir, "champion")
    report = run_source(
        settings, SourceOptions(count=3000, seed=5, run_id="rt"), labels_after_s=0.0
    )
    assert report.labels == 3000
    now = int(time.time() * 1000) + 60_000

    def retrain(settings: Settings = settings, **hyperparameters: Any) -> Any:
        return run_retrain(RetrainJob(settings, NAME, "test", "test", 0, now, hyperparameters))

    few = settings.model_copy(
        update={
            "autopilot": settings.autopilot.model_copy(
                update={
                    "retrain": settings.autopilot.retrain.model_copy(update={"min_labels": 50_000})
                }
            )
        }
    )
    outcomes = [
        retrain(few),
        retrain(n_estimators=-1),
        retrain(n_estimators=1, max_depth=1, learning_rate=0.001),
    ]
    assert [(r.outcome, r.reason) for r in outcomes] == [
        ("rejected", "too_few_labels"),
        ("failed", "fit_failed"),
        ("rejected", "worse_than_champion"),
    ]
    assert outcomes[0].rows >= 2900 and "50000 needed" in outcomes[0].detail
    worse = outcomes[2]
    assert worse.candidate_metric is not None and worse.champion_metric is not None
    assert worse.candidate_metric < worse.champion_metric
    assert registry.current_versions(NAME) == {CHAMPION: "1"}
    assert [v.version for v in registry.list_versions(NAME)] == ["1"]

    # The stream shifts: a window of shifted events only retrains a better model.
    since = int(time.time() * 1000)
    shifted = SourceOptions(count=3000, seed=6, run_id="rs", shift_at=0, shift_feature="f1")
    run_source(settings, shifted, labels_after_s=0.0)
    until = int(time.time() * 1000) + 60_000
    good = run_retrain(RetrainJob(settings, NAME, "test", "test", since, until, {}))
    assert (good.outcome, good.candidate_version) == ("registered", "2"), good.detail
    assert good.rows == 3000 and good.champion_metric is not None and good.candidate_metric
    assert good.candidate_metric > good.champion_metric + 0.03
    assert registry.current_versions(NAME) == {CHAMPION: "1", CHALLENGER: "2"}
    version = registry.describe(NAME, "2")
    tags = version.tags
    assert tags["lineage.source_topics"] == f"{settings.topics.events},{settings.topics.labels}"
    assert tags["lineage.parent_version"] == "1" and tags["lineage.rows"] == str(good.rows)
    assert tags["dataset.sha256"] == tags["lineage.data_sha256"]
    assert f"{settings.topics.events}[0]=" in tags["lineage.offsets"]
    assert "streamscore.cbpe.calibration" in tags and good.flow_run_id
    assert version.params["model.n_estimators"] == "50"  # the champion's hyperparameters


# --------------------------------------------------------------------------- end to end


class ProcessorCounts:
    """The error and drop guards read the in-process processor's own metrics registry."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def read(self) -> ChallengerCounts:
        return challenger_counts(self.processor.metrics.registry.collect())


def _env(overrides: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **overrides}


@pytest.mark.slow
def test_end_to_end_a_retrained_challenger_is_promoted_and_swapped_in_without_losing_an_event(
    autopilot_settings: Callable[..., Settings], models_dir: Path, tmp_path: Path
) -> None:
    settings = autopilot_settings(
        min_paired_labels=300,
        min_shadow_s=3.0,
        retrain={"min_labels": 500, "window_s": 600.0, "label_wait_s": 3.0},
    )
    settings = settings.model_copy(
        update={
            "drift": settings.drift.model_copy(
                update={"window_events": 1000, "min_window_events": 200, "retrain_after_windows": 3}
            ),
        }
    )
    registry = register_reference(settings, models_dir, "champion")
    processor = build_processor(settings)
    t = settings.topics
    evaluator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams",
            "evaluate",
            "--app-id",
            f"{t.labels}-evaluator",
            "--emit-interval",
            "0.5",
            "--min-samples",
            "100",
            "--tumbling",
            "10",
            "--grace",
            "1",
        ],
        env=_env(
            {
                "STREAMSCORE_HOME": str(tmp_path),
                "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "STREAMSCORE_KAFKA__EMBEDDED": "false",
                "STREAMSCORE_REDIS__URL": settings.redis.url,
                "STREAMSCORE_REDIS__EMBEDDED": "false",
                "STREAMSCORE_TOPICS__LABELS": t.labels,
                "STREAMSCORE_TOPICS__EVALUATION": t.evaluation,
                "STREAMSCORE_TOPICS__DRIFT": t.drift,
                "STREAMSCORE_DRIFT__ENABLED": "false",
                "STREAMSCORE_METRICS__ENABLED": "false",
            }
        ),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = build_controller(settings, counts=ProcessorCounts(processor))
    stop = threading.Event()
    autopilot = threading.Thread(
        target=lambda: run_autopilot(settings, stop=stop, controller=controller), daemon=True
    )
    source = Source(settings, rate=1500.0, shift_at=4000, delay_s=1.0)
    try:
        with running(processor):
            autopilot.start()
            source.thread.start()
            try:
                wait_until(
                    lambda: "promoted" in actions(controller) or source.failure is not None,
                    "the automatic promotion",
                    timeout=150,
                )
            except AssertionError as exc:
                incidents = [
                    (i.detector, i.target, i.status, i.model_version)
                    for i in controller.incidents.incidents.values()
                ]
                raise AssertionError(
                    f"{exc}; actions {actions(controller)}; incidents "
                    f"{incidents}; {controller.status()}"
                ) from exc
            new = registry.version_for(NAME, CHAMPION)
            wait_until(lambda: processor.champion.version == new, "the hot swap", timeout=20)
            time.sleep(1.0)
            source.stop.set()
            source.thread.join(30)
            assert source.failure is None
            wait_until(
                lambda: processor.summary.events_in >= source.produced,
                "every event consumed",
                timeout=30,
            )
    finally:
        source.stop.set()
        stop.set()
        autopilot.join(60)
        evaluator.terminate()
        evaluator.wait(30)
    assert new == "2" and registry.current_versions(NAME) == {
        CHAMPION: "2",
        CHALLENGER: "1",
        PREVIOUS_CHAMPION: "1",
    }
    records = audited(settings)
    by_action = {r["action"]: r for r in records}
    for action in ("retrain_started", "retrain_finished", "challenger_registered", "promoted"):
        assert by_action[action]["actor"] == "autopilot", action
    promoted = by_action["promoted"]["details"]
    assert int(promoted["labels"]) >= 300 and float(promoted["e_value"]) >= 20
    assert all(promoted[f"guard.{g}"].startswith("ok") for g in ("errors", "drops", "served"))
    swaps = [r["details"] for r in records if r["action"] == "model_changed"]
    assert any(s["role"] == "champion" and s["new_version"] == "2" for s in swaps)
    assert any(s["role"] == "challenger" and s["new_version"] == "1" for s in swaps)
    serde = topic_serde(settings, "predictions")
    summary = processor.summary.as_dict()
    # A dead-lettered event has no prediction: waiting for one per event produced would
    # sit out the whole timeout whenever the new champion dead-letters any (60 s).
    scored = source.produced - summary["dead_letters"]
    predictions = read_topic(settings, t.predictions, scored, timeout=60)
    predicted = {serde.decode(r.value)["event_id"] for r in predictions if r.value is not None}
    produced = {source.factory.event_id(n) for n in range(source.produced)}
    # Nothing is lost: every event is predicted, or dead-lettered with a reason (the new
    # champion's profile, learnt on the shifted stream, may find an event out of range).
    events = topic_serde(settings, "events")
    dead_letters = read_topic(settings, t.dlq, summary["dead_letters"], timeout=30)
    dead = {events.decode(r.value)["event_id"] for r in dead_letters if r.value is not None}
    assert len(dead) == summary["dead_letters"] <= 10, summary
    assert predicted | dead == produced, (sorted(produced - predicted - dead)[:10], summary)
