"""``streamscore privacy``, ``audit`` and ``dlq``: erasure, the audit chain, sealed dead letters.

* ``privacy keygen --out FILE`` writes a new privacy key (mode 0600); ``privacy erase
  --sensor-id X`` deletes a sensor's predictions from the store and writes the audit
  tombstone (``streams.privacy.erase``);
* ``audit verify [--topic T]`` walks an audit topic's hash chains and reports the first
  break, gaps, reordering and duplicates; exit 1 when it finds any
  (``streams.privacy.verify``);
* ``dlq show`` prints dead letters like ``consume dlq`` does, opening encrypted payloads
  for a holder of the key (``streams.privacy.crypto``).

Mount with ``app.add_typer(privacy_app, name="privacy")`` (and ``audit_app``, ``dlq_app``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import Settings
from streams.cli.common import JsonFlag, console, new_app, print_json, settings_of
from streams.cli.consume import (
    Assigned,
    FreshOnly,
    Limits,
    ValueFormat,
    print_records,
    resolve_target,
    text_or_base64,
)
from streams.cli.models import Actor, default_actor
from streams.privacy.chain import AuditChain
from streams.privacy.crypto import SealError, is_sealed, open_sealed
from streams.privacy.erase import erase_sensor, tombstone
from streams.privacy.keys import Keyring, load_keyring, new_secret
from streams.privacy.verify import AuditRecord, ChainVerifier, Verification

privacy_app = new_app(help="Privacy: keys and the erasure of an entity.")
audit_app = new_app(help="The audit trail: verify its hash chains.")
dlq_app = new_app(help="The dead-letter topic, encrypted payloads opened for a key holder.")

#: Records taken per call while walking a topic.
_BATCH = 1000
_POLL_S = 0.25


# --------------------------------------------------------------------------- privacy


@privacy_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write the key to.")],
    force: Annotated[bool, typer.Option(help="Replace the file if it exists.")] = False,
) -> None:
    """Write a new privacy key (32 random bytes as hex), readable by its owner only.

    Point ``privacy.key_file`` at it. To rotate: write a new one, move the old file's path
    to ``privacy.retired_key_files`` and the new one to ``privacy.key_file``.
    """
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; give --force to replace it, or another --out")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_secret() + "\n")
    os.chmod(out, 0o600)
    console.print(f"wrote a new privacy key to {out} (mode 0600)")


@privacy_app.command("erase")
def erase(
    ctx: typer.Context,
    sensor_id: Annotated[str, typer.Option("--sensor-id", help="The sensor to erase.")],
    reference: Annotated[
        str | None, typer.Option(help="The request's reference (a ticket), for the tombstone.")
    ] = None,
    actor: Actor = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete a sensor's predictions from the Redis store and write an audit tombstone.

    The sensor is looked up under its raw id and its pseudonym under every configured key.
    The tombstone names it by its pseudonym only (not at all without a key). Records in
    Kafka topics expire with their retention (see the README's privacy section).
    """
    from connectors.redis_store import PredictionStore

    settings = settings_of(ctx)
    keyring = load_keyring(settings.privacy)
    s = settings.store
    store = PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s, timeout=5.0)
    erasure = erase_sensor(store, sensor_id, settings, keyring)
    record = tombstone(erasure, actor=actor or default_actor(), reference=reference)
    try:
        _publish_tombstone(settings, keyring, record)
    except InfrastructureError as exc:
        raise InfrastructureError(
            f"{erasure.entries_deleted} prediction store entries erased, but the audit "
            f"tombstone was not written ({exc}); run the command again (it is idempotent)"
        ) from exc
    summary = {**erasure.as_dict(), "tombstone_topic": settings.topics.audit}
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"erased {erasure.entries_deleted} prediction store entries of the sensor; "
            f"tombstone written to {settings.topics.audit}"
        )


def _publish_tombstone(settings: Settings, keyring: Keyring, record: dict[str, Any]) -> None:
    from connectors.kafka import Producer, client_id
    from connectors.kafka_admin import ensure_topics
    from connectors.schema_registry import topic_serde

    ensure_topics(settings)
    value = topic_serde(settings, "audit").encode(record)
    key = record["sensor_id"].encode() if record["sensor_id"] else None
    actor = client_id("privacy")
    producer = Producer(settings.kafka, client_id=actor)
    if settings.privacy.audit_chain:
        chain = AuditChain.new(actor, keyring.current)
        chain.publish(producer.produce, settings.topics.audit, [value], [key])
    else:
        producer.produce(settings.topics.audit, value, key)
    producer.flush(15.0)


# --------------------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    topic: Annotated[
        str | None, typer.Option(help="The audit topic to walk (default: topics.audit).")
    ] = None,
    idle: Annotated[
        float, typer.Option(min=0.1, help="Stop after this many seconds without a record.")
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Stop after this many seconds in all.")
    ] = 600.0,
    as_json: JsonFlag = False,
) -> None:
    """Walk an audit topic from its first record and check every hash chain in it.

    Reports each break (a record altered, a link broken), gap (records or batches
    missing), reordering and duplicate, the first break first; exit 1 when there is any.
    Chains keyed with a retired key are checked with ``privacy.retired_key_files``.
    """
    settings = settings_of(ctx)
    name = topic or settings.topics.audit
    verifier = ChainVerifier(load_keyring(settings.privacy))
    _walk(settings, name, verifier, idle_s=idle, timeout_s=timeout)
    result = verifier.finish()
    if as_json:
        print_json({"topic": name, **result.as_dict()})
    else:
        _print_verification(name, result)
    if not result.ok:
        raise typer.Exit(1)


