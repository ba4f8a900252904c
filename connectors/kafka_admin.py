"""Topic management and broker reachability: the admin side of the Kafka wrappers.

``require_broker`` is how every command that needs Kafka fails: one line naming the
address, the wait and what to check. ``ensure_topics`` creates the topic of every role
that is missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka_errors import ConnectionErrors, describe_refusal
from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

__all__ = ["REACH_TIMEOUT_S", "Admin", "ensure_topics", "require_broker"]


class Admin:
    """Topic management and cluster reachability."""

    def __init__(self, kafka: KafkaSettings, *, quiet: bool = False) -> None:
        # quiet: a reachability probe should say "unreachable" once, not log every retry.
        extra = {"log_level": 0} if quiet else {}
        self._kafka = kafka
        self._errors = ConnectionErrors()  # why connecting fails (TLS, SASL), if it does
        config: dict[str, Any] = {**kafka.client_properties(), "error_cb": self._errors, **extra}
        self._admin = AdminClient(config)

    def reachable(self, timeout: float = 3.0) -> bool:
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def group_state(self, group: str, timeout: float = 5.0) -> str | None:
        """The group's state, ``STABLE`` when no rebalance is under way; None if unknown."""
        try:
            described = self._admin.describe_consumer_groups([group])[group].result(timeout)
        except (KafkaException, TimeoutError) as exc:
            log.debug("cannot describe group %s: %s", group, exc)
            return None
        return str(described.state.name)

    def refusal(self) -> str | None:
        """Why the cluster refused this client (TLS, SASL) in one line; None when it did not."""
        self._admin.poll(0)  # serves the error callbacks
        return describe_refusal(self._errors.last, self._kafka)

    def topics(self, timeout: float = 10.0) -> dict[str, int]:
        """Existing topics and their partition counts."""
        try:
            metadata = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            refused = self.refusal()
            cause = f"; {refused}" if refused else ""
            raise InfrastructureError(f"cannot reach Kafka: {exc}{cause}") from exc
        return {name: len(t.partitions) for name, t in metadata.topics.items()}

    def ensure_topics(
        self,
        names: Iterable[str],
        *,
        partitions: int,
        replication_factor: int = 1,
        timeout: float = 15.0,
    ) -> list[str]:
        """Create the topics that do not exist yet; returns the names created."""
        existing = self.topics(timeout)
        missing = sorted({n for n in names if n not in existing})
        if not missing:
            return []
        futures = self._admin.create_topics(
            [NewTopic(n, partitions, replication_factor) for n in missing],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise InfrastructureError(f"cannot create topic {name}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n in self.topics(timeout) for n in missing):
                break
            time.sleep(0.1)
        return missing

    def max_message_bytes(self, topic: str, timeout: float = 5.0) -> int | None:
        """The topic's ``max.message.bytes`` (else the broker's ``message.max.bytes``),
        or None when the cluster does not say (the embedded broker reports neither)."""
        from confluent_kafka.admin import ConfigResource

        md = self._admin.list_topics(timeout=timeout)
        resources = [ConfigResource(ConfigResource.Type.TOPIC, topic)]
        resources += [ConfigResource(ConfigResource.Type.BROKER, str(b)) for b in md.brokers]
        wanted = {"max.message.bytes", "message.max.bytes"}
        limits: list[int] = []
        for future in self._admin.describe_configs(resources).values():
            try:
                entries = future.result(timeout=timeout)
            except (KafkaException, TimeoutError, ValueError) as exc:
                log.debug("describe_configs: %s", exc)
                continue
            limits += [int(e.value) for name, e in entries.items() if name in wanted and e.value]
        return min(limits) if limits else None

    def delete_topics(self, names: Sequence[str], timeout: float = 15.0) -> None:
        if not names:
            return
        for name, future in self._admin.delete_topics(
            list(names), operation_timeout=timeout
        ).items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                log.warning("could not delete topic %s: %s", name, exc)


#: How long a command waits for the broker before it says so.
REACH_TIMEOUT_S = 10.0


def require_broker(kafka: KafkaSettings, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail with one line naming the address, the wait and what to check (no retry spam).

    A TLS or SASL refusal fails at once, naming its cause: waiting does not mend it.
    """
    admin = Admin(kafka, quiet=True)
    deadline = time.monotonic() + timeout
    while True:
        if admin.reachable(timeout=max(min(1.0, deadline - time.monotonic()), 0.1)):
            return
        refused = admin.refusal()
        if refused is not None:
            raise InfrastructureError(
                f"Kafka at {kafka.bootstrap_servers} refused the connection: {refused}"
            )
        if time.monotonic() >= deadline:
            break
    raise InfrastructureError(
        f"Kafka at {kafka.bootstrap_servers} did not answer within {timeout:g}s; check that "
        "the broker runs (`streamscore up` starts the embedded one, `streamscore status` shows "
        "it) and that kafka.bootstrap_servers (STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS) names it"
    )


def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic role's topic that is missing; returns the names created."""
    require_broker(settings.kafka)
    return Admin(settings.kafka).ensure_topics(
        settings.topics.by_role().values(),
        partitions=settings.topics.partitions,
        replication_factor=settings.topics.replication_factor,
    )
