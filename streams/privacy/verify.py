"""Walking an audit topic's hash chains (see ``streams.privacy.chain``) record by record.

:class:`ChainVerifier` takes records in offset order within each partition (the
partitions may interleave in any way) and keeps only what it must: the records of
batches not complete yet, and each batch's header. A batch is checked against its
digest as soon as its last record arrives, then its records are let go, so a topic
of millions of records is verified in bounded memory (about 200 bytes per batch).

Findings (failures) and notes (what a chain cannot tell apart from normal operation)
are as the chain module's docstring lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.privacy.chain import CHAIN_HEADER, GENESIS, INDEX_HEADER, VERSION, batch_digest
from streams.privacy.keys import Keyring

FindingKind = Literal["break", "gap", "reorder", "duplicate"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record read back from the audit topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    chain_id: str
    seq: int
    partition: int | None
    offset: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "chain": self.chain_id,
            "batch": self.seq,
            "partition": self.partition,
            "offset": self.offset,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class _Header:
    raw: bytes
    alg: str
    chain_id: str
    seq: int
    count: int
    prev: str
    digest: str


def _parse(raw: bytes) -> _Header | None:
    parts = raw.decode("ascii", "replace").split(" ")
    if len(parts) != 7 or parts[0] != VERSION:
        return None
    _, alg, chain_id, seq, count, prev, digest = parts
    if not (seq.isdigit() and count.isdigit() and len(prev) == 64 and len(digest) == 64):
        return None
    return _Header(raw, alg, chain_id, int(seq), int(count), prev, digest)


@dataclass
class _Batch:
    header: _Header
    #: Where its first record was seen (for the reports).
    partition: int
    offset: int
    #: Records by position until the batch is complete; then emptied.
    records: dict[int, AuditRecord] = field(default_factory=dict)
    #: A fingerprint of each record while incomplete (tells a duplicate from a conflict).
    fingerprints: dict[int, bytes] = field(default_factory=dict)
    complete: bool = False

    def missing(self) -> list[int]:
        return [i for i in range(self.header.count) if i not in self.records]


@dataclass
class ChainSummary:
    chain_id: str
    alg: str
    batches: int = 0
    records: int = 0
    first_batch: int = 0
    last_batch: int = 0


@dataclass
class Verification:
    """What a verification found: counts, each chain, findings (failures) and notes."""

    records: int = 0
    unchained: int = 0
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def first_break(self) -> Finding | None:
        breaks = self.of_kind("break")
        return breaks[0] if breaks else None

    def as_dict(self) -> dict[str, Any]:
        first = self.first_break
        return {
            "ok": self.ok,
            "records": self.records,
            "unchained": self.unchained,
            "chains": {
                c.chain_id: {
                    "alg": c.alg,
                    "batches": c.batches,
                    "records": c.records,
                    "first_batch": c.first_batch,
                    "last_batch": c.last_batch,
                }
                for c in self.chains.values()
            },
            "first_break": first.as_dict() if first is not None else None,
            "breaks": len(self.of_kind("break")),
            "gaps": len(self.of_kind("gap")),
            "reorders": len(self.of_kind("reorder")),
            "duplicates": len(self.of_kind("duplicate")),
            "findings": [f.as_dict() for f in self.findings],
            "notes": self.notes,
        }


def _fingerprint(record: AuditRecord) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(len(record.key or b"").to_bytes(8, "big") + (record.key or b""))
    h.update(record.value or b"")
    return h.digest()


class ChainVerifier:
    """Checks the chains of records fed one at a time; :meth:`finish` says what it found."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.result = Verification()
        self._batches: dict[str, dict[int, _Batch]] = {}
        self._last_at: dict[tuple[int, str], tuple[int, int]] = {}
        self._keys: dict[str, tuple[bool, bytes | None]] = {}

    def _find(self, kind: FindingKind, header: _Header, where: tuple[int, int], text: str) -> None:
        self.result.findings.append(Finding(kind, header.chain_id, header.seq, *where, text))

    def add(self, record: AuditRecord) -> None:
        self.result.records += 1
        raw_chain = raw_index = None
        for name, value in record.headers:
            if name == CHAIN_HEADER:
                raw_chain = value
            elif name == INDEX_HEADER:
                raw_index = value
        if raw_chain is None:
            self.result.unchained += 1
            return
        header = _parse(raw_chain)
        index = raw_index.decode("ascii", "replace") if raw_index is not None else ""
        where = (record.partition, record.offset)
        if header is None or not index.isdigit() or int(index) >= header.count:
            chain_id, seq = (header.chain_id, header.seq) if header is not None else ("?", -1)
            self.result.findings.append(
                Finding("break", chain_id, seq, *where, "malformed chain headers")
            )
            return
        if self._place(header, int(index), record):  # a duplicate is not also out of order
            self._check_order(header, int(index), record)

    def _check_order(self, header: _Header, index: int, record: AuditRecord) -> None:
        position, slot = (header.seq, index), (record.partition, header.chain_id)
        previous = self._last_at.get(slot)
        if previous is not None and position < previous:
            text = (
                f"batch {header.seq} record {index} comes after batch {previous[0]} record "
                f"{previous[1]} in partition {record.partition}"
            )
            self._find("reorder", header, (record.partition, record.offset), text)
        if previous is None or position > previous:
            self._last_at[slot] = position

    def _place(self, header: _Header, index: int, record: AuditRecord) -> bool:
        """File the record under its batch; False (and a finding) when its place is taken."""
        where = (record.partition, record.offset)
        chain = self._batches.setdefault(header.chain_id, {})
        batch = chain.get(header.seq)
        if batch is None:
            batch = chain[header.seq] = _Batch(header, *where)
        if header.raw != batch.header.raw:
            text = f"batch {header.seq}: its records disagree on its chain header"
            self._find("break", header, where, text)
            return False
        if batch.complete:
            text = f"batch {header.seq} record {index} again, after its batch was complete"
            self._find("duplicate", header, where, text)
            return False
        fingerprint = _fingerprint(record)
        seen = batch.fingerprints.get(index)
        if seen is not None:
            kind: FindingKind = "duplicate" if seen == fingerprint else "break"
            text = "again" if seen == fingerprint else "a different record at the same position"
            self._find(kind, header, where, f"batch {header.seq} record {index}: {text}")
            return False
        batch.records[index] = record
        batch.fingerprints[index] = fingerprint
        if len(batch.records) == header.count:
            self._seal(batch)
        return True

    def _chain_key(self, alg: str) -> tuple[bool, bytes | None]:
        """(can the digests be recomputed, the HMAC key when keyed)."""
        if alg not in self._keys:
            if alg == "sha256":
                self._keys[alg] = (True, None)
            elif alg.startswith("hmac-sha256:") and (key := self.keyring.get(alg.split(":", 1)[1])):
                self._keys[alg] = (True, key.derive("audit chain"))
            else:
                self._keys[alg] = (False, None)
        return self._keys[alg]

    def _seal(self, batch: _Batch) -> None:
        """A complete batch: check its digest, then let its records go."""
        header = batch.header
        can_hash, key = self._chain_key(header.alg)
        if can_hash:
            ordered = [batch.records[i] for i in range(header.count)]
            keys, values = [r.key for r in ordered], [r.value or b"" for r in ordered]
            digest = batch_digest(key, header.chain_id, header.seq, header.prev, keys, values)
            if digest != header.digest:
                text = f"batch {header.seq}: its records do not match its digest (altered)"
                self._find("break", header, (batch.partition, batch.offset), text)
        batch.complete = True
        batch.records, batch.fingerprints = {}, {}

    def finish(self) -> Verification:
        """Check the links, gaps and incomplete batches of every chain; the result."""
        for chain_id, chain in self._batches.items():
            self._check_chain(chain_id, chain)
        self.result.findings.sort(key=lambda f: (f.chain_id, f.seq, f.kind != "break"))
        return self.result

    def _check_chain(self, chain_id: str, chain: dict[int, _Batch]) -> None:
        seqs = sorted(chain)
        first_seq, last_seq = seqs[0], seqs[-1]
        alg = chain[first_seq].header.alg
        records = sum(b.header.count if b.complete else len(b.records) for b in chain.values())
        self.result.chains[chain_id] = ChainSummary(
            chain_id, alg, len(seqs), records, first_seq, last_seq
        )
        notes = self.result.notes
        if not self._chain_key(alg)[0]:
            notes.append(
                f"chain {chain_id} is keyed ({alg}) with a key that is not configured: its links "
                "are checked, its contents are not (add the key to privacy.retired_key_files)"
            )
        if first_seq > 0:
            notes.append(
                f"chain {chain_id} starts at batch {first_seq}: earlier batches are gone "
                "(retention, or removed)"
            )
        previous: int | None = None
        for seq in seqs:
            batch = chain[seq]
            header, where = batch.header, (batch.partition, batch.offset)
            if not batch.complete:
                missing = batch.missing()
                shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
                text = f"batch {seq} lacks record(s) {shown} of {header.count}"
                if seq in (first_seq, last_seq):
                    edge = "first" if seq == first_seq else "last"
                    notes.append(f"chain {chain_id}: {text} (its {edge} batch present)")
                else:
                    self._find("gap", header, where, text)
            if previous is not None and seq != previous + 1:
                self._find("gap", header, where, f"batches {previous + 1}..{seq - 1} are missing")
            elif previous is not None and header.prev != chain[previous].header.digest:
                text = f"batch {seq} does not follow batch {previous} (link broken)"
                self._find("break", header, where, text)
            elif seq == 0 and header.prev != GENESIS:
                self._find("break", header, where, "batch 0 does not start a chain")
            previous = seq


def verify(records: Iterable[AuditRecord], keyring: Keyring) -> Verification:
    """Check every chain ``records`` hold (offset order within each partition)."""
    verifier = ChainVerifier(keyring)
    for record in records:
        verifier.add(record)
    return verifier.finish()
