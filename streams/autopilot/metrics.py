"""The controller's Prometheus metrics (``streamscore_autopilot_*``), in their own registry.

Served on ``autopilot.metrics_port`` (default ``metrics.port + 2``: the processor
has the port itself, the evaluator ``+ 1``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

MODES = ("off", "recommend", "auto")


class AutopilotMetrics:
    """``streamscore_autopilot_*`` metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.mode = Gauge(
            "streamscore_autopilot_mode", "1 for the mode the controller runs in.", ["mode"],
            registry=r,
        )  # fmt: skip
        self.decision = Gauge(
            "streamscore_autopilot_verdict_decision",
            "Verdict of the current pair: 1 promote, 0 inconclusive, -1 keep.", registry=r,
        )  # fmt: skip
        self.e_value = Gauge(
            "streamscore_autopilot_verdict_e_value",
            "E-value against 'the challenger is no better' for the current pair.", registry=r,
        )  # fmt: skip
        self.paired = Gauge(
            "streamscore_autopilot_paired_labels", "Paired labels behind the current verdict.",
            registry=r,
        )  # fmt: skip
        self.guard_ok = Gauge(
            "streamscore_autopilot_guard_ok",
            "1 when a promotion guard holds for the current pair, 0 when it refuses.",
            ["guard"], registry=r,
        )  # fmt: skip
        self.estimated_accuracy = Gauge(
            "streamscore_autopilot_estimated_accuracy_ratio",
            "CBPE: accuracy estimated from calibrated confidence, last closed window.",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.realised_accuracy = Gauge(
            "streamscore_autopilot_realised_accuracy_ratio",
            "Accuracy on the labels of the same window (as they arrive).",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.estimation_error = Gauge(
            "streamscore_autopilot_estimation_error_ratio",
            "Estimated minus realised accuracy of the last closed window with labels.",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.retrain_runs = Counter(
            "streamscore_autopilot_retrain_runs_total",
            "Retraining runs by outcome (registered, rejected, failed).", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.retrain_running = Gauge(
            "streamscore_autopilot_retrain_running", "1 while a retraining flow runs.",
            registry=r,
        )  # fmt: skip
        self.actions = Counter(
            "streamscore_autopilot_actions_total",
            "Audited actions (promoted, rolled_back, promotion_recommended, ...).", ["action"],
            registry=r,
        )  # fmt: skip
        self.move_failures = Counter(
            "streamscore_autopilot_move_failures_total",
            "Alias moves that failed (undone, or left pending until MLflow answers).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.pending_move = Gauge(
            "streamscore_autopilot_pending_move",
            "1 while an alias move that failed half-way waits to be finished or undone.",
            registry=r,
        )  # fmt: skip
        self.registry_up = Gauge(
            "streamscore_autopilot_registry_up", "1 when the MLflow registry answered.",
            registry=r,
        )  # fmt: skip
        self.open_incidents = Gauge(
            "streamscore_autopilot_open_drift_incidents", "Open drift incidents seen.",
            registry=r,
        )  # fmt: skip
        self.last_tick = Gauge(
            "streamscore_autopilot_last_tick_timestamp_seconds",
            "Unix time the controller last looked at everything.", registry=r,
        )  # fmt: skip

    def set_mode(self, mode: str) -> None:
        for name in MODES:
            self.mode.labels(mode=name).set(1 if name == mode else 0)
