"""Fixed keys for the privacy tests: exact outputs, no randomness but the GCM nonces."""

from __future__ import annotations

import pytest

from streams.privacy.keys import Keyring, PrivacyKey


@pytest.fixture
def key() -> PrivacyKey:
    return PrivacyKey.from_secret(bytes(range(32)))


@pytest.fixture
def old_key() -> PrivacyKey:
    return PrivacyKey.from_secret(bytes(range(100, 132)))


@pytest.fixture
def keyring(key: PrivacyKey) -> Keyring:
    return Keyring(key)
