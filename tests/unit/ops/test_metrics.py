"""Metrics: exact batch histogram buckets, the exposition parsed back, health bodies, HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.metrics import BatchHistogram, Health, Metrics, serve


def samples(exposition: bytes, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one metric family."""
    for fam in text_string_to_metric_families(exposition.decode()):
        if fam.name == family:
            return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
    raise AssertionError(f"{family} not exposed")


def test_batch_histogram_counts_and_sum_are_exact() -> None:
    registry = CollectorRegistry()
    hist = BatchHistogram("lat_seconds", "Latency.", (1.0, 2.0, 5.0), registry)
    hist.observe_many(np.array([0.5, 1.0, 1.5, 2.0, 3.0, 10.0]))
    counts, total = hist.snapshot()
    # a value equal to a bound belongs to that bucket (Prometheus "le")
    assert counts.tolist() == [2, 2, 1, 1]
    assert total == 18.0
    hist.observe_many(np.array([], dtype=np.float64))  # an empty batch changes nothing
    hist.observe_many(np.array([5.0, 0.25]))
    counts, total = hist.snapshot()
    assert counts.tolist() == [3, 2, 2, 1]
    assert total == 23.25


@pytest.mark.parametrize(
    "value", [0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 0.0, -1.0, float("inf"), float("nan")]
)
def test_a_value_observed_n_times_counts_as_n_observations_of_it(value: float) -> None:
    registry = CollectorRegistry()
    one_by_one = BatchHistogram("a_seconds", "A.", (1.0, 2.0, 5.0), registry)
    repeated = BatchHistogram("b_seconds", "B.", (1.0, 2.0, 5.0), registry)
    one_by_one.observe_many(np.full(7, value))
    repeated.observe_repeated(value, 7)
    repeated.observe_repeated(value, 0)  # nothing scored: nothing observed
    (counts, total), (expected, expected_total) = repeated.snapshot(), one_by_one.snapshot()
    assert counts.tolist() == expected.tolist()
    assert total == pytest.approx(expected_total, nan_ok=True)


def test_batch_histogram_exposition_is_a_cumulative_prometheus_histogram() -> None:
    registry = CollectorRegistry()
    hist = BatchHistogram("lat_seconds", "Latency.", (1.0, 2.0, 5.0), registry)
    hist.observe_many(np.array([0.5, 1.0, 1.5, 2.0, 3.0, 10.0]))
    from prometheus_client.exposition import generate_latest

    got = samples(generate_latest(registry), "lat_seconds")
    assert got == {
        ("lat_seconds_bucket", (("le", "1.0"),)): 2.0,
        ("lat_seconds_bucket", (("le", "2.0"),)): 4.0,
        ("lat_seconds_bucket", (("le", "5.0"),)): 5.0,
        ("lat_seconds_bucket", (("le", "+Inf"),)): 6.0,
        ("lat_seconds_count", ()): 6.0,
        ("lat_seconds_sum", ()): 18.0,
    }


def test_batch_histogram_before_any_observation_is_all_zero() -> None:
    registry = CollectorRegistry()
    BatchHistogram("idle_seconds", "Idle.", (0.1,), registry)
    from prometheus_client.exposition import generate_latest

    assert samples(generate_latest(registry), "idle_seconds") == {
        ("idle_seconds_bucket", (("le", "0.1"),)): 0.0,
        ("idle_seconds_bucket", (("le", "+Inf"),)): 0.0,
        ("idle_seconds_count", ()): 0.0,
        ("idle_seconds_sum", ()): 0.0,
    }


