"""Best-effort Kafka outputs of the HTTP door: audit records, predictions, shadow records.

A request is answered once it is scored; its records go to Kafka afterwards and a
Kafka outage never turns into an error for the caller. Instead the records Kafka does
not confirm are counted as the gap (``streamscore_http_publish_gap_records_total`` by
topic role): those handed over while the broker probe says Kafka is down or while
``max_pending`` records already wait, and those of a flush cycle that ended in a
delivery failure (each cycle's count is taken when the flush starts; records queued
during a flush belong to the next cycle).

A thread flushes every ``flush_every_s``; ``delivery_timeout_s`` bounds how long a
record may wait for the broker (librdkafka's ``message.timeout.ms``), so a failure
is known within one timeout.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from connectors.kafka import Producer
from schemas.errors import DeliveryFailed
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)


class Publisher:
    """Queues records on a producer without blocking; counts what Kafka did not confirm."""

    def __init__(
        self,
        producer: Producer,
        metrics: Metrics,
        *,
        broker_up: Callable[[], bool] = lambda: True,
        max_pending: int = 100_000,
        flush_every_s: float = 0.5,
        delivery_timeout_s: float = 10.0,
    ) -> None:
        self.producer = producer
        self.metrics = metrics
        self.broker_up = broker_up
        self.max_pending = max_pending
        self.flush_every_s = flush_every_s
        self.delivery_timeout_s = delivery_timeout_s
        self.gap: Counter[str] = Counter()
        self.published: Counter[str] = Counter()
        self._unconfirmed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="http-publisher", daemon=True)
        self._thread.start()

    def publish(
        self, role: str, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
    ) -> None:
        """Hand records over (never blocks on Kafka, never raises)."""
        n = len(values)
        if n == 0:
            return
        if self._closed or not self.broker_up() or len(self.producer) + n > self.max_pending:
            self._count_gap(Counter({role: n}))
            return
        try:
            self.producer.produce_many(topic, values, keys)
        except (DeliveryFailed, RuntimeError) as exc:  # RuntimeError: closed meanwhile
            log.warning("cannot queue %d %s record(s): %s", n, role, exc)
            self._count_gap(Counter({role: n}))
            return
        with self._lock:
            self._unconfirmed[role] += n
        self.metrics.produced.labels(role=role).inc(n)

    def _count_gap(self, lost: Counter[str]) -> None:
        with self._lock:
            self.gap.update(lost)
        for role, n in lost.items():
            self.metrics.publish_gap.labels(role=role).inc(n)

    def flush_once(self) -> bool:
        """Wait for this cycle's records; False (and the cycle counted as the gap) on failure."""
        with self._lock:
            cycle, self._unconfirmed = self._unconfirmed, Counter()
        try:
            self.producer.flush(self.delivery_timeout_s + 1.0)
        except DeliveryFailed as exc:
            log.warning("Kafka did not confirm %d HTTP record(s): %s", sum(cycle.values()), exc)
            self._count_gap(cycle)
            return False
        with self._lock:
            self.published.update(cycle)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush_once()

    def close(self) -> None:
        self._stop.set()
        self._closed = True  # from now on a record handed over counts as the gap
        self._thread.join(timeout=self.delivery_timeout_s + 5)
        self.flush_once()
        self.producer.close(discard=True)  # what flush_once could not confirm is the gap
