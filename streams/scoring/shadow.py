"""The shadow challenger: scores the champion's feature matrix off the hot path.

It runs on a :class:`~streams.scoring.side_path.BackgroundWorker` (a thread with a
*bounded* queue): when it falls behind, the batch is dropped and counted; when it
raises, the error is counted and logged. Nothing it does can slow down, stop or
reorder the champion's outputs (onnxruntime releases the GIL while the challenger
scores).

Shadow records are produced through the processor's producer, so they are
flushed by the same checkpoints; but a shadow batch still queued when the
process dies is not replayed for the challenger alone: shadow output is
best-effort by design, the champion's is at-least-once.

A/B routing (``streams.scoring.routing``) is different: there the challenger serves
real traffic for a stable share of entities, inside the pipeline.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from connectors.redis_store import StoreUnavailable
from models.runtime import Scores
from models.serving import ServingModel
from schemas.errors import SignatureMismatch
from schemas.serde import Serde
from streams.drift.psi import psi_from_samples
from streams.ops.metrics import BatchHistogram, Metrics
from streams.scoring.pipeline import BatchOutput, RawBatch
from streams.scoring.routing import column_order
from streams.scoring.side_path import BackgroundWorker
from streams.scoring.store_writer import PredictionSink

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Probability-score bins for comparing champion and challenger score distributions.
SCORE_BINS = np.linspace(0.0, 1.0, 11)[1:-1]


def score_psi(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> float:
    """PSI between two score samples: fixed probability bins, or pooled deciles otherwise."""
    in_unit = all(a.size == 0 or (a.min() >= 0 and a.max() <= 1) for a in (reference, current))
    return psi_from_samples(reference, current, SCORE_BINS if in_unit else None, epsilon)


@dataclass
class ShadowJob:
    event_ids: list[str]
    sensor_ids: list[str]
    keys: list[bytes | None]
    matrix: np.ndarray
    champion: Scores
    champion_version: str
    processed_at: int
    challenger: ServingModel
    #: Columns of ``matrix`` in the challenger's feature order.
    columns: np.ndarray


class ShadowScorer:
    """Scores the challenger on the champion's feature matrix, off the hot path."""

    def __init__(
        self,
        challenger: ServingModel,
        champion_features: Sequence[str],
        *,
        emit: Callable[[list[bytes], list[bytes | None]], None],
        serde: Serde,
        metrics: Metrics,
        store: PredictionSink | None = None,
        sample_fraction: float = 1.0,
        max_pending: int = 8,
        window: int = 10_000,
        tolerance: float = 1e-6,
        worker: bool = True,
    ) -> None:
        self.challenger = challenger
        self.champion_features = list(champion_features)
        self.columns = column_order(champion_features, challenger.feature_names)
        #: Why the shadow is paused (a new champion lacks a feature the challenger needs).
        self.misaligned: str | None = None
        self._emit = emit
        self._serde = serde
        self._metrics = metrics
        self._store = store
        self.sample_fraction = sample_fraction
        self.window = window
        self.tolerance = tolerance
        self._difference = BatchHistogram(
            "streamscore_shadow_score_difference",
            "Absolute difference between challenger and champion scores.",
            (0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0),
            metrics.registry,
        )
        self._window_champion: list[np.ndarray] = []
        self._window_challenger: list[np.ndarray] = []
        self._window_size = 0
        self.agreed = 0
        self.compared = 0
        self.last_psi: float | None = None
        self.worker: BackgroundWorker[ShadowJob] | None = (
            BackgroundWorker("shadow", self.score, max_pending=max_pending) if worker else None
        )

    def replace_challenger(
        self, challenger: ServingModel, champion_features: Sequence[str]
    ) -> None:
        """Hot swap of the challenger (or of the champion's features); checked first."""
        columns = column_order(champion_features, challenger.feature_names)
        self.challenger, self.champion_features, self.columns = (
            challenger,
            list(champion_features),
            columns,
        )
        self.misaligned = None

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None:
        """Side path of the processor: hand the batch to the worker (never blocks)."""
        if out.scores is None or out.scored == 0:
            return
        if out.served and out.served[0][1].feature_names != self.champion_features:
            try:
                self.replace_challenger(self.challenger, out.served[0][1].feature_names)
            except SignatureMismatch as exc:
                # The new champion dropped a feature the challenger needs: the shadow pauses
                # (counted, logged) until a challenger that fits arrives; the batch goes on.
                self._metrics.shadow_errors.inc()
                self._metrics.shadow_events.labels(outcome="error").inc(out.scored)
                self.champion_features = list(out.served[0][1].feature_names)
                self.misaligned = f"{type(exc).__name__}: {exc}"
                log.error("shadow paused until a challenger that fits arrives: %s", exc)
                return
        if self.misaligned is not None:
            self._metrics.shadow_events.labels(outcome="error").inc(out.scored)
            return
        keep = self._sample(out.events.event_ids)
        events = out.events
        job = ShadowJob(
            event_ids=events.event_ids if keep is None else [events.event_ids[i] for i in keep],
            sensor_ids=events.sensor_ids if keep is None else [events.sensor_ids[i] for i in keep],
            keys=out.keys if keep is None else [out.keys[i] for i in keep],
            matrix=out.matrix if keep is None else out.matrix[keep],
            champion=out.scores if keep is None else _take(out.scores, keep),
            champion_version=out.model_version,
            processed_at=out.processed_at,
            challenger=self.challenger,
            columns=self.columns,
        )
        if not job.event_ids:
            return
        if self.worker is None:
            self.score(job)
        elif not self.worker.submit(job):
            self._metrics.shadow_dropped_batches.inc()
            self._metrics.shadow_events.labels(outcome="dropped").inc(len(job.event_ids))

    def _sample(self, event_ids: list[str]) -> list[int] | None:
        """Deterministic per-event sample (same events on every replay); None = all."""
        if self.sample_fraction >= 1.0:
            return None
        cut = int(self.sample_fraction * 2**32)
        return [
            i
            for i, e in enumerate(event_ids)
            if int.from_bytes(hashlib.blake2b(e.encode(), digest_size=4).digest(), "big") < cut
        ]

    def score(self, job: ShadowJob) -> None:
        try:
            challenger = job.challenger.model.predict(job.matrix[:, job.columns])
        except Exception:
            self._metrics.shadow_errors.inc()
            self._metrics.shadow_events.labels(outcome="error").inc(len(job.event_ids))
            raise
        champion = job.champion
        if champion.labels is not None and challenger.labels is not None:
            agree = champion.labels == challenger.labels
        else:
            agree = np.abs(champion.score - challenger.score) <= self.tolerance
        self._compare(champion.score, challenger.score, agree)
        records = self._records(job, challenger, agree)
        self._emit(self._serde.encode_many(records), job.keys)
        if self._store is not None:
            labels = challenger.labels.tolist() if challenger.labels is not None else None
            try:
                self._store.put_batch(
                    "challenger",
                    job.challenger.version,
                    job.event_ids,
                    labels,
                    challenger.score.tolist(),
                )
            except StoreUnavailable:
                # Only a bare PredictionStore raises; the StoreWriter (what the
                # composition root passes) keeps the rows and counts its own gap.
                self._metrics.store_gap.inc(len(job.event_ids))
        self._metrics.shadow_events.labels(outcome="scored").inc(len(job.event_ids))

    def _compare(self, champion: np.ndarray, challenger: np.ndarray, agree: np.ndarray) -> None:
        self.compared += int(agree.size)
        self.agreed += int(agree.sum())
        self._difference.observe_many(np.abs(challenger - champion))
        self._window_champion.append(champion)
        self._window_challenger.append(challenger)
        self._window_size += champion.size
        if self._window_size >= self.window:
            ref = np.concatenate(self._window_champion)
            cur = np.concatenate(self._window_challenger)
            self.last_psi = score_psi(ref, cur)
            self._metrics.shadow_score_psi.set(self.last_psi)
            self._window_champion, self._window_challenger, self._window_size = [], [], 0
        self._metrics.shadow_agreement.set(self.agreed / self.compared if self.compared else 1.0)

    def _records(
        self, job: ShadowJob, challenger: Scores, agree: np.ndarray
    ) -> list[dict[str, Any]]:
        n = len(job.event_ids)
        champion = job.champion
        champ_labels = champion.labels.tolist() if champion.labels is not None else [None] * n
        chall_labels = challenger.labels.tolist() if challenger.labels is not None else [None] * n
        champion_version, challenger_version = job.champion_version, job.challenger.version
        return [
            {
                "event_id": event_id,
                "sensor_id": sensor_id,
                "champion_version": champion_version,
                "challenger_version": challenger_version,
                "champion_label": cl,
                "challenger_label": xl,
                "champion_score": cs,
                "challenger_score": xs,
                "agree": ag,
                "processed_at": job.processed_at,
            }
            for event_id, sensor_id, cl, xl, cs, xs, ag in zip(
                job.event_ids,
                job.sensor_ids,
                champ_labels,
                chall_labels,
                champion.score.tolist(),
                challenger.score.tolist(),
                agree.tolist(),
                strict=True,
            )
        ]

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def report(self) -> dict[str, dict[str, Any]]:
        w = self.worker
        return {
            "shadow": {
                "challenger": f"{self.challenger.name} v{self.challenger.version}",
                "compared": self.compared,
                "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
                "score_psi": self.last_psi,
                "dropped_batches": w.dropped if w else 0,
                "errors": w.errors if w else 0,
            }
        }


def _take(scores: Scores, rows: list[int]) -> Scores:
    return Scores(
        score=scores.score[rows],
        labels=scores.labels[rows] if scores.labels is not None else None,
        probabilities=scores.probabilities[rows] if scores.probabilities is not None else None,
    )
