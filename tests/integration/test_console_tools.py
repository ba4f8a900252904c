"""The console tools against the real embedded broker: ``produce --stdin`` and ``consume``.

Every test gets fresh topics (``make_settings``) and reaches the commands the way a person
does: the ``streamscore`` app with ``STREAMSCORE_*`` variables naming the broker and the
topics, in process through ``CliRunner``, or as a subprocess where a test must act while
the command runs (follow the end of a topic, then Ctrl-C).
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from connectors.kafka import Producer, client_id
from connectors.kafka_admin import Admin
from schemas.settings import Settings
from streams.cli.main import app
from streams.scoring.compose import run_processor

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REASON = "__connect.errors.exception.class.name"


def env_for(settings: Settings) -> dict[str, str]:
    """The variables that point a command at this test's broker and topics."""
    env = {
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "true" if settings.kafka.is_embedded else "false",
    }
    for role, topic in settings.topics.by_role().items():
        env[f"STREAMSCORE_TOPICS__{role.upper()}"] = topic
    return env


def streamscore(settings: Settings, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env=env_for(settings))


def records(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def event(event_id: str, sensor_id: str, **features: float) -> dict[str, Any]:
    values = features or {f"f{i}": float(10 * i) for i in range(1, 10)}
    return {
        "event_id": event_id,
        "sensor_id": sensor_id,
        "event_time": 1_700_000_000_000,
        "features": values,
    }


def lines(*items: dict[str, Any] | str) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


GOOD = [event("a-1", "sensor-a"), event("b-1", "sensor-b"), event("a-2", "sensor-a", f1=3.5)]
#: Input lines of a mixed run: the good events with mistakes between them.
MIXED = lines(
    GOOD[0],
    '{"event_id": "x-2", "sensor_id": "sensor-x"',
    GOOD[1],
    {"event_id": "x-4", "sensor_id": "sensor-x", "event_time": 1},
    {**event("x-5", "sensor-x"), "event_time": "soon"},
    event("x-6", "sensor-x", f1="high"),  # type: ignore[arg-type]
    "",
    GOOD[2],
    "[1, 2]",
)


def test_produce_stdin_sends_the_good_lines_and_names_each_rejected_one(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()

    result = streamscore(settings, "produce", "--stdin", stdin=MIXED)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "line 2: invalid JSON (Expecting ',' delimiter at column 44)",
        "line 4: missing field features",
        "line 5: event_time must be epoch milliseconds (an integer), not a string",
        "line 6: features.f1 must be a number, not a string",
        "line 9: a sensor event is a JSON object, not an array",
        "sent 3, rejected 5",
    ]
    everything = records(
        streamscore(settings, "consume", "events", "--from-beginning", "--timeout", "1.5")
    )
    assert sorted((r["value"]["event_id"], r["key"]) for r in everything) == [
        ("a-1", "sensor-a"),
        ("a-2", "sensor-a"),
        ("b-1", "sensor-b"),
    ]
    by_id = {r["value"]["event_id"]: r for r in everything}
    for sent in GOOD:
        got = by_id[sent["event_id"]]
        assert got["value"] == sent
        assert got["topic"] == settings.topics.events
        assert set(got) == {"topic", "partition", "offset", "timestamp", "key", "value"}
        assert isinstance(got["offset"], int) and got["timestamp"] > 1_700_000_000_000


def test_consume_stops_at_count_and_filters_by_key(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    sent = streamscore(settings, "produce", "--stdin", stdin=lines(*GOOD))
    assert sent.exit_code == 0, sent.output
    assert sent.stderr.splitlines() == ["sent 3, rejected 0"]

    counted = records(streamscore(settings, "consume", "events", "--from-beginning", "-n", "2"))
    keyed = records(
        streamscore(
            settings,
            "consume",
            "events",
            "--from-beginning",
            "--key",
            "sensor-a",
            "--timeout",
            "1.5",
        )
    )

    assert len(counted) == 2
    assert {r["value"]["event_id"] for r in counted} <= {"a-1", "a-2", "b-1"}
    assert sorted(r["value"]["event_id"] for r in keyed) == ["a-1", "a-2"]
    assert {r["key"] for r in keyed} == {"sensor-a"}


def test_consume_dlq_shows_the_rejected_input_and_the_reasons(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    no_f9 = event("m-1", "sensor-m")
    del no_f9["features"]["f9"]
    too_big = event("r-1", "sensor-r")
    too_big["features"]["f1"] = 1e9
    sent = streamscore(
        settings, "produce", "--stdin", stdin=lines(event("ok-1", "sensor-o"), no_f9, too_big)
    )
    assert sent.exit_code == 0, sent.output  # schema-valid: the processor's checks reject them
    junk = b"\xff\x00\xfe binary junk"
    producer = Producer(settings.kafka, client_id=client_id("test"))
    producer.produce(settings.topics.events, junk, b"junk-1")
    producer.produce(settings.topics.events, b"plain text, not avro", b"junk-2")
    producer.flush()
    del producer  # no client left to retry the broker after the session stops it

    summary = run_processor(settings, exit_when_idle=2)

    assert summary["predictions"] == 1
    dead = records(streamscore(settings, "consume", "dlq", "--from-beginning", "--count", "4"))
    by_key = {r["key"]: r for r in dead}
    assert set(by_key) == {"sensor-m", "sensor-r", "junk-1", "junk-2"}
    assert {k: r["headers"][REASON] for k, r in by_key.items()} == {
        "sensor-m": "MissingFeature",
        "sensor-r": "OutOfRange",
        "junk-1": "Undecodable",
        "junk-2": "Undecodable",
    }
    for r in dead:
        assert r["headers"]["__connect.errors.topic"] == settings.topics.events
        assert r["headers"]["__connect.errors.stage"] in ("decode", "validate")
        assert "header_encoding" not in r and "value_error" not in r
    assert "f9" in by_key["sensor-m"]["headers"]["__connect.errors.exception.message"]
    assert by_key["sensor-m"]["value"] == no_f9  # still an event: decoded
    assert by_key["sensor-r"]["value"] == too_big
    assert by_key["junk-1"]["value_encoding"] == "base64"
    assert base64.b64decode(by_key["junk-1"]["value"]) == junk
    assert by_key["junk-2"]["value"] == "plain text, not avro"
    assert "value_encoding" not in by_key["junk-2"]
    (prediction,) = records(
        streamscore(settings, "consume", "predictions", "--from-beginning", "--count", "1")
    )
    assert prediction["value"]["event_id"] == "ok-1"
    assert prediction["key"] == "sensor-o"


def test_consume_follows_only_new_records_until_ctrl_c(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    # Five records of one key: one partition, one producer batch, whose tail the embedded
    # broker's end offset still points into.
    old = [event(f"old-{i}", "sensor-same") for i in range(5)]
    assert streamscore(settings, "produce", "--stdin", stdin=lines(*old)).exit_code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "consume", "events"],
        cwd=REPO,
        env={**os.environ, **env_for(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert select.select([proc.stderr], [], [], 30)[0], "consume did not start"
        assert "from the end" in proc.stderr.readline()
        new = streamscore(
            settings, "produce", "--stdin", stdin=lines(event("new-1", "sensor-same"))
        )
        assert new.exit_code == 0, new.output

        assert select.select([proc.stdout], [], [], 30)[0], "no record printed"
        first = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, err
    assert first["value"]["event_id"] == "new-1"
    assert out == ""  # nothing of the old batch came after it either
    assert "Traceback" not in err


def test_consume_a_literal_topic_raw_json_and_in_a_group(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    topic = f"literal.{uuid.uuid4().hex[:8]}"
    Admin(settings.kafka).ensure_topics([topic], partitions=1)
    producer = Producer(settings.kafka, client_id=client_id("test"))
    producer.produce(topic, b'{"reading": 1.5}', b"k1", headers=[("origin", b"test")])
    producer.produce(topic, b"not json", b"k2", headers=[("blob", b"\xff\xfe")])
    producer.flush()
    del producer  # no client left to retry the broker after the session stops it
    group = f"console-{uuid.uuid4().hex[:8]}"

    raw = records(streamscore(settings, "consume", topic, "--from-beginning", "--count", "2"))
    parsed = records(
        streamscore(settings, "consume", topic, "--from-beginning", "--format", "json", "-n", "2")
    )
    first = records(
        streamscore(settings, "consume", topic, "-g", group, "--from-beginning", "-n", "1")
    )
    rest = records(streamscore(settings, "consume", topic, "-g", group, "--timeout", "1.5"))

    assert [r["value"] for r in raw] == ['{"reading": 1.5}', "not json"]
    assert raw[0]["headers"] == {"origin": "test"}
    assert raw[1]["headers"] == {"blob": base64.b64encode(b"\xff\xfe").decode()}
    assert raw[1]["header_encoding"] == {"blob": "base64"}
    assert parsed[0]["value"] == {"reading": 1.5}
    assert parsed[1]["value"] == "not json"
    assert parsed[1]["value_error"].startswith("not json: ")
    assert [r["key"] for r in first] == ["k1"]
    assert [r["key"] for r in rest] == ["k2"]  # the group's commit of the first one held


def test_usage_mistakes_are_one_line_and_exit_code_2(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()

    missing = streamscore(settings, "consume", "no-such-topic", "--timeout", "1")
    bad_format = streamscore(settings, "consume", "events", "--format", "avro")
    bad_schema = streamscore(settings, "consume", "events", "--format", "avro:nope")
    mixed_options = streamscore(settings, "produce", "--stdin", "--count", "5", stdin="")

    assert (missing.exit_code, missing.stderr.strip()) == (
        2,
        "error: topic no-such-topic does not exist",
    )
    assert bad_format.exit_code == 2 and "use avro:SCHEMA" in bad_format.stderr
    assert bad_schema.exit_code == 2 and "sensor_event" in bad_schema.stderr
    assert mixed_options.exit_code == 2
    assert "--stdin does not take --count" in mixed_options.stderr
    for result in (missing, bad_format, bad_schema, mixed_options):
        assert len(result.stderr.strip().splitlines()) == 1
