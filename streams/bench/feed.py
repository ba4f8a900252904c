"""The bench's input: fresh topics and consumer groups per phase, the source's events, the
producers that send them, and the preload of the throughput phase.

Every bench phase that sends events builds them here (:func:`event_source`) and sends them
with a producer from here (:func:`bench_producer`): the one place the bench asks the source
(:mod:`connectors.source`) for its event factory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.settings import Settings
from streams.bench.common import BenchError

if TYPE_CHECKING:
    from connectors.kafka import Producer
    from connectors.kafka_admin import Admin
    from connectors.source import EventFactory, ProduceReport


class Topics:
    """Fresh topic names and groups per phase; deletes what it created unless told to keep."""

    def __init__(self, settings: Settings, run_id: str, *, keep: bool) -> None:
        self.settings = settings
        self.run_id = run_id
        self.keep = keep
        self.created: list[str] = []
        #: Input topics that several phases read: deleted only by :meth:`drop_all`.
        self.shared: set[str] = set()

    def phase(self, phase: str, *, events_topic: str | None = None) -> Settings:
        """Settings for ``phase``: topics ``bench.<run>.<phase>.<role>`` and group of its own."""
        prefix = f"bench.{self.run_id}.{phase}"
        names = {role: f"{prefix}.{role}" for role in self.settings.topics.by_role()}
        if events_topic is not None:
            names["events"] = events_topic
        topics = self.settings.topics.model_copy(update=names)
        processor = self.settings.processor.model_copy(
            update={"group_id": f"bench-{self.run_id}-{phase}"}
        )
        phased = self.settings.model_copy(update={"topics": topics, "processor": processor})
        self.create(phased)
        return phased

    def single(self, phase: str) -> Settings:
        """Settings whose events topic is a fresh ``bench.<run>.<phase>.events``, created alone."""
        name = f"bench.{self.run_id}.{phase}.events"
        topics = self.settings.topics.model_copy(update={"events": name})
        t = self.settings.topics
        self.created += self._admin().ensure_topics(
            [name], partitions=t.partitions, replication_factor=t.replication_factor
        )
        self.shared.add(name)
        return self.settings.model_copy(update={"topics": topics})

    def create(self, settings: Settings) -> None:
        from streams.scoring.compose import ensure_topics

        self.created += ensure_topics(settings)

    def drop(self, settings: Settings) -> None:
        """Delete the topics this phase created (a shared input topic stays)."""
        if self.keep:
            return
        names = [
            name
            for name in settings.topics.by_role().values()
            if name in self.created and name not in self.shared
        ]
        self._admin().delete_topics(names)
        self.created = [n for n in self.created if n not in names]

    def drop_all(self) -> None:
        if self.keep or not self.created:
            return
        self._admin().delete_topics(self.created)
        self.created = []

    def _admin(self) -> Admin:
        from connectors.kafka_admin import Admin

        return Admin(self.settings.kafka)


def event_source(settings: Settings, count: int, run_id: str) -> EventFactory:
    """The source's factory of ``count`` valid Avro sensor events, their ids from ``run_id``."""
    from connectors.source import SourceOptions, event_factory

    return event_factory(settings, SourceOptions(count=count, run_id=run_id), None)


def bench_producer(settings: Settings, name: str) -> Producer:
    """A producer (client id from ``name``) that lingers like the processor's does."""
    from connectors.kafka import Producer
    from streams.scoring.processor import client_id

    return Producer(
        settings.kafka, client_id=client_id(name), linger_ms=settings.processor.linger_ms
    )


def send_events(
    settings: Settings,
    factory: EventFactory,
    name: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Every event of ``factory``, as fast as possible, to the input topic of ``settings``."""
    from connectors.source import produce_events

    producer = bench_producer(settings, name)
    return produce_events(producer, settings.topics.events, factory, progress=progress)


def preload(settings: Settings, events: int, run_id: str) -> tuple[dict[str, Any], EventFactory]:
    """Publish ``events`` valid Avro sensor events to the phase's input topic."""
    factory = event_source(settings, events, run_id)
    report = send_events(settings, factory, "bench-source")
    if report.produced != events:
        raise BenchError(f"preload produced {report.produced} of {events} events")
    sizes = [len(factory.make(n, 0)[1]) for n in range(min(events, 1000))]
    return {
        **report.as_dict(),
        "topic": settings.topics.events,
        "mean_event_bytes": round(float(np.mean(sizes)), 1),
    }, factory
