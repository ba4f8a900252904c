"""The console tools: ``streamscore consume`` and ``streamscore produce --stdin``.

They are what a person reaches for first — read a topic, feed a few events — so they
run on the project's own Kafka client and serdes, with nothing else to build.

``consume ROLE|TOPIC`` prints one JSON object per record on stdout::

    {"topic": ..., "partition": 0, "offset": 41, "timestamp": 1718000000000,
     "key": "sensor-0007", "value": {...}, "headers": {...}}

A ROLE (``events``, ``predictions``, ``dlq``, ...) is read through the settings: its topic
name and its configured wire format. The dead-letter topic holds the raw rejected input,
so its values are tried with the events format and otherwise shown as they are. Keys,
values that are not decoded and header values are UTF-8 text when they are valid UTF-8,
else base64, marked by ``key_encoding`` / ``value_encoding`` / ``header_encoding``. A value
that does not decode with the format its topic should have carries ``value_error``.

``produce --stdin`` (mounted on the main ``produce`` command) is :func:`send_stdin`: the
checks live in :func:`connectors.source.produce_json_lines`; here are the lines it prints.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import IO, Annotated, Any

import typer

from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.cli.common import print_json, settings_of

#: Header names whose values are always text: the DLQ's reason and payload notes.
TEXT_HEADER_PREFIXES = ("__connect.errors.", "streamscore.dlq.")
#: Records taken from the client per call (output is flushed after each call).
BATCH = 500
#: How long one wait for records lasts: a Ctrl-C or a --timeout is noticed this fast.
POLL_S = 0.25
#: confluent-kafka's ``TIMESTAMP_NOT_AVAILABLE`` (only connectors/ import the client).
TIMESTAMP_NOT_AVAILABLE = 0


# --------------------------------------------------------------------------- value formats


@dataclass(frozen=True)
class ValueFormat:
    """How one topic's values are shown: decoded by ``decode``, else as text or base64."""

    name: str
    decode: Callable[[bytes], Any] | None = None
    #: Say why a value did not decode (not for the DLQ: its headers say why).
    report_errors: bool = True


RAW = ValueFormat("raw")


def _schema_for(name: str) -> str:
    from schemas.catalog import SCHEMA_NAMES

    if name in SCHEMA_NAMES:  # a role name stands for its schema
        return SCHEMA_NAMES[name]
    if name in SCHEMA_NAMES.values():
        return name
    known = ", ".join(sorted(SCHEMA_NAMES.values()))
    raise ConfigError(f"--format avro:{name}: no such schema (known: {known})")


def parse_format(spec: str) -> ValueFormat:
    """The value format ``--format`` names: ``avro:SCHEMA``, ``json`` or ``raw``."""
    from schemas.serde import make_serde

    kind, _, schema = spec.partition(":")
    if kind == "raw" and not schema:
        return RAW
    if kind == "json" and not schema:
        return ValueFormat("json", json.loads)
    if kind == "avro" and schema:
        serde = make_serde("avro", _schema_for(schema))
        return ValueFormat(spec, serde.decode)
    raise ConfigError(f"--format {spec}: use avro:SCHEMA (e.g. avro:sensor_event), json or raw")


@dataclass(frozen=True)
class Target:
    """The topic to read and how its values are shown."""

    topic: str
    role: str | None
    values: ValueFormat


def resolve_target(settings: Settings, name: str, fmt: str | None = None) -> Target:
    """A role name (or a role's topic name) read as the settings say; else a literal topic.

    ``fmt`` (``--format``) overrides the decoding of any topic; a literal topic without it
    is shown raw.
    """
    from connectors.schema_registry import topic_serde

    roles = settings.topics.by_role()
    role = name if name in roles else next((r for r, t in roles.items() if t == name), None)
    topic = roles[role] if role is not None else name
    if fmt is not None:
        return Target(topic, role, parse_format(fmt))
    if role is None:
        return Target(topic, None, RAW)
    if role == "dlq":
        events = topic_serde(settings, "events")
        return Target(topic, role, ValueFormat(f"{events.format} or raw", events.decode, False))
    serde = topic_serde(settings, role)
    return Target(topic, role, ValueFormat(serde.format, serde.decode))


# --------------------------------------------------------------------------- rendering


def text_or_base64(data: bytes) -> tuple[str, bool]:
    """``data`` as UTF-8 text, or as base64 (then True) when it is not valid UTF-8."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def _headers(raw: list[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Header fields of a record: ``headers`` (a repeated name holds a list) and the
    names whose values are base64 (``header_encoding``)."""
    headers: dict[str, Any] = {}
    encoded: dict[str, str] = {}
    for name, value in raw:
        shown: str | None = None
        if value is not None and name.startswith(TEXT_HEADER_PREFIXES):
            shown = value.decode("utf-8", "replace")
        elif value is not None:
            shown, is_base64 = text_or_base64(value)
            if is_base64:
                encoded[name] = "base64"
        if name not in headers:
            headers[name] = shown
        elif isinstance(headers[name], list):
            headers[name].append(shown)
        else:
            headers[name] = [headers[name], shown]
    fields: dict[str, Any] = {"headers": headers}
    if encoded:
        fields["header_encoding"] = encoded
    return fields


