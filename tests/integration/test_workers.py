"""``streamscore run --workers 2``: two consumer-group members under one supervisor.

The supervisor runs as a real command (a subprocess), configured the way a deployment
is, through ``STREAMSCORE_*`` variables. Counts only: every event scored (duplicates
allowed by at-least-once, none lost), both workers on the one ``/metrics``, and SIGTERM
ends both cleanly with a summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka_admin import ensure_topics
from connectors.source import SourceOptions, run_source
from schemas.serde import AvroSerde
from schemas.settings import Settings
from tests.conftest import free_port
from tests.integration.kafka_io import read_topic, wait_until

pytestmark = pytest.mark.integration

EVENTS = 3000
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def environment(settings: Settings) -> dict[str, str]:
    """The settings of the test as the ``STREAMSCORE_*`` variables a deployment sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    flat = {
        "HOME": str(settings.home),
        "KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "KAFKA__EMBEDDED": "false",
        "REDIS__URL": settings.redis.url,
        "REDIS__EMBEDDED": "false",
        "MODELS__DIR": str(settings.models.dir),
        "PROCESSOR__GROUP_ID": settings.processor.group_id,
        "PROCESSOR__COMMIT_INTERVAL_MS": str(settings.processor.commit_interval_ms),
        "METRICS__ENABLED": "true",
        "METRICS__PORT": str(settings.metrics.port),
        "METRICS__HOST": "127.0.0.1",
    }
    for role, topic in settings.topics.by_role().items():
        flat[f"TOPICS__{role.upper()}"] = topic
    env.update({f"STREAMSCORE_{k}": v for k, v in flat.items()})
    return env


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def consumed_by_worker(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["worker"]: value
        for (name, labels), value in samples.items()
        if name == "streamscore_events_consumed_total" and dict(labels).get("role") == "events"
    }


def test_two_workers_score_every_event_share_one_endpoint_and_stop_on_sigterm(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    settings = make_settings(metrics={"enabled": True, "port": port, "host": "127.0.0.1"})
    ensure_topics(settings)
    command = [sys.executable, "-m", "streams.cli.main", "run", "--workers", "2", "--json"]
    supervisor = subprocess.Popen(
        command,
        env=environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        alive: dict[str, Any] = {}

        def both_workers_up() -> bool:
            if supervisor.poll() is not None:
                raise AssertionError(f"supervisor exited: {supervisor.communicate()}")
            try:
                alive.update(scrape(port))
            except OSError:
                return False
            up = alive.get(("streamscore_workers_alive", ()), 0)
            assigned = [
                v for (name, _), v in alive.items() if name == "streamscore_assigned_partitions"
            ]
            return up == 2 and len(assigned) == 2 and sum(assigned) == settings.topics.partitions

        wait_until(both_workers_up, "two workers up with every partition assigned", timeout=45)
        report = run_source(settings, SourceOptions(count=EVENTS, run_id="workers", seed=5))
        assert report.valid == EVENTS
        wait_until(
            lambda: sum(consumed_by_worker(scrape(port)).values()) >= EVENTS,
            f"{EVENTS} events consumed over both workers",
            timeout=45,
        )
        by_worker = consumed_by_worker(scrape(port))
        assert set(by_worker) == {"0", "1"}  # one /metrics shows both members
        assert all(v > 0 for v in by_worker.values())  # the group spread the partitions
        supervisor.send_signal(signal.SIGTERM)
        out, err = supervisor.communicate(timeout=40)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.communicate()
    assert supervisor.returncode == 0, err
    summary = json.loads(out)
    assert summary["workers"] == 2
    assert [w["exit_reason"] for w in summary["per_worker"]] == ["SIGTERM", "SIGTERM"]
    assert summary["events_in"] >= EVENTS
    predictions = read_topic(settings, settings.topics.predictions, EVENTS)
    serde = AvroSerde("prediction")
    scored = {serde.decode(r.value)["event_id"] for r in predictions if r.value}
    assert len(scored) == EVENTS  # 0 lost (a replay after the rebalance may duplicate)
