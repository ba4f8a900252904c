"""StoreWriter with an in-memory prediction store: exact writes per served variant, and a
Redis outage (or a worker that is behind) as a counted gap and a health problem that
clears when writes succeed again. The backlog itself is tested in test_store_backlog."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from models.runtime import Scores
from models.serving import ServingModel
from schemas.settings import StoreSettings
from streams.ops.metrics import Health, Metrics
from streams.scoring.pipeline import BatchOutput, raw_batch_from
from streams.scoring.store_writer import StoreWriter
from tests.unit.scoring.conftest import TO_CHALLENGER, MemoryStore, OutputFactory, metric

#: The writer reads only the batch output; the raw batch is not looked at.
NO_RAW = raw_batch_from([])
GAP = "streamscore_prediction_store_gap_events_total"
REDIS_UP = "streamscore_dependency_up"


def report(
    batches_written: int,
    gap: dict[str, int] | None = None,
    *,
    backlog_max_bytes: int = StoreSettings().backlog_max_bytes,
) -> dict[str, dict[str, object]]:
    """The writer's run summary with nothing waiting in the backlog."""
    gap = gap or {}
    return {
        "prediction_store": {
            "batches_written": batches_written,
            "gap_events": sum(gap.values()),
            "gap_events_by_variant": gap,
            "replayed_events": 0,
            "backlog_events": 0,
            "backlog_bytes": 0,
            "backlog_max_bytes": backlog_max_bytes,
        }
    }


def test_the_champion_predictions_are_written_as_scored(
    binary_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics)
    writer(make_output(binary_champion, rows[:4], first=10), NO_RAW)
    writer(make_output(binary_champion, rows[4:6], first=14), NO_RAW)
    writer.close()
    scores = binary_champion.model.predict(rows[:6])
    assert scores.labels is not None
    assert store.calls == [
        (
            "champion",
            "1",
            ["e-10", "e-11", "e-12", "e-13"],
            scores.labels[:4].tolist(),
            scores.score[:4].tolist(),
        ),
        ("champion", "1", ["e-14", "e-15"], scores.labels[4:].tolist(), scores.score[4:].tolist()),
    ]
    assert writer.report() == report(2)
    assert metric(metrics, REDIS_UP, dependency="redis") == 1
    assert metric(metrics, GAP) == 0


def test_a_regressor_is_written_without_labels(
    regression_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics)
    writer(make_output(regression_champion, rows[:3]), NO_RAW)
    writer.close()
    expected = regression_champion.model.predict(rows[:3]).score.tolist()
    assert store.calls == [("champion", "7", ["e-0", "e-1", "e-2"], None, expected)]


def test_each_ab_variant_is_written_under_its_name_and_version(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    row_variant = np.array([0, 1, 1, 0, 1, 0])
    out = make_output(
        binary_champion,
        rows[:6],
        served=[("champion", binary_champion), ("challenger", binary_challenger)],
        row_variant=row_variant,
    )
    # each row scored by the model that served it, as the pipeline's A/B split does
    champion = binary_champion.model.predict(rows[:6])
    challenger = binary_challenger.model.predict(rows[:6, TO_CHALLENGER])
    assert champion.labels is not None and challenger.labels is not None
    pick = row_variant == 1
    out.scores = Scores(
        score=np.where(pick, challenger.score, champion.score),
        labels=np.where(pick, challenger.labels, champion.labels),
    )
    store = MemoryStore()
    writer = StoreWriter(store, metrics)
    writer(out, NO_RAW)
    writer.close()
    assert store.calls == [
        (
            "champion",
            "1",
            ["e-0", "e-3", "e-5"],
            champion.labels[[0, 3, 5]].tolist(),
            champion.score[[0, 3, 5]].tolist(),
        ),
        (
            "challenger",
            "2",
            ["e-1", "e-2", "e-4"],
            challenger.labels[[1, 2, 4]].tolist(),
            challenger.score[[1, 2, 4]].tolist(),
        ),
    ]
    assert writer.report() == report(1)


def test_a_batch_with_nothing_scored_writes_nothing(
    binary_champion: ServingModel, metrics: Metrics
) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics)
    writer(BatchOutput(), NO_RAW)
    writer(BatchOutput(served=[("champion", binary_champion)]), NO_RAW)
    writer.close()
    assert store.calls == []
    assert writer.worker.submitted == 0


