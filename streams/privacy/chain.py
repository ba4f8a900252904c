"""A hash chain over the audit records a producer writes, one link per batch.

Each producer (a processor run, a CLI action) has a chain id: its client id and a
random suffix, so a restart starts a new chain instead of reusing sequence numbers.
Every batch of audit records it produces becomes one link::

    digest(k) = H("streamscore-audit-chain/v1", chain id, k, count, digest(k - 1),
                  key lengths, keys, value lengths, values)        digest(-1) = 0 * 64

``H`` is HMAC-SHA256 under the privacy key's ``audit chain`` purpose key when there is
a key (then nobody without it can forge a consistent chain), else SHA-256. Each record
of the batch carries two Kafka headers::

    streamscore.audit.chain        = "v1 <alg> <chain id> <k> <count> <digest(k-1)> <digest(k)>"
    streamscore.audit.chain.index  = "<position of the record in the batch>"

Why headers and not Avro fields: the record bytes stay exactly what every reader,
schema and format (avro, avro-confluent, json) already knows, and the digest covers
them as they are on the wire. The cost is one digest per batch (SHA-256 runs in C
over the batch's values joined) and librdkafka's per-record header handling.

A batch's records may land on several partitions (they are keyed by sensor): the
digest binds them wherever they are. ``streams.privacy.verify`` groups records by chain
and batch and reports, for each chain:

* **break** — a batch whose records do not hash to its digest (a record, key or header
  altered), a batch whose previous digest is not its predecessor's, two different
  records at one position, or a malformed chain header;
* **gap** — batches missing between two that are present, or records missing from a
  batch that is neither the chain's first nor its last one present;
* **reorder** — within a partition, a record of a chain after one that follows it;
* **duplicate** — the same record twice.

What a chain cannot show: its first batches removed (retention does the same; noted),
and its newest batches removed (a stopped producer looks the same; an incomplete
last batch is noted, not reported). Keep an external record of chain heads for those.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from streams.privacy.keys import PrivacyKey

CHAIN_HEADER = "streamscore.audit.chain"
INDEX_HEADER = "streamscore.audit.chain.index"
VERSION = "v1"
GENESIS = "0" * 64
_LABEL = b"streamscore-audit-chain/v1\n"

Headers = list[tuple[str, bytes]]

#: ``(INDEX_HEADER, b"<i>")`` for each position seen so far: built once, shared.
_INDEX: list[tuple[str, bytes]] = []


def _index_headers(n: int) -> list[tuple[str, bytes]]:
    while len(_INDEX) < n:
        _INDEX.append((INDEX_HEADER, str(len(_INDEX)).encode()))
    return _INDEX[:n]


def batch_digest(
    key: bytes | None,
    chain_id: str,
    seq: int,
    prev: str,
    keys: Sequence[bytes | None],
    values: Sequence[bytes],
) -> str:
    """The digest of one batch (see the module docstring); a missing key counts as empty."""
    h: Any = hmac.new(key, digestmod=hashlib.sha256) if key is not None else hashlib.sha256()
    n = len(values)
    h.update(_LABEL + f"{chain_id}\n{seq}\n{n}\n{prev}\n".encode())
    plain_keys = [k or b"" for k in keys]
    h.update(np.fromiter(map(len, plain_keys), np.int64, n).tobytes())
    h.update(b"".join(plain_keys))
    h.update(np.fromiter(map(len, values), np.int64, n).tobytes())
    h.update(b"".join(values))
    return str(h.hexdigest())


class Produce(Protocol):
    """What a chain publishes through: ``connectors.kafka.Producer.produce``."""

    def __call__(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None: ...


class AuditChain:
    """One producer's chain: links each batch to the one before, in produce order.

    Not thread-safe: one producer thread stamps its batches in the order it produces them.
    """

    def __init__(self, chain_id: str, key: PrivacyKey | None = None) -> None:
        self.chain_id = chain_id.replace(" ", "_")
        self.alg = "sha256" if key is None else f"hmac-sha256:{key.key_id}"
        self._key = key.derive("audit chain") if key is not None else None
        self.seq = 0
        self.prev = GENESIS

    @classmethod
    def new(cls, actor: str, key: PrivacyKey | None = None) -> AuditChain:
        """A fresh chain for ``actor`` (a random suffix tells its runs apart)."""
        return cls(f"{actor}.{secrets.token_hex(4)}", key)

    def link(self, keys: Sequence[bytes | None], values: Sequence[bytes]) -> list[Headers]:
        """The headers of each record of the next batch; the chain moves on by one link."""
        digest = batch_digest(self._key, self.chain_id, self.seq, self.prev, keys, values)
        text = f"{VERSION} {self.alg} {self.chain_id} {self.seq} {len(values)} {self.prev} {digest}"
        shared = (CHAIN_HEADER, text.encode())
        self.seq += 1
        self.prev = digest
        return [[shared, index] for index in _index_headers(len(values))]

    def publish(
        self, produce: Produce, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None]
    ) -> None:
        """Produce one batch of audit records with their chain headers."""
        if not values:
            return
        for value, key, headers in zip(values, keys, self.link(keys, values), strict=True):
            produce(topic, value, key, headers)
