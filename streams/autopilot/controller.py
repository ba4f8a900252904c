"""The controller: one look at everything, and what it does about it (:meth:`Controller.tick`).

At every tick, in order:

1. read the topics: verdicts and quality (``sensor.evaluation``), drift incidents
   and retrain requests (``sensor.drift``), and, for CBPE, predictions, shadow
   records and labels; publish the CBPE windows due;
2. read the aliases; MLflow down: nothing that needs them happens this tick
   (retried at the next; a move never starts on aliases it could not read);
3. settle a move left half-way (:mod:`streams.autopilot.transitions`) before
   anything else;
4. note a new challenger: its time in the shadow and its error counts start now;
5. collect finished retraining runs (audited), and start one when asked (a
   ``retrain_requested`` for the current champion, or the schedule);
6. watch the champion the autopilot promoted: roll it back when a rule of
   :func:`streams.autopilot.decisions.rollback_reason` fires;
7. otherwise consider the challenger: the verdict and every guard;
8. metrics, and the saved state.

Modes: ``off`` does steps 1, 2 and 8 only (estimates keep being published);
``recommend`` publishes every decision with its evidence (``promotion_recommended``,
``rollback_recommended``) and moves no alias for a decision, while retraining
still registers challengers (a challenger only scores in the shadow); ``auto``
acts on the decisions. Every action is audited (:mod:`streams.autopilot.audit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from connectors.model_registry import RegistryError, RegistryUnavailable
from models.lifecycle import LifecycleEvent
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.errors import InfrastructureError
from schemas.settings import Settings
from streams.autopilot.audit import ACTOR, audit_record, lifecycle_record
from streams.autopilot.cbpe import CbpeMonitor
from streams.autopilot.decisions import (
    RollbackInputs,
    promotion_decision,
    rollback_reason,
    verdict_details,
)
from streams.autopilot.feeds import CountsSource, Feeds, Sink
from streams.autopilot.guards import (
    ChallengerCounts,
    GuardCheck,
    GuardInputs,
    failing,
    guard_details,
)
from streams.autopilot.metrics import AutopilotMetrics
from streams.autopilot.reference import ReferenceCalibrations, TaggedRegistry
from streams.autopilot.runner import Retrainer
from streams.autopilot.state import AutopilotState, StateFile, Watch
from streams.autopilot.transitions import (
    AliasRegistry,
    Move,
    MoveDeferred,
    MoveFailed,
    MoveKind,
    StaleMove,
    apply_move,
    reconcile,
    role_aliases,
)
from streams.autopilot.views import (
    EvaluationView,
    IncidentView,
    PairVerdict,
    RetrainRequest,
    SplitView,
)

if TYPE_CHECKING:
    from streams.autopilot.retrain import RetrainJob

log = logging.getLogger(__name__)

#: Lists in the saved state keep this many newest entries.
_STATE_LIST_LIMIT = 500


class ControllerRegistry(AliasRegistry, TaggedRegistry, Protocol):
    """The registry calls the controller makes (alias moves, tags, calibration fetches)."""


class Controller:
    """The autopilot of one registered model (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ControllerRegistry,
        feeds: Feeds,
        audit: Sink,
        evaluations: Sink,
        metrics: AutopilotMetrics | None = None,
        counts: CountsSource | None = None,
        retrainer: Retrainer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = settings.autopilot
        self.model_name = settings.registry.model_name
        self.registry = registry
        self.feeds = feeds
        self.audit = audit
        self.evaluation_sink = evaluations
        self.metrics = metrics or AutopilotMetrics()
        self.counts = counts
        self.retrainer = retrainer
        self.clock = clock
        self.state_file = StateFile(settings.home, self.model_name)
        self.state: AutopilotState = self.state_file.load()
        self.evaluations = EvaluationView()
        self.incidents = IncidentView()
        self.split = SplitView()
        c = self.policy.cbpe
        self.calibrations = ReferenceCalibrations(registry, self.model_name, c.method)
        self.cbpe = CbpeMonitor(
            self.calibrations.get,
            window_s=c.window_s,
            min_window_predictions=c.min_window_predictions,
            max_pending=c.max_pending,
            retention_s=c.retention_s,
        )
        self.aliases: dict[str, str] | None = None
        self.checks: list[GuardCheck] = []
        self.pair: PairVerdict | None = None
        self.ticks = 0
        self._counts_base: dict[str, ChallengerCounts] = {}
        #: The drift request behind the running retraining; requests waiting for their
        #: labels (when each is due); how often each incident waited already.
        self._answering: RetrainRequest | None = None
        self._waiting: list[tuple[float, RetrainRequest]] = []
        self._waits: dict[str, int] = {}
        self.metrics.set_mode(self.policy.mode)

    # ------------------------------------------------------------------ the tick

    def tick(self) -> None:
        """Steps 1-8 of the module docstring."""
        now = self.clock()
        self.ticks += 1
        self._read_topics(int(now * 1000))
        aliases = self._read_aliases()
        if aliases is not None and self.state.pending is not None:
            self._settle(now)
            aliases = self._read_aliases() if self.state.pending is None else None
        if aliases is not None:
            self._note_challenger(aliases, now)
        if self.retrainer is not None:
            self._collect_retrains()
        if aliases is not None and self.policy.mode != "off":
            self._maybe_retrain(aliases, now)
            if not self._watch(aliases, now):
                self._consider_promotion(aliases, now)
        self._update_metrics(now)
        self.state_file.save(self.state)

    def _read_topics(self, now_ms: int) -> None:
        feeds = self.feeds
        self.evaluations.add(feeds.evaluation.poll())
        self.incidents.add(feeds.drift.poll())
        predictions = feeds.predictions.poll() if feeds.predictions is not None else []
        if self.settings.shadow.mode == "ab":
            self.split.add(predictions)
        if not self.policy.cbpe.enabled:
            return
        self.cbpe.add_predictions(predictions)
        if feeds.shadow is not None:
            self.cbpe.add_shadow(feeds.shadow.poll())
        if feeds.labels is not None:
            self.cbpe.add_labels(feeds.labels.poll())
        records = self.cbpe.evaluation_records(now_ms)
        if records:
            self._publish(self.evaluation_sink, records, count_actions=False)

    def _read_aliases(self) -> dict[str, str] | None:
        try:
            aliases = self.registry.current_versions(self.model_name)
        except RegistryUnavailable as exc:
            if self.aliases is not None or self.ticks == 1:
                log.warning("MLflow registry unavailable: %s (retried at the next look)", exc)
            self.metrics.registry_up.set(0)
            self.aliases = None
            return None
        self.metrics.registry_up.set(1)
        self.aliases = aliases
        return aliases

    def _note_challenger(self, aliases: dict[str, str], now: float) -> None:
        challenger = aliases.get(CHALLENGER)
        if challenger != self.state.challenger:
            log.info("challenger is now %s", f"v{challenger}" if challenger else "none")
            self.state.challenger = challenger
            self.state.challenger_since_s = now if challenger is not None else None
            self._counts_base.clear()

    # ------------------------------------------------------------------ retraining

    def _collect_retrains(self) -> None:
        from streams.autopilot.retrain import result_records

        assert self.retrainer is not None  # noqa: S101 - narrows the type for mypy, never a check
        for job, result in self.retrainer.finished():
            self.metrics.retrain_runs.labels(outcome=result.outcome).inc()
            request, self._answering = self._answering, None
            if request is not None and result.reason == "too_few_labels":
                self._wait_for_labels(request)
            if result.candidate_version is not None and result.champion_version is not None:
                self.state.retrained[result.candidate_version] = result.champion_version
            log.info("retrain %s: %s (%s)", result.outcome, result.reason, result.detail)
            self._publish(self.audit, result_records(job, result))

    def _wait_for_labels(self, request: RetrainRequest) -> None:
        """A drift request answered with too few labels is asked again later (bounded)."""
        waits = self._waits.get(request.incident_id, 0)
        if waits >= self.policy.retrain.label_waits:
            return
        self._waits[request.incident_id] = waits + 1
        self._waiting.append((self.clock() + self.policy.retrain.label_wait_s, request))

    def _answered(self, aliases: dict[str, str]) -> str | None:
        """Why drift needs no new retraining now: a challenger retrained from the current
        champion is in the shadow and its verdict is not ``keep`` yet (it is the answer)."""
        champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
        if champion is None or challenger is None:
            return None
        if self.state.retrained.get(challenger) != champion:
            return None
        pair = self.evaluations.verdict_for(champion, challenger)
        if pair is not None and pair.verdict.decision == "keep":
            return None
        return f"v{challenger}, retrained from v{champion}, is in the shadow"

    def _maybe_retrain(self, aliases: dict[str, str], now: float) -> None:
        if self.retrainer is None or self.retrainer.running:
            return
        champion = aliases.get(CHAMPION)
        if champion is None:
            return
        answered = self._answered(aliases)
        r = self.policy.retrain
        now_ms = int(now * 1000)
        window_ms = int(r.window_s * 1000)
        job = None
        requests = self.incidents.requests
        for due, waiting in list(self._waiting):
            if due <= now:  # its labels had time to arrive: asked again
                self._waiting.remove((due, waiting))
                requests.appendleft(waiting)
        while requests and job is None:
            request = requests.popleft()
            again = request.incident_id in self._waits
            if request.incident_id in self.state.answered_requests and not again:
                continue
            if not again:
                self._remember(self.state.answered_requests, request.incident_id)
            if not r.on_drift or request.model_version != champion or answered:
                log.info(
                    "retrain request %s for v%s not answered (champion v%s, on_drift %s; %s)",
                    request.incident_id, request.model_version, champion, r.on_drift, answered,
                )  # fmt: skip
                continue
            since = request.since_ms if request.since_ms is not None else now_ms - window_ms
            trigger = f"drift on {request.target} (incident {request.incident_id})"
            if again:
                trigger += f", waited {self._waits[request.incident_id]} time(s) for labels"
            job = self._job(trigger, max(since, now_ms - window_ms), now_ms)
            self._answering = request
        last = self.state.last_retrain_s
        due = r.interval_s is not None and (last is None or now - last >= r.interval_s)
        if job is None and due and answered is None:
            job = self._job("schedule", now_ms - window_ms, now_ms)
        if job is None:
            return
        self.state.last_retrain_s = now
        from streams.autopilot.retrain import started_record

        self._publish(self.audit, [started_record(job, champion)])
        self.retrainer.start(job)

    def _job(self, trigger: str, since_ms: int, until_ms: int) -> RetrainJob:
        from streams.autopilot.retrain import RetrainJob

        return RetrainJob(self.settings, self.model_name, ACTOR, trigger, since_ms, until_ms)

    # ------------------------------------------------------------------ rollback

    def _watch(self, aliases: dict[str, str], now: float) -> bool:
        """Step 6; True when the champion was rolled back (nothing else this tick)."""
        watch = self.state.watch
        champion = aliases.get(CHAMPION)
        if watch is None:
            return False
        if champion != watch.version:
            log.info("v%s is no longer the champion: its watch ends", watch.version)
            self.state.watch = None
            return False
        challenger = aliases.get(CHALLENGER)
        reverse = None
        if challenger is not None and challenger == watch.replaced:
            pair = self.evaluations.verdict_for(champion, challenger)
            reverse = pair.verdict if pair is not None else None
        estimated = self.cbpe.latest(CHAMPION, champion) if self.policy.cbpe.enabled else None
        inputs = RollbackInputs(
            watch, reverse, self.evaluations.quality(CHAMPION, champion), estimated
        )
        reason, evidence = rollback_reason(inputs, self.policy)
        if reason is None:
            return False
        previous = aliases.get(PREVIOUS_CHAMPION)
        details = {"reason": reason, "mode": self.policy.mode, **evidence}
        if previous is None or self.policy.mode == "recommend":
            details["previous_champion"] = previous or "none: nothing to roll back to"
            self._recommend("rollback", f"rollback|{champion}|{previous}", champion, details)
            return False
        return self._move("rollback", aliases, details, now)

    # ------------------------------------------------------------------ promotion

    def _consider_promotion(self, aliases: dict[str, str], now: float) -> None:
        champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
        self.checks, self.pair = [], None
        if champion is None or challenger is None or champion == challenger:
            return
        if challenger == aliases.get(PREVIOUS_CHAMPION):
            return  # the comparison runs the other way: the rollback watch reads it
        pair = self.pair = self.evaluations.verdict_for(champion, challenger)
        incident = self.incidents.open_against(challenger)
        inputs = GuardInputs(
            verdict=pair.verdict if pair is not None else None,
            now_s=now,
            challenger_since_s=self.state.challenger_since_s,
            counts=self._challenger_counts(challenger),
            challenger_version=challenger,
            open_incident=incident.incident_id if incident is not None else None,
            observed_split=self.split.observed() if self.settings.shadow.mode == "ab" else None,
            ab_weights=self.settings.shadow.ab_weights,
            last_move_s=self.state.last_move_s,
            rolled_back=challenger in self.state.rolled_back,
        )
        ok, self.checks = promotion_decision(inputs, self.policy)
        if pair is None or pair.verdict.decision != "promote":
            return
        details = {
            "mode": self.policy.mode,
            "champion_version": champion,
            "challenger_version": challenger,
            **verdict_details(pair.verdict),
            **guard_details(self.checks),
        }
        blocked = failing(self.checks)
        if blocked:
            details["blocked_by"] = ",".join(blocked)
        state = "ready" if ok else "blocked:" + ",".join(blocked)
        self._recommend("promotion", f"promotion|{champion}|{challenger}|{state}", challenger,
                        details)  # fmt: skip
        if ok and self.policy.mode == "auto":
            self._move("promote", aliases, details, now)

    def _challenger_counts(self, challenger: str) -> ChallengerCounts | str | None:
        """Errors and drops since ``challenger`` arrived (None: not checked; text: why not)."""
        if self.counts is None:
            return None
        try:
            current = self.counts.read()
        except InfrastructureError as exc:
            return str(exc)
        base = self._counts_base.get(challenger)
        if base is None:
            base = self._counts_base[challenger] = current
        elif current.errors < base.errors or current.drops < base.drops:  # a restart
            base = self._counts_base[challenger] = ChallengerCounts(0.0, 0.0, ())
        return ChallengerCounts(
            current.errors - base.errors, current.drops - base.drops, current.served_versions
        )

    def _recommend(self, kind: str, key: str, version: str, details: dict[str, str]) -> None:
        """Publish a recommendation once per (kind, pair, guard state)."""
        if key in self.state.recommended:
            return
        self._remember(self.state.recommended, key)
        self._publish(
            self.audit, [audit_record(f"{kind}_recommended", self.model_name, version, details)]
        )

    # ------------------------------------------------------------------ moving aliases

    def _move(
        self, kind: MoveKind, aliases: dict[str, str], details: dict[str, str], now: float
    ) -> bool:
        move = Move(kind, role_aliases(aliases), details)
        try:
            events = apply_move(self.registry, self.model_name, move, actor=ACTOR, now_s=now)
        except StaleMove as exc:
            log.info("%s", exc)
            return False
        except MoveDeferred as exc:
            self.state.pending = exc.pending
            self._move_failed("deferred", move, exc, exc.events)
            return False
        except MoveFailed as exc:
            self._move_failed("undone", move, exc, exc.events)
            return False
        except RegistryUnavailable as exc:
            self._move_failed("unreachable", move, exc, [])
            return False
        self._moved(kind, move.before, move.target, details, events, now)
        return True

    def _move_failed(
        self, outcome: str, move: Move, exc: Exception, events: list[LifecycleEvent]
    ) -> None:
        log.warning("%s of %s not done (%s): %s", move.kind, self.model_name, outcome, exc)
        self.metrics.move_failures.labels(outcome=outcome).inc()
        action = "move_deferred" if outcome == "deferred" else "move_failed"
        version = move.target[CHAMPION]
        details = {**move.details, "move": move.kind, "outcome": outcome, "error": str(exc)}
        records = [lifecycle_record(e, {"reason": f"{move.kind} {outcome}"}) for e in events]
        records.append(audit_record(action, self.model_name, version, details))
        self._publish(self.audit, records)

    def _moved(
        self,
        kind: MoveKind,
        before: dict[str, str],
        target: dict[str, str],
        details: dict[str, str],
        events: list[LifecycleEvent],
        now: float,
    ) -> None:
        """The state, audit and tags of a move that is done (at once, or settled later)."""
        new, old = target[CHAMPION], before[CHAMPION]
        self.state.last_move_s = now
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        if kind == "promote":
            self.state.watch = self._watch_for(new, old, now)
            tagged = new
            tags = {
                "streamscore.autopilot.promoted_at": stamp,
                "streamscore.autopilot.replaced": old,
            }
        else:
            self._remember(self.state.rolled_back, old)
            self.state.watch = None
            tagged = old
            tags = {
                "streamscore.autopilot.rolled_back_at": stamp,
                "streamscore.autopilot.rollback_reason": details.get("reason", ""),
            }
        action = "promoted" if kind == "promote" else "rolled_back"
        records = [lifecycle_record(e, details if e.action == action else None) for e in events]
        if not any(r["action"] == action for r in records):  # settled after a failure
            main = {**details, "alias": CHAMPION, "old_version": old, "new_version": new}
            records.insert(0, audit_record(action, self.model_name, new, main))
        self._publish(self.audit, records)
        try:
            self.registry.set_version_tags(self.model_name, tagged, tags)
        except (RegistryUnavailable, RegistryError) as exc:
            log.warning("v%s not tagged (%s); the autopilot's state file has it", tagged, exc)

    def _watch_for(self, new: str, old: str, now: float) -> Watch:
        """What a new champion is held to: its error rate in the shadow as the baseline."""
        shadow = self.evaluations.quality(CHALLENGER, new)
        served = self.evaluations.quality(CHAMPION, new)
        errors = shadow.errors if shadow is not None else None
        labels = shadow.count if shadow is not None else 0
        return Watch(
            version=new,
            replaced=old,
            promoted_at_s=now,
            baseline_error_rate=errors / labels if errors is not None and labels else 0.0,
            baseline_labels=labels,
            labels_at_promotion=served.count if served is not None else 0,
            errors_at_promotion=(served.errors or 0) if served is not None else 0,
        )

    def _settle(self, now: float) -> None:
        pending = self.state.pending
        assert pending is not None  # noqa: S101 - narrows the type for mypy, never a check
        try:
            outcome, events = reconcile(self.registry, self.model_name, pending, actor=ACTOR)
        except RegistryUnavailable as exc:
            log.warning("a %s left half-way waits for MLflow: %s", pending.kind, exc)
            return
        self.state.pending = None
        log.info("the %s left half-way is %s", pending.kind, outcome)
        if outcome == "completed":
            kind: MoveKind = "promote" if pending.kind == "promote" else "rollback"
            details = {**pending.details, "settled": "completed after MLflow returned"}
            self._moved(kind, pending.before, pending.after, details, [], now)
            return
        records = [lifecycle_record(e, {"reason": f"{pending.kind} undone"}) for e in events]
        records.append(
            audit_record("move_failed", self.model_name, pending.after[CHAMPION],
                         {**pending.details, "move": pending.kind, "outcome": outcome})
        )  # fmt: skip
        self._publish(self.audit, records)

    # ------------------------------------------------------------------ output

    def _publish(
        self, sink: Sink, records: Sequence[dict[str, Any]], *, count_actions: bool = True
    ) -> None:
        if count_actions:
            for record in records:
                self.metrics.actions.labels(action=record["action"]).inc()
        try:
            sink.publish(records)
        except InfrastructureError as exc:
            log.warning("records kept for the next look (the broker did not take them): %s", exc)

    @staticmethod
    def _remember(items: list[str], item: str) -> None:
        items.append(item)
        del items[:-_STATE_LIST_LIMIT]

    def _update_metrics(self, now: float) -> None:
        m = self.metrics
        m.last_tick.set(now)
        m.pending_move.set(1 if self.state.pending is not None else 0)
        m.open_incidents.set(self.incidents.open_count())
        m.retrain_running.set(1 if self.retrainer is not None and self.retrainer.running else 0)
        if self.pair is not None:
            verdict = self.pair.verdict
            m.decision.set(verdict.to_evidence()["decision"])
            m.e_value.set(verdict.e_value)
            m.paired.set(verdict.n)
        for check in self.checks:
            m.guard_ok.labels(guard=check.name).set(1 if check.ok else 0)
        aliases = self.aliases or {}
        for variant in (CHAMPION, CHALLENGER):
            version = aliases.get(variant)
            window = self.cbpe.latest(variant, version) if version is not None else None
            if window is None:
                continue
            labels = {"variant": variant, "model_version": version or ""}
            metrics = window.metrics
            m.estimated_accuracy.labels(**labels).set(metrics["estimated_accuracy"])
            if "realised_accuracy" in metrics:
                m.realised_accuracy.labels(**labels).set(metrics["realised_accuracy"])
                m.estimation_error.labels(**labels).set(metrics["estimation_error"])

    def status(self) -> dict[str, Any]:
        """What the controller sees and did, for a person (the CLI and the demo)."""
        verdict = self.pair.verdict if self.pair is not None else None
        return {
            "mode": self.policy.mode,
            "aliases": dict(self.aliases or {}),
            "registry_up": self.aliases is not None,
            "verdict": verdict_details(verdict) if verdict is not None else None,
            "guards": {c.name: c.describe() for c in self.checks},
            "watch": asdict(self.state.watch) if self.state.watch is not None else None,
            "pending": asdict(self.state.pending) if self.state.pending is not None else None,
            "rolled_back": list(self.state.rolled_back),
            "retrain_running": self.retrainer is not None and self.retrainer.running,
            "open_incidents": self.incidents.open_count(),
            "ticks": self.ticks,
        }
