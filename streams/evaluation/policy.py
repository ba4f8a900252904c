"""How the evaluator reaches its verdict: the policy, and paired outcomes fed to a comparison.

The statistics are :mod:`streams.evaluation.verdict`'s; this module joins them
to the label side: which comparison a metric gets under a
:class:`VerdictPolicy`, and which per-label outcomes of the two variants feed it
(right/wrong for classifiers, absolute errors for regressors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streams.evaluation.labels import LabelBatch, VariantOutcomes
from streams.evaluation.sequential import DEFAULT_CONCENTRATION
from streams.evaluation.verdict import (
    Comparison,
    Metric,
    PairedComparison,
    PairedLossComparison,
)


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
    """A fresh comparison for ``metric`` with the policy's parameters."""
    if metric == "accuracy":
        return PairedComparison(policy.concentration)
    if policy.loss_bound is None:
        raise ValueError("a regressor comparison needs VerdictPolicy.loss_bound")
    return PairedLossComparison(policy.loss_bound, policy.max_bet)


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
