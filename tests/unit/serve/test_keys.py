"""API keys: hashed at rest, roles, re-read when the file changes (revocation), fail closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.serve.keys import (
    KeyStore,
    add_key,
    hash_key,
    key_id,
    parse_key_list,
    read_keys_file,
    revoke_key,
    verify_key,
)


def test_a_key_is_verified_by_its_salted_hash_only() -> None:
    key = "ssk_0123abcd_" + "x" * 43
    one, two = hash_key(key), hash_key(key)
    assert one != two  # a fresh salt each time
    assert verify_key(key, one) and verify_key(key, two)
    assert not verify_key(key + "y", one)
    assert key not in one and key_id(key) == "0123abcd"
    assert key_id("not-a-key") is None


def test_the_file_keeps_no_key_in_clear_and_roles_rank(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    operator, entry = add_key(path, "alice", "operator")
    reader, _ = add_key(path, "bob", "reader")
    text = path.read_text()
    assert operator not in text and reader not in text
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    store = KeyStore(path)
    alice, bob = store.authenticate(operator), store.authenticate(reader)
    assert alice == entry and alice is not None and alice.allows("operator")
    assert bob is not None and bob.allows("reader") and not bob.allows("operator")
    assert store.authenticate(operator[:-1] + ("a" if operator[-1] != "a" else "b")) is None
    with pytest.raises(ConfigError, match="exists"):
        add_key(path, "alice", "reader")
    with pytest.raises(ConfigError, match="role"):
        add_key(path, "carol", "admin")


def test_revoking_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, _ = add_key(path, "alice", "operator")
    store = KeyStore(path, check_every_s=0.0)
    assert store.authenticate(key) is not None  # verified, then remembered
    revoke_key(path, "alice")
    assert store.authenticate(key) is None
    assert read_keys_file(path) == []


def test_a_broken_file_refuses_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, _ = add_key(path, "alice", "operator")
    store = KeyStore(path, check_every_s=0.0)
    assert store.authenticate(key) is not None
    path.write_text("{not json")
    assert store.authenticate(key) is None


def test_keys_from_the_environment_are_hashes_too() -> None:
    key = "ssk_0badcafe_" + "k" * 43
    entries = parse_key_list(f"ops:operator:0badcafe:{hash_key(key)}, ")
    store = KeyStore(None, entries)
    found = store.authenticate(key)
    assert found is not None and found.name == "ops"
    with pytest.raises(ConfigError, match="NAME:ROLE:ID:HASH"):
        parse_key_list("ops:operator")
    with pytest.raises(ConfigError, match="hashed"):
        parse_key_list(f"ops:operator:0badcafe:{key}")
