"""Erasure: every form of the sensor is asked for, and the tombstone never names it."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.privacy.erase import ERASED, erase_sensor, store_variants, tombstone
from streams.privacy.keys import Keyring, PrivacyKey
from streams.privacy.pseudonym import Pseudonymiser


class ErasingStore:
    def __init__(self, deleted: int) -> None:
        self.deleted = deleted
        self.asked: list[tuple[list[str], list[str]]] = []

    def erase_sensor(self, sensor_forms: Sequence[str], variants: Sequence[str]) -> int:
        self.asked.append((list(sensor_forms), list(variants)))
        return self.deleted


def test_the_sensor_is_erased_in_every_form_and_variant(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    settings = Settings(
        privacy={"key": "k" * 64, "pseudonymise": ["sensor_id"]},
        shadow={"ab_weights": {"champion": 0.5, "blue": 0.5}},
    )
    store = ErasingStore(deleted=7)
    erasure = erase_sensor(store, "sensor-9", settings, Keyring(key, (old_key,)))
    ((forms, variants),) = store.asked
    current = Pseudonymiser.for_key(key, settings.privacy).pseudonym("sensor-9")
    retired = Pseudonymiser.for_key(old_key, settings.privacy).pseudonym("sensor-9")
    assert forms == ["sensor-9", current, retired]
    assert variants == store_variants(settings) == ["champion", "challenger", "blue"]
    assert (erasure.entries_deleted, erasure.pseudonym, erasure.forms_tried) == (7, current, 3)


def test_the_tombstone_names_the_sensor_by_its_pseudonym_only(key: PrivacyKey) -> None:
    settings = Settings()
    erasure = erase_sensor(ErasingStore(3), "sensor-9", settings, Keyring(key))
    record = tombstone(erasure, actor="alice@host", reference="GDPR-42", now_ms=1_700_000_000_000)
    assert record["action"] == ERASED
    assert record["sensor_id"] == erasure.pseudonym and "sensor-9" not in str(record)
    assert record["details"]["prediction_store_entries"] == "3"
    assert record["details"]["reference"] == "GDPR-42"
    assert AvroSerde("audit_event").decode(AvroSerde("audit_event").encode(record)) == record


def test_without_a_key_the_tombstone_names_no_one() -> None:
    erasure = erase_sensor(ErasingStore(0), "sensor-9", Settings(), Keyring(None))
    record = tombstone(erasure, actor="alice@host", reference=None)
    assert record["sensor_id"] is None and "sensor-9" not in str(record)
    assert "reference" not in record["details"]
