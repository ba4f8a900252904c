"""Prometheus metrics and the health endpoints of a streamscore process.

Names follow the Prometheus conventions: ``streamscore_`` prefix, base units
(seconds, bytes), ``_total`` on counters. Label values are the stable stage,
topic-role and reason names used in logs and DLQ headers.

Latency histograms are fed a whole batch at a time (:class:`BatchHistogram`):
one ``numpy`` bucket count per batch instead of one Python call per event.

``/metrics``, ``/healthz`` and ``/readyz`` are served by one small HTTP server
on a daemon thread.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class BatchHistogram(Collector):
    """A histogram observed one numpy array at a time, exposed as a Prometheus histogram."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._edges = np.asarray(buckets, dtype=np.float64)
        self._edge_list = self._edges.tolist()  # for one value: bisect, not a numpy call
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last = +Inf overflow
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self._edges, values, side="left")
        counts = np.bincount(idx, minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def observe_repeated(self, value: float, count: int) -> None:
        """``value`` observed ``count`` times (every record of a batch took as long)."""
        if count <= 0:
            return
        # numpy's searchsorted(side="left"), NaN past the last edge as there
        i = bisect.bisect_left(self._edge_list, value) if value == value else len(self._edge_list)
        with self._lock:
            self._counts[i] += count
            self._sum += value * count

    def snapshot(self) -> tuple[np.ndarray, float]:
        with self._lock:
            return self._counts.copy(), self._sum

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total = self.snapshot()
        cumulative = np.cumsum(counts)
        buckets = [
            (repr(float(e)), float(c)) for e, c in zip(self._edges, cumulative, strict=False)
        ]
        buckets.append(("+Inf", float(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


class Metrics:
    """Every metric a streamscore process exposes, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "streamscore_events_consumed_total", "Records consumed, by topic role.", ["role"],
            registry=r,
        )  # fmt: skip
        self.produced = Counter(
            "streamscore_records_produced_total", "Records produced, by topic role.", ["role"],
            registry=r,
        )  # fmt: skip
        self.outcomes = Counter(
            "streamscore_events_total", "Input events by outcome (scored, dead_lettered).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "streamscore_dead_letters_total", "Events sent to the DLQ, by stage and reason.",
            ["stage", "reason"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "streamscore_batch_size_events", "Events per micro-batch.", buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.stage_seconds = Counter(
            "streamscore_stage_seconds_total", "Time spent in each stage of the loop.", ["stage"],
            registry=r,
        )  # fmt: skip
        self.end_to_end_latency = BatchHistogram(
            "streamscore_end_to_end_latency_seconds",
            "Event time to prediction produced.", LATENCY_BUCKETS, r,
        )  # fmt: skip
        self.processing_latency = BatchHistogram(
            "streamscore_processing_latency_seconds",
            "Time added by the processor: batch consumed to outputs produced.", LATENCY_BUCKETS, r,
        )  # fmt: skip
        self.model_info = Info(
            "streamscore_model", "The model serving each role.", ["role"], registry=r
        )
        self.model_load_failures = Counter(
            "streamscore_model_load_failures_total", "Model versions refused at load.", ["role"],
            registry=r,
        )  # fmt: skip
        self.model_swaps = Counter(
            "streamscore_model_swaps_total", "Hot swaps of a model role.", ["role"], registry=r
        )
        self.shadow_agreement = Gauge(
            "streamscore_shadow_agreement_ratio",
            "Share of shadow-scored events where challenger and champion agree (last window).",
            registry=r,
        )  # fmt: skip
        self.shadow_events = Counter(
            "streamscore_shadow_events_total", "Events shadow-scored by the challenger.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.shadow_dropped_batches = Counter(
            "streamscore_shadow_dropped_batches_total",
            "Batches the challenger skipped because it fell behind.", registry=r,
        )  # fmt: skip
        self.shadow_errors = Counter(
            "streamscore_shadow_errors_total", "Challenger scoring failures.", registry=r
        )
        self.challenger_fallback_events = Counter(
            "streamscore_challenger_fallback_events_total",
            "A/B rows the challenger failed on, served by the champion instead.",
            registry=r,
        )
        self.shadow_score_psi = Gauge(
            "streamscore_shadow_score_psi",
            "PSI between champion and challenger score distributions (last window).", registry=r,
        )  # fmt: skip
        self.drift_psi = Gauge(
            "streamscore_drift_psi", "Latest PSI of each feature vs the reference profile.",
            ["feature"], registry=r,
        )  # fmt: skip
        self.drift_events = Counter(
            "streamscore_drift_events_total", "Drift events emitted, by detector and severity.",
            ["detector", "severity"], registry=r,
        )  # fmt: skip
        self.drift_test_ratio = Gauge(
            "streamscore_drift_test_ratio",
            "Latest two-sample statistic over its calibrated threshold (>= 1 alarms), by "
            "feature (or score) and test (ks, chi2).",
            ["feature", "test"], registry=r,
        )  # fmt: skip
        self.dependency_up = Gauge(
            "streamscore_dependency_up", "1 when a dependency answers (redis, mlflow, kafka).",
            ["dependency"], registry=r,
        )  # fmt: skip
        self.store_gap = Counter(
            "streamscore_prediction_store_gap_events_total",
            "Predictions not written to the prediction store (Redis unavailable).", registry=r,
        )  # fmt: skip
        self.store_backlog_events = Gauge(
            "streamscore_prediction_store_backlog_events",
            "Predictions waiting in memory for Redis to answer again.", registry=r,
        )  # fmt: skip
        self.store_backlog_bytes = Gauge(
            "streamscore_prediction_store_backlog_bytes",
            "Estimated memory held by the waiting predictions (capped by store.backlog_max_bytes).",
            registry=r,
        )  # fmt: skip
        self.rebalances = Counter(
            "streamscore_rebalances_total", "Consumer-group rebalances, by kind.", ["kind"],
            registry=r,
        )  # fmt: skip
        self.assigned_partitions = Gauge(
            "streamscore_assigned_partitions", "Partitions assigned to this member.", registry=r
        )
        self.consumer_lag = Gauge(
            "streamscore_consumer_lag_records",
            "Log end offset minus committed offset, per topic-partition.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.commits = Counter(
            "streamscore_commits_total",
            "Offset commits the group took (checkpoints).",
            registry=r,
        )
        self.last_progress = Gauge(
            "streamscore_last_progress_timestamp_seconds",
            "Unix time the loop last completed an iteration.", registry=r,
        )  # fmt: skip
        # Latency-aware batching (``processor.latency_target_ms``).
        self.latency_target_met = Gauge(
            "streamscore_latency_target_met",
            "1 while at most 1 % of the recent records took longer than processor."
            "latency_target_ms from consumed to produced.", registry=r,
        )  # fmt: skip
        self.latency_over_target = Counter(
            "streamscore_latency_over_target_events_total",
            "Records whose batch took longer than the latency target (consumed to produced).",
            registry=r,
        )  # fmt: skip
        self.batch_limit = Gauge(
            "streamscore_batch_limit_events",
            "Records the loop asks for next (latency cap, or larger under a backlog).",
            registry=r,
        )  # fmt: skip
        # The HTTP door (``streamscore serve``); labelled, so a processor shows none of them.
        self.http_requests = Counter(
            "streamscore_http_requests_total", "HTTP requests answered, by route and status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "streamscore_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.http_batch_requests = Histogram(
            "streamscore_http_batch_requests",
            "Requests coalesced into one model call by the dynamic batcher, by door.", ["door"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r,
        )  # fmt: skip
        self.publish_gap = Counter(
            "streamscore_http_publish_gap_records_total",
            "Records of the HTTP door Kafka did not confirm (down, behind or refused), by role.",
            ["role"], registry=r,
        )  # fmt: skip

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def exposition_with(self, **labels: str) -> bytes:
        """The exposition with ``labels`` added to every sample (``channel="http"``)."""
        return generate_latest(_Labelled(self.registry, labels))


class _Labelled(Collector):
    """Another collector's families, every sample with some constant labels added."""

    def __init__(self, inner: CollectorRegistry, labels: dict[str, str]) -> None:
        self._inner = inner
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        for family in self._inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                s._replace(labels={**s.labels, **self._labels}) for s in family.samples
            ]
            yield labelled


@dataclass
class Health:
    """What /healthz and /readyz report. The loop updates it; the HTTP thread reads it."""

    stall_after_s: float = 30.0
    last_progress: float = field(default_factory=time.monotonic)
    partitions_assigned: int = 0
    champion_loaded: bool = False
    broker_reachable: bool = False
    problems: dict[str, str] = field(default_factory=dict)

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def live(self) -> tuple[bool, dict[str, Any]]:
        idle = time.monotonic() - self.last_progress
        ok = idle < self.stall_after_s
        body: dict[str, Any] = {"status": "ok" if ok else "stalled", "loop_idle_seconds": idle}
        if not ok:
            body["reason"] = f"the loop made no progress for {idle:.0f}s"
        return ok, body

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "partitions_assigned": self.partitions_assigned > 0,
            "champion_loaded": self.champion_loaded,
            "broker_reachable": self.broker_reachable,
        }
        ok = all(checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "checks": checks}
        failing = [name for name, passed in checks.items() if not passed]
        if failing:
            body["reason"] = "failing: " + ", ".join(failing)
        if self.problems:
            body["problems"] = dict(self.problems)
        return ok, body


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    health: Health

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            self._send(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
            return
        if self.path.startswith("/healthz"):
            ok, body = self.health.live()
        elif self.path.startswith("/readyz"):
            ok, body = self.health.ready()
        else:
            self._send(404, b'{"error": "not found"}', "application/json")
            return
        self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def serve(metrics: Metrics, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start /metrics, /healthz and /readyz on a daemon thread; returns the server."""
    handler = type("Handler", (_Handler,), {"metrics": metrics, "health": health})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server
