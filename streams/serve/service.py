"""One implementation, two doors: the processor's scoring for HTTP requests.

Both doors end in :class:`~streams.scoring.pipeline.ScoringPipeline`, built as the
processor builds it but with ``channel="http"``:

* ``/v1/score`` (sensor events): each event, as compact JSON, is one value of a
  :class:`RawBatch`, and :meth:`ScoringPipeline.run` decodes, validates, scores and
  encodes it: the same reasons and messages as the DLQ headers, the same
  ``Prediction`` records (JSON here), the same ``scored`` audit records;
* the Open Inference Protocol (tensors): rows are checked by
  :func:`~streams.scoring.stages.check_matrix` when the request arrives and scored with
  :meth:`ScoringPipeline.score_decoded`; row ``i`` of request ``r`` is event ``r:i``
  (sensor ``r``) in the audit records and the prediction store.

Each batch is scored with the models of :meth:`ServedModels.between_batches` (hot swap
between batches, as in the processor), then its outputs leave as the processor's do:
audit records (and, with ``serve.publish_predictions``, predictions) to Kafka through
the :class:`~streams.serve.publish.Publisher`, and the side paths (the prediction store
writer, the shadow challenger). The jobs of several requests make one batch (see
:mod:`streams.serve.batcher`); each request gets its slice back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from connectors.kafka import client_id
from connectors.schema_registry import topic_serde
from models.runtime import Scores
from models.serving import ServingModel
from schemas.errors import Rejection, SignatureMismatch
from schemas.serde import JsonSerde
from schemas.settings import Settings
from streams.ops.metrics import Metrics
from streams.privacy.edge import privacy_tools
from streams.scoring.pipeline import BatchOutput, RawBatch, ScoringPipeline, raw_batch_from
from streams.scoring.shadow import ShadowScorer
from streams.scoring.side_path import SidePath
from streams.scoring.stages import EventBatch
from streams.serve.models import Served, ServedModels
from streams.serve.publish import Publisher

log = logging.getLogger(__name__)

CHANNEL = "http"
#: The topic name HTTP rows carry inside a RawBatch (never produced to: no DLQ here).
HTTP_SOURCE = "http"


@dataclass(slots=True)
class EventsJob:
    """The events of one ``/v1/score`` request, each as compact JSON bytes."""

    values: list[bytes]


@dataclass(slots=True)
class EventsResult:
    #: ``Prediction`` records (JSON) of the valid events, in request order.
    predictions: list[bytes]
    #: One per refused event; ``index`` is its place in the request.
    rejections: list[Rejection]
    model_version: str


@dataclass(slots=True)
class TensorJob:
    """The rows of one inference request, checked already against ``model``.

    The request is scored by the model it was checked against, even if a swap
    happens while it waits (its columns are in that model's feature order).
    """

    matrix: np.ndarray
    request_id: str
    model: ServingModel
    #: ``champion`` or ``challenger``: the model's role when the request arrived.
    variant: str = "champion"


@dataclass(slots=True)
class TensorResult:
    scores: Scores
    model: ServingModel


@dataclass
class ScoringService:
    """Scores batches of HTTP jobs with the served models; publishes their outputs."""

    settings: Settings
    models: ServedModels
    metrics: Metrics
    publisher: Publisher | None = None
    side_paths: list[SidePath] = field(default_factory=list)
    shadow: ShadowScorer | None = None

    def __post_init__(self) -> None:
        audit = topic_serde(self.settings, "audit")
        privacy = privacy_tools(self.settings)
        self.pipelines = {
            variant: ScoringPipeline(
                event_serde=JsonSerde("sensor_event"),
                prediction_serde=JsonSerde("prediction"),
                audit_serde=audit,
                max_message_bytes=self.settings.processor.max_message_bytes,
                actor=client_id("serve"),
                variant=variant,
                channel=CHANNEL,
                pseudonymiser=privacy.pseudonymiser,
            )
            for variant in ("champion", "challenger")
        }
        publish = self.settings.serve.publish_predictions and self.publisher is not None
        self.prediction_serde = topic_serde(self.settings, "predictions") if publish else None
        self._outputs_lock = threading.Lock()

    # -- the two doors ----------------------------------------------------------------------

    def score_events(self, jobs: list[EventsJob]) -> list[EventsResult]:
        """``/v1/score``: decode, validate and score the events of ``jobs`` in one batch."""
        served = self._between_batches()
        values: list[bytes | None] = [v for job in jobs for v in job.values]
        raw = raw_batch_from(values, topic=HTTP_SOURCE)
        started = time.perf_counter()
        out = self.pipelines["champion"].run(raw, served.champion, ab=served.ab)
        self._account(out, len(raw), time.perf_counter() - started, events=True)
        self._outputs(out, raw, side_paths=True)
        indices = np.asarray(out.events.indices, dtype=np.int64)
        results = []
        start = 0
        rejections = sorted((d.rejection for d in out.dead_letters), key=_index)
        r = 0
        for job in jobs:
            end = start + len(job.values)
            lo, hi = np.searchsorted(indices, [start, end]).tolist()
            refused = []
            while r < len(rejections) and rejections[r].index < end:
                x = rejections[r]
                refused.append(Rejection(x.index - start, x.stage, x.reason, x.message))
                r += 1
            results.append(
                EventsResult(out.prediction_values[lo:hi], refused, served.champion.version)
            )
            start = end
        return results

    def score_tensors(self, jobs: list[TensorJob]) -> list[TensorResult | BaseException]:
        """Open Inference Protocol: score the valid rows of ``jobs``, one call per model."""
        served = self._between_batches()
        groups: dict[int, list[int]] = {}
        for k, job in enumerate(jobs):
            groups.setdefault(id(job.model), []).append(k)
        results: dict[int, TensorResult] = {}
        for members in groups.values():
            first = jobs[members[0]]
            model, variant = first.model, first.variant
            champion_rows = model is served.champion and variant == "champion"
            scores = self._score_rows(
                [jobs[k] for k in members], model, variant, side_paths=champion_rows
            )
            start = 0
            for k in members:
                end = start + jobs[k].matrix.shape[0]
                results[k] = TensorResult(_slice(scores, start, end), model)
                start = end
        return [results[k] for k in range(len(jobs))]

    def _score_rows(
        self, jobs: Sequence[TensorJob], model: ServingModel, variant: str, *, side_paths: bool
    ) -> Scores:
        matrix = np.vstack([job.matrix for job in jobs])
        now = int(time.time() * 1000)
        event_ids: list[str] = []
        sensor_ids: list[str] = []
        for job in jobs:
            event_ids.extend(f"{job.request_id}:{i}" for i in range(job.matrix.shape[0]))
            sensor_ids.extend([job.request_id] * job.matrix.shape[0])
        n = matrix.shape[0]
        events = EventBatch(
            indices=list(range(n)),
            event_ids=event_ids,
            sensor_ids=sensor_ids,
            event_times=[now] * n,
            features=[{}] * n,
        )
        raw = raw_batch_from([row.tobytes() for row in matrix], topic=HTTP_SOURCE)
        started = time.perf_counter()
        out = self.pipelines[variant].score_decoded(raw, events, matrix, model, now_ms=now)
        self._account(out, n, time.perf_counter() - started, events=False)
        self._outputs(out, raw, side_paths=side_paths)
        assert out.scores is not None  # noqa: S101 - narrows the type for mypy, never a check
        return out.scores

    # -- around each batch ------------------------------------------------------------------

    def _between_batches(self) -> Served:
        served = self.models.between_batches()
        shadow = self.shadow
        challenger = served.challenger
        if shadow is not None and challenger is not None and shadow.challenger is not challenger:
            try:
                shadow.replace_challenger(challenger, served.champion.feature_names)
            except SignatureMismatch as exc:
                log.error("shadow keeps its challenger: %s", exc)
        return served

    def _outputs(self, out: BatchOutput, raw: RawBatch, *, side_paths: bool) -> None:
        if out.scored == 0:
            return
        with self._outputs_lock:
            publisher, topics = self.publisher, self.settings.topics
            if publisher is not None and self.settings.serve.audit:
                publisher.publish("audit", topics.audit, out.audit_values, out.ids("audit").keys)
            if publisher is not None and self.prediction_serde is not None:
                values = out.prediction_values
                if self.prediction_serde.format != "json":
                    values = self.prediction_serde.encode_many([json.loads(v) for v in values])
                publisher.publish(
                    "predictions", topics.predictions, values, out.ids("predictions").keys
                )
            if side_paths:
                for side_path in self.side_paths:
                    side_path(out, raw)

    def _account(self, out: BatchOutput, n: int, seconds: float, *, events: bool) -> None:
        m = self.metrics
        m.batch_size.observe(n)
        for stage, spent in out.stage_seconds.items():
            m.stage_seconds.labels(stage=stage).inc(spent)
        if out.scored:
            m.outcomes.labels(outcome="scored").inc(out.scored)
            m.processing_latency.observe_many(np.full(out.scored, seconds))
            if events:
                times = np.asarray(out.events.event_times, dtype=np.float64)
                m.end_to_end_latency.observe_many(np.maximum(time.time() - times / 1000, 0.0))
        if out.dead_letters:
            m.outcomes.labels(outcome="rejected").inc(len(out.dead_letters))
            for dead in out.dead_letters:
                m.dead_letters.labels(
                    stage=dead.rejection.stage, reason=dead.rejection.reason
                ).inc()

    def close(self) -> None:
        for side_path in self.side_paths:
            side_path.close()


def _index(r: Rejection) -> int:
    return r.index


def _slice(scores: Scores, start: int, end: int) -> Scores:
    return Scores(
        score=scores.score[start:end],
        labels=None if scores.labels is None else scores.labels[start:end],
        probabilities=None if scores.probabilities is None else scores.probabilities[start:end],
    )