def test_metrics_exposition_parses_with_exact_values() -> None:
    m = Metrics()
    m.consumed.labels(role="events").inc(12)
    m.outcomes.labels(outcome="scored").inc(9)
    m.outcomes.labels(outcome="dead_lettered").inc(3)
    m.dead_letters.labels(stage="validate", reason="OutOfRange").inc(2)
    m.dead_letters.labels(stage="decode", reason="Undecodable").inc()
    m.batch_size.observe(12)
    m.processing_latency.observe_many(np.full(9, 0.003))
    m.model_info.labels(role="champion").info({"name": "shuttle-gbm", "version": "1"})
    text = m.exposition()

    assert samples(text, "streamscore_events_consumed") == {
        ("streamscore_events_consumed_total", (("role", "events"),)): 12.0
    }
    assert samples(text, "streamscore_dead_letters") == {
        ("streamscore_dead_letters_total", (("reason", "OutOfRange"), ("stage", "validate"))): 2.0,
        ("streamscore_dead_letters_total", (("reason", "Undecodable"), ("stage", "decode"))): 1.0,
    }
    outcomes = samples(text, "streamscore_events")
    assert outcomes[("streamscore_events_total", (("outcome", "scored"),))] == 9.0
    assert outcomes[("streamscore_events_total", (("outcome", "dead_lettered"),))] == 3.0
    latency = samples(text, "streamscore_processing_latency_seconds")
    assert latency[("streamscore_processing_latency_seconds_bucket", (("le", "0.0025"),))] == 0.0
    assert latency[("streamscore_processing_latency_seconds_bucket", (("le", "0.005"),))] == 9.0
    assert latency[("streamscore_processing_latency_seconds_count", ())] == 9.0
    assert latency[("streamscore_processing_latency_seconds_sum", ())] == pytest.approx(0.027)
    batch = samples(text, "streamscore_batch_size_events")
    assert batch[("streamscore_batch_size_events_bucket", (("le", "10.0"),))] == 0.0
    assert batch[("streamscore_batch_size_events_bucket", (("le", "50.0"),))] == 1.0
    info = samples(text, "streamscore_model_info")
    assert info == {
        (
            "streamscore_model_info",
            (("name", "shuttle-gbm"), ("role", "champion"), ("version", "1")),
        ): 1.0
    }


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a second instance must not collide with the first
    a.commits.inc(3)
    assert samples(a.exposition(), "streamscore_commits")[("streamscore_commits_total", ())] == 3
    assert samples(b.exposition(), "streamscore_commits")[("streamscore_commits_total", ())] == 0


# -- health ---------------------------------------------------------------------------------------


def test_ready_lists_what_fails_then_passes() -> None:
    health = Health()
    ok, body = health.ready()
    assert not ok
    assert body == {
        "status": "not_ready",
        "checks": {
            "partitions_assigned": False,
            "champion_loaded": False,
            "broker_reachable": False,
        },
        "reason": "failing: partitions_assigned, champion_loaded, broker_reachable",
    }
    health.champion_loaded = True
    health.broker_reachable = True
    health.problems["redis"] = "connection refused"
    ok, body = health.ready()
    assert not ok
    assert body["reason"] == "failing: partitions_assigned"
    assert body["problems"] == {"redis": "connection refused"}
    health.partitions_assigned = 3
    health.problems.clear()
    assert health.ready() == (
        True,
        {
            "status": "ready",
            "checks": {
                "partitions_assigned": True,
                "champion_loaded": True,
                "broker_reachable": True,
            },
        },
    )


def test_live_turns_stalled_after_the_stall_time() -> None:
    health = Health(stall_after_s=30.0)
    ok, body = health.live()
    assert ok
    assert body["status"] == "ok"
    assert set(body) == {"status", "loop_idle_seconds"}
    health.last_progress -= 31.0
    ok, body = health.live()
    assert not ok
    assert body["status"] == "stalled"
    assert body["loop_idle_seconds"] >= 31.0
    assert body["reason"] == f"the loop made no progress for {body['loop_idle_seconds']:.0f}s"
    health.progress()
    assert health.live()[0]


# -- HTTP -----------------------------------------------------------------------------------------


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


@pytest.fixture
def server() -> Iterator[tuple[str, Metrics, Health]]:
    metrics, health = Metrics(), Health()
    srv = serve(metrics, health, "127.0.0.1", 0)
    host, port = srv.server_address[:2]
    try:
        yield f"http://{host}:{port}", metrics, health
    finally:
        srv.shutdown()
        srv.server_close()


def test_serve_answers_metrics_health_and_readiness(server: tuple[str, Metrics, Health]) -> None:
    base, metrics, health = server
    metrics.consumed.labels(role="events").inc(5)

    status, ctype, body = get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert samples(body, "streamscore_events_consumed") == {
        ("streamscore_events_consumed_total", (("role", "events"),)): 5.0
    }

    status, ctype, body = get(base + "/healthz")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["status"] == "ok"

    status, _, body = get(base + "/readyz")
    assert status == 503
    not_ready: dict[str, Any] = json.loads(body)
    assert not_ready["status"] == "not_ready"

    health.partitions_assigned = 1
    health.champion_loaded = True
    health.broker_reachable = True
    status, _, body = get(base + "/readyz")
    assert status == 200
    assert json.loads(body)["status"] == "ready"

    health.last_progress -= 3600
    status, _, body = get(base + "/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stalled"

    status, _, body = get(base + "/nowhere")
    assert status == 404
    assert json.loads(body) == {"error": "not found"}
