"""API keys of the HTTP door: hashed at rest, two roles, revocable without a restart.

A key reads ``ssk_<id>_<secret>``: ``id`` (8 hex digits) names its entry, so an unknown
key costs no hashing; ``secret`` is 32 random bytes. What is kept of a key is its name,
role, id and a salted scrypt hash of the whole key, never the key itself: it is printed
once, by ``streamscore serve keys add``, and nowhere else.

The keys file (``serve.keys_file``, default ``<home>/serve-keys.json``) is JSON::

    {"keys": [{"name": "alice", "role": "operator", "id": "3f9c2a1b",
               "hash": "scrypt$16384$8$1$<salt>$<hash>", "created_at": "2026-..."}]}

More entries may come from ``serve.keys`` (an environment variable), as
``NAME:ROLE:ID:HASH`` separated by commas or whitespace. The server looks at the
file at most once a second and re-reads it when it changed, so removing an entry
(``streamscore serve keys revoke NAME``) revokes the key while the server runs. A
file that stops parsing revokes every key it held (fail closed) and is logged.

Roles: ``reader`` (scoring, metadata, model listings) and ``operator`` (everything,
including promote, rollback and alias moves).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from schemas.errors import ConfigError

log = logging.getLogger(__name__)

Role = Literal["reader", "operator"]
ROLES: tuple[Role, ...] = ("reader", "operator")
_RANK = {"reader": 1, "operator": 2}
PREFIX = "ssk_"
_TOKEN = re.compile(r"^ssk_([0-9a-f]{8})_([A-Za-z0-9_\-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
#: scrypt cost: 16 MiB and ~40 ms per hash; a verified key is remembered in memory.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    role: Role
    id: str
    hash: str
    created_at: str = ""

    def allows(self, role: Role) -> bool:
        """An operator key may do what a reader key may."""
        return _RANK[self.role] >= _RANK[role]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_key(key: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` of ``key`` with a fresh 16-byte salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_key(key: str, encoded: str) -> bool:
    """Does ``key`` hash to ``encoded``? (Constant-time comparison.)"""
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            key.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 2**20,
            dklen=32,
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, _unb64(expected))


def key_id(key: str) -> str | None:
    """The entry id a presented key names, or None when it is no streamscore key."""
    match = _TOKEN.match(key)
    return match.group(1) if match else None


def new_key(name: str, role: str) -> tuple[str, KeyEntry]:
    """A fresh key and the entry that stores its hash (the key itself is not kept)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@' (e.g. alice)"
        )
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: use one of {', '.join(ROLES)}")
    ident = secrets.token_hex(4)
    key = f"{PREFIX}{ident}_{secrets.token_urlsafe(32)}"
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return key, KeyEntry(name, cast(Role, role), ident, hash_key(key), created)


# -- storage ----------------------------------------------------------------------------------


def _entry(raw: object, where: str) -> KeyEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each key is an object with name, role, id and hash")
    try:
        entry = KeyEntry(
            name=str(raw["name"]),
            role=raw["role"],
            id=str(raw["id"]),
            hash=str(raw["hash"]),
            created_at=str(raw.get("created_at", "")),
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: a key entry lacks {exc.args[0]!r}") from exc
    if entry.role not in ROLES:
        raise ConfigError(f"{where}: key {entry.name!r} has role {entry.role!r}, not {ROLES}")
    if not entry.hash.startswith("scrypt$"):
        raise ConfigError(f"{where}: key {entry.name!r} is not a scrypt hash (keys are hashed)")
    return entry


def read_keys_file(path: Path) -> list[KeyEntry]:
    """The entries of a keys file; none when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"keys file {path} is not JSON: {exc}") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ConfigError(f'keys file {path}: expected {{"keys": [...]}}')
    return [_entry(raw, str(path)) for raw in keys]


def write_keys_file(path: Path, entries: list[KeyEntry]) -> None:
    """Replace the keys file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"keys": [asdict(e) for e in entries]}, indent=2) + "\n"
    fd, staged = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.chmod(staged, 0o600)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def add_key(path: Path, name: str, role: str) -> tuple[str, KeyEntry]:
    """Create a key named ``name`` (a name is unique); returns the key, to print once."""
    entries = read_keys_file(path)
    if any(e.name == name for e in entries):
        raise ConfigError(f"a key named {name!r} exists in {path}; revoke it first or pick another")
    key, entry = new_key(name, role)
    write_keys_file(path, [*entries, entry])
    return key, entry


