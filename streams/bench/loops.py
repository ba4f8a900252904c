"""The two loops the bench compares, each run once over a given number of events.

* the **pipeline**: the processor exactly as :func:`streams.scoring.compose.build_processor`
  wires it (every side path the settings turn on). The records it produces per input, by
  topic role, are read from its own ``streamscore_records_produced_total``;
* the **pass-through limit**: the processor's own consumer, producer and checkpoint (built
  by :meth:`Processor.from_settings`, so the client configuration, ``max_batch``,
  ``max_wait_ms`` and the commit protocol are the processor's), in a loop that forwards
  each input's bytes as many times, to the same topic roles, as the pipeline produced
  records; no work on the payload.

throughput
    input events / (time of the last offset commit - time the first non-empty consume
    returned); the consumer-group join before the first record is excluded.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from schemas.settings import Settings
from streams.bench.common import IDLE_LIMIT_S, BenchError
from streams.bench.probes import CpuMeter, broker_pid
from streams.ops.metrics import LATENCY_BUCKETS, BatchHistogram, Metrics
from streams.scoring.checkpoint import Checkpoint

if TYPE_CHECKING:
    from connectors.kafka import Message
    from models.serving import ServingModel
    from streams.scoring.processor import Processor
    from streams.scoring.side_path import WorkerProcess

PRODUCED_METRIC = "streamscore_records_produced_total"


# -- timing wrappers around the commit protocol -------------------------------------------------


class CommitClock:
    """Stands in for a :class:`Checkpoint`: times every commit that committed something.

    Everything else is the wrapped checkpoint's, so the protocol measured is the
    processor's own: flush, confirm delivery, then commit offsets.
    """

    def __init__(self, inner: Checkpoint) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.count = 0
        #: Wall-clock time the last commit that committed offsets returned.
        self.last_at: float | None = None

    def commit(self, *, wait: bool = True) -> None:
        before = self.inner.commits
        started = time.perf_counter()
        self.inner.commit(wait=wait)
        if self.inner.commits != before:
            self.seconds += time.perf_counter() - started
            self.count += 1
            self.last_at = time.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _clock(processor: Processor) -> CommitClock:
    clock = CommitClock(processor.checkpoint)
    processor.checkpoint = cast(Checkpoint, clock)
    return clock


def produced_by_role(metrics: Metrics) -> dict[str, int]:
    """Records produced per topic role, as the processor counted them."""
    result: dict[str, int] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == PRODUCED_METRIC and sample.value > 0:
                result[sample.labels["role"]] = int(sample.value)
    return result


# -- one run of a loop -------------------------------------------------------------------------


@dataclass
class LoopRun:
    """What one run of the pipeline or the pass-through did, and how long it took."""

    name: str
    events: int = 0
    batches: int = 0
    started_at: float = 0.0
    first_at: float | None = None
    last_commit_at: float | None = None
    commits: int = 0
    commit_s: float = 0.0
    busy_s: float = 0.0
    outputs: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    in_loop_counts: np.ndarray | None = None
    exit_reason: str = ""
    #: Output topic per role (the ones records went to).
    topics: dict[str, str] = field(default_factory=dict)
    #: CPU seconds of this process (every thread) and of the embedded broker during the run.
    cpu_s: float = 0.0
    broker_cpu_s: float | None = None
    #: CPU seconds of the processor's side-path process (None: side paths on threads).
    side_cpu_s: float | None = None

    def per_event_us(self, seconds: float | None) -> float | None:
        return (
            round(seconds * 1e6 / self.events, 3) if seconds is not None and self.events else None
        )

    @property
    def seconds(self) -> float:
        if self.first_at is None or self.last_commit_at is None:
            return 0.0
        return max(self.last_commit_at - self.first_at, 1e-9)

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def stage_us(self) -> dict[str, float]:
        """Microseconds per event: the loop's own stages, the commits, and the rest."""
        if not self.events:
            return {}
        per = 1e6 / self.events
        result = {name: round(s * per, 3) for name, s in self.stage_seconds.items()}
        result["commit"] = round(self.commit_s * per, 3)
        rest = self.seconds - self.busy_s - self.commit_s
        result["poll + loop"] = round(max(rest, 0.0) * per, 3)
        return result

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "batches": self.batches,
            "seconds": round(self.seconds, 4),
            "eps": round(self.eps, 1),
            "us_per_event": round(1e6 / self.eps, 3) if self.eps else None,
            "cpu_us_per_event": self.per_event_us(self.cpu_s),
            "broker_cpu_us_per_event": self.per_event_us(self.broker_cpu_s),
            "side_process_cpu_us_per_event": self.per_event_us(self.side_cpu_s),
            "join_s": round(self.first_at - self.started_at, 3) if self.first_at else None,
            "commits": self.commits,
            "commit_ms_mean": round(self.commit_s / self.commits * 1000, 2)
            if self.commits
            else None,
            "outputs": dict(self.outputs),
            "stage_us_per_event": self.stage_us(),
            "exit_reason": self.exit_reason,
            "topics": dict(self.topics),
        }


