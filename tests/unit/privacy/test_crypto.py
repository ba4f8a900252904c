"""AES-256-GCM envelopes of dead letters: round trip, tamper detection, the size policy."""

from __future__ import annotations

import hashlib

import pytest

from schemas.errors import Rejection
from streams.privacy.crypto import OVERHEAD, Sealer, SealError, is_sealed, open_sealed
from streams.privacy.keys import Keyring, PrivacyKey
from streams.scoring.dead_letters import (
    KEY_ID,
    ORIGINAL_BYTES,
    ORIGINAL_SHA256,
    PAYLOAD,
    TRUNCATED,
    DeadLetterPolicy,
    _size,
    reason_headers,
)

PAYLOAD_BYTES = bytes(range(256)) * 8  # 2 KiB
REJECTION = Rejection(0, "decode", "Undecodable", "not an event")


def test_a_sealed_payload_opens_to_the_original_key_and_bytes(key: PrivacyKey) -> None:
    sealer = Sealer(key)
    for original_key in (b"sensor-1", b"", None):
        sealed = sealer.seal(original_key, PAYLOAD_BYTES)
        assert is_sealed(sealed) and PAYLOAD_BYTES not in sealed
        assert len(sealed) == len(PAYLOAD_BYTES) + len(original_key or b"") + OVERHEAD
        opened = open_sealed(sealed, Keyring(key))
        assert (opened.key_id, opened.original_key, opened.payload) == (
            key.key_id,
            original_key,
            PAYLOAD_BYTES,
        )


def test_every_record_gets_a_fresh_nonce(key: PrivacyKey) -> None:
    sealer = Sealer(key)
    first, second = sealer.seal(b"k", b"same"), sealer.seal(b"k", b"same")
    assert first != second
    assert first[12:24] != second[12:24]  # the nonces


def test_any_altered_byte_is_refused(key: PrivacyKey) -> None:
    sealed = Sealer(key).seal(b"sensor-1", b"payload")
    for at in range(len(sealed)):
        altered = bytearray(sealed)
        altered[at] ^= 0x01
        with pytest.raises(SealError):
            open_sealed(bytes(altered), Keyring(key))
    with pytest.raises(SealError):
        open_sealed(sealed[:-1], Keyring(key))


def test_another_key_cannot_open_it_and_a_retired_key_still_can(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    sealed = Sealer(old_key).seal(b"k", b"written before the rotation")
    with pytest.raises(SealError, match="not among the configured keys"):
        open_sealed(sealed, Keyring(key))
    forged = sealed[:4] + key.key_id.encode() + sealed[12:]  # claim the current key's id
    with pytest.raises(SealError, match="fails authentication"):
        open_sealed(forged, Keyring(key))
    assert open_sealed(sealed, Keyring(key, (old_key,))).payload == b"written before the rotation"


def _headers() -> list[tuple[str, bytes]]:
    return reason_headers("sensor.events", 2, 41, REJECTION)


def _header(headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    return next((v for n, v in headers if n == name), None)


def _pseudonym(key: bytes) -> bytes:
    return b"p:" + key


def test_a_redacted_dead_letter_keeps_the_reason_size_and_digest_only() -> None:
    policy = DeadLetterPolicy(payload="redacted", key_pseudonym=_pseudonym)
    dead = policy.build(b"sensor-1", PAYLOAD_BYTES, _headers(), REJECTION)
    assert dead.value == b"" and dead.key == b"p:sensor-1"
    assert dead.headers[: len(_headers())] == _headers()
    assert _header(dead.headers, PAYLOAD) == b"redacted"
    assert _header(dead.headers, ORIGINAL_BYTES) == b"2048"
    assert (
        _header(dead.headers, ORIGINAL_SHA256) == hashlib.sha256(PAYLOAD_BYTES).hexdigest().encode()
    )
    assert DeadLetterPolicy(payload="redacted").build(b"s", b"x", [], REJECTION).key is None


def test_an_encrypted_dead_letter_opens_with_the_key(key: PrivacyKey) -> None:
    policy = DeadLetterPolicy(payload="encrypted", sealer=Sealer(key), key_pseudonym=_pseudonym)
    dead = policy.build(b"sensor-1", PAYLOAD_BYTES, _headers(), REJECTION)
    assert dead.key == b"p:sensor-1"
    assert _header(dead.headers, PAYLOAD) == b"encrypted"
    assert _header(dead.headers, KEY_ID) == key.key_id.encode()
    assert _header(dead.headers, TRUNCATED) is None
    opened = open_sealed(dead.value or b"", Keyring(key))
    assert (opened.original_key, opened.payload) == (b"sensor-1", PAYLOAD_BYTES)


def test_an_encrypted_dead_letter_seals_the_prefix_that_fits_the_limit(key: PrivacyKey) -> None:
    limit = 1500
    policy = DeadLetterPolicy(
        limit, payload="encrypted", sealer=Sealer(key), key_pseudonym=_pseudonym
    )
    dead = policy.build(b"sensor-1", PAYLOAD_BYTES, _headers(), REJECTION)
    assert _size(dead.key, dead.value, dead.headers) <= limit
    assert _header(dead.headers, TRUNCATED) == b"true" and dead.truncated
    assert _header(dead.headers, ORIGINAL_BYTES) == b"2048"
    opened = open_sealed(dead.value or b"", Keyring(key))
    assert 0 < len(opened.payload) < len(PAYLOAD_BYTES)
    assert PAYLOAD_BYTES.startswith(opened.payload)
    assert _size(dead.key, dead.value, dead.headers) > limit - 16  # as much as fits


def test_a_refused_envelope_shrinks_to_its_headers(key: PrivacyKey) -> None:
    policy = DeadLetterPolicy(payload="encrypted", sealer=Sealer(key))
    dead = policy.build(b"sensor-1", PAYLOAD_BYTES, _headers(), REJECTION)
    smaller = policy.shrink("sensor.dlq", dead.value, dead.key, dead.headers)
    assert smaller is not None
    value, shrunk_key, headers = smaller
    assert value == b"" and shrunk_key == dead.key
    assert _header(headers or [], TRUNCATED) == b"true"
    assert _header(headers or [], ORIGINAL_SHA256) == _header(dead.headers, ORIGINAL_SHA256)
    assert policy.shrink("sensor.dlq", value, shrunk_key, headers) is None


def test_encrypted_needs_a_sealer() -> None:
    with pytest.raises(ValueError, match="needs a sealer"):
        DeadLetterPolicy(payload="encrypted")
