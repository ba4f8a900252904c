"""Settings of the services beside the loop: the HTTP server, the autopilot (retraining,
CBPE), privacy and the dead-letter payload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from schemas.settings.base import Section


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