def _check_complete(run: LoopRun, expected: int) -> None:
    if run.exit_reason in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt(run.exit_reason)
    if run.events != expected or run.last_commit_at is None:
        raise BenchError(
            f"{run.name}: consumed {run.events} of {expected} events "
            f"({run.exit_reason or 'no commit'})"
        )


def side_process_of(processor: Processor) -> WorkerProcess | None:
    """The processor's side-path process, if it has one."""
    from streams.scoring.side_path import WorkerProcess

    for closable in processor.closables:
        if isinstance(closable, WorkerProcess):
            return closable
    return None


def side_process_pid(processor: Processor) -> int | None:
    """Pid of the processor's side-path process, if it has one."""
    side = side_process_of(processor)
    return side.pid if side is not None else None


def run_pipeline(
    settings: Settings,
    *,
    events: int,
    prepare: Callable[[Processor], None] | None = None,
    on_build: Callable[[Processor], None] | None = None,
    name: str = "pipeline",
) -> LoopRun:
    """The processor as the composition root builds it, over ``events`` input events."""
    from streams.scoring.compose import build_processor

    processor = build_processor(settings)
    if prepare is not None:
        prepare(processor)
    clock = _clock(processor)
    if on_build is not None:
        on_build(processor)
    started = time.time()
    side = side_process_of(processor)
    side_before = side.cpu_s if side is not None else 0.0
    cpu = CpuMeter(broker_pid(settings))
    summary = processor.run(exit_when_idle=IDLE_LIMIT_S, max_events=events)
    cpu.stop()
    counts, _ = processor.metrics.processing_latency.snapshot()
    run = LoopRun(
        name=name,
        events=summary.events_in,
        batches=summary.batches,
        started_at=started,
        first_at=summary.first_event_at,
        last_commit_at=clock.last_at,
        commits=clock.count,
        commit_s=clock.seconds,
        busy_s=summary.busy_s,
        outputs=produced_by_role(processor.metrics),
        stage_seconds=dict(summary.stage_seconds),
        in_loop_counts=counts,
        exit_reason=summary.exit_reason,
        cpu_s=cpu.process_s,
        broker_cpu_s=cpu.broker_s,
        side_cpu_s=side.cpu_s - side_before if side is not None else None,
    )
    del processor
    gc.collect()  # the clients' callbacks make cycles: free them (and their threads) now
    _check_complete(run, events)
    return run


