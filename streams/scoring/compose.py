"""Wiring: build the processor and the source from settings, and run them.

This is the composition root. The CLI, the demo and the benchmark call these
functions; everything they build is handed its settings explicitly.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from connectors.kafka import Admin, Producer
from connectors.redis_store import PredictionStore
from connectors.schema_registry import topic_serde
from connectors.source import (
    EventFactory,
    LabelSink,
    ProduceReport,
    SourceOptions,
    rows_from_file,
)
from models.datasets import shuttle
from models.serving import ServingModel
from schemas.errors import ConfigError, InfrastructureError, ModelError
from schemas.settings import Settings
from streams.drift.monitor import DriftMonitor
from streams.ops.lag import LagRefresher
from streams.ops.metrics import Health, Metrics, serve
from streams.scoring.model_watcher import ModelWatcher, check_features, model_source
from streams.scoring.pipeline import BatchOutput, RawBatch
from streams.scoring.processor import Processor, client_id
from streams.scoring.shadow import ShadowScorer, StoreWriter

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> list[str]:
    return Admin(settings.kafka).ensure_topics(
        settings.topics.by_role().values(),
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )


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

    store = None
    if settings.store.enabled:
        from connectors.redis_store import PredictionStore, ping

        up = ping(settings.redis)
        metrics.dependency_up.labels(dependency="redis").set(1 if up else 0)
        if not up:
            health.problems["redis"] = f"unreachable at start: {settings.redis.url}"
            log.warning("Redis %s unreachable: predictions are not stored until it returns",
                        settings.redis.url)  # fmt: skip
        s = settings.store
        store = PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s)
        writer = StoreWriter(store, metrics, health, max_pending=s.max_pending_batches)
        processor.side_paths.append(writer)
        processor.closables.append(writer)

    mode = settings.shadow.mode
    current = {"champion": champion.version}
    if mode == "shadow":
        processor.make_shadow = lambda challenger: _shadow_scorer(
            settings, processor, challenger, store
        )
    if mode != "off":
        try:
            challenger = source.load("challenger")
            check_features(challenger, champion.feature_names)
        except (ModelError, InfrastructureError) as exc:
            metrics.model_load_failures.labels(role="challenger").inc()
            health.problems["challenger"] = f"not loaded: {exc}"
            log.warning("no challenger (%s): the champion serves alone", exc)
        else:
            current["challenger"] = challenger.version
            processor.attach_challenger(challenger)

    if settings.drift.enabled:
        processor.side_paths.insert(0, DriftPath(settings, processor))

    if settings.metrics.enabled:
        processor.closables.append(_lag_refresher(settings, metrics).start())

    watcher = ModelWatcher(
        source,
        stream_features=list(champion.feature_names),
        current=current,
        poll_interval_s=settings.registry.poll_interval_s,
        roles=("champion",) if mode == "off" else ("champion", "challenger"),
    )
    watcher.source_up = "mlflow" not in health.problems
    processor.watcher = watcher
    watcher.start()
    return processor


class DriftPath:
    """Drift watch on the validated matrix of every batch (synchronous: ~0.7 µs per event).

    Drift records are produced before the batch's checkpoint, so they share the
    champion path's at-least-once guarantee. A champion swap starts a fresh
    monitor against the new champion's reference profile.
    """

    def __init__(self, settings: Settings, processor: Processor) -> None:
        self.settings = settings
        self.processor = processor
        self.serde = topic_serde(settings, "drift")
        self.monitor: DriftMonitor | None = None
        self._emitted: Counter[tuple[str, str]] = Counter()

    def _monitor_for(self, model: ServingModel) -> DriftMonitor:
        m = self.monitor
        if m is None or (m.model_name, m.model_version) != (model.name, model.version):
            profile = model.meta.profile if model.meta.profile.features else None
            m = self.monitor = DriftMonitor(profile, model.name, model.version, self.settings.drift)
            self._emitted = Counter()
        return m

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None:
        if out.scores is None or not len(out.events):
            return
        monitor = self._monitor_for(out.served[0][1])
        offsets = np.fromiter((raw.offsets[i] for i in out.events.indices), dtype=np.int64)
        times = np.asarray(out.events.event_times, dtype=np.int64)
        records = monitor.update(out.matrix, out.scores.score, offsets, times)
        metrics = self.processor.metrics
        if records:
            values = self.serde.encode_many(records)
            keys = [str(r["target"]).encode() for r in records]
            self.processor.producer.produce_many(self.settings.topics.drift, values, keys)
            metrics.produced.labels(role="drift").inc(len(values))
            for (detector, severity), count in monitor.emitted.items():
                new = count - self._emitted[(detector, severity)]
                if new:
                    metrics.drift_events.labels(detector=detector, severity=severity).inc(new)
            self._emitted = Counter(monitor.emitted)
        for feature, value in monitor.latest_psi.items():
            metrics.drift_psi.labels(feature=feature).set(value)

    def report(self) -> dict[str, dict[str, Any]]:
        m = self.monitor
        if m is None:
            return {"drift": {"windows": 0}}
        worst = max(m.latest_psi.items(), key=lambda kv: kv[1], default=(None, 0.0))
        return {
            "drift": {
                "windows": m.windows_closed,
                "records": {f"{d}/{s}": n for (d, s), n in sorted(m.emitted.items())},
                "open_incidents": m.open_incidents,
                "max_psi_feature": worst[0],
                "max_psi": round(worst[1], 4),
            }
        }


def _lag_refresher(settings: Settings, metrics: Metrics) -> LagRefresher:
    """Lag of the processor's group on the input topic, looked up from outside the loop."""
    from connectors.lag import group_lag

    kafka, group, topic = settings.kafka, settings.processor.group_id, settings.topics.events

    def lookup() -> list[tuple[str, int, int]]:
        return [(p.topic, p.partition, p.lag) for p in group_lag(kafka, group, [topic], timeout=5)]

    return LagRefresher(lookup, metrics, interval_s=settings.metrics.lag_interval_s)


