"""The supervisor's pure parts: --workers parsing, the summed summary, one exposition of
many workers (each sample labelled with its worker), the health of the whole."""

from __future__ import annotations

import json
import os

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import Settings
from streams.scoring.supervisor import Supervisor, _Workers, worker_count


def test_worker_count() -> None:
    assert worker_count(None) == 1
    assert worker_count("3") == 3
    assert worker_count(2) == 2
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(ConfigError):
            worker_count(bad)


def exposition(consumed: float) -> str:
    registry = CollectorRegistry()
    Counter("streamscore_events_consumed_total", "Consumed.", ["role"], registry=registry).labels(
        role="events"
    ).inc(consumed)
    return generate_latest(registry).decode()


class Scripted(Supervisor):
    """A supervisor whose workers answer from a script instead of over HTTP."""

    def __init__(self, answers: dict[str, list[tuple[int, str | None]]]) -> None:
        super().__init__(Settings(), len(answers["/metrics"]))
        self.answers = answers

    def scrape(self, path: str) -> list[tuple[int, str | None]]:
        return self.answers[path]


def test_one_exposition_labels_each_sample_with_its_worker() -> None:
    supervisor = Scripted({"/metrics": [(0, exposition(7)), (1, exposition(5)), (2, None)]})
    text = generate_latest(_Workers(supervisor)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    consumed = "streamscore_events_consumed_total"
    assert samples[(consumed, (("role", "events"), ("worker", "0")))] == 7
    assert samples[(consumed, (("role", "events"), ("worker", "1")))] == 5
    assert samples[("streamscore_workers", ())] == 3
    assert text.count("# TYPE streamscore_events_consumed_total counter") == 1


def test_health_is_ok_only_when_every_worker_is() -> None:
    ready = json.dumps({"status": "ready"})
    supervisor = Scripted({"/metrics": [(0, ""), (1, "")], "/readyz": [(0, ready), (1, None)]})
    ok, body = supervisor.health("/readyz")
    assert not ok
    assert body["workers"] == {"0": {"status": "ready"}, "1": {"status": "down"}}
    supervisor.answers["/readyz"] = [(0, ready), (1, ready)]
    assert supervisor.health("/readyz") == (
        True,
        {"status": "ready", "workers": {"0": {"status": "ready"}, "1": {"status": "ready"}}},
    )


def test_summary_adds_the_workers_up_and_a_failure_fails_the_run() -> None:
    supervisor = Scripted({"/metrics": [(0, ""), (1, "")]})
    supervisor.summaries = {
        0: {"events_in": 10, "predictions": 9, "dead_letters": 1, "batches": 2, "commits": 1,
            "dead_letters_by_reason": {"OutOfRange": 1}, "throughput_eps": 100.0,
            "latency_target": {"met": True}},
        1: {"events_in": 5, "predictions": 5, "dead_letters": 0, "batches": 1, "commits": 1,
            "dead_letters_by_reason": {}, "throughput_eps": 50.0,
            "latency_target": {"met": False}},
    }  # fmt: skip
    summary = supervisor.summary()
    assert (summary["workers"], summary["events_in"], summary["predictions"]) == (2, 15, 14)
    assert summary["dead_letters_by_reason"] == {"OutOfRange": 1}
    assert summary["throughput_eps"] == 150.0
    assert summary["latency_target_met"] is False
    assert len(summary["per_worker"]) == 2
    supervisor.failures[1] = "exited with code 1"
    with pytest.raises(InfrastructureError, match="1 of 2 workers failed: worker 1: exited"):
        supervisor.summary()
