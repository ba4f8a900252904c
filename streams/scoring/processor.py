"""The scoring loop: one process, one consumer-group member.

    poll a micro-batch (its cap: streams.scoring.batching)
    → ScoringPipeline (decode, validate, score, encode)
    → produce predictions, audit events and dead letters
    → side paths (shadow challenger, drift) → checkpoint (streams.scoring.checkpoint)

The loop reads top to bottom; the work is in ``streams.scoring.pipeline`` and the
commit protocol in ``streams.scoring.checkpoint``. Infrastructure failures propagate:
the process exits non-zero without committing, and a restart replays from the
last checkpoint. SIGTERM / SIGINT finish the current batch, flush, commit and
return normally.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol, cast

import numpy as np

from connectors.kafka import Consumer, Message, Producer, client_id
from connectors.kafka_admin import Admin
from models.serving import ServingModel
from schemas.settings import Settings
from streams.ops.metrics import Health, Metrics
from streams.privacy.chain import AuditChain
from streams.privacy.edge import privacy_tools
from streams.scoring.batching import BatchSizer, LatencyTarget
from streams.scoring.checkpoint import Checkpoint
from streams.scoring.dead_letters import DeadLetterPolicy
from streams.scoring.membership import ASSIGNORS, GroupMember, join_timeout, leave_policy
from streams.scoring.model_watcher import ModelWatcher
from streams.scoring.pipeline import BatchOutput, RawBatch, ScoringPipeline
from streams.scoring.replay import Replay
from streams.scoring.routing import ABRouting
from streams.scoring.shadow import ShadowScorer
from streams.scoring.side_path import SidePath

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one run did; printed by ``streamscore run`` and the demo."""

    events_in: int = 0
    scored: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    commits: int = 0
    elapsed_s: float = 0.0
    busy_s: float = 0.0
    first_event_at: float | None = None
    last_event_at: float | None = None
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    model_name: str = ""
    model_version: str = ""
    exit_reason: str = ""
    #: A/B rows the challenger failed on and the champion served.
    challenger_fallbacks: int = 0
    #: What the side paths report about themselves (shadow, drift, prediction store).
    side_paths: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether ``processor.latency_target_ms`` was met, and the batch cap it led to.
    latency_target: dict[str, Any] = field(default_factory=dict)
    #: A replay's stretch and progress (``--from-timestamp`` / ``--until``); None otherwise.
    replay: dict[str, Any] | None = None

    @property
    def throughput(self) -> float:
        """Events per second between the first and the last polled batch."""
        if self.first_event_at is None or self.last_event_at is None:
            return 0.0
        span = self.last_event_at - self.first_event_at
        return self.events_in / span if span > 0 else float(self.events_in)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "predictions": self.scored,
            "dead_letters": self.dead_letters,
            "dead_letters_by_reason": dict(self.dead_letters_by_reason),
            "batches": self.batches,
            "commits": self.commits,
            "elapsed_s": round(self.elapsed_s, 3),
            "busy_s": round(self.busy_s, 3),
            "throughput_eps": round(self.throughput, 1),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "model": {"name": self.model_name, "version": self.model_version},
            "exit_reason": self.exit_reason,
            "challenger_fallbacks": self.challenger_fallbacks,
            "latency_target": dict(self.latency_target),
            **({"replay": self.replay} if self.replay is not None else {}),
            **self.side_paths,
        }


def dlq_limit(settings: Settings, producer: Producer) -> int:
    """The largest dead letter the DLQ will take: the producer's ``message.max.bytes``, and
    the topic's ``max.message.bytes`` / broker's ``message.max.bytes`` where the cluster
    reports them (the embedded broker reports neither and takes any size)."""
    limits = {"producer message.max.bytes": producer.max_message_bytes}
    if not settings.kafka.is_embedded:
        cluster = Admin(settings.kafka, quiet=True).max_message_bytes(settings.topics.dlq)
        if cluster is not None:
            limits[f"{settings.topics.dlq} max.message.bytes"] = cluster
    source, limit = min(limits.items(), key=lambda kv: kv[1])
    log.info("dead letters up to %d bytes (%s); larger ones are truncated", limit, source)
    return limit


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchTimings:
    """When one batch passed each step: wall clock at poll, then ``perf_counter`` marks."""

    polled_wall: float
    polled: float
    produce_started: float
    produced: float
    done: float


