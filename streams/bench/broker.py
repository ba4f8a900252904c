"""``streamscore bench-broker``: what the broker costs as a topic fills with small batches.

No streamscore loop runs. A paced producer (a helper process) sends ``rate`` records a
second to a fresh topic, each record carrying its send time; one consumer-group member in
this process reads them. Both are streamscore's own client classes, so they have the
processor's settings (an idempotent producer with ``acks=all``; the consumer's
``fetch.wait.max.ms`` is 20 unless told). Every ``window_s`` it reports one row:

hop
    the consumer's receipt of a record minus its send time (p50, p99; ms). Both are on this
    machine's clock, so this is the hop through the broker, the producer's linger included.
batches stored
    the record batches the producer has sent so far, from librdkafka's statistics
    (``batchcnt``): what the topic's partitions hold.
broker CPU
    the embedded broker's CPU time over the window, as a share of one core (none for an
    external broker, whose process this machine cannot see).

On the embedded broker every fetch lists every batch a partition has ever stored, so the
broker's CPU and the hop grow with ``batches stored`` and not with the rate: this command is
how the README's figures for it are measured. On Apache Kafka both stay flat.
"""

from __future__ import annotations

import struct
import time
import uuid
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from typing import Any, cast

import numpy as np

from schemas.settings import Settings
from streams.bench.common import BenchError
from streams.bench.latency import paced
from streams.bench.probes import CpuMeter, broker_info, broker_pid, machine_info
from streams.bench.processes import SPAWN, helper_result, spawn_helper
from streams.bench.stats import percentiles

#: How often the producer's librdkafka reports its statistics (the batches it sent).
STATS_MS = 200
#: Seconds without a record, once the producer has exited, before the run stops waiting.
SILENT_S = 10.0
#: Send time, as a little-endian double of Unix seconds: each record's whole value.
STAMP = struct.Struct("<d")


def _send(
    settings: Settings,
    topic: str,
    rate: float,
    seconds: float,
    linger_ms: int,
    go: MpEvent,
    batches: Synchronized[int],
    out: MpQueue[Any],
) -> None:
    """Child process: after ``go``, ``rate`` records a second for ``seconds``; then a report."""
    import json

    from connectors.kafka import Producer
    from streams.scoring.processor import client_id

    def counted(stats: str) -> None:
        for t in json.loads(stats).get("topics", {}).values():
            batches.value += int(t.get("batchcnt", {}).get("cnt", 0))

    producer = Producer(
        settings.kafka,
        client_id=client_id("bench-broker"),
        linger_ms=linger_ms,
        **cast(Any, {"statistics.interval.ms": STATS_MS, "stats_cb": counted}),
    )
    if not go.wait(120):
        out.put({"error": "the consumer never got its partitions"})
        return
    total = int(rate * seconds)
    sent, started = 0, time.monotonic()
    for first, sent, _behind in paced(total, rate, most=total):
        stamp = STAMP.pack(time.time())
        for n in range(first, sent):
            producer.produce(topic, stamp, str(n).encode())
        producer.poll(0)
    producer.flush()
    # The last batches are counted by the next statistics report.
    deadline = time.monotonic() + 3 * STATS_MS / 1000
    while time.monotonic() < deadline:
        producer.poll(0.05)
    producer.close()
    out.put({"sent": sent, "elapsed_s": round(time.monotonic() - started, 3)})


def _row(
    started: float, hops_ms: list[float], batches: int, meter: CpuMeter, span_s: float
) -> dict[str, Any]:
    cpu = meter.stop().broker_s
    return {
        "t_s": round(time.monotonic() - started, 1),
        "records": len(hops_ms),
        "batches_stored": batches,
        "broker_cpu_pct": None if cpu is None else round(100 * cpu / span_s, 1),
        "hop_ms": percentiles(np.asarray(hops_ms, dtype=np.float64)),
    }


