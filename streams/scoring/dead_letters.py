"""Dead letters: the rejected record, why, and a payload the DLQ is sure to accept.

Payload policy. A dead letter keeps the original key and bytes untouched whenever the
record fits the DLQ's limit — the smallest of the producer's ``message.max.bytes``, the
broker's ``message.max.bytes`` and the DLQ topic's ``max.message.bytes`` that the
processor could learn at start. A record that does not fit keeps a prefix of its bytes
(as much as fits) and says so in headers, so nothing is lost silently:

* ``streamscore.dlq.truncated`` = ``true``
* ``streamscore.dlq.original.bytes`` = the original value's length
* ``streamscore.dlq.original.sha256`` = hex digest of the original value

If the broker still refuses it at delivery (a limit the processor could not see), the
producer asks :meth:`DeadLetterPolicy.shrink` for a smaller record, down to headers only.

The reason travels in Kafka Connect's header names (``__connect.errors.*``), so tools
that read Connect dead-letter queues read ours.

Payload modes (``dlq.payload``), because a DLQ of raw personal data is a compliance
problem. ``raw`` is the policy above. ``redacted`` keeps the reason headers and replaces
the payload with nothing but its size and SHA-256 (the headers above, and
``streamscore.dlq.payload`` = ``redacted``). ``encrypted`` seals the original key and as
much of the payload as fits the limit in an AES-256-GCM envelope
(``streams.privacy.crypto``), with the size, digest, ``streamscore.dlq.payload`` =
``encrypted`` and ``streamscore.dlq.key.id`` in headers; ``streamscore dlq show`` opens
it for a holder of the key. In both modes the Kafka key is the original key's
pseudonym (same key, same partition), or none when no privacy key is configured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from schemas.errors import Rejection
from streams.privacy.crypto import OVERHEAD, Sealer

#: Kafka Connect's dead-letter header names: tools that read Connect DLQs read ours.
DLQ_HEADER_PREFIX = "__connect.errors."
TRUNCATED = "streamscore.dlq.truncated"
ORIGINAL_BYTES = "streamscore.dlq.original.bytes"
ORIGINAL_SHA256 = "streamscore.dlq.original.sha256"
#: Record framing a broker counts against its limit beyond key, value and headers
#: (record batch header, varints, attributes), rounded up generously.
RECORD_OVERHEAD = 512
#: A key longer than this is cut too (its full length goes in a header).
MAX_KEY_BYTES = 1024
ORIGINAL_KEY_BYTES = "streamscore.dlq.original.key.bytes"
#: ``raw``, ``redacted`` or ``encrypted``: what the value holds (absent = raw).
PAYLOAD = "streamscore.dlq.payload"
#: The id of the privacy key an ``encrypted`` payload is sealed with.
KEY_ID = "streamscore.dlq.key.id"
PayloadMode = Literal["raw", "redacted", "encrypted"]

#: librdkafka's default producer ``message.max.bytes``: the limit until one is learnt.
LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: Headers
    rejection: Rejection

    @property
    def truncated(self) -> bool:
        return any(name == TRUNCATED for name, _ in self.headers)


def reason_headers(topic: str, partition: int, offset: int, rejection: Rejection) -> Headers:
    """Where the record came from and why it was refused."""
    p = DLQ_HEADER_PREFIX
    return [
        (p + "topic", topic.encode()),
        (p + "partition", str(partition).encode()),
        (p + "offset", str(offset).encode()),
        (p + "stage", rejection.stage.encode()),
        (p + "class.name", b"streams.processor"),
        (p + "exception.class.name", rejection.reason.encode()),
        (p + "exception.message", rejection.message.encode()),
    ]


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    framing = sum(len(name) + len(v) + 8 for name, v in headers)
    return len(key or b"") + len(value or b"") + framing + RECORD_OVERHEAD


class DeadLetterPolicy:
    """Builds dead letters no larger than ``limit_bytes`` (see the module docstring).

    ``payload`` is the mode; ``encrypted`` needs a ``sealer``. ``key_pseudonym`` gives the
    Kafka key of a redacted or encrypted dead letter (None: no key).
    """

    def __init__(
        self,
        limit_bytes: int = LIBRDKAFKA_MAX_MESSAGE_BYTES,
        *,
        payload: PayloadMode = "raw",
        sealer: Sealer | None = None,
        key_pseudonym: Callable[[bytes], bytes] | None = None,
    ) -> None:
        if payload == "encrypted" and sealer is None:
            raise ValueError("an encrypted dead-letter payload needs a sealer")
        self.limit_bytes = limit_bytes
        self.payload = payload
        self.sealer = sealer
        self.key_pseudonym = key_pseudonym

    def build(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        rejection: Rejection,
    ) -> DeadLetter:
        if self.payload == "raw":
            key, value, headers = self.fit(key, value, headers, self.limit_bytes)
        else:
            key, value, headers = self.protect(key, value, headers)
        return DeadLetter(key, value, headers, rejection)

    def protect(
        self, key: bytes | None, value: bytes | None, headers: Headers
    ) -> tuple[bytes | None, bytes, Headers]:
        """A redacted or encrypted record: size and digest in headers, and (encrypted) the
        original key and as much of the payload as fits the limit, sealed."""
        original = value or b""
        headers = [
            *headers,
            (PAYLOAD, self.payload.encode()),
            (ORIGINAL_BYTES, str(len(original)).encode()),
            (ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
        ]
        shown_key = self.key_pseudonym(key) if key is not None and self.key_pseudonym else None
        if self.payload == "redacted" or self.sealer is None:
            return shown_key, b"", headers
        headers.append((KEY_ID, self.sealer.key_id.encode()))
        if key is not None and len(key) > MAX_KEY_BYTES:
            headers.append((ORIGINAL_KEY_BYTES, str(len(key)).encode()))
            key = key[:MAX_KEY_BYTES]
        truncated = [*headers, (TRUNCATED, b"true")]
        room = self.limit_bytes - _size(shown_key, b"", truncated) - OVERHEAD - len(key or b"")
        if room < len(original):
            headers = truncated
        return shown_key, self.sealer.seal(key, original[: max(room, 0)]), headers

    def fit(
        self, key: bytes | None, value: bytes | None, headers: Headers, limit: int
    ) -> tuple[bytes | None, bytes | None, Headers]:
        """The record as it is when it fits ``limit``, else a prefix with the headers."""
        if _size(key, value, headers) <= limit:
            return key, value, headers
        headers = [h for h in headers if h[0] not in (TRUNCATED, ORIGINAL_BYTES, ORIGINAL_SHA256)]
        if key is not None and len(key) > MAX_KEY_BYTES:
            headers.append((ORIGINAL_KEY_BYTES, str(len(key)).encode()))
            key = key[:MAX_KEY_BYTES]
        original = value or b""
        headers += [
            (TRUNCATED, b"true"),
            (ORIGINAL_BYTES, str(len(original)).encode()),
            (ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
        ]
        room = max(limit - _size(key, b"", headers), 0)
        return key, original[:room], headers

    def shrink(
        self, _topic: str, value: bytes | None, key: bytes | None, headers: Headers | None
    ) -> tuple[bytes | None, bytes | None, Headers | None] | None:
        """A smaller replacement for a dead letter the broker refused; None at headers only."""
        if not value:
            return None
        headers = list(headers or [])
        if (PAYLOAD, b"encrypted") in headers:
            # A cut envelope would not open: drop it; size and digest stay in the headers.
            if not any(name == TRUNCATED for name, _ in headers):
                headers.append((TRUNCATED, b"true"))
            return b"", key, headers
        digest_known = any(name == ORIGINAL_SHA256 for name, _ in headers)
        limit = max(_size(key, value, headers) // 4, 0)
        if digest_known:  # already a prefix: keep the original size and digest headers
            return value[: max(len(value) // 4, 0)] or b"", key, headers
        key, value, headers = self.fit(key, value, headers, limit)
        return value, key, headers