def _value(value: bytes | None, fmt: ValueFormat) -> dict[str, Any]:
    if value is None:
        return {"value": None}
    error: str | None = None
    if fmt.decode is not None:
        try:
            return {"value": fmt.decode(value)}
        except (ValueError, RecursionError) as exc:  # DecodeError, JSONDecodeError, UTF-8
            error = str(exc)
    text, is_base64 = text_or_base64(value)
    fields: dict[str, Any] = {"value": text}
    if is_base64:
        fields["value_encoding"] = "base64"
    if error is not None and fmt.report_errors:
        fields["value_error"] = f"not {fmt.name}: {error}"
    return fields


def _timestamp_ms(message: Any) -> int | None:
    """The record's timestamp (create or log-append time), None when it has none."""
    ts_type, ts = message.timestamp()
    return None if ts_type == TIMESTAMP_NOT_AVAILABLE else int(ts)


def record_json(message: Any, fmt: ValueFormat) -> dict[str, Any]:
    """One record (a confluent-kafka ``Message``) as the JSON object ``consume`` prints."""
    out: dict[str, Any] = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": _timestamp_ms(message),
    }
    key = message.key()
    if key is None:
        out["key"] = None
    else:
        out["key"], key_is_base64 = text_or_base64(key)
        if key_is_base64:
            out["key_encoding"] = "base64"
    out.update(_value(message.value(), fmt))
    raw_headers = message.headers()
    if raw_headers:
        out.update(_headers(raw_headers))
    return out


def _finite(node: Any) -> Any:
    """``node`` with NaN and infinities as the strings JavaScript prints for them."""
    if isinstance(node, float) and not math.isfinite(node):
        return "NaN" if math.isnan(node) else ("Infinity" if node > 0 else "-Infinity")
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(v) for v in node]
    return node


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):  # a bytes field of a decoded Avro record
        return base64.b64encode(value).decode("ascii")
    return str(value)


def json_line(record: dict[str, Any]) -> str:
    """Strict JSON (no bare NaN, which ``jq`` and most parsers refuse) on one line."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, default=_jsonable)
    except ValueError:  # a non-finite float (a NaN feature in a dead letter)
        return json.dumps(_finite(record), ensure_ascii=False, default=_jsonable)


# --------------------------------------------------------------------------- the read loop


class FreshOnly:
    """Skips the records a from-the-end read of the embedded broker replays.

    Tansu reports a partition's end as the base offset of its last batch + 1, so a read
    "from the end" starts inside that batch and gets its tail: records older than this
    command. Until a partition delivers a record stamped at or after ``since_ms``, its
    older records are skipped; from then on every record is kept. (Apache Kafka's end
    offsets are exact: there, nothing needs skipping.)
    """

    def __init__(self, since_ms: int) -> None:
        self.since_ms = since_ms
        self._caught_up: set[int] = set()

    def keep(self, partition: int, timestamp_ms: int | None) -> bool:
        if partition in self._caught_up:
            return True
        if timestamp_ms is None or timestamp_ms >= self.since_ms:
            self._caught_up.add(partition)
            return True
        return False


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, so the loop ends between records, not inside one."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(ValueError):  # not the main thread: the caller cannot signal
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write(out: IO[str], lines: list[str]) -> bool:
    """Write and flush; False once the reader is gone (``consume ... | head``)."""
    try:
        out.write("".join(lines))
        out.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null, so the interpreter's own final flush fails quietly too.
        with suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


def _status(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def consume(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            metavar="ROLE|TOPIC",
            help="A topic role (events, predictions, audit, dlq, shadow, drift, labels, "
            "evaluation), read with the topic name and format the settings give it (so is "
            "a role's topic name); else a literal topic name.",
            show_default=False,
        ),
    ],
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Start at the first record still in the topic (default: only new records). "
            "With --group, only where the group has no committed offset.",
        ),
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after printing N records.")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Only records with this key (UTF-8).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Exit after this many seconds in which no record arrived (default: follow "
            "until Ctrl-C).",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            help="Consume as a member of this consumer group and commit what was printed "
            "(default: no group, every partition, nothing committed).",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Decode values as avro:SCHEMA (schemaless Avro, e.g. avro:sensor_event), "
            "json or raw (text, or base64 when not UTF-8). Default: a role's configured "
            "format; raw for a literal topic.",
        ),
    ] = None,
) -> None:
    """Print a topic's records as JSON lines: topic, partition, offset, timestamp, key,
    value and, when it has any, headers.

    Values are decoded with the topic's format: a role's configured one; for the dlq the
    events format where the rejected bytes still decode, else the bytes themselves; for a
    literal topic the --format given (default raw). Bytes that are not UTF-8 are shown as
    base64 and marked (key_encoding, value_encoding). It follows the topic until Ctrl-C,
    --count or --timeout, then exits 0; a usage mistake (no such topic, a bad --format)
    exits 2.
    """
    from connectors.kafka import Consumer, client_id
    from connectors.kafka_admin import ensure_topics

    settings = settings_of(ctx)
    where = resolve_target(settings, target, fmt)
    if where.role is not None:
        ensure_topics(settings)  # the settings define a role's topic: reading it may come first
    consumer = Consumer(
        settings.kafka,
        group_id=group or f"streamscore-console-{os.getpid()}",
        client_id=client_id("console"),
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        start = "the beginning" if from_beginning else "the end"
        fresh: FreshOnly | None = None
        if group is None:
            started_ms = int(time.time() * 1000)
            partitions = consumer.assign_topic(where.topic, from_beginning=from_beginning)
            if not from_beginning and settings.kafka.is_embedded:
                fresh = FreshOnly(started_ms)
            shown = f"{len(partitions)} partition{'s' * (len(partitions) != 1)}"
            assigned = Assigned(f"reading {where.topic} ({shown}) from {start}")
            assigned(partitions)
        else:
            where_none = "where it committed nothing"
            assigned = Assigned(f"reading {where.topic} in group {group} from {start} {where_none}")
            consumer.subscribe([where.topic], on_assign=assigned)
        print_records(
            consumer,
            where.values,
            Limits(count, timeout, join_grace_s=max(30.0, settings.kafka.session_timeout_ms / 500)),
            key=key.encode() if key is not None else None,
            commit=group is not None,
            fresh=fresh,
            assigned=assigned,
        )
    finally:
        consumer.close()


class Assigned:
    """Notes when the partitions were first assigned (the idle clock starts there) and
    says so on stderr: the line a script or a test waits for before it produces."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.at: float | None = None

    def __call__(self, partitions: list[Any]) -> None:
        if self.at is None and partitions:
            self.at = time.monotonic()
            _status(self.status)


