"""The one settings object of streamscore.

Precedence, lowest to highest: defaults < ``streamscore.toml`` < environment
(``STREAMSCORE_...``, nested with ``__``, e.g. ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``)
< CLI flags (passed as init arguments by the entry point).

Settings are read once at the entry point and handed down as typed sub-configs;
no other module reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.errors import ConfigError

Format = Literal["avro", "avro-confluent", "json"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class Section(BaseModel):
    """A settings section: a misspelt key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


EMBEDDED_KAFKA = "127.0.0.1:9092"
EMBEDDED_REDIS = "redis://127.0.0.1:6379/0"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
ENV_PREFIX = "STREAMSCORE_"


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


class ProcessorSettings(Section):
    group_id: str = "streamscore-processor"
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    max_wait_ms: int = Field(default=50, ge=0)
    #: Outputs are flushed and offsets committed at least this often (and on
    #: revoke / shutdown). 0 = after every batch.
    commit_interval_ms: int = Field(default=200, ge=0)
    max_message_bytes: int = Field(default=65_536, ge=64)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    ort_intra_op_threads: int = Field(default=1, ge=0)
    ort_inter_op_threads: int = Field(default=1, ge=0)
    #: onnxruntime execution providers, in order of preference (e.g.
    #: ``["CUDAExecutionProvider", "CPUExecutionProvider"]``). Names are checked when a
    #: model loads, not here: one this onnxruntime lacks (or misspelt) is a warning and
    #: the available ones serve, the CPU when none is.
    ort_providers: list[str] = Field(default=["CPUExecutionProvider"], min_length=1)
    linger_ms: int = 5
    flush_timeout_s: float = 30.0


class ModelSettings(Section):
    #: ``files``: bundles in ``dir``; ``registry``: MLflow aliases champion/challenger,
    #: hot-swapped when an alias moves.
    source: Literal["files", "registry"] = "files"
    #: Folder holding the file-based model bundles (``champion/``, ``challenger/``);
    #: default ``<home>/models``.
    dir: Path = Path(".streamscore/models")
    champion: str = "champion"
    challenger: str = "challenger"

    @property
    def champion_path(self) -> Path:
        return self.dir / self.champion

    @property
    def challenger_path(self) -> Path:
        return self.dir / self.challenger


class RedisSettings(Section):
    url: str = EMBEDDED_REDIS
    #: None = embedded when ``url`` is the embedded default.
    embedded: bool | None = None
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, url: str) -> str:
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError(
                f"a Redis URL starts with {', '.join(REDIS_SCHEMES)} (e.g. {EMBEDDED_REDIS})"
            )
        return url

    @property
    def is_embedded(self) -> bool:
        if self.embedded is not None:
            return self.embedded
        return self.url == EMBEDDED_REDIS

    @property
    def port(self) -> int:
        hostport = self.url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        return int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 6379


class ShadowSettings(Section):
    """How the challenger takes part: not at all, in the shadow, or serving a share (A/B)."""

    mode: Literal["off", "shadow", "ab"] = "shadow"
    #: Shadow mode: share of valid events the challenger scores (deterministic per event id).
    sample_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    #: Batches the challenger may fall behind before batches are dropped (and counted).
    max_pending_batches: int = Field(default=8, ge=1)
    #: A/B mode: weight per variant; an entity (sensor_id) always gets the same variant.
    ab_weights: dict[str, float] = Field(
        default_factory=lambda: {"champion": 0.95, "challenger": 0.05}
    )
    #: Regressors: scores within this distance count as agreement.
    agreement_tolerance: float = 1e-6
    #: Events per window of the champion-vs-challenger score PSI.
    psi_window: int = 10_000


class StoreSettings(Section):
    """The Redis prediction store that delayed labels are joined against."""

    enabled: bool = True
    ttl_s: int = Field(default=3600, ge=1)
    bucket_s: int = Field(default=60, ge=1)
    max_pending_batches: int = Field(default=32, ge=1)
    #: Memory cap of the predictions kept while Redis is down, estimated at 160 bytes
    #: per event plus its id (64 MiB: ~380,000 events with 16-character ids); when it
    #: is full the oldest are dropped and counted as the gap. 0 = no backlog.
    backlog_max_bytes: int = Field(default=64 * 2**20, ge=0)


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


class _OrderedThresholds(Section):
    """A warning and an alert threshold, the alert never below the warning."""

    warning: float
    alert: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.alert < self.warning:
            raise ValueError("alert threshold below the warning threshold")
        return self


class FeatureThresholds(_OrderedThresholds):
    """PSI thresholds of one feature (overrides the defaults of :class:`DriftSettings`)."""

    warning: float = Field(gt=0)
    alert: float = Field(gt=0)


