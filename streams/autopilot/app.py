"""The autopilot from the settings: :func:`build_controller` wires it, :func:`run_autopilot`
runs it (``streamscore autopilot run``) until a signal, a stop event or a time limit.

The composition root of the package: the registry (MLflow), the topic tails and
sinks (Kafka), the processors' /metrics (the error and drop guards), Prefect (the
retraining flow, imported only when a run starts) and the metrics endpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from prometheus_client import start_http_server

from connectors.kafka_admin import ensure_topics
from connectors.schema_registry import topic_serde
from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.autopilot.audit import audit_sink, evaluation_sink
from streams.autopilot.controller import Controller
from streams.autopilot.feeds import CountsSource, Feeds, ProcessorMetrics, TopicTail
from streams.autopilot.metrics import AutopilotMetrics
from streams.autopilot.runner import Retrainer

log = logging.getLogger(__name__)


def feeds(settings: Settings) -> Feeds:
    """The tails the settings need: always verdicts and drift (from the beginning), and
    predictions / shadow / labels (from the end) for CBPE and the A/B split."""
    kafka, topics = settings.kafka, settings.topics

    def tail(role: str, from_beginning: bool) -> TopicTail:
        return TopicTail(
            kafka, getattr(topics, role), topic_serde(settings, role), from_beginning=from_beginning
        )

    cbpe = settings.autopilot.cbpe.enabled
    ab = settings.shadow.mode == "ab"
    return Feeds(
        evaluation=tail("evaluation", True),
        drift=tail("drift", True),
        predictions=tail("predictions", False) if cbpe or ab else None,
        shadow=tail("shadow", False) if cbpe and settings.shadow.mode == "shadow" else None,
        labels=tail("labels", False) if cbpe else None,
    )


def counts_source(settings: Settings) -> CountsSource | None:
    """The processors' /metrics for the error and drop guards (None: not checked)."""
    urls = settings.autopilot.processor_metrics_urls
    if urls is None:
        m = settings.metrics
        urls = [f"http://{m.host}:{m.port}/metrics"] if m.enabled else []
    return ProcessorMetrics(urls) if urls else None


def build_controller(
    settings: Settings,
    *,
    metrics: AutopilotMetrics | None = None,
    counts: CountsSource | str | None = "settings",
) -> Controller:
    """The controller of ``registry.model_name`` with everything from the settings;
    ``counts`` replaces the processors' /metrics (a test passes a processor's registry)."""
    from connectors.model_registry import ModelRegistry
    from streams.autopilot.retrain import run_retrain

    ensure_topics(settings)
    r = settings.registry
    registry = ModelRegistry.open(
        settings.home,
        tracking_uri=r.tracking_uri,
        registry_uri=r.registry_uri,
        experiment=r.experiment,
        cache_dir=r.cache_dir,
        probe_timeout_s=r.probe_timeout_s,
    )
    return Controller(
        settings,
        registry=registry,
        feeds=feeds(settings),
        audit=audit_sink(settings),
        evaluations=evaluation_sink(settings),
        metrics=metrics,
        counts=counts_source(settings) if isinstance(counts, str) else counts,
        retrainer=Retrainer(run_retrain),
    )


def run_autopilot(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    run_for_s: float | None = None,
    controller: Controller | None = None,
) -> dict[str, Any]:
    """Tick every ``autopilot.interval_s`` until SIGTERM / SIGINT (main thread), ``stop`` is
    set, or ``run_for_s`` passed; then wait for a retraining run still going. Returns the
    controller's :meth:`~Controller.status`."""
    metrics = controller.metrics if controller is not None else AutopilotMetrics()
    a = settings.autopilot
    port = settings.metrics.port + 2 if a.metrics_port is None else a.metrics_port
    server = None
    if settings.metrics.enabled and port:
        try:
            server, _ = start_http_server(port, settings.metrics.host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the autopilot's metrics on {settings.metrics.host}:{port} "
                f"({exc.strerror}); set autopilot.metrics_port to a free port, or 0 to turn it off"
            ) from exc
    controller = controller or build_controller(settings, metrics=metrics)
    stop = stop or threading.Event()
    handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("autopilot stopping on %s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, on_signal)
    deadline = None if run_for_s is None else time.monotonic() + run_for_s
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            controller.tick()
            stop.wait(max(0.0, a.interval_s - (time.monotonic() - started)))
        if controller.retrainer is not None and controller.retrainer.running:
            log.info("waiting for the retraining run to finish")
            controller.retrainer.wait(timeout=300)
            controller.tick()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        controller.feeds.close()
        if server is not None:
            server.shutdown()
    return controller.status()
