"""The prediction-store backlog: what Redis refuses is kept, capped, and written when it returns.

The store is the in-memory twin from the conftest, switched down and up by hand;
the writer runs on its real background worker and every test waits for it with
``drain``. Ids have a fixed length, so every byte count below is exact:
a part of ``n`` ids of length 5 holds ``n * (5 + EVENT_BYTES)`` bytes.
"""

from __future__ import annotations

import numpy as np

from models.serving import ServingModel
from schemas.serde import AvroSerde
from streams.ops.metrics import Health, Metrics
from streams.scoring.pipeline import raw_batch_from
from streams.scoring.shadow import ShadowScorer
from streams.scoring.store_writer import EVENT_BYTES, Backlog, StorePart, StoreWriter
from tests.unit.scoring.conftest import TO_CHALLENGER, MemoryStore, OutputFactory, metric

NO_RAW = raw_batch_from([])
GAP = "streamscore_prediction_store_gap_events_total"
BACKLOG_EVENTS = "streamscore_prediction_store_backlog_events"
BACKLOG_BYTES = "streamscore_prediction_store_backlog_bytes"
#: Events per test batch, and the estimated bytes of one batch (ids ``e-100`` .. ``e-999``).
N = 10
BATCH_BYTES = N * (5 + EVENT_BYTES)


def ids(batch: int) -> list[str]:
    """The ids of test batch ``batch`` (0 .. 89): ``e-<100 + 10 * batch + i>``, 5 characters."""
    first = 100 + N * batch
    return [f"e-{i}" for i in range(first, first + N)]


def part(batch: int, variant: str = "champion") -> StorePart:
    return StorePart(variant, "1", ids(batch), ["0"] * N, [0.25] * N)


def put(writer: StoreWriter, batch: int, variant: str = "champion") -> None:
    writer.put_batch(*part(batch, variant))
    assert writer.worker.drain(5.0)


def written_ids(store: MemoryStore) -> list[str]:
    return [e for call in store.calls for e in call[2]]


# -- Backlog ----------------------------------------------------------------------------------


def test_the_backlog_estimates_ids_plus_fixed_bytes_per_event_and_drops_the_oldest() -> None:
    backlog = Backlog(max_bytes=3 * BATCH_BYTES)
    assert part(0).nbytes == BATCH_BYTES == 1650
    for batch in range(3):
        assert backlog.add(part(batch)) == []
    assert (len(backlog), backlog.events, backlog.nbytes) == (3, 30, 3 * BATCH_BYTES)
    assert backlog.add(part(3)) == [part(0)]
    assert [p.event_ids for p in backlog.take_all()] == [ids(1), ids(2), ids(3)]
    assert (len(backlog), backlog.events, backlog.nbytes) == (0, 0, 0)


def test_a_part_larger_than_the_cap_is_dropped_at_once() -> None:
    backlog = Backlog(max_bytes=BATCH_BYTES - 1)
    assert backlog.add(part(0)) == [part(0)]
    assert backlog.oldest() is None


# -- StoreWriter ------------------------------------------------------------------------------


def test_batches_written_while_redis_is_down_are_kept_and_replayed_in_order(
    metrics: Metrics,
) -> None:
    store, health = MemoryStore(), Health()
    writer = StoreWriter(store, metrics, health, backlog_max_bytes=10 * BATCH_BYTES)
    put(writer, 0)
    store.down = True
    for batch in range(1, 6):
        put(writer, batch)
    assert store.refused == 5  # one failed round trip per batch, not one per waiting part
    assert (writer.backlog.events, writer.backlog.nbytes) == (50, 5 * BATCH_BYTES)
    assert metric(metrics, BACKLOG_EVENTS) == 50
    assert metric(metrics, BACKLOG_BYTES) == 5 * BATCH_BYTES
    assert metric(metrics, GAP) == 0
    assert metric(metrics, "streamscore_dependency_up", dependency="redis") == 0
    assert health.problems["redis"] == (
        "unreachable: 50 predictions waiting to be written (0.01 of 0.02 MiB), 0 lost so far"
    )

    store.down = False
    put(writer, 6)
    assert written_ids(store) == [e for batch in range(7) for e in ids(batch)]
    assert writer.replayed_events == 50
    assert (writer.backlog.events, writer.backlog.nbytes) == (0, 0)
    assert metric(metrics, BACKLOG_EVENTS) == metric(metrics, BACKLOG_BYTES) == 0
    assert metric(metrics, GAP) == writer.gap_events == 0
    assert metric(metrics, "streamscore_dependency_up", dependency="redis") == 1
    assert "redis" not in health.problems
    writer.close()
    assert writer.report() == {
        "prediction_store": {
            "batches_written": 2,
            "gap_events": 0,
            "gap_events_by_variant": {},
            "replayed_events": 50,
            "backlog_events": 0,
            "backlog_bytes": 0,
            "backlog_max_bytes": 10 * BATCH_BYTES,
        }
    }


