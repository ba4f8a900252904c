"""Wiring: build the processor and the source from settings, and run them.

This is the composition root. The CLI, the demo and the benchmark call these
functions; everything they build is handed its settings explicitly.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from connectors.kafka_admin import ensure_topics
from connectors.schema_registry import topic_serde
from models.serving import ServingModel
from schemas.errors import ConfigError, InfrastructureError, ModelError
from schemas.settings import Settings
from streams.ops.broker_probe import BrokerProbe
from streams.ops.lag import LagRefresher
from streams.ops.metrics import Health, Metrics, serve
from streams.scoring.drift_path import DriftPath, Emit
from streams.scoring.model_watcher import (
    ModelSource,
    ModelWatcher,
    check_features,
    model_source,
)
from streams.scoring.processor import Processor
from streams.scoring.shadow import ShadowScorer
from streams.scoring.side_path import WorkerProcess
from streams.scoring.side_sinks import SHADOW_LANE, STORE_LANE, build_side_sinks
from streams.scoring.store_writer import PredictionSink, StoreHandOver, StoreWriter

log = logging.getLogger(__name__)


def build_processor(
    settings: Settings, *, metrics: Metrics | None = None, health: Health | None = None
) -> Processor:
    """The processor with everything the settings ask for.

    The champion must load (else :class:`ConfigError` / ModelError: nothing to
    serve). Everything else degrades instead of failing: a challenger that
    cannot load, an unreachable Redis or MLflow are logged, shown in metrics
    and health, and the champion path runs without them.
    """
    metrics = metrics or Metrics()
    health = health or Health()
    source = model_source(settings)
    try:
        champion = source.load("champion")
    except ModelError as exc:
        raise ConfigError(
            f"no usable champion: {exc}. Run `streamscore train` (or `make demo`), "
            "or `streamscore models train` for the MLflow registry."
        ) from exc
    processor = Processor.from_settings(settings, champion, metrics=metrics, health=health)
    if settings.models.source == "registry":
        offline = getattr(source, "offline_reason", None)
        metrics.dependency_up.labels(dependency="mlflow").set(0 if offline else 1)
        if offline:
            health.problems["mlflow"] = f"unreachable at start, serving cached models: {offline}"

    side_process = _side_process(settings, metrics, health)
    if side_process is not None:
        processor.closables.append(side_process)
    writer: StoreWriter | StoreHandOver | None = None
    if settings.store.enabled:
        from connectors.redis_store import PredictionStore, ping

        up = ping(settings.redis)
        metrics.dependency_up.labels(dependency="redis").set(1 if up else 0)
        if not up:
            health.problems["redis"] = f"unreachable at start: {settings.redis.url}"
            log.warning("Redis %s unreachable: predictions are not stored until it returns",
                        settings.redis.url)  # fmt: skip
        s = settings.store
        if side_process is not None:
            lane = side_process.lane(STORE_LANE, max_pending=s.max_pending_batches)
            writer = StoreHandOver(lane, metrics, lambda: side_process.report)
        else:
            store = PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s)
            writer = StoreWriter(
                store,
                metrics,
                health,
                max_pending=s.max_pending_batches,
                backlog_max_bytes=s.backlog_max_bytes,
            )
        processor.side_paths.append(writer)

    mode = settings.shadow.mode
    current = {"champion": champion.version}
    refused: set[tuple[str, str]] = set()
    if mode == "shadow":
        processor.make_shadow = lambda challenger: _shadow_scorer(
            settings, processor, challenger, writer, side_process
        )
    if mode != "off":
        try:
            challenger = source.load("challenger")
            check_features(challenger, champion.feature_names)
        except (ModelError, InfrastructureError) as exc:
            metrics.model_load_failures.labels(role="challenger").inc()
            health.problems["challenger"] = f"not loaded: {exc}"
            log.warning("no challenger (%s): the champion serves alone", exc)
            version = _listed_version(source, "challenger")
            if isinstance(exc, ModelError) and version is not None:
                # Refused once, here: the watcher must not refuse (and audit) it again.
                refused.add(("challenger", version))
                processor.audit(
                    "model_refused",
                    champion,
                    {"role": "challenger", "refused_version": version, "reason": str(exc)[:500]},
                )
        else:
            current["challenger"] = challenger.version
            processor.attach_challenger(challenger)

    if settings.drift.enabled:
        drift = DriftPath(
            settings.drift,
            serde=topic_serde(settings, "drift"),
            emit=_emitter(processor, settings.topics.drift, "drift"),
            metrics=metrics,
        )
        drift.prepare(processor.champion)
        processor.side_paths.insert(0, drift)

    if settings.metrics.enabled:
        processor.closables.append(_lag_refresher(settings, metrics).start())
    probe = BrokerProbe.for_kafka(
        settings.kafka, metrics, health, interval_s=settings.metrics.broker_probe_interval_s
    )
    processor.closables.append(probe.start())

    watcher = ModelWatcher(
        source,
        stream_features=list(champion.feature_names),
        current=current,
        poll_interval_s=settings.registry.poll_interval_s,
        roles=("champion",) if mode == "off" else ("champion", "challenger"),
        refused=refused,
    )
    watcher.source_up = "mlflow" not in health.problems
    processor.watcher = watcher
    watcher.start()
    if side_process is not None and not side_process.wait_ready():
        # Counted from here on: each batch handed over is a drop, the champion goes on.
        log.error("side-path process not ready: %s", side_process.exit_error or "timed out")
    return processor


def _lag_refresher(settings: Settings, metrics: Metrics) -> LagRefresher:
    """Lag of the processor's group on the input topic, looked up from outside the loop."""
    from connectors.lag import group_lag

    kafka, group, topic = settings.kafka, settings.processor.group_id, settings.topics.events

    def lookup() -> list[tuple[str, int, int]]:
        return [(p.topic, p.partition, p.lag) for p in group_lag(kafka, group, [topic], timeout=5)]

    return LagRefresher(lookup, metrics, interval_s=settings.metrics.lag_interval_s)


