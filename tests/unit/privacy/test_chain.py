"""The audit hash chain: an intact topic verifies; edits, drops, reordering and duplicates
are each reported where they are; what a chain cannot tell is noted, not failed."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import pytest

from streams.privacy.chain import CHAIN_HEADER, GENESIS, AuditChain, Headers, batch_digest
from streams.privacy.keys import Keyring, PrivacyKey
from streams.privacy.verify import AuditRecord, verify

PARTITIONS = 3
BATCHES, PER_BATCH = 6, 8


class Topic:
    """A producer's view of a keyed topic: records land on crc32(key) % partitions."""

    def __init__(self) -> None:
        self.partitions: list[list[AuditRecord]] = [[] for _ in range(PARTITIONS)]

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        p = zlib.crc32(key or b"") % PARTITIONS
        log = self.partitions[p]
        log.append(AuditRecord(p, len(log), key, value, list(headers or [])))

    def records(self) -> list[AuditRecord]:
        """Partition by partition, in offset order (how a reader may well see them)."""
        return [r for log in self.partitions for r in log]


def produced(chain: AuditChain, batches: int = BATCHES) -> Topic:
    topic = Topic()
    for b in range(batches):
        keys: list[bytes | None] = [f"sensor-{(b * 3 + i) % 5}".encode() for i in range(PER_BATCH)]
        values = [f"audit record {b}.{i}".encode() for i in range(PER_BATCH)]
        chain.publish(topic.produce, "sensor.audit", values, keys)
    return topic


