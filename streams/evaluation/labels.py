"""Label batches and their join with the stored predictions, pure.

A batch of label records is decoded into aligned arrays (:class:`LabelBatch`),
each variant's stored predictions are judged against it
(:func:`score_variant`), and every label gets its outcome (:func:`label_outcomes`).
The lookup itself (Redis) is the evaluator's; nothing here knows about Faust,
Kafka or Redis.

Scores: the prediction store keeps one score per event. For a binary model it
is P(positive class), the positive class being the *last* of the model's
classes (``classes[-1]``, the order of its probability columns, see
``models.runtime``), so log-loss and Brier are computed for **binary**
classifiers only. Multi-class models store P(predicted class), which says
nothing of the probability given to the true class when the model was wrong.
Probabilities are clipped to ``[EPS, 1 - EPS]`` before the logarithm.
Regressors get their signed error (prediction - truth).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from schemas.errors import DecodeError
from schemas.serde import Serde

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Probabilities are clipped to [EPS, 1 - EPS] before the log of the log-loss.
EPS = 1e-15

#: What happened to one label. ``matched``: every variant had a prediction;
#: ``partial``: some did; ``missing``: none did (never stored, or expired);
#: ``undecodable``: not a Label record; ``invalid``: no label and no value, or
#: a class label for a regressor's prediction (or a value for a classifier's).
LabelOutcome = Literal["matched", "partial", "missing", "undecodable", "invalid"]
LABEL_OUTCOMES: tuple[LabelOutcome, ...] = (
    "matched",
    "partial",
    "missing",
    "undecodable",
    "invalid",
)

# Label kinds, as codes in LabelBatch.kind.
UNDECODABLE, INVALID, CLASSIFICATION, REGRESSION = -1, 0, 1, 2


@dataclass(frozen=True, slots=True)
class LabelBatch:
    """A batch of label records, aligned by index with their source positions.

    Undecodable records keep their slot (``kind == UNDECODABLE``) so that they
    are counted like any other label.
    """

    partitions: IntArray
    offsets: IntArray
    event_ids: list[str]
    kind: npt.NDArray[np.int8]
    truth: list[str | None]  # class labels (classification)
    values: FloatArray  # true values (regression), NaN elsewhere
    labelled_at: IntArray

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def valid(self) -> BoolArray:
        return np.asarray(self.kind > INVALID)


def decode_labels(
    messages: Sequence[tuple[int, int, bytes | None]], serde: Serde
) -> tuple[LabelBatch, list[str]]:
    """Decode ``(partition, offset, value)`` triples; returns the batch and one error per
    undecodable record (their slots stay in the batch as ``UNDECODABLE``)."""
    n = len(messages)
    partitions = np.fromiter((m[0] for m in messages), dtype=np.int64, count=n)
    offsets = np.fromiter((m[1] for m in messages), dtype=np.int64, count=n)
    event_ids: list[str] = []
    kind = np.full(n, UNDECODABLE, dtype=np.int8)
    truth: list[str | None] = []
    values = np.full(n, np.nan)
    labelled_at = np.zeros(n, dtype=np.int64)
    errors: list[str] = []
    for i, (partition, offset, raw) in enumerate(messages):
        try:
            if raw is None:
                raise DecodeError("empty record")
            record = serde.decode(raw)
            event_id, label, value = record["event_id"], record.get("label"), record.get("value")
            at = int(record["labelled_at"])
            if not isinstance(event_id, str) or not event_id:
                raise DecodeError("event_id must be a non-empty string")
        except (DecodeError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"partition {partition} offset {offset}: {exc}")
            event_ids.append("")
            truth.append(None)
            continue
        event_ids.append(event_id)
        labelled_at[i] = at
        if label is not None:
            kind[i] = CLASSIFICATION
            truth.append(str(label))
        elif isinstance(value, int | float) and math.isfinite(value):
            kind[i] = REGRESSION
            values[i] = float(value)
            truth.append(None)
        else:
            kind[i] = INVALID
            truth.append(None)
    return (
        LabelBatch(partitions, offsets, event_ids, kind, truth, values, labelled_at),
        errors,
    )


class PredictionLike(Protocol):
    """What one variant predicted for one event (``connectors.redis_store.StoredPrediction``)."""

    @property
    def model_version(self) -> str: ...

    @property
    def label(self) -> str | None: ...

    @property
    def score(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Prediction:
    """A plain :class:`PredictionLike` (tests, replays)."""

    model_version: str
    label: str | None
    score: float


@dataclass(frozen=True, slots=True)
class VariantOutcomes:
    """One variant's per-label outcomes for a batch (aligned with the batch).

    ``present`` marks labels this variant can be judged on: a prediction was
    found and it is of the label's kind. Elsewhere the arrays hold neutral
    values (False, NaN, None).
    """

    variant: str
    present: BoolArray
    found: BoolArray  # a prediction was stored (whatever its kind)
    versions: list[str | None]
    predicted: list[str | None]  # class label (classification)
    correct: BoolArray
    log_loss: FloatArray  # NaN where not binary / not classification
    brier: FloatArray
    error: FloatArray  # prediction - truth (regression), NaN elsewhere


def score_variant(
    batch: LabelBatch,
    predictions: Sequence[Mapping[str, PredictionLike]],
    variant: str,
    positive_label: str | None,
) -> VariantOutcomes:
    """Judge one variant's stored predictions against the batch's labels.

    ``predictions[i]`` maps variant to prediction for label ``i`` (empty when
    none was found). ``positive_label`` (the binary model's ``classes[-1]``)
    enables log-loss and Brier: the stored score is P(positive_label).
    """
    n = len(batch)
    found = np.zeros(n, dtype=np.bool_)
    present = np.zeros(n, dtype=np.bool_)
    versions: list[str | None] = [None] * n
    predicted: list[str | None] = [None] * n
    scores = np.full(n, np.nan)
    kind = batch.kind
    for i in range(n):
        p = predictions[i].get(variant)
        if p is None:
            continue
        found[i] = True
        if kind[i] == CLASSIFICATION and p.label is not None:
            predicted[i] = p.label
        elif not (kind[i] == REGRESSION and p.label is None):
            continue
        present[i] = True
        versions[i] = p.model_version
        scores[i] = p.score
    cls = present & (kind == CLASSIFICATION)
    reg = present & (kind == REGRESSION)
    correct = np.fromiter(
        (c and t == q for c, t, q in zip(cls.tolist(), batch.truth, predicted, strict=True)),
        dtype=np.bool_,
        count=n,
    )
    log_loss = np.full(n, np.nan)
    brier = np.full(n, np.nan)
    if positive_label is not None:
        is_positive = np.fromiter((t == positive_label for t in batch.truth), np.bool_, n)
        p_pos = np.clip(scores[cls], EPS, 1 - EPS)
        y = is_positive[cls]
        log_loss[cls] = -np.log(np.where(y, p_pos, 1 - p_pos))
        brier[cls] = (scores[cls] - y) ** 2
    error = np.full(n, np.nan)
    error[reg] = scores[reg] - batch.values[reg]
    return VariantOutcomes(
        variant, present, found, versions, predicted, correct, log_loss, brier, error
    )


def label_outcomes(batch: LabelBatch, variants: Sequence[VariantOutcomes]) -> list[LabelOutcome]:
    """The :data:`LabelOutcome` of every label of the batch."""
    found = np.column_stack([v.found for v in variants]) if variants else np.zeros((len(batch), 0))
    present = (
        np.column_stack([v.present for v in variants]) if variants else np.zeros((len(batch), 0))
    )
    result: list[LabelOutcome] = []
    for i, kind in enumerate(batch.kind.tolist()):
        if kind == UNDECODABLE:
            result.append("undecodable")
        elif kind == INVALID:
            result.append("invalid")
        elif not found[i].any():
            result.append("missing")
        elif not present[i].any():
            result.append("invalid")  # found, but of the wrong kind for every variant
        elif found[i].all():
            result.append("matched")
        else:
            result.append("partial")
    return result
