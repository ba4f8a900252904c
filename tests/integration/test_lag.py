"""Consumer-group lag against a real broker: the embedded Tansu broker on free ports.

Records are produced one per producer batch (``batch.num.messages=1``) to
explicit partitions, so Tansu's high watermarks are exact and every expected
number below is known in advance. Each test uses its own topic and group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer as RawProducer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from typer.testing import CliRunner

from connectors.embedded import EmbeddedStack
from connectors.kafka import Consumer, PartitionOffsets
from connectors.kafka_admin import Admin
from connectors.lag import UnknownTopic, group_lag, list_groups
from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings, RedisSettings, Settings
from streams.cli.ops import lag_table, ops_app
from streams.ops.lag import (
    LOWER_BOUND_NOTE,
    GroupLagCollector,
    LagRow,
    LagSample,
    lag_rows,
    watch_lag,
)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("lag-home")
    s = Settings(
        home=home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", embedded=True),
        redis=RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", embedded=True),
    )
    stack = EmbeddedStack(s)
    stack.up()
    try:
        yield s
    finally:
        stack.down()


def new_topic(settings: Settings, counts: dict[int, int]) -> str:
    """A fresh topic with ``len(counts)`` partitions holding ``counts[p]`` records each."""
    topic = f"lag.{uuid.uuid4().hex[:8]}"
    Admin(settings.kafka).ensure_topics([topic], partitions=len(counts))
    producer = RawProducer(
        {
            **settings.kafka.client_properties(),
            "batch.num.messages": 1,
            "linger.ms": 0,
            "acks": "all",
        }
    )
    for partition, n in counts.items():
        for i in range(n):
            producer.produce(topic, f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    return topic


def commit(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer(settings.kafka, group_id=group, client_id=f"{group}-committer")
    try:
        consumer.commit(offsets)
    finally:
        consumer.close()


def unreachable_kafka() -> KafkaSettings:
    """A closed local port; librdkafka's connection-refused logging silenced."""
    return KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        embedded=False,
        client_config={"log_level": "0"},
    )


def fresh_group() -> str:
    return f"lag-group-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- group_lag


@pytest.mark.integration
def test_lag_is_end_minus_committed_per_partition(settings: Settings) -> None:
    topic = new_topic(settings, {0: 10, 1: 20, 2: 15})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 4, (topic, 1): 20})

    result = group_lag(settings.kafka, group, [topic])

    assert result == [
        PartitionOffsets(topic, 0, committed=4, low=0, high=10),
        PartitionOffsets(topic, 1, committed=20, low=0, high=20),
        PartitionOffsets(topic, 2, committed=None, low=0, high=15),
    ]
    assert [p.lag for p in result] == [6, 0, 15]
    # The group member's own view (committed() + watermarks) agrees.
    member = Consumer(settings.kafka, group_id=group, client_id="viewer")
    try:
        assert member.offsets(topic) == result
    finally:
        member.close()


@pytest.mark.integration
def test_without_topics_the_group_committed_topics_are_listed(settings: Settings) -> None:
    committed_topic = new_topic(settings, {0: 3, 1: 5})
    other_topic = new_topic(settings, {0: 7})
    group = fresh_group()
    commit(settings, group, {(committed_topic, 1): 2})

    result = group_lag(settings.kafka, group)

    assert {p.topic for p in result} == {committed_topic}
    assert other_topic not in {p.topic for p in result}
    assert [(p.partition, p.committed, p.high, p.lag) for p in result] == [
        (0, None, 3, 3),
        (1, 2, 5, 3),
    ]


@pytest.mark.integration
def test_lag_falls_to_zero_once_the_end_is_committed(settings: Settings) -> None:
    topic = new_topic(settings, {0: 8, 1: 2})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 1, (topic, 1): 1})
    assert sum(p.lag for p in group_lag(settings.kafka, group, [topic])) == 8

    commit(settings, group, {(topic, 0): 8, (topic, 1): 2})

    assert [p.lag for p in group_lag(settings.kafka, group, [topic])] == [0, 0]


