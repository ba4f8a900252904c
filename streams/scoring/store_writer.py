"""The prediction-store side path: each served variant's predictions to Redis, off the loop.

Labels arrive later and are joined against these records by the evaluator; a write
that cannot be made (worker behind, Redis down) is a counted gap, never a stop.
"""

from __future__ import annotations

from typing import Any

from connectors.redis_store import PredictionStore, StoreUnavailable
from streams.ops.metrics import Health, Metrics
from streams.scoring.pipeline import BatchOutput, RawBatch
from streams.scoring.side_path import BackgroundWorker


class StoreWriter:
    """Writes the champion's (or each served variant's) predictions to Redis, off the hot path."""

    def __init__(
        self,
        store: PredictionStore,
        metrics: Metrics,
        health: Health | None = None,
        *,
        max_pending: int = 16,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.health = health
        self.gap_events = 0
        self.worker: BackgroundWorker[list[tuple[str, str, list[str], Any, list[float]]]] = (
            BackgroundWorker("prediction-store", self._write, max_pending=max_pending)
        )

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None:
        if out.scores is None or out.scored == 0:
            return
        parts = []
        for variant, version, rows in out.served_parts():
            labels = out.scores.labels[rows].tolist() if out.scores.labels is not None else None
            ids = [out.events.event_ids[i] for i in rows]
            parts.append((variant, version, ids, labels, out.scores.score[rows].tolist()))
        if not self.worker.submit(parts):
            gap = sum(len(p[2]) for p in parts)
            self.gap_events += gap
            self.metrics.store_gap.inc(gap)

    def _write(self, parts: list[tuple[str, str, list[str], Any, list[float]]]) -> None:
        try:
            for variant, version, ids, labels, scores in parts:
                self.store.put_batch(variant, version, ids, labels, scores)
        except StoreUnavailable:
            gap = sum(len(p[2]) for p in parts)
            self.gap_events += gap
            self.metrics.store_gap.inc(gap)
            self.metrics.dependency_up.labels(dependency="redis").set(0)
            if self.health is not None:
                self.health.problems["redis"] = "unreachable: predictions are not being stored"
            raise
        self.metrics.dependency_up.labels(dependency="redis").set(1)
        if self.health is not None:
            self.health.problems.pop("redis", None)

    def close(self) -> None:
        self.worker.close()

    def report(self) -> dict[str, dict[str, Any]]:
        w = self.worker
        return {"prediction_store": {"batches_written": w.processed, "gap_events": self.gap_events}}