class PassThrough:
    """The limit: the processor's consumer, producer and checkpoint; bytes forwarded.

    :meth:`Processor.from_settings` builds the clients, so their configuration and the
    commit protocol are exactly the processor's. Each input record is forwarded
    unchanged (key and value) once per output record the pipeline makes of it.
    """

    def __init__(self, settings: Settings, champion: ServingModel, fan_out: dict[str, int]) -> None:
        from streams.scoring.processor import Processor

        shell = Processor.from_settings(settings, champion)
        self.settings = settings
        self.consumer, self.producer = shell.consumer, shell.producer
        self.clock = _clock(shell)
        by_role = settings.topics.by_role()
        self.fan_out = dict(fan_out)
        self.targets = [by_role[role] for role, copies in fan_out.items() for _ in range(copies)]
        from prometheus_client import CollectorRegistry

        self.histogram = BatchHistogram(
            "bench_pass_through_latency_seconds",
            "Pass-through: batch consumed to outputs produced.",
            LATENCY_BUCKETS,
            CollectorRegistry(),
        )
        self.assigned_at: float | None = None
        self._stop = False

    @property
    def assigned(self) -> bool:
        return self.assigned_at is not None

    def _on_assign(self, _partitions: list[Any]) -> None:
        self.assigned_at = time.monotonic()

    def _on_revoke(self, _partitions: list[Any]) -> None:
        self.clock.commit()

    def stop(self) -> None:
        self._stop = True

    def run(self, *, max_events: int, exit_when_idle: float = IDLE_LIMIT_S) -> LoopRun:
        p = self.settings.processor
        wait_s = p.max_wait_ms / 1000
        run = LoopRun(name="pass-through", started_at=time.time())
        produce_s = 0.0
        self.consumer.subscribe(
            [self.settings.topics.events], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        started = last_input = time.monotonic()
        clean = False
        try:
            while not self._stop and run.events < max_events:
                messages: list[Message] = self.consumer.consume(p.max_batch, wait_s)
                now = time.monotonic()
                if self.clock.due():  # as the processor: before producing more
                    self.clock.commit(wait=False)
                if messages:
                    polled_at = time.perf_counter()
                    if run.first_at is None:
                        run.first_at = time.time()
                    last_input = now
                    values = cast(list[bytes], [m.value() for m in messages])
                    keys = [m.key() for m in messages]
                    for topic in self.targets:
                        self.producer.produce_many(topic, values, keys)
                    produced_at = time.perf_counter()
                    self.clock.track(
                        zip(
                            [m.topic() for m in messages],
                            [m.partition() for m in messages],
                            [m.offset() for m in messages],
                            strict=True,
                        )
                    )
                    done = time.perf_counter()
                    n = len(messages)
                    run.events += n
                    run.batches += 1
                    run.busy_s += done - polled_at
                    produce_s += produced_at - polled_at
                    self.histogram.observe_many(np.full(n, produced_at - polled_at))
                else:
                    since = self.assigned_at if self.assigned_at is not None else started + 60
                    if now - max(last_input, since) >= exit_when_idle:
                        run.exit_reason = f"idle for {exit_when_idle:g}s"
                        break
                if messages and p.commit_interval_ms == 0:
                    self.clock.commit()
            clean = True
        finally:
            if clean:
                self.clock.commit()
            self.consumer.close()
        run.exit_reason = run.exit_reason or (
            "stopped" if self._stop else f"reached {max_events} events"
        )
        run.last_commit_at = self.clock.last_at
        run.commits, run.commit_s = self.clock.count, self.clock.seconds
        run.stage_seconds = {"produce": produce_s}
        run.outputs = {role: run.events * copies for role, copies in self.fan_out.items()}
        run.in_loop_counts = self.histogram.snapshot()[0]
        return run


def run_pass_through(
    settings: Settings,
    champion: ServingModel,
    fan_out: dict[str, int],
    *,
    events: int,
    on_build: Callable[[PassThrough], None] | None = None,
) -> LoopRun:
    loop = PassThrough(settings, champion, fan_out)
    if on_build is not None:
        on_build(loop)
    cpu = CpuMeter(broker_pid(settings))
    run = loop.run(max_events=events)
    cpu.stop()
    run.cpu_s, run.broker_cpu_s = cpu.process_s, cpu.broker_s
    del loop
    gc.collect()
    _check_complete(run, events)
    return run


def fastest(runs: list[LoopRun]) -> LoopRun:
    """The run with the most events per second."""
    return max(runs, key=lambda r: r.eps)
