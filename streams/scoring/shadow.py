"""The shadow challenger: scores the champion's feature matrix off the hot path.

It runs on a :class:`~streams.scoring.side_path.BackgroundWorker` (a thread with a
*bounded* queue): when it falls behind, the batch is dropped and counted; when it
raises, the error is counted and logged. Nothing it does can slow down, stop or
reorder the champion's outputs (onnxruntime releases the GIL while the challenger
scores).

The challenger scores on that thread; what holds the interpreter after it, building and
encoding the shadow records, producing them and writing the challenger's rows to the
prediction store (:func:`publish_shadow`), runs in the side-path worker process when the
composition root gives a ``lane`` (``processor.side_paths = "process"``, the default),
fed the columns (:class:`ShadowColumns`) and bounded like the thread's queue. Without a
lane it runs on the thread, records produced through the processor's producer.

Either way a shadow batch still queued when the process dies is not replayed for the
challenger alone: shadow output is best-effort by design, the champion's is at-least-once.

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
from schemas.codec import Column, Same, records_from_columns
from schemas.errors import SignatureMismatch
from schemas.serde import Serde
from streams.drift.psi import psi_from_samples
from streams.ops.metrics import BatchHistogram, Metrics
from streams.scoring.pipeline import BatchOutput, RawBatch
from streams.scoring.routing import column_order
from streams.scoring.side_path import BackgroundWorker, Lane
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


@dataclass
class ShadowColumns:
    """One shadow-scored batch, column-wise: everything a shadow record is built from.

    Plain lists and numpy arrays, so it pickles cheaply to the side-path process.
    """

    event_ids: list[str]
    sensor_ids: list[str]
    keys: list[bytes | None]
    champion_version: str
    challenger_version: str
    champion_score: np.ndarray
    challenger_score: np.ndarray
    #: Each side's class labels when it is a classifier, else None (object arrays).
    champion_labels: np.ndarray | None
    challenger_labels: np.ndarray | None
    agree: np.ndarray
    processed_at: int

    def __len__(self) -> int:
        return len(self.event_ids)


def shadow_columns(columns: ShadowColumns) -> dict[str, Column]:
    """The fields of one batch's shadow records (schema ``shadow_record``) as columns for
    ``Serde.encode_columns``: no dict per record, the batch's versions and time once."""
    c = columns
    unlabelled = Same(None)
    return {
        "event_id": c.event_ids,
        "sensor_id": c.sensor_ids,
        "champion_version": Same(c.champion_version),
        "challenger_version": Same(c.challenger_version),
        "champion_label": unlabelled if c.champion_labels is None else c.champion_labels.tolist(),
        "challenger_label": (
            unlabelled if c.challenger_labels is None else c.challenger_labels.tolist()
        ),
        "champion_score": c.champion_score.tolist(),
        "challenger_score": c.challenger_score.tolist(),
        "agree": c.agree.tolist(),
        "processed_at": Same(c.processed_at),
    }


def shadow_records(columns: ShadowColumns) -> list[dict[str, Any]]:
    """The shadow records of one batch: a pure function of the columns, so it runs the same
    in the loop's process and in the side-path process."""
    return records_from_columns(shadow_columns(columns), len(columns))


def publish_shadow(
    columns: ShadowColumns,
    *,
    serde: Serde,
    emit: Callable[[list[bytes], list[bytes | None]], None],
    store: PredictionSink | None,
    metrics: Metrics,
) -> None:
    """Encode and emit one batch's shadow records; the challenger's rows to the store."""
    emit(serde.encode_columns(shadow_columns(columns), len(columns)), columns.keys)
    if store is not None:
        labels = columns.challenger_labels
        try:
            store.put_batch(
                "challenger",
                columns.challenger_version,
                columns.event_ids,
                labels.tolist() if labels is not None else None,
                columns.challenger_score.tolist(),
            )
        except StoreUnavailable:
            # Only a bare PredictionStore raises; the StoreWriter (what the
            # composition root passes) keeps the rows and counts its own gap.
            metrics.store_gap.inc(len(columns))
    metrics.shadow_events.labels(outcome="scored").inc(len(columns))


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
        lane: Lane | None = None,
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
        #: Where the columns go to be published (the side-path process); None = here.
        self.lane = lane
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
        ids = out.ids("shadow")  # pseudonymised as privacy.topics says (the store's alike)
        job = ShadowJob(
            event_ids=ids.event_ids if keep is None else [ids.event_ids[i] for i in keep],
            sensor_ids=ids.sensor_ids if keep is None else [ids.sensor_ids[i] for i in keep],
            keys=ids.keys if keep is None else [ids.keys[i] for i in keep],
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
        columns = ShadowColumns(
            event_ids=job.event_ids,
            sensor_ids=job.sensor_ids,
            keys=job.keys,
            champion_version=job.champion_version,
            challenger_version=job.challenger.version,
            champion_score=champion.score,
            challenger_score=challenger.score,
            champion_labels=champion.labels,
            challenger_labels=challenger.labels,
            agree=agree,
            processed_at=job.processed_at,
        )
        if self.lane is None:
            publish_shadow(
                columns, serde=self._serde, emit=self._emit, store=self._store,
                metrics=self._metrics,
            )  # fmt: skip
        elif not self.lane.submit(columns):
            self._metrics.shadow_dropped_batches.inc()
            self._metrics.shadow_events.labels(outcome="dropped").inc(len(columns))

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

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.lane is not None:
            self.lane.close()

    def report(self) -> dict[str, dict[str, Any]]:
        w, lane = self.worker, self.lane
        return {
            "shadow": {
                "challenger": f"{self.challenger.name} v{self.challenger.version}",
                "compared": self.compared,
                "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
                "score_psi": self.last_psi,
                "dropped_batches": (w.dropped if w else 0) + (lane.dropped if lane else 0),
                "errors": (w.errors if w else 0) + (lane.errors if lane else 0),
            }
        }


def _take(scores: Scores, rows: list[int]) -> Scores:
    return Scores(
        score=scores.score[rows],
        labels=scores.labels[rows] if scores.labels is not None else None,
        probabilities=scores.probabilities[rows] if scores.probabilities is not None else None,
    )
