"""Pseudonyms: keyed, deterministic, one HMAC per distinct value, per output as configured."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from connectors.source import EventFactory, SourceOptions
from models.datasets import shuttle
from models.serving import ServingModel
from schemas.serde import AvroSerde
from schemas.settings import PrivacySettings
from streams.privacy.keys import Keyring, PrivacyKey
from streams.privacy.pseudonym import Pseudonymiser, entity_forms, store_lookup
from streams.scoring.pipeline import ScoringPipeline, raw_batch_from

BOTH = PrivacySettings(key=SecretStr("k" * 64), pseudonymise=["sensor_id", "event_id"])


def test_a_pseudonym_is_the_hmac_sha256_of_the_value_under_the_pseudonym_key(
    key: PrivacyKey,
) -> None:
    p = Pseudonymiser.for_key(key, BOTH)
    expected = hmac.new(key.derive("pseudonym"), b"sensor-0001", hashlib.sha256).hexdigest()
    assert p.pseudonym("sensor-0001") == f"{key.key_id}:{expected[:32]}"


def test_pseudonyms_are_deterministic_and_change_with_the_key(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    a, b = Pseudonymiser.for_key(key, BOTH), Pseudonymiser.for_key(key, BOTH)
    rotated = Pseudonymiser.for_key(old_key, BOTH)
    assert a.pseudonym("sensor-7") == b.pseudonym("sensor-7")
    assert a.pseudonym("sensor-7") != a.pseudonym("sensor-8")
    assert rotated.pseudonym("sensor-7") != a.pseudonym("sensor-7")
    assert rotated.pseudonym("sensor-7").startswith(old_key.key_id + ":")


def test_one_hmac_per_distinct_value_and_sensors_remembered_across_batches(
    key: PrivacyKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pseudonymiser.for_key(key, BOTH)
    computed: list[str] = []
    real = p.pseudonym

    def counting(value: str) -> str:
        computed.append(value)
        return real(value)

    monkeypatch.setattr(p, "pseudonym", counting)
    sensors = [f"sensor-{i % 5}" for i in range(100)]
    out = p.pseudonyms(sensors, "sensor_id")
    assert len(computed) == 5
    assert out == [real(s) for s in sensors]
    p.pseudonyms(sensors, "sensor_id")  # the next batch of the same sensors: cached
    assert len(computed) == 5
    p.pseudonyms(["e1", "e2", "e1"], "event_id")  # per batch only
    p.pseudonyms(["e1"], "event_id")
    assert computed[5:] == ["e1", "e2", "e1"]


def test_each_output_carries_the_fields_it_is_given(key: PrivacyKey) -> None:
    settings = PrivacySettings(
        key=SecretStr("k" * 64), pseudonymise=["sensor_id", "event_id"],
        topics={"audit": ["sensor_id"]},
    )  # fmt: skip
    p = Pseudonymiser.for_key(key, settings)
    events, sensors, keys = ["e1", "e2"], ["s1", "s2"], [b"s1", None]
    ids = p.identities(events, sensors, keys)
    assert ids["predictions"].event_ids is events and ids["predictions"].keys is keys
    assert ids["audit"].event_ids is events
    assert ids["audit"].sensor_ids == [p.pseudonym("s1"), p.pseudonym("s2")]
    assert ids["audit"].keys == [p.pseudonym("s1").encode(), p.pseudonym("s2").encode()]
    for role in ("shadow", "store"):
        assert ids[role].event_ids == [p.pseudonym("e1"), p.pseudonym("e2")]
        assert ids[role].sensor_ids == ids["audit"].sensor_ids


def test_no_pseudonymiser_without_fields_to_pseudonymise(key: PrivacyKey) -> None:
    assert Pseudonymiser.from_settings(PrivacySettings(), Keyring(key)) is None


class DictStore:
    """``get_many`` over a dict of event id -> {variant: prediction}."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = entries
        self.asked: list[list[str]] = []

    def get_many(self, ids: Sequence[str], variants: Sequence[str]) -> list[dict[str, Any]]:
        self.asked.append(list(ids))
        return [dict(self.entries.get(e, {})) for e in ids]


