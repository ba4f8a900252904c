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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    SecretStr,
    ValidationError,
    field_serializer,
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
from schemas.redaction import (
    SECRET_SHOWN,
    is_secret_property,
    mask_url_passwords,
    split_url_password,
)

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


class ProcessorSettings(Section):
    group_id: str = "streamscore-processor"
    #: Upper bound of a micro-batch; the loop takes fewer when that meets the latency target.
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    #: Longest wait for the first record of a batch (never for a batch to fill).
    max_wait_ms: int = Field(default=50, ge=0)
    #: The goal for a record's time in the loop (consumed → outputs produced), p99. While
    #: the loop keeps up it takes batches it processes in half of it; when a backlog forms,
    #: batches grow towards ``max_batch``. The run summary and a gauge say whether it is met.
    latency_target_ms: float = Field(default=20.0, gt=0)
    #: Where the side paths' interpreter-bound work runs (shadow records, prediction-store
    #: writes): ``process``, a worker process of its own (off the loop's interpreter);
    #: ``thread``, threads of the loop's process.
    side_paths: Literal["process", "thread"] = "process"
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
    #: How the group spreads partitions over its members. ``eager-range`` (librdkafka's
    #: ``range``): each rebalance pauses every member for the join. ``cooperative-sticky``:
    #: only partitions that change hands pause; the embedded broker does not run it
    #: reliably (measured: commits refused, members without partitions), so Apache Kafka only.
    assignment_strategy: Literal["eager-range", "cooperative-sticky"] = "eager-range"
    #: How a stopping member leaves its group. ``leave``: it says so (LeaveGroup) and its
    #: partitions move at once. ``expire``: it does not; the group notices after
    #: ``kafka.session_timeout_ms``, as after a crash (nothing is lost either way: it commits
    #: first). ``auto``: ``leave``, except on the embedded broker while the group rebalances:
    #: a LeaveGroup then strands the group for good (measured); an expiry does not.
    leave_group: Literal["auto", "leave", "expire"] = "auto"
    #: A member left without an assignment this long (after it joins, or after a revoke)
    #: reports the group as stuck in /readyz and one error line. None = max(30 s, 5 x the
    #: session timeout).
    join_timeout_s: float | None = Field(default=None, gt=0)
    #: Replay: partitions without a committed offset start at the first record stamped at or
    #: after this time, and only records stamped from it on are scored. ISO-8601 (without a
    #: zone: UTC) or epoch milliseconds.
    start_from_timestamp_ms: int | None = None
    #: Replay: a partition ends at its first record stamped after this time (or at its end,
    #: once this time has passed), the run once every partition has. With only
    #: ``start_from_timestamp_ms`` set: the time the run starts. ISO-8601 or epoch ms.
    stop_at_timestamp_ms: int | None = None

    @field_validator("start_from_timestamp_ms", "stop_at_timestamp_ms", mode="before")
    @classmethod
    def _epoch_ms(cls, value: object) -> object:
        return epoch_ms(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _stop_after_start(self) -> Self:
        start, stop = self.start_from_timestamp_ms, self.stop_at_timestamp_ms
        if start is not None and stop is not None and stop < start:
            raise ValueError("stop_at_timestamp_ms (--until) is before start_from_timestamp_ms")
        return self


def epoch_ms(text: str) -> int:
    """Milliseconds since the epoch from digits or ISO-8601 (UTC when it names no zone).

    >>> epoch_ms("2023-11-14T22:13:20Z"), epoch_ms("1700000000000")
    (1700000000000, 1700000000000)
    """
    from datetime import UTC, datetime

    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2024-05-01T12:00:00Z) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


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
    #: Two-sample tests beside PSI: KS (continuous features) and chi-squared (every feature)
    #: against the reference profile, and the score's distribution (``score_detector``).
    #: False: PSI alone on the features, as before.
    two_sample: bool = True
    #: The false-alarm budget of the two-sample tests: expected events between false alarms
    #: on a stationary stream, the whole monitor (Alibi Detect's "expected run time"). Their
    #: thresholds are derived from it by simulation on the reference profile.
    false_alarm_events: float = Field(default=1e9, ge=1e3)
    #: The two-sample tests judge the last ``window_events`` events every this many events
    #: (hopping windows): an incident can open inside a window; it still moves at closes.
    check_events: int = Field(default=1_000, ge=1)
    #: The champion's score: ``distribution`` (KS and chi-squared against its first
    #: ``score_reference_events`` scores, calibrated with the features), ``adwin`` (its
    #: mean, event by event, as before) or ``none``.
    score_detector: Literal["distribution", "adwin", "none"] = "distribution"
    #: Scores forming the score reference once a monitor starts (a new champion, anew).
    score_reference_events: int = Field(default=20_000, ge=100)
    #: Quantile bins of the score reference (fewer when the score has few values).
    score_bins: int = Field(default=20, ge=2)

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


