"""Wiring: build the processor and the source from settings, and run them.

This is the composition root. The CLI, the demo and the benchmark call these
functions; everything they build is handed its settings explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from connectors.kafka import Admin, Producer
from connectors.schema_registry import topic_serde
from connectors.source import EventFactory, ProduceReport, SourceOptions, rows_from_file
from models.bundle import bundle_exists
from models.datasets import shuttle
from models.serving import ServingModel
from streams.errors import ConfigError
from streams.metrics import Health, Metrics, serve
from streams.processor import Processor, client_id
from streams.settings import Settings

log = logging.getLogger(__name__)


def load_champion(settings: Settings) -> ServingModel:
    path = settings.models.champion_path
    if not bundle_exists(path):
        raise ConfigError(
            f"no champion model at {path}: run `streamscore train` (or `make demo`) first, "
            "or point models.dir at your bundles"
        )
    p = settings.processor
    return ServingModel.from_bundle(
        path, intra_op_threads=p.ort_intra_op_threads, inter_op_threads=p.ort_inter_op_threads
    )


def ensure_topics(settings: Settings) -> list[str]:
    return Admin(settings.kafka).ensure_topics(
        settings.topics.by_role().values(),
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )


def build_processor(
    settings: Settings, *, metrics: Metrics | None = None, health: Health | None = None
) -> Processor:
    champion = load_champion(settings)
    return Processor.from_settings(settings, champion, metrics=metrics, health=health)


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
    if source is not None:
        names, rows = rows_from_file(source)
    else:
        data = shuttle()
        names, rows = data.feature_names, data.X
    options.max_message_bytes = settings.processor.max_message_bytes
    return EventFactory(names, rows, topic_serde(settings, "events"), options)


def run_source(
    settings: Settings,
    options: SourceOptions,
    *,
    source: Path | None = None,
    keep_ids: bool = False,
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
    return produce_events(producer, settings.topics.events, factory, keep_ids=keep_ids)