def revoke_key(path: Path, name: str) -> KeyEntry:
    """Remove the key named ``name``; a running server stops accepting it within a second."""
    entries = read_keys_file(path)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise ConfigError(f"no key named {name!r} in {path}")
    write_keys_file(path, kept)
    return next(e for e in entries if e.name == name)


def parse_key_list(text: str) -> list[KeyEntry]:
    """``NAME:ROLE:ID:HASH`` entries separated by commas or whitespace (``serve.keys``)."""
    entries = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 4:
            raise ConfigError(
                "serve.keys: each entry is NAME:ROLE:ID:HASH "
                "(the id and hash of `streamscore serve keys add`)"
            )
        name, role, ident, hashed = parts
        entries.append(
            _entry({"name": name, "role": role, "id": ident, "hash": hashed}, "serve.keys")
        )
    return entries


# -- the server's view ------------------------------------------------------------------------


class KeyStore:
    """The keys a server accepts: the file (re-read when it changes) plus fixed entries."""

    def __init__(
        self, path: Path | None, fixed: list[KeyEntry] | None = None, *, check_every_s: float = 1.0
    ) -> None:
        self.path = path
        self.fixed = list(fixed or [])
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self._from_file: list[KeyEntry] = read_keys_file(path) if path is not None else []
        self._stamp = self._file_stamp()
        self._by_id: dict[str, KeyEntry] = {}
        #: sha256 of keys verified against an entry's hash: no scrypt on every request.
        self._verified: dict[str, str] = {}
        self._index()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _index(self) -> None:
        by_id = {e.id: e for e in [*self._from_file, *self.fixed]}
        self._by_id = by_id
        hashes = {e.hash for e in by_id.values()}
        self._verified = {k: h for k, h in self._verified.items() if h in hashes}

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed (at most every ``check_every_s`` unless forced)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_every_s:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp or self.path is None:
            return
        try:
            entries = read_keys_file(self.path)
        except ConfigError as exc:
            log.error("keys file unusable, refusing its keys until it is fixed: %s", exc)
            entries = []
        with self._lock:
            self._stamp = stamp
            self._from_file = entries
            self._index()
        log.info("keys file %s re-read: %d key(s)", self.path, len(entries))

    def lookup(self, key: str) -> tuple[KeyEntry | None, bool]:
        """(entry named by ``key``, already verified?); (None, _) for an unknown key."""
        self.refresh()
        ident = key_id(key)
        if ident is None:
            return None, False
        with self._lock:
            entry = self._by_id.get(ident)
            known = entry is not None and self._verified.get(_fingerprint(key)) == entry.hash
        return entry, known

    def verify(self, key: str, entry: KeyEntry) -> bool:
        """Check ``key`` against ``entry`` (scrypt: call it off the event loop)."""
        if not verify_key(key, entry.hash):
            return False
        with self._lock:
            if self._by_id.get(entry.id) == entry:  # not revoked meanwhile
                self._verified[_fingerprint(key)] = entry.hash
                return True
        return False

    def authenticate(self, key: str) -> KeyEntry | None:
        """The entry ``key`` belongs to, or None (unknown, wrong or revoked)."""
        entry, known = self.lookup(key)
        if entry is None:
            return None
        return entry if known or self.verify(key, entry) else None


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def default_keys_file(home: Path) -> Path:
    return home / "serve-keys.json"
