"""Wiring of ``streamscore serve``: everything the routes use, built from the settings.

The composition root of the HTTP door, as :mod:`streams.scoring.compose` is the
processor's: the champion must load (else :class:`ConfigError`); Kafka, Redis and
MLflow are optional and degrade instead of failing (a broker probe keeps
``streamscore_dependency_up`` current and the publisher counts what does not reach
Kafka).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.kafka import Producer, client_id
from connectors.kafka_admin import ensure_topics
from connectors.schema_registry import topic_serde
from models.serving import ServingModel
from schemas.errors import ConfigError, InfrastructureError, ModelError
from schemas.settings import Settings
from streams.ops.broker_probe import BrokerProbe
from streams.ops.metrics import Health, Metrics
from streams.scoring.model_watcher import model_source
from streams.scoring.shadow import ShadowScorer
from streams.scoring.store_writer import StoreWriter
from streams.serve.batcher import Batcher
from streams.serve.keys import KeyStore, default_keys_file, parse_key_list
from streams.serve.models import ServedModels
from streams.serve.publish import Publisher
from streams.serve.service import (
    EventsJob,
    EventsResult,
    ScoringService,
    TensorJob,
    TensorResult,
)

log = logging.getLogger(__name__)


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class ServeContext:
    """What the routes of :mod:`streams.serve.app` are given."""

    settings: Settings
    metrics: Metrics
    health: Health
    models: ServedModels
    service: ScoringService
    keys: KeyStore
    events: Batcher[EventsJob, EventsResult]
    tensors: Batcher[TensorJob, TensorResult]
    publisher: Publisher | None = None
    closables: list[Closable] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    _registry: Any = None

    def registry(self) -> Any:
        """The MLflow registry (``connectors.model_registry.ModelRegistry``), opened once."""
        if self._registry is None:
            from connectors.model_registry import ModelRegistry

            r = self.settings.registry
            self._registry = ModelRegistry.open(
                self.settings.home,
                tracking_uri=r.tracking_uri,
                registry_uri=r.registry_uri,
                experiment=r.experiment,
                cache_dir=r.cache_dir,
                probe_timeout_s=r.probe_timeout_s,
            )
        return self._registry

    def audit_record(self, record: dict[str, Any]) -> None:
        """Publish one lifecycle audit record (model ops, swaps), if audit is on."""
        if self.publisher is None or not self.settings.serve.audit:
            return
        serde = topic_serde(self.settings, "audit")
        self.publisher.publish(
            "audit", self.settings.topics.audit, [serde.encode(record)],
            [str(record["model_name"]).encode()],
        )  # fmt: skip

    def start(self) -> None:
        self.models.start()

    def close(self) -> None:
        self.events.close()
        self.tensors.close()
        self.models.stop()
        self.service.close()
        for closable in self.closables:
            closable.close()
        if self.publisher is not None:
            self.publisher.close()


def _keys(settings: Settings) -> KeyStore:
    s = settings.serve
    fixed = parse_key_list(s.keys.get_secret_value()) if s.keys is not None else []
    store = KeyStore(s.keys_file or default_keys_file(settings.home), fixed)
    if len(store) == 0:
        log.warning(
            "no API keys: every guarded endpoint answers 401; create one with "
            "`streamscore serve keys add NAME --role operator`"
        )
    return store


def _publisher(settings: Settings, metrics: Metrics, health: Health) -> tuple[Publisher, Any]:
    s = settings.serve
    timeout: dict[str, Any] = {"message.timeout.ms": int(s.delivery_timeout_s * 1000)}
    producer = Producer(settings.kafka, client_id=client_id("serve"), linger_ms=5, **timeout)
    probe = BrokerProbe.for_kafka(
        settings.kafka, metrics, health, interval_s=settings.metrics.broker_probe_interval_s
    )
    if probe.check():
        try:
            ensure_topics(settings)
        except InfrastructureError as exc:
            log.warning("cannot create the topics: %s", exc)
    publisher = Publisher(
        producer,
        metrics,
        broker_up=lambda: health.broker_reachable,
        max_pending=s.max_pending_records,
        delivery_timeout_s=s.delivery_timeout_s,
    )
    return publisher, probe.start()


def build_context(settings: Settings, *, metrics: Metrics | None = None) -> ServeContext:
    """Load the models, open the side doors, and build the batchers."""
    metrics = metrics or Metrics()
    health = Health()
    source = model_source(settings)
    try:
        champion: ServingModel = source.load("champion")
    except ModelError as exc:
        raise ConfigError(
            f"no usable champion: {exc}. Run `streamscore train` (or `make demo`), "
            "or `streamscore models train` for the MLflow registry."
        ) from exc
    health.champion_loaded = True
    s = settings.serve
    publisher, closables = None, []
    if s.audit or s.publish_predictions:
        publisher, probe = _publisher(settings, metrics, health)
        closables.append(probe)
    holder: list[ServeContext] = []

    def audit(action: str, model: ServingModel, details: dict[str, str]) -> None:
        if holder:
            holder[0].audit_record(
                {"action": action, "model_name": model.name, "model_version": model.version,
                 "actor": client_id("serve"), "occurred_at": int(time.time() * 1000),
                 "details": details}
            )  # fmt: skip

    models = ServedModels(settings, source, champion, metrics=metrics, health=health, audit=audit)
    service = ScoringService(settings, models, metrics, publisher)
    if s.publish_predictions and settings.store.enabled:
        from connectors.redis_store import PredictionStore

        st = settings.store
        store = PredictionStore(settings.redis, ttl_s=st.ttl_s, bucket_s=st.bucket_s)
        writer = StoreWriter(
            store, metrics, health, max_pending=st.max_pending_batches,
            backlog_max_bytes=st.backlog_max_bytes,
        )  # fmt: skip
        service.side_paths.append(writer)
    challenger = models.served.challenger
    if settings.shadow.mode == "shadow" and challenger is not None and publisher is not None:
        shadow_publisher = publisher
        sh = settings.shadow
        shadow = ShadowScorer(
            challenger,
            champion.feature_names,
            emit=lambda values, keys: shadow_publisher.publish(
                "shadow", settings.topics.shadow, values, keys
            ),
            serde=topic_serde(settings, "shadow"),
            metrics=metrics,
            sample_fraction=sh.sample_fraction,
            max_pending=sh.max_pending_batches,
            window=sh.psi_window,
            tolerance=sh.agreement_tolerance,
        )
        service.shadow = shadow
        service.side_paths.append(shadow)
    delay = s.max_queue_delay_ms / 1000
    events: Batcher[EventsJob, EventsResult] = Batcher(
        service.score_events, max_rows=s.max_batch, max_delay_s=delay, enabled=s.batching,
        name="score",
    )  # fmt: skip
    tensors: Batcher[TensorJob, TensorResult] = Batcher(
        service.score_tensors, max_rows=s.max_batch, max_delay_s=delay, enabled=s.batching,
        name="infer",
    )  # fmt: skip
    events.observe = metrics.http_batch_requests.labels(door="score").observe
    tensors.observe = metrics.http_batch_requests.labels(door="infer").observe
    context = ServeContext(
        settings=settings,
        metrics=metrics,
        health=health,
        models=models,
        service=service,
        keys=_keys(settings),
        events=events,
        tensors=tensors,
        publisher=publisher,
        closables=closables,
    )
    holder.append(context)
    return context
