"""Comparisons made under a policy, restored mid-stream exactly, fed paired outcomes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.evaluation.labels import Prediction, score_variant
from streams.evaluation.policy import VerdictPolicy, new_comparison, paired_update
from streams.evaluation.sequential import discordant_log_e_values
from streams.evaluation.verdict import (
    PairedComparison,
    PairedLossComparison,
    comparison_state,
    restore_comparison,
)
from tests.unit.evaluation.batches import label_batch


def test_paired_comparison_restored_mid_stream_continues_exactly() -> None:
    rng = np.random.default_rng(11)
    champion = rng.random(3000) < 0.80
    challenger = rng.random(3000) < 0.86
    straight = PairedComparison()
    straight.update(champion, challenger)
    resumed = new_comparison("accuracy", VerdictPolicy())
    for lo, hi in ((0, 700), (700, 1900), (1900, 3000)):
        resumed.update(champion[lo:hi], challenger[lo:hi])
        resumed = restore_comparison(json.loads(json.dumps(comparison_state(resumed))))
    assert resumed.verdict(min_samples=500) == straight.verdict(min_samples=500)
    # the path matters: the restored running maximum, not the final counts, gives the p-value
    final = float(np.exp(discordant_log_e_values([resumed.challenger_wins],
                                                 [resumed.champion_wins])[0][0]))  # fmt: skip
    assert resumed.e_value == pytest.approx(final, rel=1e-12)
    assert resumed.p_value_sequential <= 1 / resumed.e_value


def test_paired_loss_comparison_restored_mid_stream_continues_exactly() -> None:
    rng = np.random.default_rng(5)
    champion = np.abs(rng.normal(0, 1.0, 2000))
    challenger = np.abs(rng.normal(0, 0.8, 2000))
    straight = PairedLossComparison(loss_bound=5.0)
    resumed = new_comparison("loss", VerdictPolicy(loss_bound=5.0))
    assert isinstance(resumed, PairedLossComparison)
    # same batches (the loss test's float sums depend on batching), one side restored
    # from JSON between batches: the restored one must match to the last bit
    for lo, hi in ((0, 333), (333, 1500), (1500, 2000)):
        straight.update(champion[lo:hi], challenger[lo:hi])
        resumed.update(champion[lo:hi], challenger[lo:hi])
        resumed = restore_comparison(json.loads(json.dumps(comparison_state(resumed))))
    assert isinstance(resumed, PairedLossComparison)
    assert resumed.verdict() == straight.verdict()
    assert resumed.clipped == straight.clipped


def test_regressor_comparison_needs_a_loss_bound() -> None:
    with pytest.raises(ValueError, match="loss_bound"):
        new_comparison("loss", VerdictPolicy())


def test_paired_update_feeds_correctness_or_absolute_errors() -> None:
    batch = label_batch(["1", "1", "0"])
    predictions = [
        {"a": Prediction("1", "1", 0.9), "b": Prediction("2", "0", 0.2)},
        {"a": Prediction("1", "0", 0.4), "b": Prediction("2", "1", 0.8)},
        {"a": Prediction("1", "0", 0.3), "b": Prediction("2", "0", 0.1)},
    ]
    a, b = (score_variant(batch, predictions, v, "1") for v in ("a", "b"))
    comparison = new_comparison("accuracy", VerdictPolicy())
    paired_update(comparison, a, b, batch, [0, 1, 2])
    assert (comparison.n, comparison.challenger_wins, comparison.champion_wins) == (3, 1, 1)