@pytest.mark.integration
def test_a_commit_sent_without_waiting_is_answered_by_a_later_consume(settings: Settings) -> None:
    topic = new_topic(settings, {0: 6, 1: 3})
    group = fresh_group()
    member = Consumer(settings.kafka, group_id=group, client_id=f"{group}-async")
    try:
        assert member.commit_async({(topic, 0): 5, (topic, 1): 3}) is True
        assert member.commit_answers() == []  # nothing answered before a consume serves it
        answers: list[tuple[dict[tuple[str, int], int], bool]] = []
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            member.consume(1, 0.05)
            answers = member.commit_answers()
        assert answers == [({(topic, 0): 5, (topic, 1): 3}, True)]
        assert member.commit({(topic, 0): 6}) is True
        member.consume(1, 0.05)
        assert member.commit_answers() == []  # a synchronous commit answers itself
    finally:
        member.close()
    assert [(p.committed, p.lag) for p in group_lag(settings.kafka, group, [topic])] == [
        (6, 0),
        (3, 0),
    ]


@pytest.mark.integration
def test_unknown_group_has_no_partitions_unless_topics_are_named(settings: Settings) -> None:
    topic = new_topic(settings, {0: 4, 1: 1})
    group = fresh_group()

    assert group_lag(settings.kafka, group) == []
    named = group_lag(settings.kafka, group, [topic])
    assert [(p.committed, p.lag) for p in named] == [(None, 4), (None, 1)]


@pytest.mark.integration
def test_unknown_topic_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(UnknownTopic, match="does-not-exist"):
        group_lag(settings.kafka, fresh_group(), ["does-not-exist"])


@pytest.mark.integration
def test_list_groups_includes_a_group_that_committed(settings: Settings) -> None:
    topic = new_topic(settings, {0: 1})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 1})

    assert group in list_groups(settings.kafka)


@pytest.mark.integration
def test_unreachable_broker_is_an_infrastructure_error() -> None:
    kafka = unreachable_kafka()
    with pytest.raises(InfrastructureError):
        group_lag(kafka, "any", ["any"], timeout=1.0)


# --------------------------------------------------------------------------- CLI


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "true",
    }


@pytest.mark.integration
def test_lag_command_json(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = new_topic(settings, {0: 5, 1: 9})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 5, (topic, 1): 3})
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(ops_app, ["lag", "--group", group, "--topic", topic, "--json"])

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["group"] == group
    assert body["total_lag"] == 6
    assert body["end_is_lower_bound"] is True
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in body["partitions"]] == [
        (0, 5, 5, 0),
        (1, 3, 9, 6),
    ]


@pytest.mark.integration
def test_lag_command_watch_reports_the_trend(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(settings, {0: 2})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 1})
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)

    args = ["lag", "-g", group, "-t", topic, "--watch", "--count", "2", "-i", "0.2", "--json"]
    result = CliRunner().invoke(ops_app, args)

    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["partitions"][0]["trend"] == "new"
    assert second["partitions"][0]["lag_delta"] == 0
    assert second["partitions"][0]["trend"] == "steady"
    assert second["interval_s"] >= 0.2


@pytest.mark.integration
def test_lag_command_table_and_unknown_topic_exit_code(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = new_topic(settings, {0: 3})
    group = fresh_group()
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    table = runner.invoke(ops_app, ["lag", "-g", group, "-t", topic])
    missing = runner.invoke(ops_app, ["lag", "-g", group, "-t", "no-such-topic"])

    assert table.exit_code == 0, table.output
    assert topic in table.output and "lower bounds" in table.output
    assert missing.exit_code == 2  # a name to fix: a usage mistake
    assert "no-such-topic" in missing.output


@pytest.mark.integration
def test_on_the_root_cli_the_commands_read_its_config_file(
    settings: Settings, tmp_path: Path
) -> None:
    topic = new_topic(settings, {0: 4})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 1})
    config = tmp_path / "streamscore.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{settings.kafka.bootstrap_servers}"\nembedded = false\n'
    )
    from streams.cli.main import app as root

    result = CliRunner().invoke(root, ["--config", str(config), "lag", "-g", group, "-t", topic])

    assert result.exit_code == 0, result.output
    assert topic in result.output
    assert "lower bounds" not in result.output  # embedded = false came from the file


@pytest.mark.integration
def test_groups_command_lists_groups(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = new_topic(settings, {0: 1})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 1})
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(ops_app, ["groups", "--json"])

    assert result.exit_code == 0, result.output
    assert group in json.loads(result.stdout)


