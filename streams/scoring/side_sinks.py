"""What the side-path worker process runs: the prediction store writer and the shadow
records' publisher, built there from the settings.

The loop's process hands this process columns (:class:`~streams.scoring.shadow.ShadowColumns`,
:class:`~streams.scoring.store_writer.StorePart` lists) through the lanes of a
:class:`~streams.scoring.side_path.WorkerProcess`; everything that holds the interpreter
after that, building and encoding shadow records, producing them, packing the Redis
writes, happens here, on another core. This process has its own producer (shadow records,
flushed when it stops) and its own Redis connection; its counters and health problems are
mirrored into the loop's ``/metrics`` and ``/readyz``.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.kafka import Producer, client_id
from connectors.schema_registry import topic_serde
from schemas.errors import DeliveryFailed
from schemas.settings import Settings
from streams.ops.metrics import Health, Metrics
from streams.scoring.shadow import ShadowColumns, publish_shadow
from streams.scoring.store_writer import StoreWriter

log = logging.getLogger(__name__)

#: The lanes of the side-path process, by the stable name of what they carry.
SHADOW_LANE = "shadow"
STORE_LANE = "prediction-store"


class SideSinks:
    """The child's handler (:class:`~streams.scoring.side_path.ChildHandler`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health()
        self.writer: StoreWriter | None = None
        if settings.store.enabled:
            from connectors.redis_store import PredictionStore

            s = settings.store
            store = PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s)
            self.writer = StoreWriter(
                store, self.metrics, self.health, backlog_max_bytes=s.backlog_max_bytes,
                worker=False,
            )  # fmt: skip
        self._producer: Producer | None = None
        shadow_on = settings.shadow.mode == "shadow"
        self._shadow_serde = topic_serde(settings, "shadow") if shadow_on else None
        self._produced = self.metrics.produced.labels(role="shadow")

    def handle(self, lane: str, item: Any) -> None:
        if lane == STORE_LANE:
            if self.writer is not None:
                self.writer.put_parts(item)
            return
        if lane == SHADOW_LANE:
            self._publish(item)
            return
        raise ValueError(f"no side-path lane named {lane!r}")

    def _publish(self, columns: ShadowColumns) -> None:
        if self._shadow_serde is None:
            raise ValueError("shadow columns sent, but shadow.mode is not 'shadow'")
        publish_shadow(
            columns, serde=self._shadow_serde, emit=self._emit, store=self.writer,
            metrics=self.metrics,
        )  # fmt: skip

    def _emit(self, values: list[bytes], keys: list[bytes | None]) -> None:
        if self._producer is None:
            self._producer = Producer(
                self.settings.kafka,
                client_id=client_id("side-paths"),
                linger_ms=self.settings.processor.linger_ms,
            )
        self._producer.produce_many(self.settings.topics.shadow, values, keys)
        self._produced.inc(len(values))

    def report(self) -> dict[str, dict[str, Any]]:
        return self.writer.report() if self.writer is not None else {}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._producer is not None:
            try:
                self._producer.flush(self.settings.processor.flush_timeout_s)
            except DeliveryFailed as exc:  # best-effort output: said, not raised
                self.metrics.shadow_errors.inc()
                log.error("shadow records not delivered at shutdown: %s", exc)
            self._producer.close(discard=True)  # what flush could not deliver is dropped
            self._producer = None


def build_side_sinks(settings_data: dict[str, Any]) -> SideSinks:
    """The factory the worker process calls (settings travel as their plain data)."""
    return SideSinks(Settings(**settings_data))