def test_redis_down_is_a_counted_gap_and_a_health_problem_until_writes_succeed(
    binary_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    """Without a backlog (``backlog_max_bytes=0``) every refused prediction is the gap."""
    store, health = MemoryStore(), Health()
    writer = StoreWriter(store, metrics, health, backlog_max_bytes=0)
    writer(make_output(binary_champion, rows[:5]), NO_RAW)
    assert writer.worker.drain()
    assert "redis" not in health.problems
    assert metric(metrics, REDIS_UP, dependency="redis") == 1

    store.down = True
    writer(make_output(binary_champion, rows[5:12], first=5), NO_RAW)
    writer(make_output(binary_champion, rows[12:15], first=12), NO_RAW)
    assert writer.worker.drain()
    assert store.refused == 2
    assert metric(metrics, GAP) == 10
    assert metric(metrics, REDIS_UP, dependency="redis") == 0
    assert health.problems == {
        "redis": "unreachable: 0 predictions waiting to be written (0.00 of 0.00 MiB), "
        "10 lost so far"
    }
    assert writer.report() == report(1, {"champion": 10}, backlog_max_bytes=0)
    # the writer handles the outage itself: neither the caller nor the worker saw an error
    assert (writer.worker.errors, writer.worker.last_error) == (0, None)

    store.down = False
    writer(make_output(binary_champion, rows[15:17], first=15), NO_RAW)
    writer.close()
    assert health.problems == {}
    assert metric(metrics, REDIS_UP, dependency="redis") == 1
    assert metric(metrics, GAP) == 10  # the gap stays what it was: nothing is back-filled
    assert writer.report() == report(2, {"champion": 10}, backlog_max_bytes=0)
    assert [call[2] for call in store.calls] == [
        ["e-0", "e-1", "e-2", "e-3", "e-4"],
        ["e-15", "e-16"],
    ]


def test_with_the_backlog_a_short_outage_is_a_health_problem_but_no_gap(
    binary_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store, health = MemoryStore(), Health()
    writer = StoreWriter(store, metrics, health)
    store.down = True
    writer(make_output(binary_champion, rows[:3]), NO_RAW)
    assert writer.worker.drain()
    assert health.problems["redis"].startswith("unreachable: 3 predictions waiting")
    assert metric(metrics, REDIS_UP, dependency="redis") == 0

    store.down = False
    writer(make_output(binary_champion, rows[3:5], first=3), NO_RAW)
    writer.close()
    assert health.problems == {}
    assert metric(metrics, GAP) == 0
    assert [call[2] for call in store.calls] == [["e-0", "e-1", "e-2"], ["e-3", "e-4"]]


class SlowStore(MemoryStore):
    """Holds the writer inside ``put_batch`` until released, so its queue fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def put_batch(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
    ) -> None:
        self.entered.set()
        assert self.release.wait(10), "the test never released the store"
        super().put_batch(variant, model_version, event_ids, labels, scores)


def test_a_writer_that_is_behind_drops_the_batch_as_a_counted_gap(
    binary_champion: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store = SlowStore()
    writer = StoreWriter(store, metrics, max_pending=1)
    writer(make_output(binary_champion, rows[:4]), NO_RAW)
    assert store.entered.wait(10)  # the worker holds batch 0
    writer(make_output(binary_champion, rows[4:6], first=4), NO_RAW)  # queued
    writer(make_output(binary_champion, rows[6:9], first=6), NO_RAW)  # no room: 3 lost
    writer(make_output(binary_champion, rows[9:10], first=9), NO_RAW)  # no room: 1 lost
    store.release.set()
    writer.close()
    assert metric(metrics, GAP) == 4
    assert writer.report() == report(2, {"champion": 4})
    assert writer.worker.dropped == 2
    assert [call[2] for call in store.calls] == [["e-0", "e-1", "e-2", "e-3"], ["e-4", "e-5"]]
