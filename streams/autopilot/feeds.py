"""What the controller reads from outside: topic tails and the processors' /metrics.

* :class:`TopicTail` — one topic's records as they come, decoded, outside any
  consumer group (partitions are assigned, nothing is committed). The verdict
  and drift topics are read from their beginning at start (the controller's
  view is rebuilt from them); predictions, shadow records and labels from
  their end (estimates are about what is scored from now on). A topic that
  does not exist yet is looked up again at the next poll.
* :class:`Feeds` — the tails one controller reads (as :class:`Tail` s, so a test
  hands it lists), and :class:`Sink`, where its records go;
* :class:`ProcessorMetrics` — the challenger's error and drop counters and the
  version each processor serves as challenger, summed over the processors'
  /metrics (:func:`challenger_counts` reads any Prometheus metric families, so
  a test hands it a processor's own registry).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import Consumer, client_id
from schemas.errors import ConfigError, DecodeError, InfrastructureError
from schemas.serde import Serde
from schemas.settings import KafkaSettings
from streams.autopilot.guards import ChallengerCounts

log = logging.getLogger(__name__)

#: The tails' group id: never joined (partitions are assigned) and never committed.
TAIL_GROUP = "streamscore-autopilot-tail"


class TopicTail:
    """Decoded records of one topic, in arrival order per partition (see the module docs)."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, serde: Serde, *, from_beginning: bool
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.serde = serde
        self.from_beginning = from_beginning
        self._consumer: Consumer | None = None
        self.undecodable = 0
        self.records = 0

    def _assigned(self) -> Consumer | None:
        if self._consumer is not None:
            return self._consumer
        consumer = Consumer(self.kafka, group_id=TAIL_GROUP, client_id=client_id("autopilot"))
        try:
            consumer.assign_topic(self.topic, from_beginning=self.from_beginning, timeout=5.0)
        except ConfigError:  # the topic does not exist yet
            consumer.close()
            return None
        except InfrastructureError:
            consumer.close()
            raise
        self._consumer = consumer
        return consumer

    def poll(self, max_records: int = 20_000, budget_s: float = 0.5) -> list[dict[str, Any]]:
        """The records that arrived since the last call: at most ``max_records``, read for
        at most ``budget_s`` seconds (the rest comes next time)."""
        consumer = self._assigned()
        if consumer is None:
            return []
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + budget_s
        while len(out) < max_records and time.monotonic() < deadline:
            messages = consumer.consume(min(2000, max_records - len(out)), 0.05)
            if not messages:
                break
            for message in messages:
                value = message.value()
                if value is None:
                    continue
                try:
                    out.append(self.serde.decode(value))
                except DecodeError as exc:
                    self.undecodable += 1
                    log.warning("undecodable record on %s: %s", self.topic, exc)
        self.records += len(out)
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class Tail(Protocol):
    """A source of decoded records (:class:`TopicTail`, or a list in a test)."""

    def poll(self, max_records: int = ..., budget_s: float = ...) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where records go (:class:`streams.autopilot.audit.TopicSink`, or a list)."""

    def publish(self, records: Sequence[dict[str, Any]]) -> None: ...


@dataclass
class Feeds:
    """The topics the controller reads (``None``: not needed with these settings)."""

    evaluation: Tail
    drift: Tail
    predictions: Tail | None = None
    shadow: Tail | None = None
    labels: Tail | None = None

    def close(self) -> None:
        for tail in (self.evaluation, self.drift, self.predictions, self.shadow, self.labels):
            if tail is not None:
                tail.close()


# --------------------------------------------------------------------------- /metrics


class MetricFamilyLike(Protocol):
    """A Prometheus metric family (parsed text, or a registry's ``collect()``)."""

    @property
    def name(self) -> str: ...

    @property
    def samples(self) -> Sequence[Any]: ...


#: Counter families (names without ``_total``) that count the challenger's scoring errors,
#: and the one counting the shadow batches it dropped.
ERROR_FAMILIES = ("streamscore_shadow_errors", "streamscore_challenger_fallback_events")
DROP_FAMILY = "streamscore_shadow_dropped_batches"
MODEL_INFO = "streamscore_model"


def challenger_counts(families: Iterable[MetricFamilyLike]) -> ChallengerCounts:
    """Errors, drops and the served challenger version(s) in one processor's metrics."""
    errors = drops = 0.0
    served: list[str] = []
    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in tuple(f"{f}_total" for f in ERROR_FAMILIES):
                errors += float(value)
            elif name == f"{DROP_FAMILY}_total":
                drops += float(value)
            elif name == f"{MODEL_INFO}_info" and labels.get("role") == "challenger":
                served.append(str(labels.get("version", "")))
    return ChallengerCounts(errors, drops, tuple(served))


def add_counts(parts: Sequence[ChallengerCounts]) -> ChallengerCounts:
    return ChallengerCounts(
        sum(p.errors for p in parts),
        sum(p.drops for p in parts),
        tuple(v for p in parts for v in p.served_versions),
    )


class CountsSource(Protocol):
    def read(self) -> ChallengerCounts:
        """Current totals; raises :class:`InfrastructureError` when they cannot be read."""
        ...


class ProcessorMetrics:
    """Reads the processors' /metrics over HTTP and sums what they say of the challenger."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 3.0) -> None:
        self.urls = list(urls)
        self.timeout_s = timeout_s

    def read(self) -> ChallengerCounts:
        parts = []
        for url in self.urls:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310 - configured /metrics URLs
                    text = response.read().decode("utf-8", errors="replace")
            except (urllib.error.URLError, OSError) as exc:
                raise InfrastructureError(f"{url} unreachable: {exc}") from exc
            parts.append(challenger_counts(text_string_to_metric_families(text)))
        return add_counts(parts)
