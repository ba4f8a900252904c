"""Keyed pseudonyms of entity identifiers, per batch.

A pseudonym is ``<key id>:<first 128 bits of HMAC-SHA256(k, value), hex>``, where ``k``
is the privacy key's ``pseudonym`` purpose key (see ``streams.privacy.keys``). It is
stable for as long as the key is (the same sensor always gets the same pseudonym, so
joins and per-entity ordering keep working), cannot be reversed or recomputed without
the key (an unkeyed hash of a sensor id is reversed by trying every id), and says
which key made it, so a rotation leaves records that still name their key.

Cost: one HMAC per distinct value per batch (two SHA-256 compressions from
precomputed inner and outer states, ~1.3 µs); ``sensor_id`` pseudonyms are also
remembered across batches (a bounded cache), so a batch of known sensors costs a dict
lookup per event. Nothing runs at all when ``privacy.pseudonymise`` is empty: the
pipeline then holds no :class:`Pseudonymiser`.

>>> from streams.privacy.keys import PrivacyKey
>>> p = Pseudonymiser(PrivacyKey.from_secret(bytes(32)), {"audit": frozenset({"sensor_id"})})
>>> p.pseudonym("sensor-1") == p.pseudonyms(["sensor-1"])[0]
True
>>> p.pseudonym("sensor-1").split(":")[0] == p.key_id
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.settings import PrivacyRole, PrivacySettings
from streams.privacy.keys import Keyring, PrivacyKey

#: Outputs that carry identifiers, in the order the settings document them.
ROLES: tuple[PrivacyRole, ...] = ("predictions", "audit", "shadow", "store")
#: Identifiers whose pseudonyms are remembered across batches (few distinct values).
CACHED_FIELDS = frozenset({"sensor_id"})
#: Pseudonyms remembered, at most, per cached field (the cache restarts when full).
CACHE_SIZE = 100_000
#: Hex characters of the HMAC kept (128 bits: no collision among 2^50 values in practice).
DIGEST_HEX = 32


@dataclass(frozen=True, slots=True)
class Identities:
    """The identifier columns one output carries, aligned with the batch's scored events.

    ``keys`` are the Kafka keys of that output: the input keys, or the pseudonymised
    sensor ids when the output's ``sensor_id`` is pseudonymised (the input key is
    usually the sensor id, and a pseudonym keeps per-sensor partitioning).
    """

    event_ids: list[str]
    sensor_ids: list[str]
    keys: list[bytes | None]


class Pseudonymiser:
    """Pseudonyms under one key, and which fields each output carries pseudonymised."""

    def __init__(self, key: PrivacyKey, fields_by_role: Mapping[str, frozenset[str]]) -> None:
        self.key_id = key.key_id
        self.fields_by_role = {role: frozenset(f) for role, f in fields_by_role.items()}
        secret = key.derive("pseudonym").ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in secret)).copy
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in secret)).copy
        self._prefix = f"{key.key_id}:"
        self._caches: dict[str, dict[str, str]] = {f: {} for f in CACHED_FIELDS}

    @classmethod
    def for_key(cls, key: PrivacyKey, settings: PrivacySettings) -> Pseudonymiser:
        return cls(key, {role: frozenset(settings.fields_for(role)) for role in ROLES})

    @classmethod
    def from_settings(cls, settings: PrivacySettings, keyring: Keyring) -> Pseudonymiser | None:
        """The pseudonymiser the settings ask for; None when nothing is pseudonymised."""
        if not settings.pseudonymise:
            return None
        return cls.for_key(keyring.require("privacy.pseudonymise"), settings)

    def fields(self, role: str) -> frozenset[str]:
        return self.fields_by_role.get(role, frozenset())

    def pseudonym(self, value: str) -> str:
        """HMAC-SHA256 of ``value`` under the pseudonym key, as ``<key id>:<hex>``."""
        inner = self._inner()
        inner.update(value.encode())
        outer = self._outer()
        outer.update(inner.digest())
        return self._prefix + outer.hexdigest()[:DIGEST_HEX]

    def pseudonyms(self, values: Sequence[str], field: str = "") -> list[str]:
        """The pseudonym of each value: one HMAC per distinct value (per batch, or once
        while cached for the fields in :data:`CACHED_FIELDS`)."""
        cache = self._caches.get(field)
        if cache is None:
            cache = {}
        elif len(cache) > CACHE_SIZE:
            cache.clear()
        pseudonym = self.pseudonym
        out = []
        for value in values:
            p = cache.get(value)
            if p is None:
                p = cache[value] = pseudonym(value)
            out.append(p)
        return out

    def identities(
        self, event_ids: list[str], sensor_ids: list[str], keys: list[bytes | None]
    ) -> dict[str, Identities]:
        """Each output's identifier columns: each pseudonymised column computed once."""
        wanted = frozenset().union(*self.fields_by_role.values())
        masked_events = self.pseudonyms(event_ids, "event_id") if "event_id" in wanted else None
        masked_sensors = self.pseudonyms(sensor_ids, "sensor_id") if "sensor_id" in wanted else None
        masked_keys: list[bytes | None] | None = None
        result: dict[str, Identities] = {}
        for role in ROLES:
            fields = self.fields(role)
            role_keys = keys
            if masked_sensors is not None and "sensor_id" in fields:
                if masked_keys is None:
                    masked_keys = [s.encode() for s in masked_sensors]
                role_keys = masked_keys
            result[role] = Identities(
                masked_events if masked_events is not None and "event_id" in fields else event_ids,
                masked_sensors
                if masked_sensors is not None and "sensor_id" in fields
                else sensor_ids,
                role_keys,
            )
        return result


#: Looks predictions up in the store: ``(event ids, variants) -> per event, by variant``.
GetMany = Callable[[Sequence[str], Sequence[str]], list[dict[str, Any]]]


def store_lookup(get_many: GetMany, settings: PrivacySettings, keyring: Keyring) -> GetMany:
    """``get_many`` for raw event ids (labels carry them), whatever the store's keys are.

    When the store's event ids are pseudonymised, each id is pseudonymised with the
    current key first; the events not found are tried again under each retired key
    (predictions written before a rotation live until the store's TTL).
    """
    if "event_id" not in settings.fields_for("store"):
        return get_many
    pseudonymisers = [Pseudonymiser.for_key(key, settings) for key in keyring]
    if not pseudonymisers:
        keyring.require("privacy.pseudonymise")

    def lookup(event_ids: Sequence[str], variants: Sequence[str]) -> list[dict[str, Any]]:
        found = get_many(pseudonymisers[0].pseudonyms(event_ids), variants)
        for older in pseudonymisers[1:]:
            missing = [i for i, entry in enumerate(found) if not entry]
            if not missing:
                break
            again = get_many(older.pseudonyms([event_ids[i] for i in missing]), variants)
            for i, entry in zip(missing, again, strict=True):
                found[i] = entry
        return found

    return lookup


def entity_forms(value: str, settings: PrivacySettings, keyring: Keyring) -> list[str]:
    """Every form ``value`` may be stored under: itself and its pseudonym under each key."""
    forms = [value]
    forms += [Pseudonymiser.for_key(key, settings).pseudonym(value) for key in keyring]
    return list(dict.fromkeys(forms))
