"""Label-joined model quality, pure: accumulators, windows, the label join, paired state.

The evaluator (:mod:`streams.evaluation.evaluator`) keeps what this module computes in
Faust tables; nothing here knows about Faust, Kafka or Redis, so every number
is unit-tested with exact values.

**Accumulators are additive sufficient statistics** (counts and sums), so a
window, a cumulative total and a restart are all the same merge, and metrics
are derived from them only when a record is emitted:

* classifiers: accuracy and confusion counts; log-loss and Brier score for
  **binary** classifiers only. The prediction store keeps one score per event:
  for a binary model it is P(positive class), the positive class being the
  *last* of the model's classes (``classes[-1]``, the order of its probability
  columns, see ``models.runtime``). Multi-class models store P(predicted class),
  which says nothing of the probability given to the true class when the model
  was wrong, so their log-loss and Brier are not computed. Probabilities are
  clipped to ``[EPS, 1 - EPS]`` before the logarithm.
* regressors: MAE and RMSE of the stored score against the true value.

**Idempotence.** Every table value remembers, per source partition, the
offset of the last label it has absorbed (:func:`fresh_mask`). A label replayed
after a crash (state written, input offset not yet committed) is skipped by
every accumulator that already holds it: each label is counted once in each
table, although Kafka delivers it at least once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from schemas.errors import DecodeError
from schemas.serde import Serde
from streams.evaluation.verdict import (
    DEFAULT_CONCENTRATION,
    Metric,
    PairedComparison,
    PairedLossComparison,
    Verdict,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Comparison = PairedComparison | PairedLossComparison

#: Probabilities are clipped to [EPS, 1 - EPS] before the log of the log-loss.
EPS = 1e-15

WindowKind = Literal["tumbling", "hopping", "cumulative"]

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


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Event-time windows over ``labelled_at``.

    A window ``[start, end)`` *closes* once the watermark (the largest
    ``labelled_at`` seen) passes ``end + grace_s``: its record is emitted then.
    A label for a closed window still counts (the window is re-emitted as a
    correction and its ``late`` metric goes up) until the watermark passes
    ``end + retention_s``; then the window is dropped from its table and later
    labels for it are counted as expired (they still count in the cumulative
    table). Hopping windows start at every multiple of ``hop_s``, so each label
    falls in ``hopping_s / hop_s`` of them.
    """

    tumbling_s: float = 60.0
    hopping_s: float = 300.0
    hop_s: float = 60.0
    grace_s: float = 10.0
    retention_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("tumbling_s", "hopping_s", "hop_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.hopping_ms % self.hop_ms:
            raise ValueError(
                f"hopping_s ({self.hopping_s}) must be a multiple of hop_s ({self.hop_s})"
            )
        if self.retention_s < self.grace_s:
            raise ValueError("retention_s must be >= grace_s")

    @property
    def tumbling_ms(self) -> int:
        return round(self.tumbling_s * 1000)

    @property
    def hopping_ms(self) -> int:
        return round(self.hopping_s * 1000)

    @property
    def hop_ms(self) -> int:
        return round(self.hop_s * 1000)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    @property
    def retention_ms(self) -> int:
        return round(self.retention_s * 1000)

    def size_ms(self, kind: WindowKind) -> int:
        return self.tumbling_ms if kind == "tumbling" else self.hopping_ms

    def starts(self, kind: WindowKind, ts_ms: npt.ArrayLike) -> IntArray:
        """Window starts for each timestamp: shape ``(n, k)``, k windows per label."""
        if kind == "tumbling":
            return tumbling_starts(ts_ms, self.tumbling_ms)[:, None]
        return hopping_starts(ts_ms, self.hopping_ms, self.hop_ms)


def tumbling_starts(ts_ms: npt.ArrayLike, size_ms: int) -> IntArray:
    """Start of the tumbling window ``[start, start + size)`` holding each timestamp.

    >>> tumbling_starts([0, 59_999, 60_000, -1], 60_000).tolist()
    [0, 0, 60000, -60000]
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    return np.asarray(ts - np.mod(ts, size_ms), dtype=np.int64)


def hopping_starts(ts_ms: npt.ArrayLike, size_ms: int, step_ms: int) -> IntArray:
    """Starts of the ``size / step`` hopping windows holding each timestamp, newest first.

    >>> hopping_starts([125_000], 300_000, 60_000).tolist()
    [[120000, 60000, 0, -60000, -120000]]
    """
    if size_ms % step_ms:
        raise ValueError("size_ms must be a multiple of step_ms")
    newest = tumbling_starts(ts_ms, step_ms)
    offsets = step_ms * np.arange(size_ms // step_ms, dtype=np.int64)
    return np.asarray(newest[:, None] - offsets[None, :], dtype=np.int64)


# --------------------------------------------------------------------------- labels


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


# --------------------------------------------------------------------------- accumulators


def fresh_mask(partitions: IntArray, offsets: IntArray, seen: Mapping[str, int]) -> BoolArray:
    """Labels newer than the last offset already absorbed per partition (``seen``).

    >>> fresh_mask(np.array([0, 0, 1]), np.array([4, 5, 2]), {"0": 4}).tolist()
    [False, True, True]
    """
    threshold = np.full(partitions.shape, -1, dtype=np.int64)
    for partition, offset in seen.items():
        threshold[partitions == int(partition)] = offset
    return np.asarray(offsets > threshold)


def advance_offsets(
    seen: Mapping[str, int], partitions: IntArray, offsets: IntArray
) -> dict[str, int]:
    """``seen`` moved forward to the largest offset per partition of the given labels."""
    result = dict(seen)
    for partition in np.unique(partitions).tolist():
        top = int(offsets[partitions == partition].max())
        key = str(partition)
        result[key] = max(result.get(key, -1), top)
    return result


def missing_ranges(offsets: Sequence[int], expected_first: int | None) -> list[tuple[int, int]]:
    """Half-open offset ranges absent from sorted ``offsets`` of one partition.

    ``expected_first`` is the next offset due (the last one absorbed + 1), or
    None when unknown; offsets below it are replays and ignored.

    >>> missing_ranges([5, 6, 9, 10], 3)
    [(3, 5), (7, 9)]
    >>> missing_ranges([1, 2, 4], None), missing_ranges([1, 2], 2)
    ([(3, 4)], [])
    """
    ranges: list[tuple[int, int]] = []
    due = expected_first
    for offset in offsets:
        if due is not None and offset < due:
            continue
        if due is not None and offset > due:
            ranges.append((due, offset))
        due = offset + 1
    return ranges


@dataclass(slots=True)
class QualityStats:
    """Additive quality statistics of one variant (and model version) over some labels."""

    n: int = 0
    correct: int = 0
    prob_n: int = 0
    log_loss_sum: float = 0.0
    brier_sum: float = 0.0
    reg_n: int = 0
    abs_error_sum: float = 0.0
    squared_error_sum: float = 0.0
    #: confusion[true][predicted] = count
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, outcomes: VariantOutcomes, batch: LabelBatch, index: npt.ArrayLike) -> None:
        """Absorb the labels at ``index`` (all must be ``present`` for this variant)."""
        idx = np.asarray(index, dtype=np.int64)
        if idx.size == 0:
            return
        kind = batch.kind[idx]
        cls = idx[kind == CLASSIFICATION]
        reg = idx[kind == REGRESSION]
        self.n += int(idx.size)
        self.correct += int(outcomes.correct[cls].sum())
        probabilistic = cls[~np.isnan(outcomes.log_loss[cls])]
        self.prob_n += int(probabilistic.size)
        self.log_loss_sum += float(outcomes.log_loss[probabilistic].sum())
        self.brier_sum += float(outcomes.brier[probabilistic].sum())
        self.reg_n += int(reg.size)
        errors = outcomes.error[reg]
        self.abs_error_sum += float(np.abs(errors).sum())
        self.squared_error_sum += float((errors**2).sum())
        for i in cls.tolist():
            row = self.confusion.setdefault(str(batch.truth[i]), {})
            predicted = str(outcomes.predicted[i])
            row[predicted] = row.get(predicted, 0) + 1
        times = batch.labelled_at[idx]
        low, high = int(times.min()), int(times.max())
        self.first_ms = low if self.first_ms is None else min(self.first_ms, low)
        self.last_ms = high if self.last_ms is None else max(self.last_ms, high)

    def merge(self, other: QualityStats) -> None:
        self.n += other.n
        self.correct += other.correct
        self.prob_n += other.prob_n
        self.log_loss_sum += other.log_loss_sum
        self.brier_sum += other.brier_sum
        self.reg_n += other.reg_n
        self.abs_error_sum += other.abs_error_sum
        self.squared_error_sum += other.squared_error_sum
        for truth, row in other.confusion.items():
            mine = self.confusion.setdefault(truth, {})
            for predicted, count in row.items():
                mine[predicted] = mine.get(predicted, 0) + count
        for bound, pick in (("first_ms", min), ("last_ms", max)):
            theirs = getattr(other, bound)
            if theirs is not None:
                ours = getattr(self, bound)
                setattr(self, bound, theirs if ours is None else pick(ours, theirs))

    @property
    def classified(self) -> int:
        """Classification labels among the ``n``."""
        return self.n - self.reg_n

    def metrics(self) -> dict[str, float]:
        """Derived metrics (only those the labels allow) plus the raw counts.

        Confusion counts are flattened as ``confusion/<true>/<predicted>``.

        >>> s = QualityStats(n=4, correct=3, confusion={"1": {"1": 2, "0": 1}, "0": {"0": 1}})
        >>> s.metrics()["accuracy"], s.metrics()["confusion/1/0"]
        (0.75, 1.0)
        """
        out: dict[str, float] = {"n": float(self.n)}
        if self.classified:
            out["correct"] = float(self.correct)
            out["accuracy"] = self.correct / self.classified
            out["error_rate"] = 1.0 - out["accuracy"]
        if self.prob_n:
            out["log_loss"] = self.log_loss_sum / self.prob_n
            out["brier"] = self.brier_sum / self.prob_n
        if self.reg_n:
            out["mae"] = self.abs_error_sum / self.reg_n
            out["rmse"] = math.sqrt(self.squared_error_sum / self.reg_n)
        for truth, row in sorted(self.confusion.items()):
            for predicted, count in sorted(row.items()):
                out[f"confusion/{truth}/{predicted}"] = float(count)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "prob_n": self.prob_n,
            "log_loss_sum": self.log_loss_sum,
            "brier_sum": self.brier_sum,
            "reg_n": self.reg_n,
            "abs_error_sum": self.abs_error_sum,
            "squared_error_sum": self.squared_error_sum,
            "confusion": {t: dict(row) for t, row in self.confusion.items()},
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityStats:
        return cls(
            n=int(data["n"]),
            correct=int(data["correct"]),
            prob_n=int(data["prob_n"]),
            log_loss_sum=float(data["log_loss_sum"]),
            brier_sum=float(data["brier_sum"]),
            reg_n=int(data["reg_n"]),
            abs_error_sum=float(data["abs_error_sum"]),
            squared_error_sum=float(data["squared_error_sum"]),
            confusion={
                t: {p: int(c) for p, c in row.items()} for t, row in data["confusion"].items()
            },
            first_ms=data.get("first_ms"),
            last_ms=data.get("last_ms"),
        )


def group_indices(keys: Iterable[Any]) -> dict[Any, list[int]]:
    """Positions of each distinct key, in first-seen order (``None`` keys are skipped)."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True, slots=True)
class VerdictPolicy:
    """How the champion-vs-challenger verdict is reached (see :mod:`streams.evaluation.verdict`)."""

    alpha: float = 0.05
    min_samples: int = 100
    max_samples: int | None = None
    concentration: float = DEFAULT_CONCENTRATION
    #: Regressors: absolute errors are clipped to [0, loss_bound] by the test.
    loss_bound: float | None = None
    max_bet: float = 0.5


def new_comparison(metric: Metric, policy: VerdictPolicy) -> Comparison:
    if metric == "accuracy":
        return PairedComparison(policy.concentration)
    if policy.loss_bound is None:
        raise ValueError("a regressor comparison needs VerdictPolicy.loss_bound")
    return PairedLossComparison(policy.loss_bound, policy.max_bet)


_SEQUENTIAL = ("log_e_promote", "log_e_keep", "max_log_e_promote", "max_log_e_keep")


def _state_fields(comparison: Comparison) -> list[str]:
    annotations: dict[str, Any] = {}
    for klass in reversed(type(comparison).__mro__):
        annotations.update(getattr(klass, "__annotations__", {}))
    return [name for name in annotations if name.startswith("_") and name != "_sequential"]


def comparison_state(comparison: Comparison) -> dict[str, Any]:
    """Everything needed to continue ``comparison`` exactly, as JSON-ready values.

    The e-processes depend on the path, not only on the counts: the verdict
    uses the running *maximum* of each log e-value (and the loss test's bets
    use running moments), so those are saved with the counts.
    """
    if isinstance(comparison, PairedComparison):
        params: dict[str, float] = {"concentration": comparison.concentration}
    else:
        params = {"loss_bound": comparison.loss_bound, "max_bet": comparison.max_bet}
    sequential = comparison._sequential
    return {
        "metric": comparison.metric,
        "params": params,
        "fields": {name: getattr(comparison, name) for name in _state_fields(comparison)},
        "sequential": {name: getattr(sequential, name) for name in _SEQUENTIAL},
    }


def restore_comparison(state: Mapping[str, Any]) -> Comparison:
    """The comparison saved by :func:`comparison_state`, ready to take more pairs."""
    params = state["params"]
    comparison: Comparison
    if state["metric"] == "accuracy":
        comparison = PairedComparison(float(params["concentration"]))
    else:
        comparison = PairedLossComparison(float(params["loss_bound"]), float(params["max_bet"]))
    expected = set(_state_fields(comparison))
    if set(state["fields"]) != expected:
        raise ValueError(
            f"saved comparison fields {sorted(state['fields'])} do not match {sorted(expected)}"
        )
    for name, value in state["fields"].items():
        setattr(comparison, name, value)
    for name in _SEQUENTIAL:
        setattr(comparison._sequential, name, float(state["sequential"][name]))
    return comparison


def paired_update(
    comparison: Comparison,
    champion: VariantOutcomes,
    challenger: VariantOutcomes,
    batch: LabelBatch,
    index: npt.ArrayLike,
) -> None:
    """Feed the labels at ``index`` (both variants present) to the comparison, in order."""
    idx = np.asarray(index, dtype=np.int64)
    if idx.size == 0:
        return
    if isinstance(comparison, PairedComparison):
        comparison.update(champion.correct[idx], challenger.correct[idx])
    else:
        comparison.update(np.abs(champion.error[idx]), np.abs(challenger.error[idx]))


# --------------------------------------------------------------------------- report


EvaluationRecord = dict[str, Any]


def evaluation_key(record: EvaluationRecord) -> str:
    """What an evaluation record is the latest state of: ``variant|version|window[|start]``.

    A cumulative record has no start in its key (its ``window_start`` is the first
    label seen, which an older late label may move).
    """
    parts = [record["variant"], record["model_version"], record["window"]]
    if record["window"] != "cumulative":
        parts.append(str(record["window_start"]))
    return "|".join(parts)


def latest_by_window(records: Iterable[EvaluationRecord]) -> list[EvaluationRecord]:
    """The newest record (by ``emitted_at``, then arrival) per :func:`evaluation_key`."""
    latest: dict[str, EvaluationRecord] = {}
    for record in records:
        key = evaluation_key(record)
        if key not in latest or record["emitted_at"] >= latest[key]["emitted_at"]:
            latest[key] = record
    return list(latest.values())


def _role_order(item: tuple[str, Any]) -> tuple[int, str]:
    """Champion first, then challenger, then any other variant by name."""
    return ({"champion": 0, "challenger": 1}.get(item[0], 2), item[0])


def summarise_evaluations(records: Sequence[EvaluationRecord]) -> dict[str, Any]:
    """The shadow report: per variant its newest cumulative record, and the verdict.

    For each variant the model version reported is the one with the newest
    cumulative record; the verdict is taken from the newest cumulative record
    that carries one. Window records are summarised by count.
    """
    latest = latest_by_window(records)
    cumulative = [r for r in latest if r["window"] == "cumulative"]
    newest: dict[str, EvaluationRecord] = {}
    for record in cumulative:
        current = newest.get(record["variant"])
        if current is None or record["emitted_at"] >= current["emitted_at"]:
            newest[record["variant"]] = record
    variants = [
        {
            "variant": r["variant"],
            "model_version": r["model_version"],
            "count": r["count"],
            "window_start": r["window_start"],
            "window_end": r["window_end"],
            "emitted_at": r["emitted_at"],
            "metrics": dict(r["metrics"]),
        }
        for _, r in sorted(newest.items(), key=_role_order)
    ]
    with_verdict: dict[str, EvaluationRecord] = {}
    for record in cumulative:
        if record.get("verdict"):
            current = with_verdict.get(record["variant"])
            if current is None or record["emitted_at"] >= current["emitted_at"]:
                with_verdict[record["variant"]] = record
    verdict: dict[str, Any] | None = None
    if with_verdict:
        chosen = max(with_verdict.values(), key=lambda r: r["emitted_at"])
        parsed = Verdict.from_evidence(chosen["evidence"])
        verdict = {
            "decision": parsed.decision,
            "metric": parsed.metric,
            "alpha": parsed.alpha,
            "n": parsed.n,
            "challenger_wins": parsed.challenger_wins,
            "champion_wins": parsed.champion_wins,
            "effect": parsed.effect,
            "ci_low": parsed.ci_low,
            "ci_high": parsed.ci_high,
            "e_value": parsed.e_value,
            "p_value_sequential": parsed.p_value_sequential,
            "e_value_keep": parsed.e_value_keep,
            "p_value_keep": parsed.p_value_keep,
            "mcnemar_p": parsed.mcnemar_p,
            "versions": {
                v: r["model_version"] for v, r in sorted(with_verdict.items(), key=_role_order)
            },
            "emitted_at": chosen["emitted_at"],
        }
    labels: dict[str, float] = {}
    if variants:
        newest_record = max(newest.values(), key=lambda r: r["emitted_at"])
        labels = {
            k.removeprefix("labels/"): v
            for k, v in newest_record["metrics"].items()
            if k.startswith("labels/")
        }
    windows: dict[str, int] = {}
    for record in latest:
        if record["window"] != "cumulative":
            windows[record["window"]] = windows.get(record["window"], 0) + 1
    return {
        "records": len(records),
        "variants": variants,
        "verdict": verdict,
        "labels": labels,
        "windows": windows,
    }
