"""Settings of what streamscore connects to: Kafka (and its topics and wire formats),
Redis, the MLflow registry, and the metrics endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from pydantic import (
    Field,
    FieldSerializationInfo,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.redaction import (
    SECRET_SHOWN,
    is_secret_property,
    mask_url_passwords,
    split_url_password,
)
from schemas.settings.base import (
    EMBEDDED_KAFKA,
    EMBEDDED_REDIS,
    REDIS_SCHEMES,
    Format,
    Section,
    SecurityProtocol,
)


class KafkaSettings(Section):
    """Connection to the Kafka cluster; security fields go through to librdkafka."""

    bootstrap_servers: str = EMBEDDED_KAFKA
    #: None = embedded when ``bootstrap_servers`` is the embedded default address.
    embedded: bool | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    #: Needed by every ``avro-confluent`` topic; ``mock://<name>`` is confluent-kafka's
    #: in-process registry (tests). Put credentials in the field below, not in the URL.
    schema_registry_url: str | None = None
    #: Schema Registry basic auth as ``user:password`` (Confluent's ``basic.auth.user.info``).
    schema_registry_basic_auth_user_info: SecretStr | None = None
    #: CA file or directory that verifies the Schema Registry's TLS certificate
    #: (default: certifi's bundle). Separate from ``ssl_ca_location``: the
    #: registry is an HTTPS server, often behind another CA than the brokers.
    schema_registry_ssl_ca_location: str | None = None
    #: Any further librdkafka properties, passed through untouched.
    client_config: dict[str, str] = Field(default_factory=dict)
    session_timeout_ms: int = 6000

    @staticmethod
    def _shown(name: str, value: Any) -> Any:
        """A field as JSON dumps and ``repr`` show it: the secrets of free-form fields masked
        (``SecretStr`` fields mask themselves). ``model_dump()`` keeps them: it round-trips."""
        if name == "client_config":
            return {k: SECRET_SHOWN if is_secret_property(k) else v for k, v in value.items()}
        if name == "schema_registry_url" and value:
            return mask_url_passwords(value)
        return value

    @field_serializer("client_config", "schema_registry_url", when_used="json")
    def _masked(self, value: Any, info: FieldSerializationInfo) -> Any:
        return self._shown(info.field_name, value)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, self._shown(name or "", value)

    @property
    def is_embedded(self) -> bool:
        if self.embedded is not None:
            return self.embedded
        return self.bootstrap_servers == EMBEDDED_KAFKA

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    def client_properties(self) -> dict[str, Any]:
        """librdkafka properties shared by every client (producer, consumer, admin)."""
        props: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional: dict[str, str | None] = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": (
                self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            ),
        }
        props.update({k: v for k, v in optional.items() if v is not None})
        props.update(self.client_config)  # clients re-apply it after their own defaults
        return props


class TopicSettings(Section):
    """Topic names by role. The role names are stable: logs, metrics and headers use them."""

    events: str = "sensor.events"
    predictions: str = "sensor.predictions"
    audit: str = "sensor.audit"
    dlq: str = "sensor.dlq"
    shadow: str = "sensor.shadow"
    drift: str = "sensor.drift"
    labels: str = "sensor.labels"
    evaluation: str = "sensor.evaluation"
    partitions: int = 3
    replication_factor: int = 1

    def by_role(self) -> dict[str, str]:
        return {
            role: getattr(self, role)
            for role in (
                "events",
                "predictions",
                "audit",
                "dlq",
                "shadow",
                "drift",
                "labels",
                "evaluation",
            )
        }


class FormatSettings(Section):
    """Wire format per topic role."""

    events: Format = "avro"
    predictions: Format = "avro"
    audit: Format = "avro"
    shadow: Format = "avro"
    drift: Format = "avro"
    labels: Format = "avro"
    evaluation: Format = "avro"


class RedisSettings(Section):
    url: str = EMBEDDED_REDIS
    #: None = embedded when ``url`` is the embedded default.
    embedded: bool | None = None
    #: A password written in ``url`` (``redis://:PASSWORD@host``) is moved here, so the
    #: URL that logs, ``/readyz`` and ``status`` show never carries it.
    password: SecretStr | None = None
    #: ``rediss://`` only: CA file that verifies the server's certificate (default: the
    #: system's CAs); the server's name in the URL must match its certificate.
    ssl_ca_location: str | None = None
    #: ``rediss://`` only: client certificate and key for a server that requires one (mTLS).
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, url: str) -> str:
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"a Redis URL starts with {', '.join(REDIS_SCHEMES)} (e.g. {EMBEDDED_REDIS})"
            )
        return url

    @model_validator(mode="after")
    def _password_out_of_url(self) -> Self:
        url, password = split_url_password(self.url)
        if password is None:
            return self
        if self.password is not None and self.password.get_secret_value() != password:
            raise ValueError("two different Redis passwords: one in redis.url, one in password")
        if self.embedded is None:
            self.embedded = False  # as before the move: a URL with a password is not embedded
        self.url, self.password = url, SecretStr(password)
        return self

    @property
    def is_embedded(self) -> bool:
        if self.embedded is not None:
            return self.embedded
        return self.url == EMBEDDED_REDIS

    @property
    def port(self) -> int:
        hostport = self.url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379


class RegistrySettings(Section):
    """MLflow tracking and registry. Without a tracking URI: sqlite under ``home``."""

    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "streamscore"
    model_name: str = "shuttle-anomaly"
    #: Where fetched versions are cached (default ``<home>/cache/models``).
    cache_dir: Path | None = None
    poll_interval_s: float = Field(default=5.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)


class MetricsSettings(Section):
    host: str = "127.0.0.1"
    port: int = 9108
    enabled: bool = True
    #: How often the consumer-lag gauge is refreshed (on its own thread).
    lag_interval_s: float = Field(default=5.0, gt=0)
    #: How often a metadata request checks that the broker is reachable (metrics, /readyz).
    broker_probe_interval_s: float = Field(default=5.0, gt=0)