def _shadow_scorer(
    settings: Settings,
    processor: Processor,
    challenger: ServingModel,
    store: PredictionStore | None,
) -> ShadowScorer:
    producer, topic = processor.producer, settings.topics.shadow

    def emit(values: list[bytes], keys: list[bytes | None]) -> None:
        producer.produce_many(topic, values, keys)
        processor.metrics.produced.labels(role="shadow").inc(len(values))

    s = settings.shadow
    return ShadowScorer(
        challenger,
        processor.champion.feature_names,
        emit=emit,
        serde=topic_serde(settings, "shadow"),
        metrics=processor.metrics,
        store=store,
        sample_fraction=s.sample_fraction,
        max_pending=s.max_pending_batches,
        window=s.psi_window,
        tolerance=s.agreement_tolerance,
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
        server = serve(metrics, health, settings.metrics.host, settings.metrics.port)
        log.info("metrics on http://%s:%s/metrics", settings.metrics.host, settings.metrics.port)
    try:
        processor = build_processor(settings, metrics=metrics, health=health)
        summary = processor.run(exit_when_idle=exit_when_idle, max_events=max_events)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return summary.as_dict()


def event_factory(settings: Settings, options: SourceOptions, source: Path | None) -> EventFactory:
    labels = None
    if source is not None:
        names, rows = rows_from_file(source)
    else:
        data = shuttle()
        names, rows, labels = data.feature_names, data.X, data.y
    options.max_message_bytes = settings.processor.max_message_bytes
    return EventFactory(names, rows, topic_serde(settings, "events"), options, labels)


def run_source(
    settings: Settings,
    options: SourceOptions,
    *,
    source: Path | None = None,
    keep_ids: bool = False,
    labels_after_s: float | None = None,
    **producer_config: Any,
) -> ProduceReport:
    """Publish events per ``options`` to the events topic and wait for their acknowledgement."""
    from connectors.source import produce_events

    ensure_topics(settings)
    factory = event_factory(settings, options, source)
    producer = Producer(
        settings.kafka,
        client_id=client_id("source"),
        linger_ms=settings.processor.linger_ms,
        **producer_config,
    )
    labels = None
    if labels_after_s is not None:
        if factory.labels is None:
            raise ConfigError("labels are only known for the reference dataset replay")
        labels = LabelSink(settings.topics.labels, topic_serde(settings, "labels"), labels_after_s)
    return produce_events(
        producer, settings.topics.events, factory, keep_ids=keep_ids, labels=labels
    )
