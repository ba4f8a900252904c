"""AES-256-GCM envelopes for dead-letter payloads.

A dead letter holds an input the processor refused: often personal data. In
``dlq.payload = "encrypted"`` mode its original key and bytes travel sealed::

    b"SSE1" | key id (8 ASCII) | nonce (12 random bytes) | AES-256-GCM(plaintext) + tag (16)
    plaintext = original key length (4 bytes, big-endian; 0xFFFFFFFF = no key) | key | payload

The key is the privacy key's ``dlq`` purpose key; the associated data is the magic and
the key id, so neither can be swapped without the tag failing. A fresh random 96-bit
nonce per record (the GCM limit of 2^32 records per key is far beyond a DLQ's life).
Tampering with any byte makes :func:`open_sealed` raise :class:`SealError`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.privacy.keys import Keyring, PrivacyKey

MAGIC = b"SSE1"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
_NO_KEY = 0xFFFFFFFF
#: Bytes an envelope adds to its payload, besides the original key.
OVERHEAD = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES + 4


class SealError(ValueError):
    """An envelope that does not open: not one, an unknown key, or tampered with."""


def is_sealed(value: bytes | None) -> bool:
    return value is not None and value.startswith(MAGIC)


@dataclass(frozen=True, slots=True)
class Opened:
    key_id: str
    original_key: bytes | None
    payload: bytes


class Sealer:
    """Seals payloads under one key (the current one)."""

    def __init__(self, key: PrivacyKey) -> None:
        self.key_id = key.key_id
        self._aead = AESGCM(key.derive("dlq aes-256-gcm"))
        self._header = MAGIC + key.key_id.encode("ascii")

    def seal(self, original_key: bytes | None, payload: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        length = _NO_KEY if original_key is None else len(original_key)
        plaintext = struct.pack(">I", length) + (original_key or b"") + payload
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, self._header)


def open_sealed(value: bytes, keyring: Keyring) -> Opened:
    """The original key and payload of an envelope; :class:`SealError` when it does not open."""
    if not is_sealed(value) or len(value) < OVERHEAD:
        raise SealError("not a streamscore envelope")
    header_end = len(MAGIC) + KEY_ID_BYTES
    key_id = value[len(MAGIC) : header_end].decode("ascii", "replace")
    key = keyring.get(key_id)
    if key is None:
        raise SealError(f"sealed with key {key_id}, which is not among the configured keys")
    nonce = value[header_end : header_end + NONCE_BYTES]
    try:
        plaintext = AESGCM(key.derive("dlq aes-256-gcm")).decrypt(
            nonce, value[header_end + NONCE_BYTES :], value[:header_end]
        )
    except InvalidTag as exc:
        raise SealError(f"envelope under key {key_id} fails authentication (altered)") from exc
    (length,) = struct.unpack_from(">I", plaintext)
    if length == _NO_KEY:
        return Opened(key_id, None, plaintext[4:])
    return Opened(key_id, plaintext[4 : 4 + length], plaintext[4 + length :])
