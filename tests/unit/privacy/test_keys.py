"""The privacy key: read from a file or the environment, never from a settings file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from schemas.errors import ConfigError
from schemas.settings import PrivacySettings, Settings, load_settings
from streams.privacy.keys import Keyring, PrivacyKey, load_keyring, new_secret, parse_secret

SECRET = bytes(range(32))


def test_the_key_id_is_a_fingerprint_of_the_secret() -> None:
    key = PrivacyKey.from_secret(SECRET)
    assert key.key_id == hashlib.sha256(b"streamscore key id\x00" + SECRET).hexdigest()[:8]
    assert PrivacyKey.from_secret(SECRET).key_id == key.key_id
    assert PrivacyKey.from_secret(bytes(32)).key_id != key.key_id
    assert SECRET.hex() not in repr(key) and "secret" not in repr(key)


def test_each_purpose_gets_its_own_key() -> None:
    key = PrivacyKey.from_secret(SECRET)
    purposes = {key.derive(p) for p in ("pseudonym", "dlq aes-256-gcm", "audit chain")}
    assert len(purposes) == 3 and all(len(k) == 32 for k in purposes)
    assert key.derive("pseudonym") == PrivacyKey.from_secret(SECRET).derive("pseudonym")


def test_a_key_file_holds_hex_or_raw_bytes() -> None:
    assert parse_secret(SECRET.hex().encode() + b"\n", "f") == SECRET
    raw = b"\xff" * 40
    assert parse_secret(raw, "f") == raw
    assert len(bytes.fromhex(new_secret())) == 32


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="31-byte key; a key needs at least 32"):
        parse_secret(b"\x01" * 31, "privacy key file k")


def test_the_keyring_reads_the_key_file_and_the_retired_ones(tmp_path: Path) -> None:
    current, retired = tmp_path / "current.key", tmp_path / "retired.key"
    current.write_text(SECRET.hex())
    retired.write_text(bytes(range(1, 33)).hex())
    ring = load_keyring(PrivacySettings(key_file=current, retired_key_files=[retired]))
    assert ring.current == PrivacyKey.from_secret(SECRET)
    assert [k.key_id for k in ring] == [
        PrivacyKey.from_secret(SECRET).key_id,
        PrivacyKey.from_secret(bytes(range(1, 33))).key_id,
    ]
    assert ring.get(ring.retired[0].key_id) == ring.retired[0]
    assert ring.get("00000000") is None


def test_the_key_can_come_from_the_environment() -> None:
    ring = load_keyring(PrivacySettings(key=SecretStr(SECRET.hex())))
    assert ring.current == PrivacyKey.from_secret(SECRET)


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the privacy key file"):
        load_keyring(PrivacySettings(key_file=tmp_path / "nope"))


def test_a_purpose_without_a_key_says_how_to_get_one() -> None:
    with pytest.raises(ConfigError, match="privacy keygen"):
        Keyring(None).require("dlq.payload")


def test_a_key_written_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "streamscore.toml"
    config.write_text(f'[privacy]\nkey = "{SECRET.hex()}"\n')
    with pytest.raises(ConfigError, match="never written in a settings file") as caught:
        load_settings(config)
    assert SECRET.hex() not in str(caught.value)


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"pseudonymise": ["sensor_id"]}, "needs a key"),
        ({"key": "k" * 64, "key_file": "/k"}, "not both"),
        ({"key": "k" * 64, "pseudonymise": ["sensor_id"], "topics": {"audit": ["event_id"]}},
         "does not list"),
        ({"key": "k" * 64, "pseudonymise": ["event_id"], "topics": {"shadow": []}},
         "treat event_id alike"),
    ],
)  # fmt: skip
def test_inconsistent_privacy_settings_are_refused(
    privacy: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(privacy=privacy)


def test_outputs_default_to_pseudonyms_everywhere_but_predictions() -> None:
    p = PrivacySettings(key=SecretStr("k" * 64), pseudonymise=["sensor_id", "event_id"])
    assert p.fields_for("predictions") == []
    assert p.fields_for("audit") == p.fields_for("shadow") == p.fields_for("store")
    assert p.fields_for("store") == ["sensor_id", "event_id"]
    custom = PrivacySettings(
        key=SecretStr("k" * 64), pseudonymise=["sensor_id"], topics={"predictions": ["sensor_id"]}
    )
    assert custom.fields_for("predictions") == ["sensor_id"]