class ServeSettings(Section):
    """``streamscore serve``: the HTTP door (Open Inference Protocol v2, /v1/score, model ops)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65_535)
    #: Dynamic batching: concurrent requests are coalesced into one model call.
    batching: bool = True
    #: Rows per coalesced model call, at most (a larger single request is scored alone).
    max_batch: int = Field(default=256, ge=1, le=100_000)
    #: How long the first request of a batch waits for others to join it.
    max_queue_delay_ms: float = Field(default=2.0, ge=0, le=1_000)
    #: Largest request body accepted (larger: HTTP 413).
    max_body_bytes: int = Field(default=4 * 2**20, ge=1_024)
    #: Hashed API keys (``streamscore serve keys add``); default ``<home>/serve-keys.json``.
    keys_file: Path | None = None
    #: More hashed keys, ``NAME:ROLE:ID:HASH`` separated by commas or whitespace (for an
    #: environment variable). Hashes only: a key in clear is never stored.
    keys: SecretStr | None = None
    #: Scoring and model metadata (``/v1/score``, ``/v2/models/...``) need a ``reader`` key;
    #: False opens them (a trusted network). Model ops always need a key.
    require_key_for_scoring: bool = True
    #: Publish each scored event's ``scored`` record to ``topics.audit``.
    audit: bool = True
    #: Also publish predictions to ``topics.predictions`` and, with ``store.enabled``,
    #: write them to the Redis prediction store (labels join them there).
    publish_predictions: bool = False
    #: Records waiting for Kafka, at most; past it (or while Kafka is down) they are
    #: dropped and counted as the gap.
    max_pending_records: int = Field(default=100_000, ge=1)
    #: How long a record may wait for the broker's acknowledgement before it is a gap.
    delivery_timeout_s: float = Field(default=10.0, gt=0)


class RetrainSettings(Section):
    """The autopilot's retraining: when it runs, on which data, and when a candidate counts."""

    #: Retrain when the drift monitor sends ``retrain_requested`` for the current champion.
    on_drift: bool = True
    #: Also retrain on a schedule, every this many seconds (None = only on request).
    interval_s: float | None = Field(default=None, gt=0)
    #: How far back the training window reaches when a trigger names no start (seconds).
    window_s: float = Field(default=3600.0, gt=0)
    #: At most this many newest records per partition are read from each topic.
    max_rows: int = Field(default=200_000, ge=100)
    #: Labelled events the window must hold, and per class of a classifier.
    min_labels: int = Field(default=1000, ge=10)
    min_class_labels: int = Field(default=20, ge=1)
    #: The newest share of the window (by event time) is held out to compare the models.
    holdout_fraction: float = Field(default=0.25, gt=0, lt=1)
    #: A candidate this much worse than the champion on the held-out slice still counts as
    #: "not worse" (accuracy for classifiers; relative MAE for regressors).
    tolerance: float = Field(default=0.0, ge=0, lt=1)
    #: Hyperparameters that override the champion's (from its MLflow run).
    hyperparameters: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    #: Prefect task retries of the steps that talk to Kafka or MLflow.
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_s: float = Field(default=2.0, ge=0)
    #: Labels lag behind drift: a drift-triggered run with too few labels is tried again
    #: this many seconds later, at most ``label_waits`` times.
    label_wait_s: float = Field(default=60.0, gt=0)
    label_waits: int = Field(default=5, ge=0)