class _BatchSeries:
    """The labelled series the loop updates after every batch, bound once."""

    def __init__(self, metrics: Metrics) -> None:
        self._stage_seconds = metrics.stage_seconds
        self._stages: dict[str, Any] = {}
        self.events_in = metrics.consumed.labels(role="events")
        self.predictions_out = metrics.produced.labels(role="predictions")
        self.audit_out = metrics.produced.labels(role="audit")
        self.scored = metrics.outcomes.labels(outcome="scored")

    def stage(self, name: str) -> Any:
        child = self._stages.get(name)
        if child is None:
            child = self._stages[name] = self._stage_seconds.labels(stage=name)
        return child


class Processor:
    """Owns the clients and runs the loop. Build it with :meth:`from_settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        producer: Producer,
        pipeline: ScoringPipeline,
        champion: ServingModel,
        metrics: Metrics,
        health: Health,
        audit_chain: AuditChain | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.pipeline = pipeline
        self.champion = champion
        self.metrics = metrics
        self.health = health
        self.topics = settings.topics
        #: Links each batch of audit records to the one before (``privacy.audit_chain``).
        self.audit_chain = audit_chain
        self.checkpoint = Checkpoint(
            producer,
            consumer,
            interval_s=settings.processor.commit_interval_ms / 1000,
            flush_timeout_s=settings.processor.flush_timeout_s,
        )
        #: Called with each batch's output after the champion's records are produced.
        self.side_paths: list[SidePath] = []
        self.challenger: ServingModel | None = None
        self.shadow: ShadowScorer | None = None
        self.ab: ABRouting | None = None
        self.watcher: ModelWatcher | None = None
        #: Builds the shadow scorer for a challenger (set by the composition root).
        self.make_shadow: Callable[[ServingModel], ShadowScorer] | None = None
        #: Other helpers stopped with the loop (the lag refresher).
        self.closables: list[Closable] = []
        self.summary = RunSummary(model_name=champion.name, model_version=champion.version)
        p = settings.processor
        #: The cap of the next batch (latency-aware batching, streams.scoring.batching).
        self.sizer = BatchSizer(target_ms=p.latency_target_ms, max_batch=p.max_batch)
        self.latency = LatencyTarget(p.latency_target_ms)
        self._stop_reason: str | None = None
        #: Replay / backfill: the stretch of history to score, or None (streams.scoring.replay).
        self.replay = Replay.from_settings(p)
        #: Rebalances, what this member holds, a stuck join (streams.scoring.membership).
        self.member = GroupMember(
            consumer,
            metrics=metrics,
            health=health,
            commit=self._commit,
            forget=self.checkpoint.forget,
            join_timeout_s=join_timeout(p.join_timeout_s, settings.kafka.session_timeout_ms),
            leave_group=leave_policy(p, settings.kafka),
            start_ms=self.replay.start_ms if self.replay is not None else None,
        )
        #: When the challenger started failing (A/B fallbacks, shadow errors); None = fine.
        self._failing_since: float | None = None
        #: (errors, processed) of the shadow worker at the last look.
        self._shadow_seen = (0, 0)
        #: The labelled children every batch updates, looked up once (``labels()`` took a
        #: quarter of the per-batch accounting).
        self._each_batch = _BatchSeries(metrics)
        self._publish_model_info()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        champion: ServingModel,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> Processor:
        from connectors.schema_registry import topic_serde

        p = settings.processor
        consumer = Consumer(
            settings.kafka,
            group_id=p.group_id,
            client_id=client_id("processor"),
            auto_offset_reset=p.auto_offset_reset,
            **{
                "message.max.bytes": max(p.max_message_bytes * 4, 1_000_000),
                "partition.assignment.strategy": ASSIGNORS[p.assignment_strategy],
                # A replay ends a partition at its end: librdkafka says when it got there.
                "enable.partition.eof": Replay.from_settings(p) is not None,
            },
        )
        privacy = privacy_tools(settings)
        dead_letters = DeadLetterPolicy(
            payload=settings.dlq.payload,
            sealer=privacy.sealer,
            key_pseudonym=privacy.key_pseudonym,
        )
        producer = Producer(
            settings.kafka,
            client_id=client_id("processor"),
            linger_ms=p.linger_ms,
            shrink=dead_letters.shrink,
            shrink_topics=[settings.topics.dlq],
        )
        dead_letters.limit_bytes = dlq_limit(settings, producer)
        pipeline = ScoringPipeline(
            event_serde=topic_serde(settings, "events"),
            prediction_serde=topic_serde(settings, "predictions"),
            audit_serde=topic_serde(settings, "audit"),
            max_message_bytes=p.max_message_bytes,
            actor=client_id("processor"),
            dead_letters=dead_letters,
            pseudonymiser=privacy.pseudonymiser,
        )
        health = health or Health()
        health.champion_loaded = True
        return cls(
            settings,
            consumer=consumer,
            producer=producer,
            pipeline=pipeline,
            champion=champion,
            metrics=metrics or Metrics(),
            health=health,
            audit_chain=privacy.chain(pipeline.actor),
        )

    # -- control -----------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Ask the loop to finish its current batch, commit and return."""
        self._stop_reason = reason

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def _publish_model_info(self) -> None:
        for role, model in (("champion", self.champion), ("challenger", self.challenger)):
            if model is not None:
                self.metrics.model_info.labels(role=role).info(
                    {"name": model.name, "version": model.version, "task": model.meta.task}
                )

    def attach_challenger(self, challenger: ServingModel) -> None:
        """Use ``challenger`` as ``shadow.mode`` says: in the shadow, or for its A/B share.

        Works the same at start and for a challenger that appears later (hot swap).
        """
        mode = self.settings.shadow.mode
        if mode == "off":
            return
        self.challenger = challenger
        if mode == "ab":
            weights = self.settings.shadow.ab_weights
            self.ab = ABRouting.build(
                weights, {"champion": self.champion, "challenger": challenger}
            )
        elif self.shadow is not None:
            self.shadow.replace_challenger(challenger, self.champion.feature_names)
        elif self.make_shadow is not None:
            self.shadow = self.make_shadow(challenger)
            self.side_paths.append(self.shadow)
        self._publish_model_info()

    def audit(self, action: str, model: ServingModel, details: dict[str, str]) -> None:
        """Publish a lifecycle audit event (model_changed, model_refused, ...)."""
        record = {
            "action": action,
            "model_name": model.name,
            "model_version": model.version,
            "actor": self.pipeline.actor,
            "occurred_at": int(time.time() * 1000),
            "details": details,
        }
        value = self.pipeline.audit_serde.encode(record)
        self._produce_audit([value], [model.name.encode()])

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self, *, exit_when_idle: float | None = None, max_events: int | None = None
    ) -> RunSummary:
        p = self.settings.processor
        wait_s = p.max_wait_ms / 1000
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread signals cannot be caught: the caller uses stop().
            with contextlib.suppress(ValueError):
                handlers[sig] = signal.signal(sig, self._on_signal)
        self.member.subscribe([self.topics.events])
        self.health.broker_reachable = True
        self.metrics.dependency_up.labels(dependency="kafka").set(1)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations, so full collections stay short (they made the
        # latency tail: up to 0.7 s pauses measured before this).
        gc.collect()
        gc.freeze()
        started = last_input = time.monotonic()
        # Joining the group (at the start, in a rebalance) counts as a grace period.
        join_grace = max(30.0, 2 * self.settings.kafka.session_timeout_ms / 1000)
        clean = False
        try:
            while self._stop_reason is None:
                messages = self.consumer.consume(self.sizer.limit, wait_s)
                now = time.monotonic()
                if self.checkpoint.due():  # before producing more: earlier outputs are acked
                    self._commit(wait=False)
                if messages:
                    last_input = now
                    self._process(messages)
                elif exit_when_idle is not None:
                    joining, assigned = self.member.joining_since, self.member.assigned_at
                    if joining is not None:  # a rebalance is no idleness (up to the grace)
                        idle = now - joining - join_grace
                    else:
                        idle = now - max(last_input, assigned or started)
                    if idle >= exit_when_idle:
                        self.stop(f"idle for {exit_when_idle:g}s")
                if messages and p.commit_interval_ms == 0:
                    self._commit()
                self.member.check()
                if self.replay is not None:
                    self._replay_progress()
                self._between_batches()
                self.health.progress()
                self.metrics.last_progress.set(time.time())
                if max_events is not None and self.summary.events_in >= max_events:
                    self.stop(f"reached {max_events} events")
            clean = True
        finally:
            self.release(clean=clean)
            for side_path in self.side_paths:
                self.summary.side_paths.update(side_path.report())
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            gc.unfreeze()  # what outlives the run (in tests, embedders) is collectable again
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.latency_target = self.latency.as_dict(self.sizer)
            self.summary.exit_reason = self._stop_reason or "error"
            self.summary.replay = self.replay.report() if self.replay is not None else None
        return self.summary

    def release(self, *, clean: bool) -> None:
        """End what the processor holds: the model watcher, the side paths (drained), the
        closables and its Kafka clients. ``clean``: commit, and deliver what the side paths
        produced, first; otherwise undelivered outputs are dropped (they are uncommitted,
        so their inputs are consumed again next run)."""
        if self.watcher is not None:
            self.watcher.stop()
        for side_path in self.side_paths:
            side_path.close()  # drained before the final commit
        for closable in self.closables:
            closable.close()
        delivered = False
        try:
            if clean:
                self._commit()
                # Side paths drained above may have produced after the last pending
                # offset was committed (shadow records): deliver those too.
                self.producer.flush(self.settings.processor.flush_timeout_s)
                delivered = True
        finally:
            self.producer.close(discard=not delivered)
        self.member.close()

    def _replay_progress(self) -> None:
        """End the partitions past the stretch, stop fetching them, stop once all ended."""
        replay = cast(Replay, self.replay)
        replay.reached_end(self.consumer.take_ends())
        self.consumer.pause(replay.take_pauses() & self.member.held)
        if replay.finished(self.member.held):
            self.stop(replay.reason())

    def _commit(self, *, wait: bool = True) -> None:
        before = self.checkpoint.commits
        self.checkpoint.commit(wait=wait)
        taken = self.checkpoint.commits - before  # answers to earlier commits count here too
        if taken:
            self.summary.commits += taken
            self.metrics.commits.inc(taken)

    def _between_batches(self) -> None:
        """Hot swap: switch to models the watcher loaded, only ever between two batches."""
        self._watch_shadow()
        if self.watcher is None:
            return
        self._report_model_source(self.watcher.source_up)
        ready, refusals = self.watcher.take()
        for refusal in refusals:
            self.metrics.model_load_failures.labels(role=refusal.role).inc()
            self.health.problems[f"{refusal.role}_refused"] = (
                f"v{refusal.version}: {refusal.reason}"
            )
            current = self.champion if refusal.role == "champion" else self.challenger
            self.audit(
                "model_refused",
                current or self.champion,
                {"role": refusal.role, "refused_version": refusal.version,
                 "reason": refusal.reason[:500]},
            )  # fmt: skip
        for role, model in ready.items():
            self.swap(role, model)

    def _watch_shadow(self) -> None:
        """Show a shadow challenger that keeps failing in /readyz; clear it once it scores."""
        if self.shadow is not None and self.shadow.misaligned is not None:
            self.health.problems["challenger"] = f"shadow paused: {self.shadow.misaligned}"
            return
        worker = self.shadow.worker if self.shadow is not None else None
        if worker is None:
            return
        errors, processed = worker.errors, worker.processed
        seen_errors, seen_processed = self._shadow_seen
        if errors > seen_errors:
            self.health.problems["challenger"] = (
                f"failing in the shadow ({errors} batches so far): {worker.last_error}"
            )
        elif processed > seen_processed:
            self.health.problems.pop("challenger", None)
        self._shadow_seen = (errors, processed)

    def _report_model_source(self, up: bool) -> None:
        """Keep MLflow's reachability current in metrics and /readyz (registry source only)."""
        if self.settings.models.source != "registry":
            return
        self.metrics.dependency_up.labels(dependency="mlflow").set(1 if up else 0)
        if up:
            self.health.problems.pop("mlflow", None)
        else:
            self.health.problems["mlflow"] = "unreachable: serving the models already loaded"

    def swap(self, role: str, model: ServingModel) -> None:
        """Switch ``role`` to ``model`` now; record where the new version starts."""
        old = self.champion if role == "champion" else self.challenger
        positions = self.consumer.positions()
        # A good version replaces whatever was wrong with the role before.
        self.health.problems.pop(f"{role}_refused", None)
        if role == "challenger":
            self.health.problems.pop("challenger", None)
            self._failing_since = None
        if role == "champion":
            self.champion = model
            self.summary.model_name, self.summary.model_version = model.name, model.version
            if self.ab is not None and self.challenger is not None:
                self.attach_challenger(self.challenger)
            # The shadow scorer re-aligns its columns when it sees the new champion's batch.
        else:
            self.attach_challenger(model)
        self.metrics.model_swaps.labels(role=role).inc()
        self._publish_model_info()
        first = ",".join(f"{t}[{p}]={o}" for (t, p), o in sorted(positions.items()))
        self.audit(
            "model_changed",
            model,
            {"role": role, "old_version": old.version if old else "",
             "new_version": model.version, "first_offsets": first},
        )  # fmt: skip
        log.info("%s switched %s -> v%s; first offsets %s",
                 role, old.version if old else "none", model.version, first)  # fmt: skip

    def _process(self, messages: list[Message]) -> None:
        if self.replay is not None:
            messages, skipped = self.replay.select(messages)
            self.checkpoint.track(skipped)  # nothing to produce for them: done once committed
            if not messages:
                return
        polled = time.perf_counter()
        polled_wall = time.time()
        raw = RawBatch(
            values=[m.value() for m in messages],
            keys=[m.key() for m in messages],
            # A consumed record always has its topic, partition and offset.
            topics=cast(list[str], [m.topic() for m in messages]),
            partitions=cast(list[int], [m.partition() for m in messages]),
            offsets=cast(list[int], [m.offset() for m in messages]),
        )
        out = self.pipeline.run(raw, self.champion, ab=self.ab)
        self._challenger_fell_back(out)
        produce_started = time.perf_counter()
        self._produce(out)
        produced = time.perf_counter()
        self.checkpoint.track(zip(raw.topics, raw.partitions, raw.offsets, strict=True))
        for side_path in self.side_paths:
            side_path(out, raw)
        timings = BatchTimings(polled_wall, polled, produce_started, produced, time.perf_counter())
        self._account(raw, out, timings)

    def _challenger_fell_back(self, out: BatchOutput) -> None:
        """A/B: count, audit (once per failing streak) and show a challenger that raised."""
        if self.ab is None:
            return
        if not out.fallbacks:
            if self._failing_since is not None and out.scored:
                self._failing_since = None
                self.health.problems.pop("challenger", None)
            return
        rows = sum(n for n, _ in out.fallbacks.values())
        self.metrics.challenger_fallback_events.inc(rows)
        self.summary.challenger_fallbacks += rows
        error = next(iter(out.fallbacks.values()))[1]
        self.health.problems["challenger"] = (
            f"failing in A/B, the champion serves its share: {error}"
        )
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error("challenger failed in A/B (its rows fall back to the champion): %s", error)
            if self.challenger is not None:
                self.audit("challenger_failed", self.challenger,
                           {"mode": "ab", "rows": str(rows), "error": error[:500]})  # fmt: skip

    def _produce(self, out: BatchOutput) -> None:
        topics = self.topics
        self.producer.produce_many(
            topics.predictions, out.prediction_values, out.ids("predictions").keys
        )
        self._produce_audit(out.audit_values, out.ids("audit").keys)
        for dead in out.dead_letters:
            self.producer.produce(topics.dlq, dead.value, dead.key, dead.headers)

    def _produce_audit(self, values: list[bytes], keys: list[bytes | None]) -> None:
        """Audit records, each batch a link of the audit chain (its headers) when on."""
        if self.audit_chain is None:
            self.producer.produce_many(self.topics.audit, values, keys)
        else:
            self.audit_chain.publish(self.producer.produce, self.topics.audit, values, keys)

    def _pace(self, n: int, t: BatchTimings) -> None:
        """Latency-aware batching: the next cap from this batch; the target, met or not."""
        self.sizer.observe(taken=n, seconds=t.done - t.polled)
        before = self.latency.over
        self.latency.observe(n, t.produced - t.polled)
        m = self.metrics
        if self.latency.over != before:
            m.latency_over_target.inc(self.latency.over - before)
        m.latency_target_met.set(1 if self.latency.met_now else 0)
        m.batch_limit.set(self.sizer.limit)

    def _account(self, raw: RawBatch, out: BatchOutput, t: BatchTimings) -> None:
        m, s = self.metrics, self.summary
        polled_wall, polled_at, t_produce, produced_at, done = (
            t.polled_wall,
            t.polled,
            t.produce_started,
            t.produced,
            t.done,
        )
        n, scored, dead = len(raw), out.scored, len(out.dead_letters)
        s.events_in += n
        s.scored += scored
        s.dead_letters += dead
        s.batches += 1
        s.busy_s += done - polled_at
        if s.first_event_at is None:
            s.first_event_at = polled_wall
        s.last_event_at = polled_wall + (done - polled_at)
        each = self._each_batch
        for stage, seconds in out.stage_seconds.items():
            s.stage_seconds[stage] += seconds
            each.stage(stage).inc(seconds)
        s.stage_seconds["produce"] += produced_at - t_produce
        each.stage("produce").inc(produced_at - t_produce)
        s.stage_seconds["side_paths"] += done - produced_at
        self._pace(n, t)
        each.events_in.inc(n)
        each.predictions_out.inc(scored)
        each.audit_out.inc(scored)
        each.scored.inc(scored)
        m.batch_size.observe(n)
        if dead:
            m.produced.labels(role="dlq").inc(dead)
            m.outcomes.labels(outcome="dead_lettered").inc(dead)
            for d in out.dead_letters:
                reason = d.rejection.reason
                s.dead_letters_by_reason[reason] += 1
                m.dead_letters.labels(stage=d.rejection.stage, reason=reason).inc()
        if scored:
            m.processing_latency.observe_repeated(produced_at - polled_at, scored)
            event_times = np.asarray(out.events.event_times, dtype=np.float64)
            m.end_to_end_latency.observe_many(
                np.maximum(polled_wall + (produced_at - polled_at) - event_times / 1000, 0.0)
            )
