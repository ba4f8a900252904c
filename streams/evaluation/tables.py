"""The evaluator's tables and every synchronous change to them: a scored batch absorbed,
windows closed into evaluation records, the current verdict read back.

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

Each value keeps, per label partition, the last offset it absorbed, and skips
labels at or below it (:func:`streams.evaluation.quality.fresh_mask`): a replayed
batch changes nothing it already holds.

**Windows are ours, not Faust's** ``.tumbling()`` / ``.hopping()`` tables:
those take the window from the *current event* (one timestamp per table
operation, while one ``take`` batch spans many windows), expire windows by
wall-clock time instead of the labels' event time, keep the expiry schedule in
memory only (windows restored from the changelog are never closed), and in
faust-streaming 0.15 ``on_window_close`` never receives the window's value
(see the note in ``faust/tables/base.py::_del_old_keys``). Here a window is a
plain table key; it closes when the event-time watermark passes its end plus
a grace period, is emitted then, re-emitted if a late label changes it, and
dropped after a retention period (:class:`streams.evaluation.windows.WindowSpec`).

Tables are plain mappings to this class: Faust tables in the evaluator
(:class:`streams.evaluation.evaluator.Evaluator` adds the IO around them),
dicts in unit tests. Nothing here awaits, so the emit timer never sees half a
batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streams.evaluation.labels import (
    CLASSIFICATION,
    LABEL_OUTCOMES,
    LabelBatch,
    PredictionLike,
    VariantOutcomes,
    label_outcomes,
    score_variant,
)
from streams.evaluation.metrics import EvaluatorMetrics
from streams.evaluation.options import EvaluatorOptions
from streams.evaluation.policy import new_comparison, paired_update
from streams.evaluation.quality import QualityStats, advance_offsets, fresh_mask, group_indices
from streams.evaluation.records import EvaluationRecord, evaluation_record
from streams.evaluation.verdict import Verdict, comparison_state, restore_comparison
from streams.evaluation.windows import WINDOW_KINDS

log = logging.getLogger(__name__)


class EvaluationTables:
    """The tables above and the synchronous steps over them (see the module docstring).

    ``make_table(name, help_text)`` makes one table; ``positive_label`` is the
    binary model's positive class (``classes[-1]``), or None.
    """

    def __init__(
        self,
        options: EvaluatorOptions,
        metrics: EvaluatorMetrics,
        positive_label: str | None,
        make_table: Callable[[str, str], Any],
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.positive_label = positive_label
        self.windows = options.windows
        self.variants = options.variants
        self.paired = options.variants[:2] if len(options.variants) >= 2 else ()
        self.quality = make_table("quality", "Cumulative quality by variant and model version.")
        self.window_tables = {
            "tumbling": make_table("tumbling", "Quality per tumbling window."),
            "hopping": make_table("hopping", "Quality per hopping window."),
        }
        self.comparisons = make_table("comparisons", "Paired champion/challenger test state.")
        self.labels = make_table("labels", "Labels by outcome.")
        self.progress = make_table("progress", "Event-time watermark and current version pair.")
        #: Labels by outcome, absorbed by this process.
        self.outcomes: TallyCounter[str] = TallyCounter()
        self._emitted_signature: dict[str, tuple[Any, ...]] = {}
        self._warned_no_loss_bound = False
        self._dirty: dict[int, Any] = {}  # tables written since the last seal, by id

    def _put(self, table: Any, key: str, value: dict[str, Any]) -> None:
        table[key] = value
        self._dirty[id(table)] = table

    def take_dirty(self) -> list[Any]:
        """The tables written since the last call (their changelogs need a seal)."""
        dirty, self._dirty = self._dirty, {}
        return list(dirty.values())

    # ------------------------------------------------------------------ absorbing a batch

    def apply(
        self, batch: LabelBatch, predictions: Sequence[dict[str, PredictionLike]]
    ) -> list[VariantOutcomes]:
        """Update every table key the batch touches (step 2 of the commit protocol);
        returns each variant's outcomes."""
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
        return outcomes

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

    def collect(self, *, end_of_input: bool = False) -> list[EvaluationRecord]:
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
        records: list[EvaluationRecord] = []
        for table in self.window_tables.values():
            for key, value in list(table.items()):
                n = int(value["stats"]["n"])
                due = end_of_input or (
                    watermark is not None and value["end"] + spec.grace_ms <= watermark
                )
                if due and (not value["closed"] or n != value["emitted_n"]):
                    records.append(evaluation_record(value, now_ms, late=value["late"]))
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
                evaluation_record(
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
                evaluation_record(
                    {**empty, "stats": QualityStats().to_dict()}, now_ms, extra=label_metrics
                )
            )
        return records