def test_when_the_cap_is_reached_the_oldest_are_dropped_and_counted_as_the_gap(
    metrics: Metrics,
) -> None:
    store, health = MemoryStore(), Health()
    writer = StoreWriter(store, metrics, health, backlog_max_bytes=3 * BATCH_BYTES)
    store.down = True
    for batch in range(8):
        put(writer, batch)
    assert writer.backlog.events == 30
    assert metric(metrics, BACKLOG_BYTES) == 3 * BATCH_BYTES
    assert metric(metrics, GAP) == writer.gap_events == 50  # batches 0 .. 4, oldest first
    assert writer.gap_by_variant == {"champion": 50}
    assert health.problems["redis"] == (
        "unreachable: 30 predictions waiting to be written (0.00 of 0.00 MiB), 50 lost so far"
    )

    store.down = False
    writer.flush()
    assert writer.worker.drain(5.0)
    assert written_ids(store) == ids(5) + ids(6) + ids(7)
    assert writer.replayed_events == 30
    assert metric(metrics, GAP) == 50
    writer.close()


def test_a_flush_while_nothing_waits_does_not_ask_redis(metrics: Metrics) -> None:
    store, health = MemoryStore(), Health()
    health.problems["redis"] = "unreachable at start"
    writer = StoreWriter(store, metrics, health)
    writer.flush()
    assert writer.worker.drain(5.0)
    assert health.problems == {"redis": "unreachable at start"}
    writer.close()


def test_without_a_backlog_every_refused_event_is_the_gap(metrics: Metrics) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics, backlog_max_bytes=0)
    store.down = True
    for batch in range(3):
        put(writer, batch)
    assert metric(metrics, GAP) == writer.gap_events == 30
    assert writer.backlog.events == 0
    writer.close()


def test_what_still_waits_at_shutdown_is_the_gap_and_a_late_part_is_written_at_once(
    metrics: Metrics,
) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics)
    store.down = True
    put(writer, 0)
    put(writer, 1, "challenger")
    writer.close()
    assert store.refused == 3  # two batches, then the last try at close
    assert writer.gap_by_variant == {"champion": 10, "challenger": 10}
    assert metric(metrics, GAP) == 20
    assert metric(metrics, BACKLOG_EVENTS) == 0

    store.down = False
    writer.put_batch(*part(2, "challenger"))  # a side path closed after the writer drains
    assert written_ids(store) == ids(2)
    writer.close()


def test_a_champion_batch_and_its_challenger_rows_share_the_backlog_and_the_count(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
    metrics: Metrics,
    make_output: OutputFactory,
) -> None:
    store = MemoryStore()
    writer = StoreWriter(store, metrics, backlog_max_bytes=100 * BATCH_BYTES)
    shadow = ShadowScorer(
        binary_challenger,
        binary_champion.feature_names,
        emit=lambda values, keys: None,
        serde=AvroSerde("shadow_record"),
        metrics=metrics,
        store=writer,
        worker=False,
    )
    store.down = True
    for first in (100, 110):
        out = make_output(binary_champion, rows[first - 100 : first - 90], first=first)
        writer(out, NO_RAW)
        shadow(out, NO_RAW)
        assert writer.worker.drain(5.0)
    assert writer.backlog.events == 40
    assert metric(metrics, GAP) == 0

    store.down = False
    writer.flush()
    assert writer.worker.drain(5.0)
    assert [(variant, event_ids) for variant, _, event_ids, _, _ in store.calls] == [
        ("champion", ids(0)),
        ("challenger", ids(0)),
        ("champion", ids(1)),
        ("challenger", ids(1)),
    ]
    challenger = binary_challenger.model.predict(rows[:10, TO_CHALLENGER])
    assert store.calls[1][4] == challenger.score.tolist()
    writer.close()
    assert writer.report()["prediction_store"]["replayed_events"] == 40
