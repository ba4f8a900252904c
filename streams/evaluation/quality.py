"""Label-joined model quality, pure: additive accumulators and replay idempotence.

The evaluator (:mod:`streams.evaluation.evaluator`) keeps what this module computes in
Faust tables; nothing here knows about Faust, Kafka or Redis, so every number
is unit-tested with exact values.

**Accumulators are additive sufficient statistics** (counts and sums), so a
window, a cumulative total and a restart are all the same merge, and metrics
are derived from them only when a record is emitted:

* classifiers: accuracy and confusion counts; log-loss and Brier score for
  **binary** classifiers only (see :mod:`streams.evaluation.labels` for why);
* regressors: MAE and RMSE of the stored score against the true value.

**Idempotence.** Every table value remembers, per source partition, the
offset of the last label it has absorbed (:func:`fresh_mask`). A label replayed
after a crash (state written, input offset not yet committed) is skipped by
every accumulator that already holds it: each label is counted once in each
table, although Kafka delivers it at least once. The same offsets show the
labels a batch lacks (:func:`missing_ranges`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.evaluation.labels import (
    CLASSIFICATION,
    REGRESSION,
    BoolArray,
    IntArray,
    LabelBatch,
    VariantOutcomes,
)


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