def run_broker_bench(
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    linger_ms: int,
    fetch_wait_ms: int,
    partitions: int,
    window_s: float,
    command: str = "",
) -> dict[str, Any]:
    """Every window's row, while one producer and one consumer fill a fresh topic."""
    from connectors.kafka import Consumer
    from connectors.kafka_admin import Admin
    from streams.scoring.processor import client_id

    topic = f"bench.broker.{uuid.uuid4().hex[:8]}"
    admin = Admin(settings.kafka)
    admin.ensure_topics(
        [topic], partitions=partitions, replication_factor=settings.topics.replication_factor
    )
    consumer = Consumer(
        settings.kafka,
        group_id=f"bench-broker-{uuid.uuid4().hex[:8]}",
        client_id=client_id("bench-broker"),
        **cast(Any, {"fetch.wait.max.ms": fetch_wait_ms}),
    )
    go, out, batches = SPAWN.Event(), SPAWN.Queue(), SPAWN.Value("q", 0)
    consumer.subscribe([topic], on_assign=lambda _p: go.set())
    sender = spawn_helper(_send, settings, topic, rate, seconds, linger_ms, go, batches, out)
    pid = broker_pid(settings)
    expected = int(rate * seconds)
    rows: list[dict[str, Any]] = []
    received, hops = 0, cast(list[float], [])
    started = window_start = time.monotonic()
    meter = CpuMeter(pid)
    deadline = started + seconds + 120
    try:
        last_record = time.monotonic()
        while received + len(hops) < expected and time.monotonic() < deadline:
            messages = consumer.consume(1000, 0.001)
            for m in messages:
                hops.append((time.time() - STAMP.unpack(m.value() or b"")[0]) * 1000)
            if messages:
                last_record = time.monotonic()
            elif not sender.is_alive() and time.monotonic() - last_record > SILENT_S:
                break  # the producer is gone and nothing more comes: say what it said
            if not go.is_set():  # the clocks start when the producer does
                started = window_start = time.monotonic()
                meter = CpuMeter(pid)
                continue
            now = time.monotonic()
            if now - window_start >= window_s:
                received += len(hops)
                rows.append(_row(started, hops, batches.value, meter, now - window_start))
                hops, window_start, meter = [], now, CpuMeter(pid)
        received += len(hops)
        span = time.monotonic() - window_start
        if hops and (span >= window_s / 2 or not rows):  # a last sliver is not a window
            rows.append(_row(started, hops, batches.value, meter, span))
        report = helper_result(out, sender, 60, "the bench's producer")
    finally:
        consumer.close()
        if sender.is_alive():
            sender.kill()
        admin.delete_topics([topic])
    if received < report["sent"]:
        raise BenchError(f"the consumer read {received:,} of {report['sent']:,} records")
    return {
        "command": command,
        "machine": machine_info(),
        "broker": broker_info(settings),
        "rate": rate,
        "seconds": seconds,
        "linger_ms": linger_ms,
        "fetch_wait_ms": fetch_wait_ms,
        "partitions": partitions,
        "topic": topic,
        "sent": report["sent"],
        "received": received,
        "batches_stored": batches.value,
        "windows": rows,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def format_table(result: dict[str, Any]) -> str:
    """The Markdown table of :func:`run_broker_bench`, one row per window."""
    b, m = result["broker"], result["machine"]
    name = f"{b.get('name', b['kind'])} {b.get('version', '')}".strip()
    lines = [
        f"`{result['command']}` — {name}, {m['cores']} cores; {result['rate']:,.0f} records/s "
        f"for {result['seconds']:g} s to {result['partitions']} partition(s), producer "
        f"linger.ms {result['linger_ms']}, consumer fetch.wait.max.ms {result['fetch_wait_ms']}",
        "",
        "| t (s) | records | batches stored | broker CPU | hop p50 ms | hop p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["windows"]:
        hop = row["hop_ms"]
        lines.append(
            f"| {row['t_s']:g} | {row['records']:,} | {row['batches_stored']:,} | "
            f"{_pct(row['broker_cpu_pct'])} | {hop.get('p50', 0):.1f} | {hop.get('p99', 0):.1f} |"
        )
    lines.append(
        f"\n{result['received']:,} of {result['sent']:,} records read; "
        f"{result['batches_stored']:,} batches stored."
    )
    return "\n".join(lines)