# --------------------------------------------------------------------------- exporter


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.integration
def test_exporter_reports_lag_committed_and_end_per_partition(settings: Settings) -> None:
    topic = new_topic(settings, {0: 6, 1: 4})
    group = fresh_group()
    commit(settings, group, {(topic, 0): 2})
    registry = CollectorRegistry()
    registry.register(
        GroupLagCollector([group], lambda g: group_lag(settings.kafka, g, [topic], timeout=5))
    )

    samples = scrape(registry)

    def labels(partition: int) -> tuple[tuple[str, str], ...]:
        return (("consumer_group", group), ("partition", str(partition)), ("topic", topic))

    assert samples[("streamscore_group_lag_records", labels(0))] == 4
    assert samples[("streamscore_group_lag_records", labels(1))] == 4
    assert samples[("streamscore_group_committed_offset", labels(0))] == 2
    assert ("streamscore_group_committed_offset", labels(1)) not in samples
    end = (("partition", "0"), ("topic", topic))
    assert samples[("streamscore_partition_end_offset", end)] == 6
    assert samples[("streamscore_lag_exporter_up", (("consumer_group", group),))] == 1


@pytest.mark.integration
def test_exporter_reports_down_and_no_stale_numbers_when_kafka_is_unreachable() -> None:
    kafka = unreachable_kafka()
    registry = CollectorRegistry()
    registry.register(GroupLagCollector(["g"], lambda g: group_lag(kafka, g, ["t"], timeout=1)))

    samples = scrape(registry)

    assert samples == {("streamscore_lag_exporter_up", (("consumer_group", "g"),)): 0.0}


@pytest.mark.integration
def test_lag_exporter_command_serves_metrics_and_stops_on_sigterm(settings: Settings) -> None:
    topic = new_topic(settings, {0: 3})
    group = fresh_group()
    port = free_port()
    env = {**os.environ, **env_for(settings)}
    command = [sys.executable, "-m", "streams", "lag-exporter"]
    command += ["-g", group, "-t", topic, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.2)
        wanted = (
            f'streamscore_group_lag_records{{consumer_group="{group}",partition="0",'
            f'topic="{topic}"}} 3.0'
        )
        assert wanted in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- pure parts


def test_lag_rows_deltas_against_the_previous_sample() -> None:
    offsets = [
        PartitionOffsets("t", 0, committed=10, low=0, high=25),
        PartitionOffsets("t", 1, committed=None, low=5, high=9),
        PartitionOffsets("t", 2, committed=7, low=0, high=7),
    ]
    rows = lag_rows(offsets, {("t", 0): 20, ("t", 2): 3})

    assert rows == [
        LagRow("t", 0, 10, 0, 25, 15, -5),
        LagRow("t", 1, None, 5, 9, 4, None),
        LagRow("t", 2, 7, 0, 7, 0, -3),
    ]
    assert [r.trend for r in rows] == ["shrinking", "new", "shrinking"]
    assert lag_rows(offsets[:1], {("t", 0): 15})[0].trend == "steady"
    assert lag_rows(offsets[:1], {("t", 0): 1})[0].delta == 14


def test_watch_lag_samples_count_times_and_survives_errors_when_asked() -> None:
    answers: list[list[PartitionOffsets] | Exception] = [
        [PartitionOffsets("t", 0, 0, 0, 5)],
        InfrastructureError("broker restarting"),
        [PartitionOffsets("t", 0, 0, 0, 9)],
    ]

    def lookup() -> list[PartitionOffsets]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ticks = iter([100.0, 101.0, 102.0])
    slept: list[float] = []
    samples = list(
        watch_lag(
            lookup,
            "g",
            interval=1.0,
            count=3,
            keep_going=True,
            sleep=slept.append,
            clock=lambda: next(ticks),
        )
    )

    assert slept == [1.0, 1.0]
    assert [s.error for s in samples] == [None, "broker restarting", None]
    assert samples[2].rows[0].delta == 4  # against the last good sample
    assert samples[2].interval_s == 2.0
    assert samples[2].total_lag == 9

    answers[:] = [InfrastructureError("down")]
    with pytest.raises(InfrastructureError):
        list(watch_lag(lookup, "g", interval=1.0, count=1, keep_going=False))


def test_lag_table_shows_trend_total_and_the_lower_bound_note() -> None:
    sample = LagSample(
        "g",
        taken_at=0.0,
        rows=[LagRow("t", 0, 10, 0, 25, 15, 5), LagRow("t", 1, None, 0, 4, 4, -2)],
        interval_s=2.0,
    )
    console = Console(record=True, width=160)

    console.print(lag_table(sample, lower_bound=True))
    text = console.export_text()

    assert "▲ +5" in text and "▼ -2" in text
    assert "19" in text  # total lag
    assert LOWER_BOUND_NOTE.split("(")[0].strip() in " ".join(text.split())
