"""The latency phase: the pass-through and the pipeline at the same fixed offered rate
(default 50 % of the pipeline's measured maximum), on the same broker.

Three processes per run: a paced source (a helper process), the loop under test in this
process, and an observer (a helper process) subscribed to the predictions topic. A gate
thread lets the source start once the loop and the observer have their partitions.

loop latency (per record)
    CreateTime of the output prediction record - CreateTime of its input event. The paced
    source stamps ``event_time`` and calls ``produce`` at once, which stamps CreateTime, so
    the input CreateTime is its ``event_time`` (same clock, same millisecond); the output
    CreateTime is stamped when the loop hands the prediction to its producer. It covers
    the hop to the loop (the source's ``linger_ms``, the broker: tens of ms on the embedded
    one), the wait for the micro-batch to fill, queueing behind earlier batches, and the
    loop's work. Millisecond resolution (Kafka timestamps).
processor-added latency
    the pipeline's loop latency minus the pass-through's, quantile by quantile (p50 - p50,
    p99 - p99 ...), both measured at the same offered rate on the same broker: what scoring
    adds to the hop and the batching that any consume-produce loop pays.
in-loop latency (consumed → produced)
    per batch, from the moment ``consume`` returned the batch to the moment its outputs were
    handed to the producer, counted once per record: the processor's own
    ``streamscore_processing_latency_seconds`` histogram, and the same histogram fed by the
    pass-through. Quantiles are interpolated within its buckets (as Prometheus'
    ``histogram_quantile`` does); "max" is the upper edge of the highest non-empty bucket.
end-to-end latency (per record)
    the moment an observer consumer, subscribed to the predictions topic, received the
    prediction - the input's ``event_time``. The observer asks for records every
    millisecond: ±1 ms resolution.
    The first 5 % of the records of a latency run (by event time), or its first
    ``LATENCY_WARMUP_S`` seconds (at most a fifth of the run), whichever is more, are
    warm-up, left out of every measure (the in-loop histogram is read when the warm-up
    ends, and that reading is taken off), but never more than half of them; a run sends
    for at least ``LATENCY_MIN_S`` seconds.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from schemas.settings import Settings
from streams.bench.common import (
    LATENCY_MIN_S,
    LATENCY_WARMUP,
    LATENCY_WARMUP_S,
    BenchError,
    Progress,
)
from streams.bench.feed import Topics, bench_producer, event_source
from streams.bench.loops import LoopRun, run_pass_through, run_pipeline
from streams.bench.processes import SPAWN, helper_result, spawn_helper
from streams.bench.stats import histogram_percentiles, percentiles
from streams.ops.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from models.serving import ServingModel

#: Distinct sensor rows the paced source cycles through (ids and times are set per send).
PACED_POOL = 20_000
#: The paced source's least sleep between two sends. Waking for every event (0.3 ms apart
#: at 3,000 events/s) cost it 40 % of a core, taken from the loop under test.
PACE_S = 0.001


def paced(total: int, rate: float, *, most: int) -> Iterator[tuple[int, int, float]]:
    """The runs of sends due, ``rate`` a second from the first: ``(first, end, behind_s)``.

    Between two runs it sleeps until the next send is due, but at least ``PACE_S``; a run
    holds at most ``most`` sends; ``behind_s`` is how late its first send is.
    """
    sent, started = 0, time.monotonic()
    while sent < total:
        elapsed = time.monotonic() - started
        due = min(total, int(elapsed * rate) + 1, sent + most)
        if due <= sent:
            time.sleep(max(sent / rate - elapsed, PACE_S))
            continue
        yield sent, due, elapsed - sent / rate
        sent = due


def _paced_source(
    settings: Settings, count: int, rate: float, run_id: str, go: MpEvent, out: MpQueue[Any]
) -> None:
    """Child process: wait for ``go``, then send ``count`` events at ``rate`` per second.

    Every millisecond or so it sends the events that are due, each stamped with the send
    time as its ``event_time``. Events are built before ``go`` from a pool of real sensor
    rows (only the id and the time are set at send time), so the source costs little CPU
    on a machine it shares with the loop under test.
    """
    factory = event_source(settings, count, run_id)
    pool = [factory.event(n, 0) for n in range(min(count, PACED_POOL))]
    keys = [r["sensor_id"].encode() for r in pool]
    serde, topic = factory.serde, settings.topics.events
    # CreateTime is stamped by produce(), right after event_time: the two are the same
    # millisecond. The source lingers like the processor does (a typical producer); that
    # delay is part of the hop both loops pay, and it spares the broker a request per event.
    producer = bench_producer(settings, "bench-paced")
    if not go.wait(180):
        out.put({"error": "the loop under test never got its partitions"})
        return
    cpu0 = time.process_time()
    sent, behind_s = 0, 0.0
    started = time.monotonic()
    for first, due, behind in paced(count, rate, most=len(pool)):
        behind_s = max(behind_s, behind)
        now_ms = int(time.time() * 1000)
        chunk = [pool[n % len(pool)] for n in range(first, due)]
        for n, record in enumerate(chunk, start=first):
            record["event_id"] = f"{run_id}-{n}"
            record["event_time"] = now_ms
        producer.produce_many(
            topic, serde.encode_many(chunk), [keys[n % len(pool)] for n in range(first, due)]
        )
        sent = due
    producer.flush()
    elapsed = time.monotonic() - started
    out.put(
        {
            "cpu_s": round(time.process_time() - cpu0, 3),
            "produced": sent,
            "elapsed_s": round(elapsed, 3),
            "rate_eps": round(sent / elapsed, 1) if elapsed > 0 else None,
            "max_behind_ms": round(behind_s * 1000, 1),
        }
    )


def _observe(
    settings: Settings,
    role: str,
    expected: int,
    timeout_s: float,
    ready: MpEvent,
    out: MpQueue[Any],
) -> None:
    """Child process: a consumer subscribed to the predictions topic, noting arrival times."""
    from connectors.kafka import Consumer
    from connectors.schema_registry import topic_serde
    from streams.scoring.processor import client_id

    consumer = Consumer(
        settings.kafka,
        group_id=f"bench-observer-{uuid.uuid4().hex[:8]}",
        client_id=client_id("bench-observer"),
        auto_offset_reset="earliest",
    )
    consumer.subscribe([settings.topics.predictions], on_assign=lambda _p: ready.set())
    values: list[bytes] = []
    created: list[int] = []
    received: list[float] = []
    deadline = time.monotonic() + timeout_s
    cpu0: float | None = None
    try:
        while len(values) < expected and time.monotonic() < deadline:
            messages = consumer.consume(256, 0.001)
            if not messages:
                continue
            if cpu0 is None:
                cpu0 = time.process_time()
            now = time.time()
            for m in messages:
                values.append(cast(bytes, m.value()))
                created.append(m.timestamp()[1])
                received.append(now)
    finally:
        consumer.close()
    serde = topic_serde(settings, role)
    event_ms = [int(serde.decode(v)["event_time"]) for v in values]
    out.put(
        {
            "event_ms": event_ms,
            "created_ms": created,
            "received_s": received,
            "cpu_s": round(time.process_time() - (cpu0 or 0.0), 3),
        }
    )


class _Gate(threading.Thread):
    """Sets ``go`` once the loop under test has its partitions and the observer its own.

    It then keeps watching the helper processes: if one fails, the loop is stopped rather
    than left waiting for records that will never come.
    """

    def __init__(
        self,
        assigned: Callable[[], bool],
        stop_loop: Callable[[], None],
        ready: MpEvent,
        go: MpEvent,
        helpers: Sequence[SpawnProcess],
        *,
        in_loop_counts: Callable[[], np.ndarray],
        warmup_s: float,
    ) -> None:
        super().__init__(name="bench-gate", daemon=True)
        self._assigned, self._stop_loop = assigned, stop_loop
        self._ready, self._go, self._helpers = ready, go, helpers
        self._stop_event = threading.Event()
        self.failed: list[str] = []
        self._in_loop_counts, self._warmup_s = in_loop_counts, warmup_s
        self._go_at: float | None = None
        #: The loop's in-loop histogram counts when the warm-up ended (taken off after).
        self.warm_counts: np.ndarray | None = None

    def run(self) -> None:
        while not self._stop_event.wait(0.005 if self.warm_counts is None else 0.05):
            for helper in self._helpers:
                if helper.exitcode not in (None, 0):
                    self.failed.append(f"{helper.name} exited with code {helper.exitcode}")
            if self.failed:
                self._stop_loop()
                return
            if not self._go.is_set() and self._assigned() and self._ready.is_set():
                self._go.set()
                self._go_at = time.monotonic()
            if (
                self.warm_counts is None
                and self._go_at is not None
                and time.monotonic() - self._go_at >= self._warmup_s
            ):
                self.warm_counts = self._in_loop_counts()

    def stop(self) -> None:
        self._stop_event.set()


def _latency_loop(
    kind: str,
    settings: Settings,
    champion: ServingModel,
    fan_out: dict[str, int],
    count: int,
    sync: tuple[MpEvent, MpEvent],
    helpers: Sequence[SpawnProcess],
    warmup_s: float,
) -> tuple[LoopRun, np.ndarray | None]:
    """Run the loop under test; a gate thread lets the source start once it is assigned.

    Returns the run and its in-loop histogram counts at the end of the warm-up.
    """
    ready, go = sync
    gates: list[_Gate] = []

    def gate(
        assigned: Callable[[], bool],
        stop_loop: Callable[[], None],
        counts: Callable[[], np.ndarray],
    ) -> None:
        gates.append(
            _Gate(assigned, stop_loop, ready, go, helpers, in_loop_counts=counts,
                  warmup_s=warmup_s)
        )  # fmt: skip
        gates[-1].start()

    try:
        if kind == "pipeline":
            run = run_pipeline(
                settings,
                events=count,
                name="latency pipeline",
                on_build=lambda p: gate(
                    lambda: p.health.partitions_assigned > 0,
                    lambda: p.stop("helper failed"),
                    lambda: p.metrics.processing_latency.snapshot()[0],
                ),
            )
        else:
            run = run_pass_through(
                settings,
                champion,
                fan_out,
                events=count,
                on_build=lambda loop: gate(
                    lambda: loop.assigned, loop.stop, lambda: loop.histogram.snapshot()[0]
                ),
            )
        return run, gates[0].warm_counts if gates else None
    except BenchError as exc:
        failed = [f for g in gates for f in g.failed]
        if failed:
            raise BenchError(f"{kind} latency run: {'; '.join(failed)}") from exc
        raise
    finally:
        for g in gates:
            g.stop()
            g.join()


def latency_run(
    kind: str,
    settings: Settings,
    *,
    rate: float,
    count: int,
    champion: ServingModel,
    fan_out: dict[str, int],
    run_id: str,
) -> dict[str, Any]:
    """One loop (``pipeline`` or ``pass-through``) at ``rate`` events/s: its latencies."""
    ready, go = SPAWN.Event(), SPAWN.Event()
    observed: MpQueue[Any] = SPAWN.Queue()
    sourced: MpQueue[Any] = SPAWN.Queue()
    expected = count * fan_out["predictions"] if kind == "pass-through" else count
    budget = count / rate + 180.0
    role = "events" if kind == "pass-through" else "predictions"
    seconds = count / rate
    warmup_s = max(LATENCY_WARMUP * seconds, min(LATENCY_WARMUP_S, 0.2 * seconds))
    observer = spawn_helper(_observe, settings, role, expected, budget, ready, observed)
    source = spawn_helper(_paced_source, settings, count, rate, f"{run_id}-lat", go, sourced)
    try:
        run, warm_counts = _latency_loop(
            kind, settings, champion, fan_out, count, (ready, go), (observer, source), warmup_s
        )
        source_report = helper_result(sourced, source, budget, "paced source")
        data = helper_result(observed, observer, budget, "observer")
    finally:
        for process in (source, observer):
            if process.is_alive():
                process.kill()
    event_ms = np.asarray(data["event_ms"], dtype=np.float64)
    created_ms = np.asarray(data["created_ms"], dtype=np.float64)
    received_ms = np.asarray(data["received_s"], dtype=np.float64) * 1000
    if event_ms.size < expected:
        raise BenchError(f"observer saw {event_ms.size} of {expected} {kind} predictions")
    keep = steady_records(event_ms, warmup_s)
    counts = run.in_loop_counts if run.in_loop_counts is not None else np.zeros(1, np.int64)
    counts = steady_counts(counts, warm_counts)
    return {
        "offered_eps": round(rate, 1),
        "sent_eps": source_report.get("rate_eps"),
        "source_max_behind_ms": source_report.get("max_behind_ms"),
        "events": run.events,
        "predictions_observed": int(event_ms.size),
        "warmup_excluded": int(event_ms.size - keep.size),
        "warmup_s": round(warmup_s, 2),
        "loop_ms": percentiles(created_ms[keep] - event_ms[keep]),
        "in_loop_ms": histogram_percentiles(counts, LATENCY_BUCKETS),
        "end_to_end_ms": percentiles(received_ms[keep] - event_ms[keep]),
        "batches": run.batches,
        "mean_batch": round(run.events / run.batches, 1) if run.batches else 0.0,
        "loop_busy_share": round(run.busy_s / run.seconds, 3) if run.seconds else None,
        "loop_cpu_us_per_event": run.per_event_us(run.cpu_s),
        "broker_cpu_us_per_event": run.per_event_us(run.broker_cpu_s),
        # Share of one core the embedded broker used during the run: its fetches cost more
        # the more batches the topics hold (``streamscore bench-broker``), so a latency run
        # is read against it.
        "broker_cpu_share": (
            round(run.broker_cpu_s / run.seconds, 3)
            if run.broker_cpu_s is not None and run.seconds
            else None
        ),
        "source_cpu_s_while_sending": source_report.get("cpu_s"),
        "observer_cpu_s_while_receiving": data.get("cpu_s"),
    }


def steady_records(event_ms: np.ndarray, warmup_s: float) -> np.ndarray:
    """Positions of the records past the warm-up, by event time: past the first
    ``LATENCY_WARMUP`` share and the first ``warmup_s`` seconds, but never more than half
    of them left out (a source that fell behind sends its events in one burst)."""
    order = np.argsort(event_ms, kind="stable")
    if not order.size:
        return order
    warm_until = event_ms[order[0]] + warmup_s * 1000
    warm = max(
        int(len(order) * LATENCY_WARMUP),
        int(np.searchsorted(event_ms[order], warm_until, side="left")),
    )
    return order[min(warm, len(order) // 2) :]


def steady_counts(counts: np.ndarray, warm_counts: np.ndarray | None) -> np.ndarray:
    """The in-loop histogram without what it held when the warm-up ended (the same rule:
    never more than half of it taken off)."""
    if warm_counts is None or counts.shape != warm_counts.shape:
        return counts
    steady = counts - warm_counts
    return steady if steady.sum() * 2 >= counts.sum() else counts


def latency_phase(
    topics: Topics,
    *,
    offered: float,
    count: int,
    champion: ServingModel,
    fan_out: dict[str, int],
    repeats: int,
    run_id: str,
    say: Progress,
    min_seconds: float = LATENCY_MIN_S,
) -> dict[str, Any]:
    """Pass-through and pipeline at the same offered rate, in ``repeats`` rounds, each
    ``count`` events or ``min_seconds`` of sending, whichever is more.

    Tails are what a busy shared machine disturbs most, so each loop keeps the round with
    its lowest loop-latency p99 (the least disturbed one); every round's p99 is kept too.
    """
    rounds: dict[str, list[dict[str, Any]]] = {"pass-through": [], "pipeline": []}
    count = max(count, int(offered * min_seconds))
    for r in range(repeats):
        for kind in rounds:
            say(f"latency: {kind} at {offered:,.0f} events/s, {count:,} events "
                f"(round {r + 1} of {repeats})")  # fmt: skip
            phase = topics.phase(f"latency-{r}-{kind}")
            run = latency_run(
                kind,
                phase,
                rate=offered,
                count=count,
                champion=champion,
                fan_out=fan_out,
                run_id=run_id,
            )
            run["topics"] = {"events": phase.topics.events, "predictions": phase.topics.predictions}
            topics.drop(phase)
            rounds[kind].append(run)
    loops = {kind: min(runs, key=lambda x: x["loop_ms"]["p99"]) for kind, runs in rounds.items()}
    return {
        "offered_eps": round(offered, 1),
        "events": count,
        "min_seconds": min_seconds,
        "rounds": repeats,
        "loops": loops,
        "processor_added_ms": added_latency(
            loops["pipeline"]["loop_ms"], loops["pass-through"]["loop_ms"]
        ),
        "loop_p99_ms_by_round": {
            kind: [run["loop_ms"]["p99"] for run in runs] for kind, runs in rounds.items()
        },
    }


def added_latency(pipeline: dict[str, float], limit: dict[str, float]) -> dict[str, float]:
    """Pipeline minus pass-through loop latency, quantile by quantile (ms)."""
    return {
        k: round(pipeline[k] - limit[k], 3)
        for k in ("p50", "p95", "p99", "max")
        if k in pipeline and k in limit
    }