def _walk(
    settings: Settings, topic: str, verifier: ChainVerifier, *, idle_s: float, timeout_s: float
) -> None:
    """Feed every record of ``topic``, from the beginning, to ``verifier``."""
    from connectors.kafka import Consumer, client_id

    consumer = Consumer(
        settings.kafka, group_id=f"streamscore-audit-verify-{os.getpid()}",
        client_id=client_id("audit-verify"),
    )  # fmt: skip
    try:
        consumer.assign_topic(topic, from_beginning=True)
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            for m in consumer.consume(_BATCH, _POLL_S):
                last = time.monotonic()
                partition, offset = m.partition(), m.offset()
                if partition is None or offset is None:
                    continue
                headers = cast("list[tuple[str, bytes | None]]", m.headers() or [])
                verifier.add(AuditRecord(partition, offset, m.key(), m.value(), headers))
    finally:
        consumer.close()


def _print_verification(topic: str, result: Verification) -> None:
    chains = len(result.chains)
    state = "[green]intact[/]" if result.ok else "[bold red]TAMPERED OR INCOMPLETE[/]"
    console.print(
        f"{topic}: {result.records} records, {chains} chain{'s' * (chains != 1)}, "
        f"{result.unchained} without a chain: {state}"
    )
    first = result.first_break
    if first is not None:
        console.print(f"first break: chain {first.chain_id} at partition {first.partition} "
                      f"offset {first.offset}: {first.message}")  # fmt: skip
    for finding in result.findings:
        console.print(f"  {finding.kind}: chain {finding.chain_id} partition {finding.partition} "
                      f"offset {finding.offset}: {finding.message}")  # fmt: skip
    for note in result.notes:
        console.print(f"  note: {note}")


# --------------------------------------------------------------------------- dlq


def _envelope_format(events: ValueFormat, keyring: Keyring) -> ValueFormat:
    """Dead-letter values: an envelope opened (when the key is here), else as ``events``.

    An opened envelope shows as ``{"key_id", "original_key", "payload"}``: the payload
    decoded with the events format where it decodes, else as text, else as base64
    (then ``payload_encoding`` says so, as ``original_key_encoding`` does for the key).
    """
    decode_event = events.decode

    def shown(name: str, data: bytes | None, *, as_event: bool) -> dict[str, Any]:
        if data is None:
            return {name: None}
        if as_event and decode_event is not None:
            try:
                return {name: decode_event(data)}
            except (ValueError, RecursionError):
                pass
        text, is_base64 = text_or_base64(data)
        return {name: text, f"{name}_encoding": "base64"} if is_base64 else {name: text}

    def decode(value: bytes) -> Any:
        if not is_sealed(value):
            if decode_event is None:
                raise ValueError("not decoded")
            return decode_event(value)
        try:
            opened = open_sealed(value, keyring)
        except SealError as exc:
            return {"sealed": True, "error": str(exc)}
        return {
            "key_id": opened.key_id,
            **shown("original_key", opened.original_key, as_event=False),
            **shown("payload", opened.payload, as_event=True),
        }

    return ValueFormat(f"sealed or {events.name}", decode, report_errors=False)


@dlq_app.command("show")
def dlq_show(
    ctx: typer.Context,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after printing N records.")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the first record still there.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.1, help="Exit after this many seconds without a record."),
    ] = None,
) -> None:
    """Print dead letters as JSON lines, the way ``consume dlq`` does, with each encrypted
    payload opened: ``{"key_id", "original_key", "payload"}`` (its ``error`` when the key
    is not configured or the envelope was altered)."""
    from connectors.kafka import Consumer, client_id
    from connectors.kafka_admin import ensure_topics

    settings = settings_of(ctx)
    target = resolve_target(settings, "dlq")
    fmt = _envelope_format(target.values, load_keyring(settings.privacy))
    ensure_topics(settings)
    consumer = Consumer(
        settings.kafka,
        group_id=f"streamscore-dlq-show-{os.getpid()}",
        client_id=client_id("dlq-show"),
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        started_ms = int(time.time() * 1000)
        partitions = consumer.assign_topic(target.topic, from_beginning=from_beginning)
        fresh = None
        if not from_beginning and settings.kafka.is_embedded:
            fresh = FreshOnly(started_ms)
        start = "the beginning" if from_beginning else "the end"
        assigned = Assigned(f"reading {target.topic} from {start}")
        assigned(partitions)
        limits = Limits(count, timeout, join_grace_s=30.0)
        print_records(consumer, fmt, limits, key=None, commit=False, fresh=fresh, assigned=assigned)
    finally:
        consumer.close()