def _listed_version(source: ModelSource, role: str) -> str | None:
    """The version ``source`` lists for ``role``, if it can say."""
    try:
        return source.versions().get(role)
    except InfrastructureError:
        return None


def _emitter(processor: Processor, topic: str, role: str) -> Emit:
    """Produce a side path's records through the processor's producer, counted by role."""
    producer, produced = processor.producer, processor.metrics.produced.labels(role=role)

    def emit(values: list[bytes], keys: list[bytes | None]) -> None:
        producer.produce_many(topic, values, keys)
        produced.inc(len(values))

    return emit


def _side_process(settings: Settings, metrics: Metrics, health: Health) -> WorkerProcess | None:
    """The side-path worker process, when a side path needs one (``processor.side_paths``)."""
    if settings.processor.side_paths != "process":
        return None
    if not (settings.store.enabled or settings.shadow.mode == "shadow"):
        return None
    if multiprocessing.current_process().daemon:  # multiprocessing forbids it children
        log.warning("a daemonic process cannot start the side-path process: side paths on threads")
        return None
    return WorkerProcess(
        "side-paths", build_side_sinks, (settings.model_dump(),), metrics=metrics, health=health
    )


def _shadow_scorer(
    settings: Settings,
    processor: Processor,
    challenger: ServingModel,
    writer: PredictionSink | None,
    side_process: WorkerProcess | None,
) -> ShadowScorer:
    s = settings.shadow
    lane = None
    if side_process is not None:
        # Records are built, produced and their store rows written in the side-path
        # process, where its own writer shares the backlog and gap count.
        lane = side_process.lane(SHADOW_LANE, max_pending=s.max_pending_batches)
        writer = None
    return ShadowScorer(
        challenger,
        processor.champion.feature_names,
        emit=_emitter(processor, settings.topics.shadow, "shadow"),
        serde=topic_serde(settings, "shadow"),
        metrics=processor.metrics,
        store=writer,  # challenger rows share the writer's backlog and gap count
        sample_fraction=s.sample_fraction,
        max_pending=s.max_pending_batches,
        window=s.psi_window,
        tolerance=s.agreement_tolerance,
        lane=lane,
    )


def run_processor(
    settings: Settings,
    *,
    exit_when_idle: float | None = None,
    max_events: int | None = None,
) -> dict[str, Any]:
    """Run the processor until stopped (signal, idle, max events); returns its summary."""
    ensure_topics(settings)
    metrics, health = Metrics(), Health()
    server = None
    if settings.metrics.enabled:
        m = settings.metrics
        try:
            server = serve(metrics, health, m.host, m.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {m.host}:{m.port} ({exc.strerror}); set metrics.port "
                "(STREAMSCORE_METRICS__PORT or --metrics-port) to a free port, or 0 to turn it off"
            ) from exc
        log.info("metrics on http://%s:%s/metrics", settings.metrics.host, settings.metrics.port)
    try:
        processor = build_processor(settings, metrics=metrics, health=health)
        summary = processor.run(exit_when_idle=exit_when_idle, max_events=max_events)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return summary.as_dict()
