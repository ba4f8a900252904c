"""The controller against in-memory twins: modes, promotion, rollback, flapping, MLflow
outages, a move left half-way, and retraining triggers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.settings import Settings
from streams.autopilot.controller import Controller
from streams.autopilot.feeds import Feeds
from streams.autopilot.retrain import RetrainJob, RetrainResult
from streams.autopilot.runner import Retrainer
from streams.autopilot.state import StateFile
from streams.evaluation.verdict import PairedComparison, Verdict
from tests.unit.autopilot.conftest import (
    ListSink,
    ListTail,
    MemoryRegistry,
    cumulative,
    verdict_records,
)


def verdict(champion_accuracy: float, challenger_accuracy: float, n: int = 2000) -> Verdict:
    rng = np.random.default_rng(11)
    comparison = PairedComparison()
    comparison.update(rng.random(n) < champion_accuracy, rng.random(n) < challenger_accuracy)
    return comparison.verdict(min_samples=100)


class World:
    """A controller with its twins and a clock the test moves."""

    def __init__(self, settings: Settings, aliases: dict[str, str], **kwargs: Any) -> None:
        self.now = 1000.0
        self.registry = MemoryRegistry(aliases)
        self.evaluation, self.drift = ListTail(), ListTail()
        self.audit, self.estimates = ListSink(), ListSink()
        self.controller = Controller(
            settings,
            registry=self.registry,
            feeds=Feeds(self.evaluation, self.drift),
            audit=self.audit,
            evaluations=self.estimates,
            clock=lambda: self.now,
            **kwargs,
        )

    def tick(self, after_s: float = 1.0) -> None:
        self.now += after_s
        self.controller.tick()

    def publish_verdict(
        self, champion: str, challenger: str, v: Verdict, accuracies: tuple[float, float]
    ) -> None:
        self.evaluation.pending += verdict_records(
            champion, challenger, v, int(self.now * 1000), accuracies
        )


def test_recommend_publishes_the_decision_once_and_moves_nothing(settings: Settings) -> None:
    settings.autopilot.mode = "recommend"
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.tick()
    world.publish_verdict("1", "2", verdict(0.80, 0.90), (0.80, 0.90))
    world.tick(after_s=30)
    world.tick(after_s=5)
    assert world.registry.aliases == {CHAMPION: "1", CHALLENGER: "2"}
    recommendations = [r for r in world.audit.published if r["action"] == "promotion_recommended"]
    assert len(recommendations) == 1
    details = recommendations[0]["details"]
    assert recommendations[0]["actor"] == "autopilot" and details["mode"] == "recommend"
    assert details["guard.shadow_time"].startswith("ok") and "blocked_by" not in details
    assert float(details["e_value"]) >= 20


def test_off_does_nothing(settings: Settings) -> None:
    settings.autopilot.mode = "off"
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.publish_verdict("1", "2", verdict(0.80, 0.90), (0.80, 0.90))
    world.tick(after_s=60)
    assert world.audit.published == [] and world.registry.aliases[CHAMPION] == "1"


def test_auto_promotes_when_every_guard_holds_and_watches_the_new_champion(
    settings: Settings,
) -> None:
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.tick()  # the challenger is seen: its time in the shadow starts
    world.publish_verdict("1", "2", verdict(0.80, 0.90), (0.80, 0.90))
    world.tick(after_s=5)  # too early: 5 s < min_shadow_s
    assert world.registry.aliases[CHAMPION] == "1"
    assert world.audit.published[-1]["details"]["blocked_by"] == "shadow_time"
    world.tick(after_s=10)
    assert world.registry.aliases == {CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"}
    promoted = [r for r in world.audit.published if r["action"] == "promoted"]
    assert len(promoted) == 1 and promoted[0]["actor"] == "autopilot"
    details = promoted[0]["details"]
    assert (details["old_version"], details["new_version"]) == ("1", "2")
    assert details["labels"] == "2000" and details["guard.paired_labels"].startswith("ok")
    watch = world.controller.state.watch
    assert watch is not None and watch.replaced == "1"
    assert watch.baseline_error_rate == pytest.approx(0.10, abs=1e-3)
    assert world.registry.tags["2"]["streamscore.autopilot.replaced"] == "1"
    assert StateFile(settings.home, "m").load().watch == watch  # saved


def test_a_degraded_new_champion_is_rolled_back_and_never_promoted_again(
    settings: Settings,
) -> None:
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.tick()
    world.publish_verdict("1", "2", verdict(0.80, 0.95), (0.80, 0.95))
    world.tick(after_s=20)
    assert world.registry.aliases[CHAMPION] == "2"
    # v2 as champion makes errors at 20 %, against its 5 % in the shadow
    world.evaluation.pending.append(cumulative(CHAMPION, "2", 600, 0.80, int(world.now * 1000)))
    world.tick()
    assert world.registry.aliases == {CHAMPION: "1", CHALLENGER: "2"}
    rolled = [r for r in world.audit.published if r["action"] == "rolled_back"]
    assert len(rolled) == 1
    assert rolled[0]["details"]["reason"] == "degraded: error rate above its shadow baseline"
    assert world.controller.state.rolled_back == ["2"]
    # the evaluator keeps saying v2 is better than v1: no flapping
    world.publish_verdict("1", "2", verdict(0.80, 0.95, n=4000), (0.80, 0.95))
    for _ in range(3):
        world.tick(after_s=200)
    assert world.registry.aliases[CHAMPION] == "1"
    assert [r["action"] for r in world.audit.published].count("promoted") == 1
    assert "not_rolled_back" in world.audit.published[-1]["details"]["blocked_by"]


def test_mlflow_down_changes_nothing_and_the_promotion_happens_when_it_returns(
    settings: Settings,
) -> None:
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.tick()
    world.publish_verdict("1", "2", verdict(0.80, 0.90), (0.80, 0.90))
    world.registry.down = True
    world.tick(after_s=30)
    assert world.controller.metrics.registry_up._value.get() == 0
    assert world.audit.published == []
    world.registry.down = False
    world.tick()
    assert world.registry.aliases[CHAMPION] == "2"


def test_a_move_left_half_way_is_settled_then_retried(settings: Settings) -> None:
    world = World(settings, {CHAMPION: "1", CHALLENGER: "2"})
    world.tick()
    world.publish_verdict("1", "2", verdict(0.80, 0.90), (0.80, 0.90))
    world.registry.fail_writes_after = 1  # MLflow goes away after the first alias write
    world.tick(after_s=30)
    assert world.controller.state.pending is not None
    assert "move_deferred" in world.audit.actions()
    assert StateFile(settings.home, "m").load().pending is not None
    world.tick()  # still down: it waits
    assert world.controller.state.pending is not None
    world.registry.down, world.registry.fail_writes_after = False, None
    world.tick()  # undone first, then the promotion is decided again and done whole
    assert world.controller.state.pending is None
    assert world.registry.aliases == {CHAMPION: "2", CHALLENGER: "1", PREVIOUS_CHAMPION: "1"}
    assert world.audit.actions()[-2:] == ["promoted", "alias_set"]


def test_drift_requests_start_one_retraining_and_its_challenger_answers_the_next(
    settings: Settings,
) -> None:
    jobs: list[RetrainJob] = []

    def run(job: RetrainJob) -> RetrainResult:
        jobs.append(job)
        world.registry.aliases[CHALLENGER] = "3"
        return RetrainResult(
            "registered",
            "registered",
            champion_version="1",
            candidate_version="3",
            metric="accuracy",
            candidate_metric=0.99,
        )

    world = World(settings, {CHAMPION: "1"}, retrainer=Retrainer(run))

    def request(incident: str, version: str) -> dict[str, Any]:
        return {
            "incident_id": incident,
            "status": "retrain_requested",
            "model_version": version,
            "detector": "psi",
            "target": "f1",
            "severity": "alert",
            "window_start": 5,
            "window_end": 9,
            "detected_at": 10,
        }

    world.drift.pending += [
        {**request("i1", "1"), "status": "open", "window_end": 7_000},
        request("i0", "0"),  # raised against another version: not answered
        request("i1", "1"),
    ]
    world.tick()
    assert world.controller.retrainer is not None
    world.controller.retrainer.wait(5)
    assert len(jobs) == 1 and jobs[0].since_ms == 7_000 and "i1" in jobs[0].trigger
    world.drift.pending.append(request("i2", "1"))
    world.tick()
    world.controller.retrainer.wait(5)
    world.tick()
    assert len(jobs) == 1  # v3, retrained from v1, is in the shadow: it is the answer
    assert world.audit.actions() == ["retrain_started", "retrain_finished", "challenger_registered"]
    assert world.controller.state.retrained == {"3": "1"}
    assert world.controller.state.answered_requests == ["i0", "i1", "i2"]


def test_a_drift_request_with_too_few_labels_yet_is_asked_again_after_a_wait(
    settings: Settings,
) -> None:
    settings.autopilot.retrain.label_wait_s = 30.0
    settings.autopilot.retrain.label_waits = 1
    outcomes = ["too_few_labels", "too_few_labels", "registered"]
    jobs: list[RetrainJob] = []

    def run(job: RetrainJob) -> RetrainResult:
        jobs.append(job)
        reason = outcomes[len(jobs) - 1]
        return RetrainResult("rejected", reason, champion_version="1")

    world = World(settings, {CHAMPION: "1"}, retrainer=Retrainer(run))
    world.drift.pending.append({
        "incident_id": "i1", "status": "retrain_requested", "model_version": "1",
        "detector": "psi", "target": "f1", "severity": "alert", "window_start": 5,
        "window_end": 9, "detected_at": 10,
    })  # fmt: skip
    assert world.controller.retrainer is not None
    for after_s in (1.0, 1.0, 10.0, 25.0, 1.0, 40.0, 1.0):
        world.tick(after_s=after_s)
        world.controller.retrainer.wait(5)
    assert len(jobs) == 2  # asked again once (label_waits = 1), then no more
    assert "waited 1 time(s) for labels" in jobs[1].trigger
