"""The memory soak: the pipeline in a process of its own over many events fed as fast as
possible, its resident memory sampled from ``/proc/self/status``.

memory growth
    resident set size (VmRSS) of the soak processor, its side-path process included (it
    holds the prediction store's backlog and the shadow's producer), at the end - at the end
    of warm-up (the first 2 % of the soak's events), over the latter; also the least-squares
    slope of RSS over events after warm-up.
"""

from __future__ import annotations

import threading
import time
from multiprocessing.queues import Queue as MpQueue
from typing import Any

import numpy as np

from schemas.settings import Settings
from streams.bench.common import IDLE_LIMIT_S, BenchError, Progress
from streams.bench.feed import Topics, event_source, send_events
from streams.bench.loops import side_process_pid
from streams.bench.probes import peak_rss_bytes, process_rss_bytes, rss_bytes
from streams.bench.processes import SPAWN, helper_result, spawn_helper
from streams.bench.stats import slope_per_million

#: Share of the soak's events after which its "start" memory is taken.
SOAK_WARMUP = 0.02


def _soak_processor(settings: Settings, events: int, interval_s: float, out: MpQueue[Any]) -> None:
    """Child process: the pipeline over ``events`` events, its RSS sampled every interval."""
    from streams.scoring.compose import build_processor

    before = rss_bytes()
    processor = build_processor(settings)
    side = side_process_pid(processor)

    def rss() -> int:  # the processor's memory: its own and its side-path process's
        return rss_bytes() + (process_rss_bytes(side) if side is not None else 0)

    built = rss()
    samples: list[tuple[float, int, int]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not done.wait(interval_s):
            samples.append((time.monotonic() - t0, processor.summary.events_in, rss()))

    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    summary = processor.run(exit_when_idle=IDLE_LIMIT_S * 2, max_events=events)
    done.set()
    sampler.join()
    samples.append((time.monotonic() - t0, summary.events_in, rss()))
    out.put(
        {
            "events_in": summary.events_in,
            "exit_reason": summary.exit_reason,
            "throughput_eps": round(summary.throughput, 1),
            "rss_before_build": before,
            "rss_after_build": built,
            "rss_peak": max(peak_rss_bytes(), max((r for _, _, r in samples), default=0)),
            "samples": samples,
        }
    )


def soak_run(topics: Topics, events: int, run_id: str, progress: Progress) -> dict[str, Any]:
    """The pipeline in a process of its own over ``events`` events fed as fast as possible."""
    settings = topics.phase("soak")
    out: MpQueue[Any] = SPAWN.Queue()
    interval = 1.0 if events >= 200_000 else 0.2
    child = spawn_helper(_soak_processor, settings, events, interval, out, daemon=False)
    try:
        factory = event_source(settings, events, f"{run_id}-soak")
        step = max(events // 10, 1)
        reported: set[int] = set()

        def report(n: int) -> None:
            if (n % step == 0 or n == events) and n not in reported:
                reported.add(n)
                progress(f"  soak: {n:,} of {events:,} events sent")

        send_events(settings, factory, "bench-soak-source", progress=report)
        data = helper_result(out, child, events / 500 + 600, "soak processor")
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
    slope = slope_per_million(warm[:, 1], warm[:, 2])
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
