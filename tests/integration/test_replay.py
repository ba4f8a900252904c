"""Replay and backfill against the real broker: exactly the stretch asked for is scored, and
the run ends by itself.

Events are produced in three stretches stamped minutes apart in 2023 (record timestamps
set by the producer), so the embedded broker, which looks offsets up by *append* time,
answers offset 0 for all of them: what these tests prove holds where that lookup is of no
help (the processor skips the early stretch by record timestamp, counted), and as well
where it is exact (Apache Kafka: nothing skipped).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer as PlainProducer

from connectors.kafka_admin import ensure_topics
from connectors.source import SourceOptions, event_factory
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.bench.scale import processor_env
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import read_topic

pytestmark = pytest.mark.integration

PREDICTION = AvroSerde("prediction")
#: 2023-11-14T22:13:20Z; the stretches start there, one minute and two minutes later.
BASE_MS = 1_700_000_000_000
STRETCH = 600
STRETCHES = {"early": BASE_MS, "middle": BASE_MS + 60_000, "late": BASE_MS + 120_000}


def produce_stretches(settings: Settings) -> dict[str, list[str]]:
    """Three stretches of ``STRETCH`` events each, stamped 1 ms apart; their event ids."""
    ensure_topics(settings)
    producer = PlainProducer({**settings.kafka.client_properties(), "linger.ms": 5})
    ids: dict[str, list[str]] = {}
    for name, first_ms in STRETCHES.items():
        factory = event_factory(settings, SourceOptions(count=STRETCH, run_id=name), None)
        ids[name] = []
        for n in range(STRETCH):
            key, value, _ = factory.make(n, first_ms + n)
            producer.produce(settings.topics.events, value, key, timestamp=first_ms + n)
            ids[name].append(factory.event_id(n))
    assert producer.flush(30) == 0
    return ids


def scored_ids(settings: Settings, expected: int) -> Counter[str]:
    records = read_topic(settings, settings.topics.predictions, expected)
    return Counter(PREDICTION.decode(r.value)["event_id"] for r in records)


def test_the_middle_stretch_is_replayed_into_fresh_topics_and_the_run_ends(
    make_settings, tmp_path: Path
) -> None:
    live = make_settings()
    ids = produce_stretches(live)
    # A new group and fresh output topics, on the same input topic.
    replay = make_settings(topics={"events": live.topics.events})
    middle = STRETCHES["middle"]
    command = [
        sys.executable, "-m", "streams", "run", "--json",
        "--from-timestamp", "2023-11-14T22:14:20Z",  # = middle, as ISO-8601
        "--until", str(middle + STRETCH - 1),  # the middle's last stamp, as epoch ms
        "--group-id", replay.processor.group_id,
        "--output-topic", replay.topics.predictions,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, env=processor_env(replay), cwd=tmp_path, capture_output=True, timeout=120
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary = json.loads(done.stdout.decode().strip().splitlines()[-1])

    assert summary["exit_reason"] == "replay done: every partition passed 2023-11-14T22:14:20.599Z"
    assert summary["predictions"] == STRETCH
    scored = scored_ids(replay, STRETCH)
    assert scored == Counter(ids["middle"]), "exactly the middle stretch, each event once"
    report = summary["replay"]
    assert report["from"] == "2023-11-14T22:14:20.000Z"
    assert report["partitions_ended"] == replay.topics.partitions
    # The early stretch was skipped by timestamp where the broker's lookup did not (Tansu:
    # all of it), and not read at all where it did.
    assert report["skipped_before_start"] in (0, STRETCH)
    print(f"\nreplay of {STRETCH} events ended by itself in {took:.1f}s (process start included),"
          f" {report['skipped_before_start']} early events skipped by timestamp")  # fmt: skip


def test_without_until_the_replay_scores_up_to_the_end_and_stops(make_settings) -> None:
    settings = make_settings(processor={"start_from_timestamp_ms": STRETCHES["middle"]})
    ids = produce_stretches(settings)

    summary = run_processor(settings, exit_when_idle=30)  # a safety net: the replay ends it

    assert summary["exit_reason"].startswith("replay done: every partition passed")
    assert summary["predictions"] == 2 * STRETCH
    assert scored_ids(settings, 2 * STRETCH) == Counter(ids["middle"] + ids["late"])


def test_a_replay_resumes_from_the_groups_committed_offsets(make_settings) -> None:
    """A killed replay started again with the same group goes on where it committed."""
    settings = make_settings(
        processor={
            "start_from_timestamp_ms": STRETCHES["middle"],
            "stop_at_timestamp_ms": STRETCHES["late"] - 1,
            "max_batch": 50,
        }
    )
    ids = produce_stretches(settings)
    first = run_processor(settings, max_events=200)
    second = run_processor(settings)

    assert first["exit_reason"] == "reached 200 events"
    assert second["exit_reason"].startswith("replay done")
    assert first["predictions"] + second["predictions"] == STRETCH
    assert scored_ids(settings, STRETCH) == Counter(ids["middle"])
