"""Settings of the scoring loop: the processor, its models, shadow/A-B, the prediction
store and drift detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from schemas.settings.base import Section, _OrderedThresholds, epoch_ms


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