class CbpeSettings(Section):
    """Confidence-based performance estimation: accuracy before the labels arrive."""

    enabled: bool = True
    #: Tumbling windows of scoring time (``processed_at``), in seconds.
    window_s: float = Field(default=60.0, gt=0)
    #: ``isotonic`` or ``platt`` (logistic) calibration of confidence against correctness.
    method: Literal["isotonic", "platt"] = "isotonic"
    #: A window is published once it holds this many predictions.
    min_window_predictions: int = Field(default=100, ge=1)
    #: Predictions remembered for the label join, at most (the oldest windows go first).
    max_pending: int = Field(default=200_000, ge=1_000)
    #: Windows are kept (and take late labels) for this long after they close.
    retention_s: float = Field(default=3600.0, gt=0)


class AutopilotSettings(Section):
    """The model autopilot: retrain, shadow, verdict, guarded promotion and rollback."""

    #: ``off``: nothing; ``recommend``: publish decisions and evidence, move no alias;
    #: ``auto``: move the aliases when the verdict and every guard say so.
    mode: Literal["off", "recommend", "auto"] = "recommend"
    #: Seconds between two looks at the verdict, the registry and the guards.
    interval_s: float = Field(default=5.0, gt=0)
    #: Guards of a promotion: paired labels, time in the shadow, minimum effect, and an
    #: optional stricter always-valid p-value than the evaluator's alpha.
    min_paired_labels: int = Field(default=1000, ge=1)
    min_shadow_s: float = Field(default=900.0, ge=0)
    min_effect: float = 0.0
    max_p_value: float | None = Field(default=None, gt=0, lt=1)
    #: Challenger scoring errors (shadow errors, A/B fallback rows) and dropped shadow
    #: batches allowed since it became the challenger.
    max_challenger_errors: int = Field(default=0, ge=0)
    max_challenger_drops: int = Field(default=0, ge=0)
    #: A/B: the observed split of sensors refuses a promotion below this p-value.
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    #: The processors' /metrics, read for the error and drop guards (None: this host's
    #: ``metrics.host:metrics.port``; an empty list: the guards are not checked).
    processor_metrics_urls: list[str] | None = None
    #: No alias move within this many seconds of the last one (no flapping).
    cooldown_s: float = Field(default=1800.0, ge=0)
    #: Rollback: level and margin of the sequential degradation test of a new champion.
    rollback_alpha: float = Field(default=0.05, gt=0, lt=1)
    rollback_margin: float = Field(default=0.01, ge=0, lt=1)
    #: Rollback when the new champion's realised or estimated accuracy falls below this.
    quality_floor: float | None = Field(default=None, gt=0, lt=1)
    floor_min_labels: int = Field(default=200, ge=1)
    #: The controller's /metrics port (None: ``metrics.port + 2``; 0: off).
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    #: Prefect: where the embedded (ephemeral) API keeps its database (None:
    #: ``<home>/prefect``), or a Prefect server's API URL (None: the ephemeral API).
    prefect_home: Path | None = None
    prefect_api_url: str | None = None
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    cbpe: CbpeSettings = Field(default_factory=CbpeSettings)


PseudonymField = Literal["sensor_id", "event_id"]
#: The outputs that carry entity identifiers: three topics and the Redis prediction store.
PrivacyRole = Literal["predictions", "audit", "shadow", "store"]


