"""The privacy key: where it comes from, its id, and the keys derived from it.

One secret serves every purpose through HKDF-SHA256 (RFC 5869) with a label per
purpose, so a pseudonym never reveals anything about the DLQ's encryption key and
vice versa. The key id is a short fingerprint of the secret: records carry it, so
after a rotation the key that wrote a record is found again among the retired ones.

A key is 32 random bytes or more. A key file (or ``STREAMSCORE_PRIVACY__KEY``) holds
them as hex (what :func:`new_secret` writes) or as raw bytes; surrounding whitespace is
ignored. Nothing here reads the environment: the settings did.

>>> key = PrivacyKey.from_secret(bytes(range(32)))
>>> key.key_id
'e95748fc'
>>> len(key.derive("pseudonym"))
32
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from schemas.settings import PrivacySettings

#: The fewest secret bytes a key may have.
MIN_KEY_BYTES = 32
_KEY_ID_LABEL = b"streamscore key id\x00"
_HKDF_SALT = b"streamscore privacy v1"


@dataclass(frozen=True, slots=True)
class PrivacyKey:
    """One secret and its id; the secret never appears in a repr."""

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> PrivacyKey:
        return cls(hashlib.sha256(_KEY_ID_LABEL + secret).hexdigest()[:8], secret)

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """The key for ``purpose``: HKDF-SHA256, a fixed salt, the purpose as the label."""
        prk = hmac.digest(_HKDF_SALT, self.secret, "sha256")
        out, block = b"", b""
        for counter in range(1, -(-length // 32) + 1):
            block = hmac.digest(prk, block + purpose.encode() + bytes([counter]), "sha256")
            out += block
        return out[:length]


def parse_secret(text: bytes, where: str) -> bytes:
    """The secret a key file or variable holds: hex when it is hex, else the bytes as they are."""
    stripped = text.strip()
    try:
        secret = bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = stripped
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where} holds a {len(secret)}-byte key; a key needs at least {MIN_KEY_BYTES} "
            "random bytes: `streamscore privacy keygen --out FILE` writes one"
        )
    return secret


def new_secret() -> str:
    """A fresh key as 64 hex characters (32 random bytes)."""
    return secrets.token_hex(MIN_KEY_BYTES)


def read_key_file(path: Path) -> PrivacyKey:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the privacy key file {path}: {exc.strerror}") from exc
    return PrivacyKey.from_secret(parse_secret(text, f"privacy key file {path}"))


@dataclass(frozen=True, slots=True)
class Keyring:
    """The current key (None: no key configured) and the retired ones, found by id."""

    current: PrivacyKey | None
    retired: tuple[PrivacyKey, ...] = ()

    def __iter__(self) -> Iterator[PrivacyKey]:
        """Every key, the current one first."""
        if self.current is not None:
            yield self.current
        yield from self.retired

    def get(self, key_id: str) -> PrivacyKey | None:
        return next((k for k in self if k.key_id == key_id), None)

    def require(self, purpose: str) -> PrivacyKey:
        """The current key, or a :class:`ConfigError` saying what needs one."""
        if self.current is None:
            raise ConfigError(
                f"{purpose} needs a key: set privacy.key_file or STREAMSCORE_PRIVACY__KEY "
                "(`streamscore privacy keygen --out FILE` writes one)"
            )
        return self.current


def load_keyring(settings: PrivacySettings) -> Keyring:
    """The keys the settings name, read now (a missing or short key is a ConfigError)."""
    current: PrivacyKey | None = None
    if settings.key_file is not None:
        current = read_key_file(settings.key_file)
    elif settings.key is not None:
        secret = parse_secret(settings.key.get_secret_value().encode(), "STREAMSCORE_PRIVACY__KEY")
        current = PrivacyKey.from_secret(secret)
    retired = tuple(read_key_file(path) for path in settings.retired_key_files)
    return Keyring(current, retired)
