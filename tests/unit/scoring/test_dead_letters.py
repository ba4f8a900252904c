"""The dead-letter payload policy: original bytes when they fit, a marked prefix otherwise."""

from __future__ import annotations

import hashlib

from schemas.errors import Rejection
from streams.scoring.dead_letters import (
    MAX_KEY_BYTES,
    ORIGINAL_BYTES,
    ORIGINAL_KEY_BYTES,
    ORIGINAL_SHA256,
    RECORD_OVERHEAD,
    TRUNCATED,
    DeadLetterPolicy,
    reason_headers,
)

REJECTION = Rejection(0, "size", "Oversized", "too big")
HEADERS = reason_headers("sensor.events", 2, 41, REJECTION)


def _framing(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(n) + len(v) + 8 for n, v in headers) + RECORD_OVERHEAD


def test_a_record_at_the_limit_keeps_its_bytes_and_one_byte_more_is_truncated() -> None:
    limit = 10_000
    fits = b"k" * 10, b"v" * (limit - 10 - _framing(HEADERS))
    dead = DeadLetterPolicy(limit).build(*fits, list(HEADERS), REJECTION)
    assert (dead.key, dead.value, dead.headers) == (fits[0], fits[1], HEADERS)
    assert not dead.truncated

    over = fits[1] + b"v"
    dead = DeadLetterPolicy(limit).build(fits[0], over, list(HEADERS), REJECTION)
    assert dead.truncated and dead.key == fits[0]
    extra = dict(dead.headers)
    assert extra[ORIGINAL_BYTES] == str(len(over)).encode()
    assert extra[ORIGINAL_SHA256] == hashlib.sha256(over).hexdigest().encode()
    assert dead.value == over[: len(dead.value or b"")]
    assert len(dead.value or b"") + len(dead.key or b"") + _framing(dead.headers) <= limit
    assert dead.headers[: len(HEADERS)] == HEADERS  # the reason headers stay first, untouched


def test_far_over_every_limit_the_dead_letter_still_fits() -> None:
    value = bytes(range(256)) * 40_000  # 10 MB
    dead = DeadLetterPolicy(1_000_000).build(b"sensor-1", value, list(HEADERS), REJECTION)
    assert dead.truncated
    assert 900_000 < len(dead.value or b"") < 1_000_000
    assert dict(dead.headers)[TRUNCATED] == b"true"


def test_an_oversized_key_is_cut_and_its_length_kept() -> None:
    key = b"x" * 50_000
    dead = DeadLetterPolicy(20_000).build(key, b"v" * 100, list(HEADERS), REJECTION)
    assert dead.key == key[:MAX_KEY_BYTES]
    assert dict(dead.headers)[ORIGINAL_KEY_BYTES] == b"50000"


def test_shrink_steps_down_to_nothing_then_gives_up() -> None:
    policy = DeadLetterPolicy(1_000_000)
    value, key, headers = b"v" * 400_000, b"k", list(HEADERS)
    sizes = []
    for _ in range(20):
        smaller = policy.shrink("dlq", value, key, headers)
        if smaller is None:
            break
        value, key, new_headers = smaller
        headers = list(new_headers or [])
        sizes.append(len(value or b""))
    assert sizes[0] < 400_000 and sizes == sorted(sizes, reverse=True) and sizes[-1] == 0
    assert dict(headers)[ORIGINAL_BYTES] == b"400000"  # the first shrink's truth is kept
    assert policy.shrink("dlq", b"", key, headers) is None