def test_labels_join_predictions_stored_under_the_current_and_a_retired_key(
    key: PrivacyKey, old_key: PrivacyKey
) -> None:
    now, before = Pseudonymiser.for_key(key, BOTH), Pseudonymiser.for_key(old_key, BOTH)
    store = DictStore(
        {now.pseudonym("new"): {"champion": 1}, before.pseudonym("old"): {"champion": 2}}
    )
    lookup = store_lookup(store.get_many, BOTH, Keyring(key, (old_key,)))
    assert lookup(["new", "old", "never"], ["champion"]) == [{"champion": 1}, {"champion": 2}, {}]
    # the retired key is asked only about what the current one did not find
    assert store.asked[1] == [before.pseudonym("old"), before.pseudonym("never")]


def test_raw_ids_are_looked_up_as_they_are_when_the_store_keeps_them(key: PrivacyKey) -> None:
    store = DictStore({"e1": {"champion": 1}})
    raw_store = PrivacySettings(
        key=SecretStr("k" * 64), pseudonymise=["sensor_id"], topics={"shadow": [], "store": []}
    )
    assert store_lookup(store.get_many, raw_store, Keyring(key)) == store.get_many


def test_an_entity_is_looked_for_in_every_form(key: PrivacyKey, old_key: PrivacyKey) -> None:
    forms = entity_forms("s1", BOTH, Keyring(key, (old_key,)))
    assert forms == [
        "s1",
        Pseudonymiser.for_key(key, BOTH).pseudonym("s1"),
        Pseudonymiser.for_key(old_key, BOTH).pseudonym("s1"),
    ]


# -- in the pipeline ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def champion(models_dir: Path) -> ServingModel:
    return ServingModel.from_bundle(models_dir / "champion")


def _run(champion: ServingModel, pseudonymiser: Pseudonymiser | None) -> Any:
    factory = EventFactory(
        champion.feature_names, shuttle().X, AvroSerde("sensor_event"),
        SourceOptions(count=50, invalid_fraction=0.0, seed=3, run_id="run"),
    )  # fmt: skip
    made = [factory.make(n, 1_704_067_200_000 + n) for n in range(50)]
    raw = raw_batch_from([v for _, v, _ in made], [k for k, _, _ in made])
    pipeline = ScoringPipeline(
        event_serde=AvroSerde("sensor_event"), prediction_serde=AvroSerde("prediction"),
        audit_serde=AvroSerde("audit_event"), max_message_bytes=65_536, actor="test",
        pseudonymiser=pseudonymiser,
    )  # fmt: skip
    return pipeline.run(raw, champion, now_ms=1_704_067_300_000)


def test_the_pipeline_pseudonymises_audit_records_and_keeps_predictions_raw(
    champion: ServingModel, key: PrivacyKey
) -> None:
    p = Pseudonymiser.for_key(key, BOTH)
    plain, masked = _run(champion, None), _run(champion, p)
    assert plain.identities is None
    assert plain.ids("audit").keys is plain.keys
    raw_events, raw_sensors = plain.events.event_ids, plain.events.sensor_ids
    predictions = [AvroSerde("prediction").decode(v) for v in masked.prediction_values]
    assert [r["event_id"] for r in predictions] == raw_events
    assert [r["sensor_id"] for r in predictions] == raw_sensors
    assert masked.prediction_values == plain.prediction_values
    audits = [AvroSerde("audit_event").decode(v) for v in masked.audit_values]
    assert [a["event_id"] for a in audits] == [p.pseudonym(e) for e in raw_events]
    assert [a["sensor_id"] for a in audits] == [p.pseudonym(s) for s in raw_sensors]
    assert not set(raw_sensors) & {a["sensor_id"] for a in audits}
    assert masked.ids("audit").keys == [p.pseudonym(s).encode() for s in raw_sensors]
    assert masked.ids("predictions").keys == plain.keys
    assert masked.ids("store").event_ids == [p.pseudonym(e) for e in raw_events]
    assert np.array_equal(masked.scores.score, plain.scores.score)
