"""What one evaluator is told: its options, and what it derives of the champion from its bundle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from models.bundle import bundle_exists, load_bundle
from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.evaluation.policy import VerdictPolicy
from streams.evaluation.windows import WindowSpec


@dataclass(frozen=True, slots=True)
class EvaluatorOptions:
    """How one evaluator runs. ``variants[0]`` is the champion, ``variants[1]`` the challenger."""

    #: Faust app id: the consumer group and the prefix of the changelog topics.
    app_id: str = "streamscore-evaluator"
    variants: tuple[str, ...] = ("champion", "challenger")
    windows: WindowSpec = field(default_factory=WindowSpec)
    policy: VerdictPolicy = field(default_factory=VerdictPolicy)
    #: The champion's classes; None = read them from the champion bundle, if any.
    classes: tuple[str, ...] | None = None
    max_batch: int = 500
    max_wait_s: float = 0.5
    emit_interval_s: float = 5.0
    #: How long a batch waits for Redis to come back before the evaluator crashes.
    store_retry_s: float = 60.0
    #: /metrics port; None = settings.metrics.port + 1 (the processor has the port itself).
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if len(self.variants) < 1 or len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants must be distinct and not empty, got {self.variants}")
        if self.max_batch < 1 or self.max_wait_s <= 0 or self.emit_interval_s <= 0:
            raise ConfigError("max_batch, max_wait_s and emit_interval_s must be > 0")


def positive_class(settings: Settings, classes: Sequence[str] | None) -> tuple[str | None, str]:
    """The binary positive class (``classes[-1]``) and the model task, from options or bundle."""
    task = "unknown"
    if classes is None and bundle_exists(settings.models.champion_path):
        _, meta = load_bundle(settings.models.champion_path)
        task = meta.task
        classes = meta.classes if meta.task == "classification" else None
    elif classes is not None:
        task = "classification"
    if classes is not None and len(classes) == 2:
        return str(classes[-1]), task
    return None, task
