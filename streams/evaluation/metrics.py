"""The evaluator's Prometheus metrics (``streamscore_evaluator_*``), in their own registry.

The evaluator serves them on ``metrics.port + 1``: the scoring loop has the port itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500)


class EvaluatorMetrics:
    """``streamscore_evaluator_*`` metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.labels = Counter(
            "streamscore_evaluator_labels_total",
            "Labels consumed, by outcome (matched, partial, missing, undecodable, invalid).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.missing = Counter(
            "streamscore_evaluator_missing_predictions_total",
            "Valid labels whose prediction was missing or expired, by variant.",
            ["variant"], registry=r,
        )  # fmt: skip
        self.expired = Counter(
            "streamscore_evaluator_expired_window_labels_total",
            "Labels too late for their windows' retention (cumulative only), by window kind.",
            ["window"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "streamscore_evaluator_batch_size_labels", "Labels per batch.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_seconds = Counter(
            "streamscore_evaluator_stage_seconds_total",
            "Time spent per stage (decode, lookup, tables, commit, emit).", ["stage"],
            registry=r,
        )  # fmt: skip
        self.refetched = Counter(
            "streamscore_evaluator_refetched_labels_total",
            "Labels Faust skipped, read back from the broker (see Evaluator.complete_batch).",
            registry=r,
        )
        self.store_errors = Counter(
            "streamscore_evaluator_store_errors_total",
            "Failed prediction-store lookups (the batch is retried).", registry=r,
        )  # fmt: skip
        self.emitted = Counter(
            "streamscore_evaluator_records_emitted_total",
            "Evaluation records produced, by window kind.", ["window"], registry=r,
        )  # fmt: skip
        self.accuracy = Gauge(
            "streamscore_evaluator_accuracy_ratio", "Cumulative online accuracy.",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.evaluated = Gauge(
            "streamscore_evaluator_evaluated_labels", "Labels evaluated (cumulative).",
            ["variant", "model_version"], registry=r,
        )  # fmt: skip
        self.e_value = Gauge(
            "streamscore_evaluator_verdict_e_value",
            "Current e-value against 'the challenger is no better'.", registry=r,
        )  # fmt: skip
        self.decision = Gauge(
            "streamscore_evaluator_verdict_decision",
            "Verdict: 1 promote, 0 inconclusive, -1 keep.", registry=r,
        )  # fmt: skip
        self.paired = Gauge(
            "streamscore_evaluator_paired_labels", "Paired labels in the current comparison.",
            registry=r,
        )  # fmt: skip
        self.watermark = Gauge(
            "streamscore_evaluator_watermark_timestamp_seconds",
            "Largest labelled_at seen (event time).", registry=r,
        )  # fmt: skip
        self.last_batch = Gauge(
            "streamscore_evaluator_last_batch_timestamp_seconds",
            "Unix time the last label batch was committed to the tables.", registry=r,
        )  # fmt: skip
