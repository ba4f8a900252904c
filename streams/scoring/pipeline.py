"""From one polled batch of raw records to the records that go out.

:class:`ScoringPipeline` is the pure part of the scoring loop: no Kafka, no
clock reads beyond timestamps handed in. Given raw values and keys it runs

    size → decode → validate → matrix → champion score → outputs

and returns a :class:`BatchOutput` holding the encoded predictions and audit
events, the dead letters (original key and bytes, with Kafka Connect style
error headers), and the feature matrix and scores for shadow and drift.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.runtime import Scores
from models.serving import ServingModel
from schemas.codec import Column, KeyedRows, Same
from schemas.errors import Rejection
from schemas.serde import Serde
from streams.privacy.pseudonym import Identities, Pseudonymiser
from streams.scoring.dead_letters import DeadLetter, DeadLetterPolicy, reason_headers
from streams.scoring.routing import ABRouting
from streams.scoring.stages import EventBatch, build_matrix, check_sizes, decode_events

STAGES = ("size", "decode", "validate", "score", "encode")
#: Scored-event audit records carry no details unless A/B routing decided the variant.
_NO_DETAILS: dict[str, str] = {}


@dataclass(slots=True)
class RawBatch:
    """Polled records, column-wise."""

    values: list[bytes | None]
    keys: list[bytes | None]
    topics: list[str]
    partitions: list[int]
    offsets: list[int]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class BatchOutput:
    prediction_values: list[bytes] = field(default_factory=list)
    audit_values: list[bytes] = field(default_factory=list)
    #: Kafka keys of the scored events (the input key, else the sensor id).
    keys: list[bytes | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: EventBatch = field(default_factory=EventBatch)
    matrix: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    scores: Scores | None = None
    processed_at: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: (variant, model) that served this batch; the first is the champion.
    served: list[tuple[str, ServingModel]] = field(default_factory=list)
    #: With A/B routing, the index into ``served`` of each scored row.
    row_variant: np.ndarray | None = None
    #: A/B variants whose model raised on this batch: variant -> (rows, error). Their
    #: rows were served by the champion instead (``row_variant`` says so).
    fallbacks: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: Per output role, its identifier columns with ``privacy.pseudonymise`` applied;
    #: None (no pseudonymiser): every output carries the raw ones. Read through :meth:`ids`.
    identities: dict[str, Identities] | None = None

    @property
    def scored(self) -> int:
        return len(self.prediction_values)

    @property
    def model_version(self) -> str:
        return self.served[0][1].version if self.served else ""

    def ids(self, role: str) -> Identities:
        """The event ids, sensor ids and keys output ``role`` carries (see ``streams.privacy``)."""
        if self.identities is None:
            return Identities(self.events.event_ids, self.events.sensor_ids, self.keys)
        return self.identities[role]

    def served_parts(self) -> list[tuple[str, str, list[int]]]:
        """(variant, model version, scored rows) for each variant that served rows."""
        n = len(self.events)
        if self.row_variant is None:
            return [(self.served[0][0], self.served[0][1].version, list(range(n)))] if n else []
        parts = []
        for k, (variant, served) in enumerate(self.served):
            rows = np.flatnonzero(self.row_variant == k).tolist()
            if rows:
                parts.append((variant, served.version, rows))
        return parts


class ScoringPipeline:
    """Decode, validate and score one batch with the champion; encode the outputs."""

    def __init__(
        self,
        *,
        event_serde: Serde,
        prediction_serde: Serde,
        audit_serde: Serde,
        max_message_bytes: int,
        actor: str,
        variant: str = "champion",
        dead_letters: DeadLetterPolicy | None = None,
        channel: str | None = None,
        pseudonymiser: Pseudonymiser | None = None,
    ) -> None:
        self.event_serde = event_serde
        self.typed = event_serde.format != "json"
        self.prediction_serde = prediction_serde
        self.audit_serde = audit_serde
        self.max_message_bytes = max_message_bytes
        self.dead_letter_policy = dead_letters or DeadLetterPolicy()
        self.actor = actor
        self.variant = variant
        #: The door events come in by when it is not a topic (``http``): their audit records
        #: say so in ``details["channel"]`` and carry no source topic, partition or offset.
        self.channel = channel
        #: Pseudonymises identifiers per output (``privacy.pseudonymise``); None = none.
        self.pseudonymiser = pseudonymiser

    def run(
        self,
        raw: RawBatch,
        model: ServingModel,
        *,
        ab: ABRouting | None = None,
        now_ms: int | None = None,
    ) -> BatchOutput:
        """Score one polled batch with ``model`` (or, with ``ab``, the variant of each entity)."""
        out = BatchOutput()
        clock = time.perf_counter
        t0 = clock()
        sized, rejected = check_sizes(raw.values, self.max_message_bytes)
        t1 = clock()
        events, bad = decode_events(raw.values, sized, self.event_serde, typed=self.typed)
        rejected += bad
        t2 = clock()
        matrix, keep, bad = build_matrix(
            events, model.feature_names, model.lower, model.upper, typed=self.typed
        )
        rejected += bad
        if len(keep) != len(events):
            events = events.select(keep)
        t3 = clock()
        scores = self._score(out, events, matrix, model, ab)
        t4 = clock()
        out.processed_at = now_ms if now_ms is not None else int(time.time() * 1000)
        out.events, out.matrix, out.scores = events, matrix, scores
        self._encode(raw, out)
        t5 = clock()
        out.dead_letters = [self._dead_letter(raw, r) for r in sorted(rejected, key=_index)]
        out.stage_seconds = {
            "size": t1 - t0,
            "decode": t2 - t1,
            "validate": t3 - t2,
            "score": t4 - t3,
            "encode": t5 - t4,
        }
        return out

    def score_decoded(
        self,
        raw: RawBatch,
        events: EventBatch,
        matrix: np.ndarray,
        model: ServingModel,
        *,
        ab: ABRouting | None = None,
        now_ms: int | None = None,
    ) -> BatchOutput:
        """Score events decoded and validated by the caller; encode their outputs.

        The second half of :meth:`run`, for a door that reads its own input (the HTTP
        server's tensors): ``matrix`` holds the rows of ``events`` in ``model``'s feature
        order, ``events.indices`` are places in ``raw`` (whose values are digested).
        """
        out = BatchOutput()
        out.scores = self._score(out, events, matrix, model, ab)
        out.processed_at = now_ms if now_ms is not None else int(time.time() * 1000)
        out.events, out.matrix = events, matrix
        self._encode(raw, out)
        return out

    def _score(
        self,
        out: BatchOutput,
        events: EventBatch,
        matrix: np.ndarray,
        model: ServingModel,
        ab: ABRouting | None,
    ) -> Scores:
        if ab is None:
            out.served = [(self.variant, model)]
            return model.model.predict(matrix)
        out.served = list(zip(ab.router.variants, ab.models, strict=True))
        out.row_variant = ab.router.assign(events.sensor_ids)
        return _score_split(matrix, out.row_variant, ab, out.fallbacks)

    def _dead_letter(self, raw: RawBatch, r: Rejection) -> DeadLetter:
        i = r.index
        headers = reason_headers(raw.topics[i], raw.partitions[i], raw.offsets[i], r)
        return self.dead_letter_policy.build(raw.keys[i], raw.values[i], headers, r)

    def _encode(self, raw: RawBatch, out: BatchOutput) -> None:
        """The prediction and audit records of the scored events, encoded from columns.

        No dict per record: what a batch shares (its model, its time, the actor) is one
        :class:`~schemas.codec.Same` value, the class probabilities one
        :class:`~schemas.codec.KeyedRows` matrix (``schemas.codec.columns``).
        """
        events, scores = out.events, out.scores
        n = len(events)
        if n == 0 or scores is None:
            return
        score_list = scores.score.tolist()
        labels: Column
        if scores.labels is not None:
            labels = decisions = scores.labels.tolist()
            if out.row_variant is not None and None in decisions:  # A/B with a regressor
                decisions = [
                    repr(s) if d is None else d for d, s in zip(decisions, score_list, strict=True)
                ]
        else:
            labels, decisions = Same(None), [repr(s) for s in score_list]
        names, versions, variants, probabilities = self._model_columns(out, scores)
        keys = raw.keys
        out.keys = [
            keys[i] if keys[i] is not None else sensor_id.encode()
            for i, sensor_id in zip(events.indices, events.sensor_ids, strict=True)
        ]
        if self.pseudonymiser is not None:
            out.identities = self.pseudonymiser.identities(
                events.event_ids, events.sensor_ids, out.keys
            )
        shown, audited = out.ids("predictions"), out.ids("audit")
        now = Same(out.processed_at)
        out.prediction_values = self.prediction_serde.encode_columns(
            {
                "event_id": shown.event_ids,
                "sensor_id": shown.sensor_ids,
                "event_time": events.event_times,
                "model_name": names,
                "model_version": versions,
                "variant": variants,
                "predicted_label": labels,
                "score": score_list,
                "probabilities": probabilities,
                "processed_at": now,
            },
            n,
        )
        indices, values = events.indices, raw.values
        digests = input_digests(values, indices)
        base = _NO_DETAILS
        source: dict[str, Column]
        if self.channel is not None:  # not read from a topic: no source position
            base = {"channel": self.channel}
            source = {"source_topic": Same(None), "source_partition": Same(None),
                      "source_offset": Same(None)}  # fmt: skip
        else:
            topics, partitions, offsets = raw.topics, raw.partitions, raw.offsets
            source = {
                "source_topic": [topics[i] for i in indices],
                "source_partition": [partitions[i] for i in indices],
                "source_offset": [offsets[i] for i in indices],
            }
        details: Column = Same(base)
        if isinstance(variants, list):  # A/B: each record says which variant served it
            details = [{**base, "variant": variant} for variant in variants]
        out.audit_values = self.audit_serde.encode_columns(
            {
                "action": Same("scored"),
                "event_id": audited.event_ids,
                "sensor_id": audited.sensor_ids,
                "model_name": names,
                "model_version": versions,
                "decision": decisions,
                "input_digest": digests,
                **source,
                "actor": Same(self.actor),
                "occurred_at": now,
                "details": details,
            },
            n,
        )

    @staticmethod
    def _model_columns(out: BatchOutput, scores: Scores) -> tuple[Column, Column, Column, Column]:
        """(model name, version, variant, probabilities) of the scored rows, as columns."""
        served = out.served
        names: Column
        versions: Column
        variants: Column
        classes = served[0][1].model.classes
        classes_by_row = None  # the classes of each row, when A/B variants differ in them
        if out.row_variant is None:
            variant, model = served[0]
            names, versions, variants = Same(model.name), Same(model.version), Same(variant)
        else:
            rows = out.row_variant.tolist()
            names = [served[k][1].name for k in rows]
            versions = [served[k][1].version for k in rows]
            variants = [served[k][0] for k in rows]
            if any(m.model.classes != classes for _, m in served):
                classes_by_row = [served[k][1].model.classes for k in rows]
        probabilities: Column = Same(None)
        if scores.probabilities is not None:
            if classes_by_row is None:  # the matrix as it is: written by numpy
                probabilities = KeyedRows(tuple(classes), scores.probabilities)
            else:
                probabilities = [  # a regressor's rows (A/B) have none
                    None if row is None else dict(zip(row_classes, row, strict=True))
                    for row_classes, row in zip(
                        classes_by_row, scores.probabilities.tolist(), strict=True
                    )
                ]
        return names, versions, variants, probabilities


#: blake2b-128 before any input: copied for each record (a third cheaper than a new one).
_BLANK_DIGEST = hashlib.blake2b(digest_size=16)


def input_digests(values: Sequence[bytes | None], indices: Sequence[int]) -> list[str]:
    """The audit's ``input_digest`` of ``values[i]`` for each ``i``: blake2b-128, in hex."""
    blank = _BLANK_DIGEST
    out = []
    for i in indices:
        digest = blank.copy()
        digest.update(values[i] or b"")
        out.append(digest.hexdigest())
    return out


def _score_split(
    matrix: np.ndarray,
    row_variant: np.ndarray,
    ab: ABRouting,
    fallbacks: dict[str, tuple[int, str]],
) -> Scores:
    """Score each variant's rows with its model and put the results back in row order.

    A challenger that raises never fails the batch: its rows go to the champion (the
    first variant), ``row_variant`` is updated to say so and ``fallbacks`` records it.
    The champion raising is the batch's failure, as without A/B.
    """
    n = matrix.shape[0]
    score = np.zeros(n)
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    parts = []
    for k in range(len(ab.models) - 1, -1, -1):  # challengers first: the champion takes over
        rows = np.flatnonzero(row_variant == k)
        if rows.size == 0:
            continue
        served, columns = ab.models[k], ab.columns[k]
        try:
            parts.append((rows, served.model.predict(matrix[rows][:, columns])))
        except Exception as exc:
            if k == 0:
                raise
            fallbacks[ab.router.variants[k]] = (int(rows.size), f"{type(exc).__name__}: {exc}")
            row_variant[rows] = 0
    for rows, part in parts:
        score[rows] = part.score
        if part.labels is not None:
            if labels is None:
                labels = np.empty(n, dtype=object)
            labels[rows] = part.labels
    widths = {None if p.probabilities is None else p.probabilities.shape[1] for _, p in parts}
    if len(widths) == 1 and None not in widths:  # one set of classes: one [N, C] matrix
        probabilities = np.zeros((n, widths.pop() or 0))
        for rows, part in parts:
            probabilities[rows] = part.probabilities
    elif widths != {None}:  # variants with other classes, or a regressor: a list per row
        probabilities = np.full(n, None, dtype=object)
        for rows, part in parts:
            if part.probabilities is not None:
                for r, row in zip(rows.tolist(), part.probabilities.tolist(), strict=True):
                    probabilities[r] = row
    return Scores(score=score, labels=labels, probabilities=probabilities)


def raw_batch_from(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    *,
    topic: str = "sensor.events",
    partition: int = 0,
    first_offset: int = 0,
) -> RawBatch:
    """A RawBatch from plain values: the in-memory twin of a polled batch."""
    n = len(values)
    return RawBatch(
        values=list(values),
        keys=list(keys) if keys is not None else [None] * n,
        topics=[topic] * n,
        partitions=[partition] * n,
        offsets=list(range(first_offset, first_offset + n)),
    )


def _index(r: Rejection) -> int:
    return r.index