class PrivacySettings(Section):
    """Pseudonyms of entity identifiers, the key behind them, and the audit hash chain.

    The key is a secret: from ``key_file`` (a path) or ``STREAMSCORE_PRIVACY__KEY`` (the
    environment), never written in a settings file (a ``key`` there is refused).
    """

    #: Identifiers replaced by keyed HMAC-SHA256 pseudonyms (``<key id>:<32 hex>``) in the
    #: outputs ``topics`` gives them to. Empty (the default): none, no per-event work.
    pseudonymise: list[PseudonymField] = Field(default_factory=list)
    #: Per output, the identifiers it carries pseudonymised. An output left out takes the
    #: default: every identifier of ``pseudonymise`` in ``audit``, ``shadow`` and ``store``
    #: (Redis keys), none in ``predictions`` (what consumers join on).
    topics: dict[PrivacyRole, list[PseudonymField]] = Field(default_factory=dict)
    #: A file holding the key: 32 or more random bytes, or their hex (``streamscore privacy
    #: keygen`` writes one). Read once at start.
    key_file: Path | None = None
    #: The key itself, for the environment only (``STREAMSCORE_PRIVACY__KEY``).
    key: SecretStr | None = None
    #: Keys of earlier rotations: still used to decrypt dead letters, verify audit chains,
    #: join labels and erase entities written under them; never to write.
    retired_key_files: list[Path] = Field(default_factory=list)
    #: Audit records carry a hash chain per processor (one digest per batch, in headers),
    #: keyed with the privacy key when there is one; ``streamscore audit verify`` walks it.
    audit_chain: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.key_file is not None and self.key is not None:
            raise ValueError("set privacy.key_file or STREAMSCORE_PRIVACY__KEY, not both")
        if self.pseudonymise and self.key_file is None and self.key is None:
            raise ValueError(
                "privacy.pseudonymise needs a key: set privacy.key_file or "
                "STREAMSCORE_PRIVACY__KEY (streamscore privacy keygen makes one)"
            )
        for role, fields in self.topics.items():
            unknown = sorted(set(fields) - set(self.pseudonymise))
            if unknown:
                raise ValueError(
                    f"privacy.topics.{role} names {', '.join(unknown)}, which "
                    "privacy.pseudonymise does not list"
                )
        if ("event_id" in self.fields_for("shadow")) != ("event_id" in self.fields_for("store")):
            raise ValueError(
                "privacy.topics.shadow and privacy.topics.store must treat event_id alike: "
                "the challenger's store rows are keyed by the shadow records' event ids"
            )
        return self

    def fields_for(self, role: PrivacyRole) -> list[PseudonymField]:
        """The identifiers ``role`` carries pseudonymised."""
        if role in self.topics:
            return list(self.topics[role])
        return [] if role == "predictions" else list(self.pseudonymise)


class DlqSettings(Section):
    """What the dead-letter topic keeps of a rejected record's bytes."""

    #: ``raw``: the bytes as they came; ``redacted``: no payload, only its size and SHA-256
    #: (headers) besides the reason; ``encrypted``: AES-256-GCM with the privacy key (size
    #: and digest in headers too), readable with ``streamscore dlq show``.
    payload: Literal["raw", "redacted", "encrypted"] = "raw"


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
    #: The HTTP door: ``streamscore serve``.
    serve: ServeSettings = Field(default_factory=ServeSettings)
    #: The model autopilot: retrain, guarded promotion, rollback, CBPE.
    autopilot: AutopilotSettings = Field(default_factory=AutopilotSettings)
    #: Pseudonyms of identifiers, the privacy key, the audit hash chain.
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    #: What the dead-letter topic keeps of rejected bytes: raw, redacted or encrypted.
    dlq: DlqSettings = Field(default_factory=DlqSettings)
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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    privacy = data.get("privacy")
    if isinstance(privacy, dict) and "key" in privacy:
        raise ConfigError(
            f"{path} holds privacy.key: a key is never written in a settings file; put it in "
            "a file named by privacy.key_file, or in STREAMSCORE_PRIVACY__KEY"
        )


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
            shown = mask_url_passwords(shown)  # a URL's password is no less a secret
            problems.append(f"invalid setting {key}{shown}: {error['msg']}")
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}{more}; set it in streamscore.toml, STREAMSCORE_* or the command's flag"
