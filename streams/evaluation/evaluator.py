"""The evaluator: delayed labels joined with stored predictions, per-variant quality in
Faust tables, and the champion-vs-challenger verdict (faust-streaming).

::

    sensor.labels ─► take a batch ─► decode ─► Redis prediction store (one pipelined call)
        ─► score each variant (streams.evaluation.quality) ─► Faust tables ─► sensor.evaluation

It only ever sees labels, never the scoring path (Faust passes ~3,000 events/s
here; the scoring loop does far more).

**Tables** (changelog-backed, memory store, restored from their changelog
topics ``<app_id>-<table>-changelog`` when the worker starts):

================  =========================================  ==============================
table             key                                        value
================  =========================================  ==============================
``quality``       ``variant|model_version``                  cumulative :class:`QualityStats`
``tumbling``      ``variant|model_version|window_start_ms``  one tumbling window's stats
``hopping``       ``variant|model_version|window_start_ms``  one hopping window's stats
``comparisons``   ``metric|champion_v|challenger_v``         the paired test's full state
``labels``        ``counts``                                 labels by outcome (missing, ...)
``progress``      ``progress``                               watermark, current version pair
================  =========================================  ==============================

**Commit protocol of one batch** (written down here, and only here):

1. complete the batch (offsets Faust dropped are read back from the broker,
   :meth:`Evaluator.complete_batch`); decode the labels; look both variants up
   in the store (while Redis is down, retry; after ``store_retry_s`` stop, and
   the next run replays the batch);
2. update every table key the batch touches, synchronously. Each value keeps,
   per label partition, the last offset it absorbed, and skips labels at or
   below it: a replayed batch changes nothing it already holds;
3. flush the producer: every changelog record is acknowledged;
4. ack the batch's events (``noack_take`` leaves that to us); Faust commits
   acked offsets. A crash anywhere before 4 replays the batch, and step 2 makes
   the replay exact: each label is counted once per table. A batch that fails
   is never acked, and nothing after it is processed (:meth:`Evaluator.fail`).

**Windows are ours, not Faust's** ``.tumbling()`` / ``.hopping()`` tables:
those take the window from the *current event* (one timestamp per table
operation, while one ``take`` batch spans many windows), expire windows by
wall-clock time instead of the labels' event time, keep the expiry schedule in
memory only (windows restored from the changelog are never closed), and in
faust-streaming 0.15 ``on_window_close`` never receives the window's value
(see the note in ``faust/tables/base.py::_del_old_keys``). Here a window is a
plain table key; it closes when the event-time watermark passes its end plus
a grace period, is emitted then, re-emitted if a late label changes it, and
dropped after a retention period (:class:`streams.evaluation.quality.WindowSpec`).

**Faust and broker facts this relies on.** Tables use ``use_partitioner=True``: the
changelog partition is the key's hash, not the current event's partition, so a
batch mixing partitions writes each key to one place, and the emit timer may
write (close windows) outside any event. Consequence: **run one evaluator per
``app_id``**; a second member would split the changelog partitions and each
would hold part of the state. Labels are few enough for one. Each batch's
changelog writes end with a *seal* per partition written (a one-record batch,
see :meth:`Evaluator.commit_changes`): the embedded broker understates high
watermarks by up to one batch and Faust's recovery stops at the watermark, so
without it a restart silently lost the last changelog records of a partition
(measured: a counter restored as 337 instead of 338).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import sys
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from connectors.kafka import Admin
from connectors.redis_store import PredictionStore, StoreUnavailable
from connectors.schema_registry import topic_serde
from connectors.topic_reader import read_partition_range, read_topic_from_start
from models.bundle import bundle_exists, load_bundle
from schemas.errors import ConfigError, DecodeError, InfrastructureError
from schemas.serde import Serde
from schemas.settings import KafkaSettings, Settings
from streams.drift.monitor import DriftMonitor
from streams.evaluation.quality import (
    CLASSIFICATION,
    LABEL_OUTCOMES,
    LabelBatch,
    PredictionLike,
    QualityStats,
    VariantOutcomes,
    VerdictPolicy,
    WindowKind,
    WindowSpec,
    advance_offsets,
    comparison_state,
    decode_labels,
    evaluation_key,
    fresh_mask,
    group_indices,
    label_outcomes,
    missing_ranges,
    new_comparison,
    paired_update,
    restore_comparison,
    score_variant,
    summarise_evaluations,
)
from streams.evaluation.verdict import Verdict

log = logging.getLogger(__name__)

WINDOW_KINDS: tuple[WindowKind, ...] = ("tumbling", "hopping")
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500)
#: Key of the seal records (see :meth:`Evaluator.commit_changes`); never a table key.
SEAL_KEY = "__seal__"


@dataclass(frozen=True, slots=True)
class EvaluatorOptions:
    """How one evaluator runs. ``variants[0]`` is the champion, ``variants[1]`` the challenger."""

    #: Faust app id: the consumer group and the prefix of the changelog topics.
    app_id: str = "streamscore-evaluator"
    variants: tuple[str, ...] = ("champion", "challenger")
    windows: WindowSpec = field(default_factory=WindowSpec)
    policy: VerdictPolicy = field(default_factory=VerdictPolicy)
    #: The champion's classes; None = read them from the champion bundle, if any.
    classes: tuple[str, ...] | None = None
    max_batch: int = 500
    max_wait_s: float = 0.5
    emit_interval_s: float = 5.0
    #: How long a batch waits for Redis to come back before the evaluator crashes.
    store_retry_s: float = 60.0
    #: /metrics port; None = settings.metrics.port + 1 (the processor has the port itself).
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if len(self.variants) < 1 or len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants must be distinct and not empty, got {self.variants}")
        if self.max_batch < 1 or self.max_wait_s <= 0 or self.emit_interval_s <= 0:
            raise ConfigError("max_batch, max_wait_s and emit_interval_s must be > 0")


class EvaluatorMetrics:
    """``streamscore_evaluator_*`` metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.labels = Counter(
            "streamscore_evaluator_labels_total",
            "Labels consumed, by outcome (matched, partial, missing, undecodable, invalid).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.missing = Counter(
            "streamscore_evaluator_missing_predictions_total",
            "Valid labels whose prediction was missing or expired, by variant.",
            ["variant"], registry=r,
        )  # fmt: skip
        self.expired = Counter(
            "streamscore_evaluator_expired_window_labels_total",
            "Labels too late for their windows' retention (cumulative only), by window kind.",
            ["window"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "streamscore_evaluator_batch_size_labels", "Labels per batch.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_seconds = Counter(
            "streamscore_evaluator_stage_seconds_total",
            "Time spent per stage (decode, lookup, tables, commit, emit).", ["stage"],
            registry=r,
        )  # fmt: skip
        self.refetched = Counter(
            "streamscore_evaluator_refetched_labels_total",
            "Labels Faust skipped, read back from the broker (see Evaluator.complete_batch).",
            registry=r,
        )
        self.store_errors = Counter(
            "streamscore_evaluator_store_errors_total",
            "Failed prediction-store lookups (the batch is retried).", registry=r,
        )  # fmt: skip
        self.emitted = Counter(
            "streamscore_evaluator_records_emitted_total",
            "Evaluation records produced, by window kind.", ["window"], registry=r,
        )  # fmt: skip
        self.accuracy = Gauge(
            "streamscore_evaluator_accuracy_ratio", "Cumulative online accuracy.",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.evaluated = Gauge(
            "streamscore_evaluator_evaluated_labels", "Labels evaluated (cumulative).",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.e_value = Gauge(
            "streamscore_evaluator_verdict_e_value",
            "Current e-value against 'the challenger is no better'.", registry=r,
        )  # fmt: skip
        self.decision = Gauge(
            "streamscore_evaluator_verdict_decision",
            "Verdict: 1 promote, 0 inconclusive, -1 keep.", registry=r,
        )  # fmt: skip
        self.paired = Gauge(
            "streamscore_evaluator_paired_labels", "Paired labels in the current comparison.",
            registry=r,
        )  # fmt: skip
        self.watermark = Gauge(
            "streamscore_evaluator_watermark_timestamp_seconds",
            "Largest labelled_at seen (event time).", registry=r,
        )  # fmt: skip
        self.last_batch = Gauge(
            "streamscore_evaluator_last_batch_timestamp_seconds",
            "Unix time the last label batch was committed to the tables.", registry=r,
        )  # fmt: skip


def positive_class(settings: Settings, classes: Sequence[str] | None) -> tuple[str | None, str]:
    """The binary positive class (``classes[-1]``) and the model task, from options or bundle."""
    task = "unknown"
    if classes is None and bundle_exists(settings.models.champion_path):
        _, meta = load_bundle(settings.models.champion_path)
        task = meta.task
        classes = meta.classes if meta.task == "classification" else None
    elif classes is not None:
        task = "classification"
    if classes is not None and len(classes) == 2:
        return str(classes[-1]), task
    return None, task


def broker_credentials(kafka: KafkaSettings) -> Any:
    """Faust credentials for the settings' security protocol (None for PLAINTEXT)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                kafka.ssl_certificate_location,
                kafka.ssl_key_location,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if not (kafka.sasl_username and kafka.sasl_password):
        raise ConfigError(f"{protocol} needs kafka.sasl_username and kafka.sasl_password")
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


class Evaluator:
    """The agent body and the emit timer, over the app's tables (see the module docstring)."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        options: EvaluatorOptions,
        store: PredictionStore,
        metrics: EvaluatorMetrics,
    ) -> None:
        self.app = app
        self.options = options
        self.store = store
        self.metrics = metrics
        self.label_serde: Serde = topic_serde(settings, "labels")
        self.evaluation_serde: Serde = topic_serde(settings, "evaluation")
        self.positive_label, self.task = positive_class(settings, options.classes)
        if self.task == "regression" and options.policy.loss_bound is None:
            raise ConfigError("the champion is a regressor: the verdict needs a loss bound")
        self.windows = options.windows
        self.variants = options.variants
        self.paired = options.variants[:2] if len(options.variants) >= 2 else ()

        def table(name: str, help_text: str) -> Any:
            return app.Table(name, default=None, use_partitioner=True, help=help_text)

        self.quality = table("quality", "Cumulative quality by variant and model version.")
        self.window_tables = {
            "tumbling": table("tumbling", "Quality per tumbling window."),
            "hopping": table("hopping", "Quality per hopping window."),
        }
        self.comparisons = table("comparisons", "Paired champion/challenger test state.")
        self.labels = table("labels", "Labels by outcome.")
        self.progress = table("progress", "Event-time watermark and current version pair.")
        self.evaluation_topic = app.topic(
            settings.topics.evaluation,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.labels_topic_name = settings.topics.labels
        self.kafka = settings.kafka
        # Concept drift: ADWIN on the champion's per-event error stream. Its records go
        # to the drift topic after the batch's tables are committed (at-least-once).
        self.drift_settings = settings.drift
        self.error_drift: DriftMonitor | None = None
        self.drift_serde: Serde = topic_serde(settings, "drift")
        self.drift_topic = app.topic(
            settings.topics.drift,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        self._drift_records: list[dict[str, Any]] = []
        self.drift_records_sent = 0
        # Run bookkeeping (this process only).
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.last_batch_at: float | None = None
        self.batches = 0
        self.labels_in = 0
        self.outcomes: TallyCounter[str] = TallyCounter()
        self.records_emitted = 0
        self.refetched = 0
        self.resumed_labels: int | None = None
        self.exit_reason = "signal"
        self._emitted_signature: dict[str, tuple[Any, ...]] = {}
        self._stop: Callable[[], object] | None = None
        self._stopping = False
        self._warned_no_loss_bound = False
        self.failure: BaseException | None = None
        self.label_positions: dict[int, dict[str, int | None]] = {}
        self._dirty: dict[int, Any] = {}  # tables written since the last seal, by id

    # ------------------------------------------------------------------ batch path

    def fail(self, exc: BaseException) -> None:
        """A batch failed: stop consuming (the batch stays unacked, so the next run
        replays it) and stop the worker; :func:`run_evaluator` raises ``exc``."""
        log.error("evaluator batch failed, stopping: %r", exc)
        if self.failure is None:
            self.failure = exc
            if self._stop is not None:
                self._stop()

    async def handle(self, events: Sequence[Any]) -> None:
        """Steps 1-3 of the commit protocol for one batch (the agent acks it: step 4)."""
        if self.failure is not None:
            # Never process past a failed batch: the tables would absorb later
            # labels and then skip the failed ones as already seen.
            raise InfrastructureError(f"an earlier batch failed: {self.failure!r}")
        self._mark_ready()
        clock, stage = time.perf_counter, self.metrics.stage_seconds
        t0 = clock()
        messages = await self.complete_batch(events)
        batch, errors = decode_labels(messages, self.label_serde)
        for error in errors:
            log.warning("undecodable label on %s: %s", self.labels_topic_name, error)
        t1 = clock()
        predictions = await self._lookup(batch)
        t2 = clock()
        self.apply(batch, predictions)
        t3 = clock()
        await self.commit_changes()
        await self._send_drift()
        t4 = clock()
        for name, seconds in (("decode", t1 - t0), ("lookup", t2 - t1), ("tables", t3 - t2),
                              ("commit", t4 - t3)):  # fmt: skip
            stage.labels(name).inc(seconds)
        self.batches += 1
        self.labels_in += len(batch)
        self.last_batch_at = time.monotonic()
        self.metrics.batch_size.observe(len(batch))
        self.metrics.last_batch.set(time.time())

    async def complete_batch(self, events: Sequence[Any]) -> list[tuple[int, int, bytes | None]]:
        """The batch as ``(partition, offset, value)`` in offset order, without duplicates,
        and with any label Faust skipped read back from the broker.

        Why: with faust-streaming 0.15 on the embedded broker, the first record of a
        partition after a restart sometimes never reached the agent (about one run
        in three of the SIGKILL restart test; with ``DEVLOG=1`` Faust logs neither
        a dropped nor a skipped message, which points at ``Consumer.getmany``
        silently leaving out records of partitions outside its active set after
        the client moved past them). Faust's commit then passes the hole:
        ``Consumer._new_offset`` checks ``min(acked) - committed > 1`` although the
        committed offset is the *next* one to read, so a single missing record at
        the head is committed over, and the label was lost for good.

        The ``labels`` table knows the last offset absorbed per partition, so a
        batch that starts past the next one has a hole (so does a batch with
        offsets missing in between), which is read back from the broker and
        processed with the batch, in offset order. A partition with nothing
        absorbed yet is checked within the batch only.
        """
        unique = {(e.message.partition, e.message.offset): e.value for e in events}
        messages = [(p, o, v) for (p, o), v in sorted(unique.items())]
        absorbed = (self.labels.get("counts") or {}).get("offsets", {})
        offsets_by_partition: dict[int, list[int]] = {}
        for partition, offset, _ in messages:
            offsets_by_partition.setdefault(partition, []).append(offset)
        for partition, offsets in offsets_by_partition.items():
            last = absorbed.get(str(partition))
            for start, end in missing_ranges(offsets, None if last is None else last + 1):
                missing = await asyncio.to_thread(
                    read_partition_range,
                    self.kafka,
                    self.labels_topic_name,
                    partition,
                    start,
                    end,
                )
                self.refetched += len(missing)
                self.metrics.refetched.inc(len(missing))
                log.warning(
                    "labels %s[%d]: offsets %d..%d never reached the agent; read %d back",
                    self.labels_topic_name, partition, start, end - 1, len(missing),
                )  # fmt: skip
                messages.extend((r.partition, r.offset, r.value) for r in missing)
        messages.sort(key=lambda m: (m[0], m[1]))
        return messages

    def _put(self, table: Any, key: str, value: dict[str, Any]) -> None:
        table[key] = value
        self._dirty[id(table)] = table

    async def commit_changes(self) -> None:
        """Wait until every changelog record written so far is acknowledged, then *seal*
        each partition of the tables written: one tombstone of a key that never exists,
        sent alone, so that it is a one-record batch.

        Why: the embedded broker reports a high watermark of *base offset of the
        last batch + 1*, and Faust's recovery reads a changelog partition only up
        to that watermark. Without the seal the records of a partition's last
        multi-record batch were skipped on restart (measured: a counter restored
        as 337 instead of 338). The seal makes the watermark exact; on recovery it
        deletes a key that is not there. A crash before the seal is harmless: the
        batch's input offsets are not committed yet, and the replay restores what
        recovery skipped (values are idempotent per label offset).
        """
        await self.app.producer.flush()
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        partitions = self.app.conf.topic_partitions
        for table in dirty.values():
            for partition in range(partitions):
                table.send_changelog(partition, SEAL_KEY, None, value_serializer="raw")
        await self.app.producer.flush()

    async def _lookup(self, batch: LabelBatch) -> list[dict[str, PredictionLike]]:
        valid = np.flatnonzero(batch.valid)
        result: list[dict[str, PredictionLike]] = [{} for _ in range(len(batch))]
        if valid.size == 0:
            return result
        ids = [batch.event_ids[i] for i in valid.tolist()]
        deadline = time.monotonic() + self.options.store_retry_s
        delay = 0.2
        while True:
            try:
                found = await asyncio.to_thread(self.store.get_many, ids, self.variants)
                break
            except StoreUnavailable as exc:
                self.metrics.store_errors.inc()
                if time.monotonic() + delay > deadline:
                    raise InfrastructureError(
                        f"prediction store unavailable for {self.options.store_retry_s:.0f}s: {exc}"
                    ) from exc
                log.warning("prediction store unavailable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for i, entry in zip(valid.tolist(), found, strict=True):
            result[i] = dict(entry)
        return result

    def apply(self, batch: LabelBatch, predictions: Sequence[dict[str, PredictionLike]]) -> None:
        """Step 2: update every table key the batch touches (synchronous: no await inside,
        so the emit timer never sees half a batch)."""
        outcomes = [
            score_variant(batch, predictions, v, self.positive_label) for v in self.variants
        ]
        per_label = label_outcomes(batch, outcomes)
        progress = self.progress.get("progress") or {"watermark_ms": None, "pair": None}
        watermark = progress["watermark_ms"]
        expired: dict[str, np.ndarray] = {}
        for variant in outcomes:
            self._update_quality(variant, batch, watermark, expired)
        pair_key = self._update_comparisons(outcomes, batch)
        self._count_labels(batch, per_label, outcomes, expired)
        if outcomes:
            self._watch_errors(outcomes[0], batch)
        valid = batch.valid
        if valid.any():
            # A label dated in the future (a skewed producer clock) must not close every
            # window at once: the watermark never runs ahead of wall-clock time + grace.
            ceiling = int(time.time() * 1000) + self.windows.grace_ms
            top = min(int(batch.labelled_at[valid].max()), ceiling)
            watermark = top if watermark is None else max(watermark, top)
            self.metrics.watermark.set(watermark / 1000)
        if pair_key is not None:
            progress = {**progress, "pair": pair_key}
        self._put(self.progress, "progress", {**progress, "watermark_ms": watermark})

    def _watch_errors(self, champion: VariantOutcomes, batch: LabelBatch) -> None:
        """Feed ADWIN the champion's per-event error: 0/1 misclassification, |error| otherwise."""
        if not self.drift_settings.enabled:
            return
        present = np.flatnonzero(champion.present)
        if present.size == 0:
            return
        if self.task == "regression":
            errors = np.abs(champion.error[present])
        else:
            errors = (~champion.correct[present]).astype(np.float64)
        version = champion.versions[int(present[-1])] or ""
        monitor = self.error_drift
        if monitor is None or monitor.model_version != version:
            monitor = self.error_drift = DriftMonitor(
                None, champion.variant, version, self.drift_settings
            )
        self._drift_records.extend(
            monitor.update(
                None,
                None,
                batch.offsets[present],
                batch.labelled_at[present],
                errors=errors,
            )
        )

    async def _send_drift(self) -> None:
        records, self._drift_records = self._drift_records, []
        if not records:
            return
        for record, value in zip(records, self.drift_serde.encode_many(records), strict=True):
            await self.drift_topic.send(key=str(record["target"]).encode(), value=value)
        self.drift_records_sent += len(records)

    def _update_quality(
        self,
        outcomes: VariantOutcomes,
        batch: LabelBatch,
        watermark: int | None,
        expired: dict[str, np.ndarray],
    ) -> None:
        present = np.flatnonzero(outcomes.present)
        if present.size == 0:
            return
        variant = outcomes.variant
        versions = [outcomes.versions[i] for i in present.tolist()]
        for version, positions in group_indices(versions).items():
            idx = present[positions]
            meta = {"variant": variant, "model_version": version, "window": "cumulative"}
            self._absorb(self.quality, f"{variant}|{version}", meta, outcomes, batch, idx)
        windows = self.windows
        for kind in WINDOW_KINDS:
            size = windows.size_ms(kind)
            starts = windows.starts(kind, batch.labelled_at[present])
            table = self.window_tables[kind]
            dropped = np.zeros(len(batch), dtype=np.bool_)
            for column in range(starts.shape[1]):
                column_starts = starts[:, column]
                too_old = np.zeros(present.size, dtype=np.bool_)
                if watermark is not None:
                    too_old = column_starts + size + windows.retention_ms <= watermark
                    dropped[present[too_old]] = True
                keys = [
                    None if old else (version, int(start))
                    for version, start, old in zip(
                        versions, column_starts.tolist(), too_old.tolist(), strict=True
                    )
                ]
                for (version, start), positions in group_indices(keys).items():
                    meta = {
                        "variant": variant,
                        "model_version": version,
                        "window": kind,
                        "start": start,
                        "end": start + size,
                    }
                    key = f"{variant}|{version}|{start}"
                    self._absorb(table, key, meta, outcomes, batch, present[positions])
            previous = expired.get(kind)
            expired[kind] = dropped if previous is None else previous | dropped

    def _absorb(
        self,
        table: Any,
        key: str,
        meta: dict[str, Any],
        outcomes: VariantOutcomes,
        batch: LabelBatch,
        idx: np.ndarray,
    ) -> None:
        value = table.get(key)
        if value is None:
            value = {**meta, "stats": QualityStats().to_dict(), "offsets": {}, "late": 0}
            if meta["window"] != "cumulative":
                value.update(closed=False, emitted_n=0)
        fresh = idx[fresh_mask(batch.partitions[idx], batch.offsets[idx], value["offsets"])]
        if fresh.size == 0:
            return
        stats = QualityStats.from_dict(value["stats"])
        stats.add(outcomes, batch, fresh)
        updated = {
            **value,
            "stats": stats.to_dict(),
            "offsets": advance_offsets(
                value["offsets"], batch.partitions[fresh], batch.offsets[fresh]
            ),
        }
        if value.get("closed"):
            updated["late"] = int(value["late"]) + int(fresh.size)
        self._put(table, key, updated)

    def _update_comparisons(
        self, outcomes: Sequence[VariantOutcomes], batch: LabelBatch
    ) -> str | None:
        """Feed paired outcomes to the comparison of their version pair; returns the key of
        the pair with the newest label in this batch."""
        if not self.paired:
            return None
        champion, challenger = outcomes[0], outcomes[1]
        both = np.flatnonzero(champion.present & challenger.present)
        if both.size == 0:
            return None
        keys = []
        for i in both.tolist():
            metric = "accuracy" if batch.kind[i] == CLASSIFICATION else "loss"
            keys.append(f"{metric}|{champion.versions[i]}|{challenger.versions[i]}")
        newest: tuple[int, str] | None = None
        for key, positions in group_indices(keys).items():
            idx = both[positions]
            metric = key.split("|", 1)[0]
            if metric == "loss" and self.options.policy.loss_bound is None:
                if not self._warned_no_loss_bound:
                    log.warning("regression labels, but no loss bound: no verdict is computed")
                    self._warned_no_loss_bound = True
                continue
            value = self.comparisons.get(key)
            if value is None:
                first, second = key.split("|", 1)[1].split("|", 1)
                comparison = new_comparison(
                    "accuracy" if metric == "accuracy" else "loss", self.options.policy
                )
                value = {
                    "versions": {self.paired[0]: first, self.paired[1]: second},
                    "state": comparison_state(comparison),
                    "offsets": {},
                }
            fresh = idx[fresh_mask(batch.partitions[idx], batch.offsets[idx], value["offsets"])]
            at = int(batch.labelled_at[idx].max())
            if newest is None or at >= newest[0]:
                newest = (at, key)
            if fresh.size == 0:
                continue
            comparison = restore_comparison(value["state"])
            paired_update(comparison, champion, challenger, batch, fresh)
            self._put(
                self.comparisons,
                key,
                {
                    **value,
                    "state": comparison_state(comparison),
                    "offsets": advance_offsets(
                        value["offsets"], batch.partitions[fresh], batch.offsets[fresh]
                    ),
                },
            )
        return None if newest is None else newest[1]

    def _count_labels(
        self,
        batch: LabelBatch,
        per_label: Sequence[str],
        outcomes: Sequence[VariantOutcomes],
        expired: dict[str, np.ndarray],
    ) -> None:
        value = self.labels.get("counts") or {"counts": {}, "offsets": {}}
        fresh = fresh_mask(batch.partitions, batch.offsets, value["offsets"])
        if not fresh.any():
            return
        tally: TallyCounter[str] = TallyCounter(
            outcome for outcome, new in zip(per_label, fresh.tolist(), strict=True) if new
        )
        tally["received"] = int(fresh.sum())
        valid = batch.valid & fresh
        for variant in outcomes:
            missing = int((valid & ~variant.found).sum())
            if missing:
                tally[f"missing/{variant.variant}"] = missing
                self.metrics.missing.labels(variant.variant).inc(missing)
        for kind, dropped in expired.items():
            count = int((dropped & fresh).sum())
            if count:
                tally[f"expired/{kind}"] = count
                self.metrics.expired.labels(kind).inc(count)
        for outcome in LABEL_OUTCOMES:
            self.metrics.labels.labels(outcome).inc(tally.get(outcome, 0))
        self.outcomes.update(tally)
        counts = dict(value["counts"])
        for name, count in tally.items():
            counts[name] = int(counts.get(name, 0)) + int(count)
        self._put(
            self.labels,
            "counts",
            {
                "counts": counts,
                "offsets": advance_offsets(
                    value["offsets"], batch.partitions[fresh], batch.offsets[fresh]
                ),
            },
        )

    # ------------------------------------------------------------------ emission

    def current_verdict(self) -> tuple[Verdict, dict[str, str]] | None:
        """The verdict of the current version pair, and those versions."""
        progress = self.progress.get("progress")
        if not progress or not progress.get("pair"):
            return None
        value = self.comparisons.get(progress["pair"])
        if value is None:
            return None
        policy = self.options.policy
        verdict = restore_comparison(value["state"]).verdict(
            policy.alpha, policy.min_samples, policy.max_samples
        )
        return verdict, dict(value["versions"])

    def collect(self, *, end_of_input: bool = False) -> list[dict[str, Any]]:
        """Evaluation records due now; marks emitted windows (step of the emit timer).

        Windows close when the watermark passes their end plus the grace period
        (or at once with ``end_of_input``), are re-emitted when late labels
        change them, and are dropped after the retention period. A cumulative
        record is emitted whenever its numbers, the label counts or the
        verdict changed since the last one this process emitted.
        """
        now_ms = int(time.time() * 1000)
        progress = self.progress.get("progress") or {}
        watermark = progress.get("watermark_ms")
        spec = self.windows
        records: list[dict[str, Any]] = []
        for table in self.window_tables.values():
            for key, value in list(table.items()):
                n = int(value["stats"]["n"])
                due = end_of_input or (
                    watermark is not None and value["end"] + spec.grace_ms <= watermark
                )
                if due and (not value["closed"] or n != value["emitted_n"]):
                    records.append(self._record(value, now_ms, late=value["late"]))
                    value = {**value, "closed": True, "emitted_n": n}
                    self._put(table, key, value)
                if watermark is not None and value["end"] + spec.retention_ms <= watermark:
                    del table[key]
                    self._dirty[id(table)] = table
        counts = (self.labels.get("counts") or {}).get("counts", {})
        label_metrics = {f"labels/{name}": float(count) for name, count in sorted(counts.items())}
        current = self.current_verdict()
        versions: dict[str, str] = {}
        if current is not None:
            verdict, versions = current
            self.metrics.e_value.set(verdict.e_value)
            self.metrics.decision.set(verdict.to_evidence()["decision"])
            self.metrics.paired.set(verdict.n)
        for key, value in list(self.quality.items()):
            stats = value["stats"]
            attach = (
                current is not None and versions.get(value["variant"]) == value["model_version"]
            )
            signature = (
                stats["n"],
                counts.get("received"),
                current[0].n if attach and current else None,
            )
            self.metrics.evaluated.labels(value["variant"], value["model_version"]).set(stats["n"])
            metrics = QualityStats.from_dict(stats).metrics()
            if "accuracy" in metrics:
                self.metrics.accuracy.labels(value["variant"], value["model_version"]).set(
                    metrics["accuracy"]
                )
            if self._emitted_signature.get(key) == signature:
                continue
            self._emitted_signature[key] = signature
            records.append(
                self._record(
                    value,
                    now_ms,
                    extra=label_metrics,
                    verdict=current[0] if attach and current else None,
                )
            )
        # A variant with no evaluated label yet (every label missing its prediction,
        # say) still gets a record, so the label counts reach the topic and the report.
        evaluated = {value["variant"] for value in self.quality.values()}
        for variant in self.variants:
            if not counts or variant in evaluated:
                continue
            signature = (0, counts.get("received"), None)
            if self._emitted_signature.get(variant) == signature:
                continue
            self._emitted_signature[variant] = signature
            empty = {"variant": variant, "model_version": "", "window": "cumulative"}
            records.append(
                self._record(
                    {**empty, "stats": QualityStats().to_dict()}, now_ms, extra=label_metrics
                )
            )
        return records

    def _record(
        self,
        value: dict[str, Any],
        now_ms: int,
        *,
        late: int | None = None,
        extra: dict[str, float] | None = None,
        verdict: Verdict | None = None,
    ) -> dict[str, Any]:
        stats = QualityStats.from_dict(value["stats"])
        metrics = stats.metrics()
        if late is not None:
            metrics["late"] = float(late)
        if extra:
            metrics.update(extra)
        if value["window"] == "cumulative":
            start, end = stats.first_ms or 0, stats.last_ms or 0
        else:
            start, end = value["start"], value["end"]
        return {
            "variant": value["variant"],
            "model_version": value["model_version"],
            "window": value["window"],
            "window_start": int(start),
            "window_end": int(end),
            "count": stats.n,
            "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)},
            "verdict": verdict.decision if verdict is not None else None,
            "evidence": verdict.to_evidence() if verdict is not None else {},
            "emitted_at": now_ms,
        }

    async def emit(self, *, end_of_input: bool = False) -> int:
        """Produce the records due now and wait for their acknowledgement."""
        if not self.ready:
            return 0
        started = time.perf_counter()
        records = self.collect(end_of_input=end_of_input)
        if not records:
            return 0
        values = self.evaluation_serde.encode_many(records)
        for record, value in zip(records, values, strict=True):
            key = evaluation_key(record).encode()
            await self.evaluation_topic.send(key=key, value=value)
            self.metrics.emitted.labels(record["window"]).inc()
        await self.commit_changes()
        self.records_emitted += len(records)
        self.metrics.stage_seconds.labels("emit").inc(time.perf_counter() - started)
        return len(records)

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Tables recovered and partitions assigned: reading the tables is meaningful."""
        if self.app.rebalancing or not self.app.tables.actives_ready:
            return False
        self._mark_ready()
        return True

    def _mark_ready(self) -> None:
        # Faust feeds the agent only once the tables are recovered, so the first
        # batch or the first ready timer tick, whichever comes first, sees the
        # restored state before this run changed it.
        if self.ready_at is None:
            self.ready_at = time.monotonic()
            counts = (self.labels.get("counts") or {}).get("counts", {})
            self.resumed_labels = int(counts.get("received", 0))
            log.info("evaluator ready; %d labels restored from the tables", self.resumed_labels)

    async def check_idle(self, exit_when_idle: float) -> None:
        """Close every window, emit, and stop once no label came for ``exit_when_idle`` s."""
        if self._stopping or not self.ready or self.ready_at is None:
            return
        since = max(self.ready_at, self.last_batch_at or 0.0)
        if time.monotonic() - since < exit_when_idle:
            return
        self._stopping = True
        self.exit_reason = "idle"
        self.label_positions = await self._label_positions()
        log.info("idle for %.1fs; label partitions: %s", exit_when_idle, self.label_positions)
        await self.emit(end_of_input=True)
        if self._stop is not None:
            self._stop()

    async def _label_positions(self) -> dict[int, dict[str, int | None]]:
        """Per assigned labels partition: next offset to read, and the broker's high watermark
        as of the last fetch."""
        consumer = self.app.consumer
        positions: dict[int, dict[str, int | None]] = {}
        for tp in sorted(consumer.assignment()):
            if tp.topic != self.labels_topic_name:
                continue
            positions[tp.partition] = {
                "position": await consumer.position(tp),
                "highwater": consumer.highwater(tp),
            }
        return positions

    def summary(self) -> dict[str, Any]:
        """What this run did, and the state of the tables at its end."""
        counts = (self.labels.get("counts") or {}).get("counts", {})
        cumulative = {
            key: {
                "count": int(value["stats"]["n"]),
                **QualityStats.from_dict(value["stats"]).metrics(),
            }
            for key, value in self.quality.items()
        }
        current = self.current_verdict()
        verdict = None
        if current is not None:
            v, versions = current
            verdict = {
                "decision": v.decision,
                "n": v.n,
                "e_value": v.e_value,
                "p_value_sequential": v.p_value_sequential,
                "versions": versions,
            }
        return {
            "exit": self.exit_reason,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "batches": self.batches,
            "labels_in": self.labels_in,
            "outcomes": dict(self.outcomes),
            "records_emitted": self.records_emitted,
            "drift_records": self.drift_records_sent,
            "refetched_labels": self.refetched,
            "stage_seconds": {
                sample.labels["stage"]: round(sample.value, 3)
                for family in self.metrics.stage_seconds.collect()
                for sample in family.samples
                if sample.name.endswith("_total")
            },
            "resumed_labels": self.resumed_labels,
            "label_partitions": self.label_positions,
            "tables": {"labels": dict(counts), "cumulative": cumulative},
            "verdict": verdict,
        }


@dataclass
class EvaluatorApp:
    app: Any
    evaluator: Evaluator


def build_evaluator(
    settings: Settings,
    *,
    store: PredictionStore | None = None,
    options: EvaluatorOptions | None = None,
    label_partitions: int | None = None,
    exit_when_idle: float | None = None,
    metrics: EvaluatorMetrics | None = None,
) -> EvaluatorApp:
    """The Faust app and the evaluator behind it."""
    options = options or EvaluatorOptions()
    kafka = settings.kafka
    datadir = settings.home / "evaluator"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        options.app_id,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(kafka.session_timeout_ms / 6000, 0.5),
        topic_partitions=label_partitions or settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    evaluator = Evaluator(
        app,
        settings,
        options,
        store if store is not None else PredictionStore(settings.redis),
        metrics or EvaluatorMetrics(),
    )
    labels_topic = app.topic(
        settings.topics.labels,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(labels_topic, name="evaluate-labels")
    async def evaluate_labels(stream: Any) -> None:
        # noack_take, not take_events: take_events acks a batch in a ``finally``,
        # so a batch interrupted by an error, a rebalance or SIGTERM would be
        # acked (and committed) without having reached the tables.
        async for events in stream.noack_take(options.max_batch, within=options.max_wait_s):
            try:
                await evaluator.handle(events)
            except Exception as exc:
                evaluator.fail(exc)
                raise
            for event in events:
                await stream.ack(event)

    @app.timer(options.emit_interval_s, name="emit-evaluations")
    async def emit_evaluations() -> None:
        await evaluator.emit()

    if exit_when_idle is not None:

        @app.timer(min(0.5, exit_when_idle / 4), name="exit-when-idle")
        async def exit_when_idle_check() -> None:
            await evaluator.check_idle(exit_when_idle)

    return EvaluatorApp(app, evaluator)


def _label_partitions(settings: Settings) -> int:
    """Partitions of the labels topic (created, with the evaluation topic, when missing)."""
    admin = Admin(settings.kafka)
    admin.ensure_topics(
        [settings.topics.labels, settings.topics.evaluation],
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )
    return admin.topics()[settings.topics.labels]


def run_evaluator(
    settings: Settings,
    *,
    exit_when_idle: float | None = None,
    options: EvaluatorOptions | None = None,
    store: PredictionStore | None = None,
) -> dict[str, Any]:
    """Run the evaluator in this process until SIGTERM / SIGINT, or until idle.

    With ``exit_when_idle`` it stops once no label arrived for that many
    seconds after the tables were restored, closing every window first (the
    end of a bounded input). Returns :meth:`Evaluator.summary`; raises
    :class:`InfrastructureError` when the worker crashed.
    """
    options = options or EvaluatorOptions()
    metrics = EvaluatorMetrics()
    built = build_evaluator(
        settings,
        store=store,
        options=options,
        label_partitions=_label_partitions(settings),
        exit_when_idle=exit_when_idle,
        metrics=metrics,
    )
    if settings.metrics.enabled:
        port = options.metrics_port or settings.metrics.port + 1
        start_http_server(port, settings.metrics.host, registry=metrics.registry)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(
        built.app,
        loop=loop,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    # Called from the idle timer, on the worker's loop: stop like SIGTERM does.
    built.evaluator._stop = lambda: asyncio.ensure_future(worker.stop())
    code: int | str | None = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
    failure = built.evaluator.failure
    if failure is not None:
        if isinstance(failure, InfrastructureError):
            raise failure
        raise InfrastructureError(f"the evaluator stopped on an error: {failure!r}") from failure
    if code not in (0, None):
        raise InfrastructureError(f"the evaluator stopped on an error: {worker.crash_reason!r}")
    return built.evaluator.summary()


# --------------------------------------------------------------------------- shadow report


def latest_report(
    settings: Settings, *, idle_s: float = 1.0, timeout_s: float = 30.0
) -> dict[str, Any]:
    """The newest evaluation records of ``sensor.evaluation``, summarised for
    ``streamscore shadow report`` (see :func:`streams.evaluation.quality.summarise_evaluations`)."""
    serde = topic_serde(settings, "evaluation")
    raw = read_topic_from_start(
        settings.kafka, settings.topics.evaluation, idle_s=idle_s, timeout_s=timeout_s
    )
    records = []
    undecodable = 0
    for record in raw:
        if record.value is None:
            continue
        try:
            records.append(serde.decode(record.value))
        except DecodeError:
            undecodable += 1
    report = summarise_evaluations(records)
    report["topic"] = settings.topics.evaluation
    report["undecodable"] = undecodable
    return report
