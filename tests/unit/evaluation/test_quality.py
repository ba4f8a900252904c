"""Additive accumulators: replays absorbed once, JSON round trips, merges like one add."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from streams.evaluation import quality
from streams.evaluation.labels import Prediction, score_variant
from streams.evaluation.quality import QualityStats, advance_offsets, fresh_mask
from tests.unit.evaluation.batches import label_batch


def test_doctests() -> None:
    result = doctest.testmod(quality)
    assert result.attempted >= 5 and result.failed == 0


def test_replayed_labels_are_absorbed_once() -> None:
    batch = label_batch(["1", "0", "1", "0"], partitions=[0, 1, 0, 1], offsets=[10, 20, 11, 21])
    predictions = [{"v": Prediction("1", t, 0.5)} for t in ("1", "1", "1", "1")]
    outcomes = score_variant(batch, predictions, "v", "1")
    stats, seen = QualityStats(), dict[str, int]()
    for _ in range(3):  # the same batch delivered three times
        fresh = np.flatnonzero(fresh_mask(batch.partitions, batch.offsets, seen))
        stats.add(outcomes, batch, fresh)
        seen = advance_offsets(seen, batch.partitions[fresh], batch.offsets[fresh])
    assert seen == {"0": 11, "1": 21}
    assert (stats.n, stats.correct) == (4, 2)
    # a partial replay (only offsets 11 and 21 are new) adds exactly those
    part = fresh_mask(batch.partitions, batch.offsets, {"0": 10, "1": 20})
    assert part.tolist() == [False, False, True, True]


def test_stats_round_trip_through_json_and_merge_like_one_add() -> None:
    batch = label_batch(["1", "0", "1", "0", "1"])
    predictions = [{"v": Prediction("1", p, s)} for p, s in
                   [("1", 0.9), ("1", 0.7), ("0", 0.1), ("0", 0.3), ("1", 0.55)]]  # fmt: skip
    outcomes = score_variant(batch, predictions, "v", "1")
    whole, first, second = QualityStats(), QualityStats(), QualityStats()
    whole.add(outcomes, batch, range(5))
    first.add(outcomes, batch, [0, 1])
    second.add(outcomes, batch, [2, 3, 4])
    restored = QualityStats.from_dict(json.loads(json.dumps(first.to_dict())))
    assert restored == first
    restored.merge(second)
    assert restored.n == whole.n and restored.correct == whole.correct
    assert restored.confusion == whole.confusion
    assert (restored.first_ms, restored.last_ms) == (whole.first_ms, whole.last_ms)
    assert restored.metrics() == pytest.approx(whole.metrics(), rel=1e-12)