class DriftSettings(_OrderedThresholds):
    """How the processor (or evaluator) watches drift. One sub-config of the settings."""

    enabled: bool = True
    #: A window closes after this many events ...
    window_events: int = Field(default=10_000, ge=1)
    #: ... or at a tumbling event-time boundary (epoch-aligned), whichever comes first.
    window_seconds: float | None = Field(default=None, gt=0)
    #: A time boundary does not close a window holding fewer events (PSI would be noise).
    min_window_events: int = Field(default=1_000, ge=1)
    #: Default PSI thresholds; ``thresholds`` overrides them per feature name.
    warning: float = Field(default=0.1, gt=0)
    alert: float = Field(default=0.25, gt=0)
    thresholds: dict[str, FeatureThresholds] = Field(default_factory=dict)
    #: A PSI incident clears below ``clear_ratio * warning`` (hysteresis).
    clear_ratio: float = Field(default=0.5, gt=0, le=1)
    #: Floor of empty PSI bins (less than one event in a 10k-event window).
    epsilon: float = Field(default=1e-4, gt=0, lt=1)
    #: Bins per PSI record, largest contribution first (None = every bin).
    top_bins: int | None = Field(default=None, ge=1)
    adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    adwin_clock: int = Field(default=32, ge=1)
    #: Consecutive clear windows that close an incident.
    clear_windows: int = Field(default=3, ge=1)
    #: Windows after a close during which the same target cannot open a new incident.
    cooldown_windows: int = Field(default=5, ge=0)
    #: Emit ``retrain_requested`` once alert-level drift lasts this many windows.
    retrain_after_windows: int | None = Field(default=None, ge=1)

    def thresholds_for(self, feature: str) -> FeatureThresholds:
        return self.thresholds.get(
            feature, FeatureThresholds(warning=self.warning, alert=self.alert)
        )


class MetricsSettings(Section):
    host: str = "127.0.0.1"
    port: int = 9108
    enabled: bool = True
    #: How often the consumer-lag gauge is refreshed (on its own thread).
    lag_interval_s: float = Field(default=5.0, gt=0)
    #: How often a metadata request checks that the broker is reachable (metrics, /readyz).
    broker_probe_interval_s: float = Field(default=5.0, gt=0)


class Settings(BaseSettings):
    """Everything streamscore can be told. See the README for each field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        toml_file="streamscore.toml",
        extra="forbid",
    )

    #: Where the embedded stack keeps pids, logs, models and caches.
    home: Path = Path(".streamscore")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    formats: FormatSettings = Field(default_factory=FormatSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _models_under_home(self) -> Self:
        """Like everything the stack writes, model bundles default to ``<home>/models``."""
        if "dir" not in self.models.model_fields_set:
            self.models.dir = self.home / "models"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings once. ``overrides`` are CLI flags as nested dicts (highest precedence).

    A missing ``config_file``, invalid TOML or an unknown ``STREAMSCORE_*`` variable is a
    :class:`ConfigError`; a value that does not validate is pydantic's ``ValidationError``
    (:func:`describe_validation_error` makes one line of it).
    """
    check_environment(os.environ)
    if config_file is None:
        _check_toml(Path("streamscore.toml"))
        return Settings(**overrides)
    if not config_file.is_file():
        raise ConfigError(
            f"config file {config_file} does not exist; give an existing TOML file to --config "
            "or leave the option out to use ./streamscore.toml"
        )
    _check_toml(config_file)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return _FromFile(**overrides)


def _check_toml(path: Path) -> None:
    if not path.is_file():
        return
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``STREAMSCORE_*`` variables that name no setting (pydantic ignores them)."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for depth, part in enumerate(path):
            if model is None:
                break  # below a dict-valued setting: any key is allowed
            fields = model.model_fields
            if part not in fields:
                where = ".".join(path[:depth]) or "the top level"
                raise ConfigError(
                    f"unknown environment variable {name}: {where} has no setting {part!r} "
                    f"(known: {', '.join(sorted(fields))}); fix the name or unset it"
                )
            annotation = fields[part].annotation
            is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation if isinstance(annotation, type) and is_section else None
            if not is_section and depth < len(path) - 1 and not _is_mapping(annotation):
                raise ConfigError(
                    f"unknown environment variable {name}: {'.'.join(path[: depth + 1])} "
                    "is a plain value, not a section; fix the name or unset it"
                )


def _is_mapping(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is dict


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a person: which setting, what is wrong with it, how to fix it."""
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {key!r}: check its spelling against the README")
        else:
            value = error.get("input")
            secret = any(word in key for word in ("password", "secret", "key", "user_info"))
            shown = "" if isinstance(value, dict) or secret else f" = {value!r}"
            problems.append(f"invalid setting {key}{shown}: {error['msg']}")
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}{more}; set it in streamscore.toml, STREAMSCORE_* or the command's flag"
