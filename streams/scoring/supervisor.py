"""``streamscore run --workers N``: N consumer-group members as processes, one supervisor.

One scoring loop uses one core for its Python work; a machine with more cores runs more
members of the same consumer group, each a process with its own clients, side-path
process and prediction-store connection (the group spreads the partitions over them).
The supervisor

1. starts the N workers (``spawn``), each a :func:`~streams.scoring.compose.build_processor`
   processor serving its own ``/metrics`` on an ephemeral local port, told to the
   supervisor when it is up;
2. serves the one endpoint on ``metrics.host:metrics.port``: ``/metrics`` is every worker's
   exposition, each sample labelled ``worker="<k>"`` (sum them for the process-wide
   figure), plus ``streamscore_workers`` / ``streamscore_workers_alive``; ``/healthz`` and
   ``/readyz`` are 200 only when every worker's is, with each worker's answer in the body;
3. on SIGTERM / SIGINT tells every worker to stop (SIGTERM): each finishes its batch,
   drains its side paths, commits and exits; the supervisor waits for all of them;
4. returns the summed run summary with each worker's own under ``per_worker``. A worker
   that exits with an error makes the others stop too, and the run fail.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import Settings
from streams.scoring.side_path import main_module_hidden

log = logging.getLogger(__name__)

#: How long a scrape of one worker may take before it is reported as down.
SCRAPE_TIMEOUT_S = 2.0
#: Summary fields that add up over workers.
SUMMED = ("events_in", "predictions", "dead_letters", "batches", "commits", "challenger_fallbacks")


def worker_count(value: str | int | None) -> int:
    """``--workers``: a positive number, or ``auto`` for the cores this process may use."""
    if value is None:
        return 1
    if isinstance(value, int) or value.strip().isdigit():
        n = int(value)
        if n < 1:
            raise ConfigError(f"--workers {value}: give a number of at least 1, or auto")
        return n
    if value.strip().lower() == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    raise ConfigError(f"--workers {value!r}: give a number of at least 1, or auto")


def _worker_main(
    settings_data: dict[str, Any],
    index: int,
    exit_when_idle: float | None,
    max_events: int | None,
    reports: Any,
) -> None:
    """One worker: a processor whose metrics are on an ephemeral port, told to ``reports``."""
    from streams.ops.metrics import Health, Metrics, serve
    from streams.scoring.compose import build_processor

    settings = Settings(**settings_data)
    metrics, health = Metrics(), Health()
    server = None
    if settings.metrics.enabled:
        server = serve(metrics, health, "127.0.0.1", 0)
    try:
        processor = build_processor(settings, metrics=metrics, health=health)
        reports.put(("up", index, server.server_address[1] if server else None))
        summary = processor.run(exit_when_idle=exit_when_idle, max_events=max_events)
        reports.put(("summary", index, summary.as_dict()))
    except BaseException as exc:
        reports.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


class _Workers(Collector):
    """Every worker's exposition, each sample labelled with its worker, one family per name."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for index, text in self._supervisor.scrape("/metrics"):
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                merged.samples += [
                    s._replace(labels={**s.labels, "worker": str(index)}) for s in family.samples
                ]
        processes = self._supervisor.processes
        alive = sum(1 for p in processes if p.is_alive())
        for name, doc, value in (
            ("streamscore_workers", "Workers the supervisor runs.", self._supervisor.workers),
            ("streamscore_workers_alive", "Workers whose process is alive.", alive),
        ):
            gauge = Metric(name, doc, "gauge")
            gauge.add_sample(name, {}, float(value))
            yield gauge
        yield from families.values()