def renumbered(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """The records as a topic holding exactly them would offer them (offsets per partition)."""
    next_offset = [0] * PARTITIONS
    out = []
    for r in records:
        out.append(AuditRecord(r.partition, next_offset[r.partition], r.key, r.value, r.headers))
        next_offset[r.partition] += 1
    return out


def batch_of(record: AuditRecord) -> int:
    header = dict(record.headers)[CHAIN_HEADER]
    return int(header.split(b" ")[3])


def test_the_digest_of_a_batch_covers_its_keys_and_values_in_order() -> None:
    keys: list[bytes | None] = [b"a", None]
    base = batch_digest(None, "c", 0, GENESIS, keys, [b"x", b"y"])
    assert base != batch_digest(None, "c", 0, GENESIS, keys, [b"y", b"x"])
    assert base != batch_digest(None, "c", 0, GENESIS, [b"a", b"b"], [b"x", b"y"])
    assert base != batch_digest(None, "c", 0, GENESIS, keys, [b"xy", b""])  # lengths framed
    assert base != batch_digest(b"k" * 32, "c", 0, GENESIS, keys, [b"x", b"y"])
    assert base != batch_digest(None, "c", 1, GENESIS, keys, [b"x", b"y"])


def test_each_batch_is_one_link(key: PrivacyKey) -> None:
    chain = AuditChain("processor-1", key)
    first = chain.link([b"k"], [b"v"])
    second = chain.link([b"k", b"k"], [b"v", b"w"])
    fields0 = first[0][0][1].split(b" ")
    fields1 = second[0][0][1].split(b" ")
    assert fields0[:5] == [b"v1", f"hmac-sha256:{key.key_id}".encode(), b"processor-1", b"0", b"1"]
    assert fields0[5] == GENESIS.encode()
    assert fields1[3:6] == [b"1", b"2", fields0[6]]  # batch 1 of 2 records follows batch 0
    assert [h[1][1] for h in second] == [b"0", b"1"]  # each record's position
    assert second[0][0] is second[1][0]  # one chain header per batch, shared


@pytest.mark.parametrize("keyed", [False, True])
def test_an_untouched_topic_verifies(key: PrivacyKey, keyed: bool) -> None:
    topic = produced(AuditChain("processor-1", key if keyed else None))
    result = verify(topic.records(), Keyring(key))
    assert result.ok, result.findings
    assert result.records == BATCHES * PER_BATCH and result.unchained == 0
    (summary,) = result.chains.values()
    assert (summary.batches, summary.records, summary.last_batch) == (
        BATCHES,
        BATCHES * PER_BATCH,
        BATCHES - 1,
    )
    assert result.notes == []


def test_an_edited_record_is_the_first_break(key: PrivacyKey) -> None:
    topic = produced(AuditChain("processor-1", key))
    records = topic.records()
    victim = next(r for r in records if batch_of(r) == 2)
    at = records.index(victim)
    records[at] = AuditRecord(
        victim.partition, victim.offset, victim.key, victim.value.replace(b"record", b"RECORD"),
        victim.headers,
    )  # fmt: skip
    result = verify(records, Keyring(key))
    assert not result.ok
    first = result.first_break
    assert first is not None and (first.kind, first.seq) == ("break", 2)
    assert "altered" in first.message
    assert [f.kind for f in result.findings] == ["break"]


def test_a_dropped_record_is_a_gap_in_its_batch(key: PrivacyKey) -> None:
    records = produced(AuditChain("processor-1", key)).records()
    victim = next(r for r in records if batch_of(r) == 3)
    records = renumbered([r for r in records if r is not victim])
    result = verify(records, Keyring(key))
    assert [(f.kind, f.seq) for f in result.findings] == [("gap", 3)]
    index = dict(victim.headers)["streamscore.audit.chain.index"].decode()
    assert f"lacks record(s) {index} of {PER_BATCH}" in result.findings[0].message


def test_a_dropped_batch_is_a_gap_between_batches(key: PrivacyKey) -> None:
    records = renumbered([r for r in produced(AuditChain("c", key)).records() if batch_of(r) != 2])
    result = verify(records, Keyring(key))
    assert [(f.kind, f.seq, f.message) for f in result.findings] == [
        ("gap", 3, "batches 2..2 are missing")
    ]


def test_reordered_records_are_reported(key: PrivacyKey) -> None:
    topic = produced(AuditChain("processor-1", key))
    log = topic.partitions[0]
    assert len(log) >= 2
    log[0], log[1] = log[1], log[0]
    result = verify(renumbered(topic.records()), Keyring(key))
    assert [f.kind for f in result.findings] == ["reorder"]
    assert result.findings[0].partition == 0 and result.findings[0].offset == 1
    assert result.first_break is None  # nothing altered: the batch digests still hold


def test_a_replayed_record_is_a_duplicate_and_a_forged_one_a_break(key: PrivacyKey) -> None:
    records = produced(AuditChain("processor-1", key)).records()
    again = records[3]
    result = verify([*records, again], Keyring(key))
    assert [f.kind for f in result.findings] == ["duplicate"]
    # a different record at a taken position, before its batch is complete
    first_batch = [r for r in records if batch_of(r) == 0]
    head = [r for r in records if batch_of(r) != 0]
    victim = first_batch[0]
    forged = AuditRecord(victim.partition, 0, victim.key, b"forged", victim.headers)
    result = verify([forged, *first_batch, *head], Keyring(key))
    # the position taken twice, and the batch (holding the forgery) off its digest
    assert [f.kind for f in result.findings] == ["break", "break"]
    assert sorted("different record" in f.message for f in result.findings) == [False, True]


def test_a_rewritten_digest_breaks_the_link_to_the_next_batch(key: PrivacyKey) -> None:
    records = produced(AuditChain("processor-1")).records()  # unkeyed: anyone can rehash
    fixed: list[AuditRecord] = []
    for r in records:
        if batch_of(r) == 1:
            header = dict(r.headers)[CHAIN_HEADER].split(b" ")
            header[6] = b"f" * 64
            headers = [(CHAIN_HEADER, b" ".join(header)), r.headers[1]]
            r = AuditRecord(r.partition, r.offset, r.key, r.value, headers)
        fixed.append(r)
    result = verify(fixed, Keyring(None))
    assert [(f.kind, f.seq) for f in result.findings] == [("break", 1), ("break", 2)]
    assert "link broken" in result.findings[1].message


def test_a_keyed_chain_without_its_key_is_checked_for_links_only(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    records = produced(AuditChain("processor-1", old_key)).records()
    result = verify(records, Keyring(key))
    assert result.ok and "not configured" in result.notes[0]
    assert verify(records, Keyring(key, (old_key,))).notes == []


def test_what_a_chain_cannot_tell_is_noted_not_failed(key: PrivacyKey) -> None:
    records = produced(AuditChain("processor-1", key)).records()
    # the first batch gone (retention), the last one cut short (a producer that stopped)
    last = [r for r in records if batch_of(r) == BATCHES - 1]
    kept = [r for r in records if batch_of(r) != 0 and r is not last[0]]
    result = verify(renumbered(kept), Keyring(key))
    assert result.ok
    assert any("starts at batch 1" in n for n in result.notes)
    assert any("its last batch present" in n for n in result.notes)


def test_records_without_a_chain_are_counted_and_chains_told_apart(key: PrivacyKey) -> None:
    one, two = produced(AuditChain("a", key), 2), produced(AuditChain("b", key), 3)
    plain = AuditRecord(0, 99, b"k", b"an audit record from a producer without a chain")
    result = verify([*one.records(), plain, *two.records()], Keyring(key))
    assert result.ok and result.unchained == 1
    assert {c: s.batches for c, s in result.chains.items()} == {"a": 2, "b": 3}


def test_a_malformed_chain_header_is_a_break() -> None:
    bad = AuditRecord(0, 0, None, b"v", [(CHAIN_HEADER, b"v1 sha256 only-four-fields")])
    assert [f.kind for f in verify([bad], Keyring(None)).findings] == ["break"]
