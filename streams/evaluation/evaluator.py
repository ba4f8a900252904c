"""The evaluator: delayed labels joined with stored predictions, per-variant quality in
Faust tables, and the champion-vs-challenger verdict (faust-streaming).

::

    sensor.labels ─► take a batch ─► decode ─► Redis prediction store (one pipelined call)
        ─► score each variant (streams.evaluation.labels) ─► Faust tables ─► sensor.evaluation

It only ever sees labels, never the scoring path (Faust passes ~3,000 events/s
here; the scoring loop does far more). The tables, their keys and values, and
every synchronous step over them are :mod:`streams.evaluation.tables`'s; this
module adds the IO around them: the Faust tables and topics, the prediction
store, the broker read-back, the commit protocol, drift records and the run's
lifecycle. The Faust app and worker are wired in :mod:`streams.evaluation.app`.

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
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from connectors.redis_store import PredictionStore, StoreUnavailable
from connectors.schema_registry import topic_serde
from connectors.topic_reader import read_partition_range
from schemas.errors import ConfigError, InfrastructureError
from schemas.serde import Serde
from schemas.settings import Settings
from streams.drift.monitor import DriftMonitor
from streams.evaluation.labels import LabelBatch, PredictionLike, VariantOutcomes, decode_labels
from streams.evaluation.metrics import EvaluatorMetrics
from streams.evaluation.options import EvaluatorOptions, positive_class
from streams.evaluation.quality import QualityStats, missing_ranges
from streams.evaluation.records import evaluation_key
from streams.evaluation.tables import EvaluationTables
from streams.privacy.keys import load_keyring
from streams.privacy.pseudonym import store_lookup

log = logging.getLogger(__name__)

#: Key of the seal records (see :meth:`Evaluator.commit_changes`); never a table key.
SEAL_KEY = "__seal__"


class Evaluator(EvaluationTables):
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
        self.store = store
        #: The store lookup by the labels' raw event ids (pseudonymised first when the
        #: store's keys are: ``privacy.topics.store``).
        self._get_many = store_lookup(
            store.get_many, settings.privacy, load_keyring(settings.privacy)
        )
        self.label_serde: Serde = topic_serde(settings, "labels")
        self.evaluation_serde: Serde = topic_serde(settings, "evaluation")
        positive_label, self.task = positive_class(settings, options.classes)
        if self.task == "regression" and options.policy.loss_bound is None:
            raise ConfigError("the champion is a regressor: the verdict needs a loss bound")

        def table(name: str, help_text: str) -> Any:
            return app.Table(name, default=None, use_partitioner=True, help=help_text)

        super().__init__(options, metrics, positive_label, table)
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
        self.records_emitted = 0
        self.refetched = 0
        self.resumed_labels: int | None = None
        self.exit_reason = "signal"
        #: Stops the worker like SIGTERM does (set by ``run_evaluator``).
        self.stop_worker: Callable[[], object] | None = None
        self._stopping = False
        self.failure: BaseException | None = None
        self.label_positions: dict[int, dict[str, int | None]] = {}

    # ------------------------------------------------------------------ batch path

    def fail(self, exc: BaseException) -> None:
        """A batch failed: stop consuming (the batch stays unacked, so the next run
        replays it) and stop the worker; :func:`streams.evaluation.app.run_evaluator`
        raises ``exc``."""
        log.error("evaluator batch failed, stopping: %r", exc)
        if self.failure is None:
            self.failure = exc
            if self.stop_worker is not None:
                self.stop_worker()

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
        dirty = self.take_dirty()
        if not dirty:
            return
        partitions = self.app.conf.topic_partitions
        for table in dirty:
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
                found = await asyncio.to_thread(self._get_many, ids, self.variants)
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

    def apply(
        self, batch: LabelBatch, predictions: Sequence[dict[str, PredictionLike]]
    ) -> list[VariantOutcomes]:
        """Step 2 (see :meth:`EvaluationTables.apply`), and the champion's errors fed to the
        concept-drift detector."""
        outcomes = super().apply(batch, predictions)
        if outcomes:
            self._watch_errors(outcomes[0], batch)
        return outcomes

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
        if self.stop_worker is not None:
            self.stop_worker()

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
