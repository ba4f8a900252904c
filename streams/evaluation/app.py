"""The evaluator's Faust app and worker: the app, its agent and timers, and one run of it.

:func:`build_evaluator` makes the Faust app and the :class:`Evaluator` behind it
(the agent hands each label batch to :meth:`Evaluator.handle` and acks it once
handled, step 4 of the commit protocol in :mod:`streams.evaluation.evaluator`);
:func:`run_evaluator` runs it in this process until a signal, or until idle, and
raises when the worker crashed. ``streamscore evaluate`` calls it.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import start_http_server

from connectors.kafka_admin import Admin
from connectors.redis_store import PredictionStore
from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import KafkaSettings, Settings
from streams.evaluation.evaluator import Evaluator
from streams.evaluation.metrics import EvaluatorMetrics
from streams.evaluation.options import EvaluatorOptions


def broker_credentials(kafka: KafkaSettings) -> Any:
    """Faust credentials for the settings' security protocol (None for PLAINTEXT)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                kafka.ssl_certificate_location,
                kafka.ssl_key_location,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if not (kafka.sasl_username and kafka.sasl_password):
        raise ConfigError(f"{protocol} needs kafka.sasl_username and kafka.sasl_password")
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=context,
    )


@dataclass
class EvaluatorApp:
    """The Faust app and the evaluator its agent and timers call."""

    app: Any
    evaluator: Evaluator


def prediction_store(settings: Settings) -> PredictionStore:
    """The store the processor writes, read with the same TTL and time buckets."""
    s = settings.store
    return PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s)


def build_evaluator(
    settings: Settings,
    *,
    store: PredictionStore | None = None,
    options: EvaluatorOptions | None = None,
    label_partitions: int | None = None,
    exit_when_idle: float | None = None,
    metrics: EvaluatorMetrics | None = None,
) -> EvaluatorApp:
    """The Faust app and the evaluator behind it."""
    options = options or EvaluatorOptions()
    kafka = settings.kafka
    datadir = settings.home / "evaluator"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        options.app_id,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(kafka),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(kafka.session_timeout_ms / 6000, 0.5),
        topic_partitions=label_partitions or settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    evaluator = Evaluator(
        app,
        settings,
        options,
        store if store is not None else prediction_store(settings),
        metrics or EvaluatorMetrics(),
    )
    labels_topic = app.topic(
        settings.topics.labels,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(labels_topic, name="evaluate-labels")
    async def evaluate_labels(stream: Any) -> None:
        # noack_take, not take_events: take_events acks a batch in a ``finally``,
        # so a batch interrupted by an error, a rebalance or SIGTERM would be
        # acked (and committed) without having reached the tables.
        async for events in stream.noack_take(options.max_batch, within=options.max_wait_s):
            try:
                await evaluator.handle(events)
            except Exception as exc:
                evaluator.fail(exc)
                raise
            for event in events:
                await stream.ack(event)

    @app.timer(options.emit_interval_s, name="emit-evaluations")
    async def emit_evaluations() -> None:
        await evaluator.emit()

    if exit_when_idle is not None:

        @app.timer(min(0.5, exit_when_idle / 4), name="exit-when-idle")
        async def exit_when_idle_check() -> None:
            await evaluator.check_idle(exit_when_idle)

    return EvaluatorApp(app, evaluator)


def _label_partitions(settings: Settings) -> int:
    """Partitions of the labels topic (created, with the evaluation topic, when missing)."""
    admin = Admin(settings.kafka)
    admin.ensure_topics(
        [settings.topics.labels, settings.topics.evaluation],
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )
    return admin.topics()[settings.topics.labels]


def run_evaluator(
    settings: Settings,
    *,
    exit_when_idle: float | None = None,
    options: EvaluatorOptions | None = None,
    store: PredictionStore | None = None,
) -> dict[str, Any]:
    """Run the evaluator in this process until SIGTERM / SIGINT, or until idle.

    With ``exit_when_idle`` it stops once no label arrived for that many
    seconds after the tables were restored, closing every window first (the
    end of a bounded input). Returns :meth:`Evaluator.summary`; raises
    :class:`InfrastructureError` when the worker crashed.
    """
    options = options or EvaluatorOptions()
    metrics = EvaluatorMetrics()
    built = build_evaluator(
        settings,
        store=store,
        options=options,
        label_partitions=_label_partitions(settings),
        exit_when_idle=exit_when_idle,
        metrics=metrics,
    )
    if settings.metrics.enabled:
        port = options.metrics_port or settings.metrics.port + 1
        start_http_server(port, settings.metrics.host, registry=metrics.registry)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(
        built.app,
        loop=loop,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    # Called from the idle timer, on the worker's loop: stop like SIGTERM does.
    built.evaluator.stop_worker = lambda: asyncio.ensure_future(worker.stop())
    code: int | str | None = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
    failure = built.evaluator.failure
    if failure is not None:
        if isinstance(failure, InfrastructureError):
            raise failure
        raise InfrastructureError(f"the evaluator stopped on an error: {failure!r}") from failure
    if code not in (0, None):
        raise InfrastructureError(f"the evaluator stopped on an error: {worker.crash_reason!r}")
    return built.evaluator.summary()
