"""Erasing one entity (a sensor): what the prediction store gives up, and the tombstone.

The store keeps predictions by event; a per-sensor index, written with each batch
(``connectors.redis_store``), names the events of each sensor per time bucket. An
erasure looks the sensor up under every form it may have been written in (its raw
id, and its pseudonym under the current and each retired key), deletes those events'
predictions for every variant, and the index entries with them.

It then leaves an audit *tombstone*: an ``erased`` audit record that says how many
entries went, when, why (the request's reference) and by whom, and that names the
entity only by its pseudonym (or not at all when no key is configured): an erasure
record must not put the identifier it erased back into a log kept for years.

Kafka is not touched: records in topics go when retention removes them (see the
README's privacy section for what retention and compaction must be set to).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.settings import Settings
from streams.privacy.keys import Keyring
from streams.privacy.pseudonym import Pseudonymiser, entity_forms

ERASED = "erased"


class ErasableStore(Protocol):
    """``connectors.redis_store.PredictionStore.erase_sensor``."""

    def erase_sensor(self, sensor_forms: Sequence[str], variants: Sequence[str]) -> int: ...


def store_variants(settings: Settings) -> list[str]:
    """Every variant name the store may hold an event's predictions under."""
    return list(dict.fromkeys(["champion", "challenger", *settings.shadow.ab_weights]))


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure did."""

    entries_deleted: int
    pseudonym: str | None
    forms_tried: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries_deleted": self.entries_deleted,
            "pseudonym": self.pseudonym,
            "forms_tried": self.forms_tried,
        }


def erase_sensor(
    store: ErasableStore, sensor_id: str, settings: Settings, keyring: Keyring
) -> Erasure:
    """Delete every stored prediction of ``sensor_id``, in whichever form it was written."""
    forms = entity_forms(sensor_id, settings.privacy, keyring)
    deleted = store.erase_sensor(forms, store_variants(settings))
    pseudonym = None
    if keyring.current is not None:
        pseudonym = Pseudonymiser.for_key(keyring.current, settings.privacy).pseudonym(sensor_id)
    return Erasure(deleted, pseudonym, len(forms))


def tombstone(
    erasure: Erasure, *, actor: str, reference: str | None, now_ms: int | None = None
) -> dict[str, Any]:
    """The ``erased`` audit record of an erasure (an ``AuditEvent``)."""
    details = {
        "entity": "sensor",
        "prediction_store_entries": str(erasure.entries_deleted),
        "kafka": "records expire with each topic's retention",
    }
    if reference:
        details["reference"] = reference
    if erasure.pseudonym is None:
        details["identifier"] = "not recorded (no privacy key configured)"
    return {
        "action": ERASED,
        "event_id": None,
        "sensor_id": erasure.pseudonym,
        "model_name": "",
        "model_version": "",
        "decision": None,
        "input_digest": None,
        "source_topic": None,
        "source_partition": None,
        "source_offset": None,
        "actor": actor,
        "occurred_at": now_ms if now_ms is not None else int(time.time() * 1000),
        "details": details,
    }