class Supervisor:
    """Runs ``workers`` processors of one consumer group; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        exit_when_idle: float | None = None,
        max_events: int | None = None,
    ) -> None:
        import multiprocessing

        self.settings = settings
        self.workers = workers
        self.exit_when_idle = exit_when_idle
        self.max_events = max_events
        self._context = multiprocessing.get_context("spawn")
        self._reports = self._context.Queue()
        self.processes: list[SpawnProcess] = []
        self.ports: dict[int, int | None] = {}
        self.summaries: dict[int, dict[str, Any]] = {}
        self.failures: dict[int, str] = {}
        self._stopping: str | None = None

    # -- the one endpoint --------------------------------------------------------------------

    def scrape(self, path: str) -> list[tuple[int, str | None]]:
        """``path`` of every worker that is up: (worker, body), body None when it did not answer."""
        result: list[tuple[int, str | None]] = []
        for index in range(self.workers):
            port = self.ports.get(index)
            if port is None:
                result.append((index, None))
                continue
            try:
                url = f"http://127.0.0.1:{port}{path}"
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                    result.append((index, response.read().decode()))
            except urllib.error.HTTPError as exc:  # 503: a body that says why
                result.append((index, exc.read().decode()))
            except OSError:
                result.append((index, None))
        return result

    def health(self, path: str) -> tuple[bool, dict[str, Any]]:
        """``/healthz`` or ``/readyz`` of the whole: ok only when every worker says ok."""
        bodies: dict[str, Any] = {}
        ok = True
        for index, text in self.scrape(path):
            body = json.loads(text) if text else {"status": "down"}
            bodies[str(index)] = body
            ok = ok and body.get("status") in ("ok", "ready")
        return ok, {"status": ("ok" if path == "/healthz" else "ready") if ok else "not_ok",
                    "workers": bodies}  # fmt: skip

    def _serve(self) -> ThreadingHTTPServer | None:
        m = self.settings.metrics
        if not m.enabled:
            return None
        supervisor = self
        exposition = _Workers(self)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(exposition), CONTENT_TYPE_LATEST)
                    return
                if self.path.startswith(("/healthz", "/readyz")):
                    ok, body = supervisor.health(self.path.split("?")[0])
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                    return
                self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        try:
            server = ThreadingHTTPServer((m.host, m.port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {m.host}:{m.port} ({exc.strerror}); set metrics.port "
                "(STREAMSCORE_METRICS__PORT or --metrics-port) to a free port, or 0 to turn it off"
            ) from exc
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="supervisor-http", daemon=True).start()
        return server

    # -- running -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str = "stopped") -> None:
        """Tell every worker to finish its batch, drain, commit and exit."""
        if self._stopping is None:
            self._stopping = reason
            log.info("stopping %d workers (%s)", self.workers, reason)
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def run(self) -> dict[str, Any]:
        from connectors.kafka_admin import ensure_topics

        ensure_topics(self.settings)
        server = self._serve()
        handlers = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
        data = self.settings.model_dump()
        try:
            for index in range(self.workers):
                process = self._context.Process(
                    target=_worker_main,
                    args=(data, index, self.exit_when_idle, self.max_events, self._reports),
                    name=f"streamscore-worker-{index}",
                )
                with main_module_hidden():
                    process.start()
                self.processes.append(process)
            self._wait()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if server is not None:
                server.shutdown()
                server.server_close()
        return self.summary()

    def _wait(self) -> None:
        """Take the workers' reports until every one has exited."""
        import queue

        while any(p.is_alive() for p in self.processes) or not self._reports.empty():
            try:
                kind, index, payload = self._reports.get(timeout=0.2)
            except queue.Empty:
                self._check_exits()
                continue
            if kind == "up":
                self.ports[index] = payload
            elif kind == "summary":
                self.summaries[index] = payload
            elif kind == "failed":
                self.failures[index] = payload
                self.stop(f"worker {index} failed")
        for process in self.processes:
            process.join()
        self._check_exits()

    def _check_exits(self) -> None:
        for index, process in enumerate(self.processes):
            code = process.exitcode
            if code not in (None, 0) and index not in self.failures:
                self.failures[index] = f"exited with code {code}"
                self.stop(f"worker {index} exited with code {code}")

    def summary(self) -> dict[str, Any]:
        """The workers' summaries added up; each one under ``per_worker``."""
        if self.failures:
            detail = "; ".join(f"worker {i}: {why}" for i, why in sorted(self.failures.items()))
            raise InfrastructureError(f"{len(self.failures)} of {self.workers} workers failed: "
                                      f"{detail}")  # fmt: skip
        per_worker = [self.summaries.get(i, {}) for i in range(self.workers)]
        total: dict[str, Any] = {"workers": self.workers}
        for key in SUMMED:
            total[key] = sum(int(s.get(key, 0)) for s in per_worker)
        reasons: Counter[str] = Counter()
        for s in per_worker:
            reasons.update(s.get("dead_letters_by_reason", {}))
        total["dead_letters_by_reason"] = dict(reasons)
        total["throughput_eps"] = round(sum(s.get("throughput_eps", 0.0) for s in per_worker), 1)
        total["latency_target_met"] = all(
            s.get("latency_target", {}).get("met", True) for s in per_worker
        )
        total["exit_reason"] = self._stopping or "every worker finished"
        total["per_worker"] = per_worker
        return total


def run_workers(
    settings: Settings,
    workers: int,
    *,
    exit_when_idle: float | None = None,
    max_events: int | None = None,
) -> dict[str, Any]:
    """``streamscore run --workers N`` (N > 1): the supervisor's summed summary."""
    started = time.monotonic()
    summary = Supervisor(
        settings, workers, exit_when_idle=exit_when_idle, max_events=max_events
    ).run()
    summary["elapsed_s"] = round(time.monotonic() - started, 3)
    return summary
