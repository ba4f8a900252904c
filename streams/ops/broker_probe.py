"""Is the broker there? A cheap metadata request on a thread of its own, off the loop.

The scoring loop cannot tell a quiet topic from a broker that is gone (librdkafka keeps
reconnecting in the background), so ``streamscore_dependency_up{dependency="kafka"}`` and
``/readyz``'s ``broker_reachable`` are kept current by this probe instead of being set once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from connectors.kafka_admin import Admin
from schemas.settings import KafkaSettings
from streams.ops.metrics import Health, Metrics

log = logging.getLogger(__name__)


class BrokerProbe:
    """Calls ``reachable()`` every ``interval_s``; reports changes to metrics and health."""

    def __init__(
        self,
        reachable: Callable[[], bool],
        metrics: Metrics,
        health: Health,
        *,
        address: str,
        interval_s: float = 5.0,
    ) -> None:
        self._reachable = reachable
        self._metrics = metrics
        self._health = health
        self.address = address
        self.interval_s = interval_s
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)

    @classmethod
    def for_kafka(
        cls, kafka: KafkaSettings, metrics: Metrics, health: Health, *, interval_s: float = 5.0
    ) -> BrokerProbe:
        """A probe of the cluster ``kafka`` names, through one quiet admin client."""
        admin = Admin(kafka, quiet=True)
        return cls(
            lambda: admin.reachable(timeout=3.0),
            metrics,
            health,
            address=kafka.bootstrap_servers,
            interval_s=interval_s,
        )

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def check(self) -> bool:
        """Probe once now (the thread does this every ``interval_s``)."""
        up = self._reachable()
        self.checks += 1
        if up != self._health.broker_reachable:
            if up:
                log.info("Kafka at %s is reachable again", self.address)
            else:
                log.error("Kafka at %s is unreachable", self.address)
        self._health.broker_reachable = up
        self._metrics.dependency_up.labels(dependency="kafka").set(1 if up else 0)
        if up:
            self._health.problems.pop("kafka", None)
        else:
            self._health.problems["kafka"] = f"unreachable at {self.address}"
        return up

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)
