"""What ops see of a running processor (issue 6): metrics, health, lag and drift, on a real broker.

Metrics are scraped over HTTP from ``/metrics`` and parsed with
``prometheus_client.parser``, the way Prometheus reads them. Lag is checked
against per-partition counts known in advance: events are produced one per
producer batch (``batch.num.messages=1``), so the embedded broker's high
watermarks are exact (see DESIGN.md). Numbers are counts; no speed is asserted.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import Consumer
from connectors.kafka_admin import ensure_topics
from connectors.lag import group_lag
from connectors.source import ProduceReport, SourceOptions, run_source
from schemas.errors import ConfigError
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.ops.metrics import serve
from streams.scoring.compose import build_processor, run_processor
from streams.scoring.processor import Processor
from tests.conftest import free_port
from tests.integration.kafka_io import read_topic, running, wait_until

pytestmark = pytest.mark.integration

EVENT = AvroSerde("sensor_event")
DRIFT = AvroSerde("drift_event")
#: The stage that rejects each kind of invalid event the source injects.
STAGE_OF_REASON = {
    "Oversized": "size",
    "Undecodable": "decode",
    "MissingFeature": "validate",
    "NonFiniteValue": "validate",
    "OutOfRange": "validate",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- helpers ----------------------------------------------------------------------------------


@contextmanager
def http_endpoints(processor: Processor, settings: Settings) -> Iterator[str]:
    """/metrics, /healthz and /readyz of ``processor`` on the settings' metrics port."""
    m = settings.metrics
    server = serve(processor.metrics, processor.health, m.host, m.port)
    try:
        yield f"http://{m.host}:{m.port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(base: str) -> Samples:
    status, body = get(base + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def ops_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    metrics = {"enabled": True, "port": free_port(), **overrides.pop("metrics", {})}
    settings = make_settings(metrics=metrics, **overrides)
    ensure_topics(settings)
    return settings


def produce_one_per_batch(settings: Settings, count: int, run_id: str) -> ProduceReport:
    options = SourceOptions(count=count, run_id=run_id, seed=len(run_id))
    report = run_source(settings, options, keep_ids=True, **{"batch.num.messages": 1})
    assert report.valid == count
    return report


def partition_counts(settings: Settings, expected: int) -> dict[str, Counter[int]]:
    """Records of the events topic per partition, by source run (the event id prefix)."""
    counts: dict[str, Counter[int]] = {}
    for r in read_topic(settings, settings.topics.events, expected):
        run_id = EVENT.decode(r.value)["event_id"].rsplit("-", 1)[0]
        counts.setdefault(run_id, Counter())[r.partition] += 1
    assert sum(sum(c.values()) for c in counts.values()) == expected
    return counts


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_have_the_right_labels_and_move_when_events_flow(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ops_settings(
        make_settings,
        drift={"window_events": 1000, "min_window_events": 200},
        shadow={"max_pending_batches": 1000},  # the shadow count below is exact: nothing dropped
    )
    processor = build_processor(settings)
    champion, challenger = processor.champion, processor.challenger
    assert challenger is not None

    def shadow_scored() -> float:
        found = processor.metrics.registry.get_sample_value(
            "streamscore_shadow_events_total", {"outcome": "scored"}
        )
        return found or 0.0

    with http_endpoints(processor, settings) as base, running(processor):
        before = scrape(base)
        options = SourceOptions(count=3000, invalid_fraction=0.1, seed=17, run_id="ops")
        report = run_source(settings, options, keep_ids=True)
        wait_until(lambda: processor.summary.events_in >= 3000, "3000 events consumed")
        wait_until(lambda: processor.summary.commits >= 2, "two commits")
        # The challenger scores off the loop, on its own thread: let it finish.
        wait_until(lambda: shadow_scored() >= report.valid, "the shadow scoring")
        after = scrape(base)
        batches = processor.summary.batches

    n_valid, n_invalid = report.valid, sum(report.invalid_by_reason.values())
    assert n_invalid > 200 and n_valid + n_invalid == 3000
    consumed = "streamscore_events_consumed_total"
    assert value(before, consumed, role="events") in (None, 0.0)
    assert value(after, consumed, role="events") == 3000

    produced = "streamscore_records_produced_total"
    assert value(after, produced, role="predictions") == n_valid
    assert value(after, produced, role="audit") == n_valid
    assert value(after, produced, role="dlq") == n_invalid
    assert value(after, "streamscore_events_total", outcome="scored") == n_valid
    assert value(after, "streamscore_events_total", outcome="dead_lettered") == n_invalid
    dead = labelled(after, "streamscore_dead_letters_total")
    expected_dead = Counter(
        {
            (("reason", reason), ("stage", STAGE_OF_REASON[reason])): count
            for reason, count in report.invalid_by_reason.items()
        }
    )
    assert dead == expected_dead

    assert value(after, "streamscore_batch_size_events_count") == batches
    assert value(after, "streamscore_batch_size_events_sum") == 3000
    assert value(after, "streamscore_batch_size_events_bucket", le="+Inf") == batches
    stages = labelled(after, "streamscore_stage_seconds_total")
    for stage in ("size", "decode", "validate", "score", "encode", "produce"):
        assert stages[(("stage", stage),)] > 0, stage
    for latency in ("end_to_end", "processing"):
        name = f"streamscore_{latency}_latency_seconds"
        assert value(before, name + "_count") == 0
        assert value(after, name + "_count") == n_valid
        assert value(after, name + "_bucket", le="+Inf") == n_valid
        assert (value(after, name + "_sum") or 0) > 0

    info = labelled(after, "streamscore_model_info")
    assert info == {
        (
            ("name", model.name),
            ("role", role),
            ("task", "classification"),
            ("version", model.version),
        ): 1.0
        for role, model in (("champion", champion), ("challenger", challenger))
    }
    psi = labelled(after, "streamscore_drift_psi")
    assert sorted(psi) == [(("feature", name),) for name in sorted(champion.feature_names)]
    assert all(v >= 0 for v in psi.values())
    assert value(after, "streamscore_shadow_events_total", outcome="scored") == n_valid

    for dependency in ("kafka", "redis"):
        assert value(after, "streamscore_dependency_up", dependency=dependency) == 1
    assert value(after, "streamscore_assigned_partitions") == settings.topics.partitions
    assert value(after, "streamscore_rebalances_total", kind="assign") == 1
    assert (value(after, "streamscore_commits_total") or 0) >= 2
    assert (value(after, "streamscore_last_progress_timestamp_seconds") or 0) > 0


# -- health -----------------------------------------------------------------------------------


def test_readyz_turns_ready_after_assignment_and_healthz_is_ok_while_the_loop_runs(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ops_settings(make_settings)
    processor = build_processor(settings)

    with http_endpoints(processor, settings) as base:
        status, body = get(base + "/readyz")
        assert status == 503
        not_ready = json.loads(body)
        assert not_ready["status"] == "not_ready"
        assert not_ready["checks"]["partitions_assigned"] is False
        assert not_ready["checks"]["champion_loaded"] is True
        assert "partitions_assigned" in not_ready["reason"]

        with running(processor, wait_for_assignment=False):
            wait_until(lambda: get(base + "/readyz")[0] == 200, "/readyz to turn 200")
            status, body = get(base + "/readyz")
            ready = json.loads(body)
            live_status, live_body = get(base + "/healthz")
            assigned = processor.health.partitions_assigned
        assert (status, ready["status"]) == (200, "ready")
        assert ready["checks"] == {
            "partitions_assigned": True,
            "champion_loaded": True,
            "broker_reachable": True,
        }
        assert assigned == settings.topics.partitions
        assert live_status == 200 and json.loads(live_body)["status"] == "ok"
        assert get(base + "/nothing-here")[0] == 404


def test_without_a_loadable_champion_the_processor_never_reports_ready(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    settings = ops_settings(make_settings, models={"dir": empty})

    with pytest.raises(ConfigError, match="no usable champion"):
        run_processor(settings, exit_when_idle=1)

    # The endpoints went away with the process's attempt: nothing answers "ready".
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics.port}/readyz", timeout=2)


# -- lag --------------------------------------------------------------------------------------


def test_lag_per_partition_is_end_minus_committed_after_a_known_number_of_events(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    ensure_topics(settings)
    topic, group = settings.topics.events, settings.processor.group_id
    produce_one_per_batch(settings, 300, "done")
    first = build_processor(settings)
    summary = first.run(exit_when_idle=2)
    assert summary.events_in == 300
    with pytest.raises(RuntimeError, match="closed"):  # its client ended with the run
        first.producer.produce(settings.topics.predictions, b"late", b"k")
    produce_one_per_batch(settings, 200, "pending")  # produced while no processor runs
    counts = partition_counts(settings, 500)
    done, pending = counts["done"], counts["pending"]

    lag = group_lag(settings.kafka, group, [topic])

    partitions = range(settings.topics.partitions)
    assert [(p.partition, p.committed, p.high) for p in lag] == [
        (p, done[p], done[p] + pending[p]) for p in partitions
    ]
    assert [p.lag for p in lag] == [pending[p] for p in partitions]
    assert sum(p.lag for p in lag) == 200
    # The group member's own view (committed() and watermarks) agrees with the admin API's.
    member = Consumer(settings.kafka, group_id=group, client_id="lag-viewer")
    try:
        assert member.offsets(topic) == lag
    finally:
        member.close()

    # A processor that catches up commits everything: the lag falls to zero.
    assert build_processor(settings).run(exit_when_idle=2).events_in == 200
    assert [p.lag for p in group_lag(settings.kafka, group, [topic])] == [0] * len(partitions)


def test_processor_exports_consumer_lag_per_partition(
    make_settings: Callable[..., Settings],
) -> None:
    # No commit while the test looks (interval far away): the lag stays at what was produced.
    settings = ops_settings(
        make_settings, processor={"commit_interval_ms": 600_000}, metrics={"lag_interval_s": 0.3}
    )
    topic, group = settings.topics.events, settings.processor.group_id
    processor = build_processor(settings)
    produce_one_per_batch(settings, 300, "lagged")
    produced = partition_counts(settings, 300)["lagged"]
    expected = {p: produced[p] for p in range(settings.topics.partitions)}
    series = "streamscore_consumer_lag_records"

    def exported(base: str) -> dict[int, float]:
        return {
            int(dict(labels)["partition"]): v
            for labels, v in labelled(scrape(base), series).items()
            if dict(labels).get("topic") == topic
        }

    with http_endpoints(processor, settings) as base, running(processor):
        wait_until(lambda: processor.summary.events_in >= 300, "300 events consumed")
        assert processor.summary.commits == 0
        truth = {p.partition: p.lag for p in group_lag(settings.kafka, group, [topic])}
        # Refreshed on a timer, off the loop: wait for a refresh that saw the consumed events.
        deadline = time.monotonic() + 20
        while exported(base) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = exported(base)

    assert truth == expected  # never committed: lag = end - low = everything produced
    assert seen == expected


# -- drift ------------------------------------------------------------------------------------


def test_a_shifted_feature_produces_drift_records_naming_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = ops_settings(make_settings, drift={"window_events": 1000, "min_window_events": 200})
    processor = build_processor(settings)
    options = SourceOptions(
        count=4000,
        rate=1000.0,  # arrival order ~ production order: windows are before or after the shift
        shift_at=2000,
        shift_feature="f1",
        shift_sigma=2.0,
        seed=5,
        run_id="shift",
    )
    with running(processor):
        report = run_source(settings, options, keep_ids=True)
        wait_until(lambda: processor.summary.events_in >= 4000, "4000 events consumed")

    assert report.valid == 4000
    records = [DRIFT.decode(r.value) for r in read_topic(settings, settings.topics.drift, 1)]
    psi = [r for r in records if r["detector"] == "psi"]
    opened = [r for r in psi if r["status"] == "open"]
    assert [r["target"] for r in opened] == ["f1"]
    f1 = opened[0]
    assert f1["severity"] in ("warning", "alert")
    assert f1["statistic"] >= f1["threshold"]
    assert f1["window_events"] > 0
    assert (f1["model_name"], f1["model_version"]) == (
        processor.champion.name,
        processor.champion.version,
    )
    emitted = Counter((r["detector"], r["severity"]) for r in records)
    counted = {
        (detector, severity): processor.metrics.registry.get_sample_value(
            "streamscore_drift_events_total", {"detector": detector, "severity": severity}
        )
        for detector, severity in emitted
    }
    assert counted == dict(emitted)
    # The last window (events 3000-3999) is all shifted: the f1 gauge shows it.
    gauge = processor.metrics.registry.get_sample_value("streamscore_drift_psi", {"feature": "f1"})
    assert gauge is not None and gauge >= settings.drift.warning