@dataclass(frozen=True)
class Limits:
    """When a read ends, besides Ctrl-C: ``count`` records printed, or ``timeout_s`` seconds
    in which no record arrived, counted from the assignment (joining a group can take
    seconds) or, while none came, from the start plus ``join_grace_s``."""

    count: int | None = None
    timeout_s: float | None = None
    join_grace_s: float = 30.0


def print_records(
    consumer: Any,
    fmt: ValueFormat,
    limits: Limits,
    *,
    key: bytes | None,
    commit: bool,
    fresh: FreshOnly | None,
    assigned: Assigned,
) -> int:
    """Print records as JSON lines until a limit, Ctrl-C or a closed stdout; the number printed.

    ``consumer`` is a :class:`connectors.kafka.Consumer`; with ``commit``, the offsets of
    every record taken (printed or filtered out) are committed after each printed batch.
    """
    printed = 0
    started = time.monotonic()
    last_record = 0.0
    with stop_on_signals() as stop:
        while not stop.is_set():
            batch = BATCH if limits.count is None else min(BATCH, limits.count - printed)
            messages = consumer.consume(batch, POLL_S)
            now = time.monotonic()
            if not messages:
                if limits.timeout_s is not None:
                    if assigned.at is not None:
                        idle = now - max(last_record, assigned.at)
                    else:
                        idle = now - started - limits.join_grace_s
                    if idle >= limits.timeout_s:
                        break
                continue
            last_record = now
            lines: list[str] = []
            next_offsets: dict[tuple[str, int], int] = {}
            for m in messages:
                partition = m.partition() or 0
                next_offsets[(m.topic() or "", partition)] = (m.offset() or 0) + 1
                if fresh is not None and not fresh.keep(partition, _timestamp_ms(m)):
                    continue
                if key is not None and m.key() != key:
                    continue
                lines.append(json_line(record_json(m, fmt)) + "\n")
                if limits.count is not None and printed + len(lines) >= limits.count:
                    break
            if not _write(sys.stdout, lines):
                break
            printed += len(lines)
            if commit:
                consumer.commit(next_offsets)
            if limits.count is not None and printed >= limits.count:
                break
    return printed


# --------------------------------------------------------------------------- produce --stdin


def send_stdin(settings: Settings, stream: IO[bytes], *, as_json: bool = False) -> int:
    """Send the events of ``stream`` (JSON lines); the exit code: 0 all sent, 1 any rejected.

    Each rejected line is named on stderr (``line N: reason``), then ``sent X, rejected Y``.
    """
    from connectors.source import produce_json_lines

    def reject(line_number: int, reason: str) -> None:
        sys.stderr.write(f"line {line_number}: {reason}\n")

    sent, rejected = produce_json_lines(settings, stream, reject)
    sys.stderr.write(f"sent {sent}, rejected {rejected}\n")
    sys.stderr.flush()
    if as_json:
        print_json({"sent": sent, "rejected": rejected, "topic": settings.topics.events})
    return 1 if rejected else 0


def refuse_options(ctx: typer.Context, mode: str, *, allowed: set[str]) -> None:
    """A usage error naming the options given on the command line that ``mode`` ignores."""

    def on_command_line(name: str) -> bool:
        source = ctx.get_parameter_source(name)  # typer's vendored click: compare by name
        return source is not None and source.name == "COMMANDLINE"

    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name is not None and param.name not in allowed and on_command_line(param.name)
    ]
    if given:
        raise ConfigError(f"{mode} does not take {', '.join(given)}")
