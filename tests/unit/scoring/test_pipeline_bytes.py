"""The pipeline's output bytes are those of the per-record dicts it used to build.

The predictions and audit records are encoded from columns (``schemas.codec.columns``).
The reference here is the record-per-event construction the pipeline had before that
change (:func:`reference_records`, kept verbatim in spirit), encoded by fastavro (or the
standard library for JSON outputs): for every scenario the bytes must be the same —
string class names, many batches' worth of shapes, A/B variants with the same and with
different classes, a regressor, the HTTP door, pseudonymised identifiers, several source
partitions in one batch.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import fastavro
import numpy as np
import pytest

from models.serving import ServingModel
from schemas.catalog import load_schema
from schemas.serde import AvroSerde, JsonSerde, Serde
from schemas.settings import PrivacySettings
from streams.privacy.keys import PrivacyKey
from streams.privacy.pseudonym import Pseudonymiser
from streams.scoring.pipeline import BatchOutput, RawBatch, ScoringPipeline, raw_batch_from
from streams.scoring.routing import ABRouting
from tests.unit.scoring.conftest import FEATURES

NOW = 1_704_067_260_000
AB = {"champion": 0.5, "challenger": 0.5}


def reference_records(
    pipeline: ScoringPipeline, raw: RawBatch, out: BatchOutput
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prediction and audit dicts of ``out``, built one record at a time."""
    events, scores = out.events, out.scores
    assert scores is not None
    n = len(events)
    score_list = scores.score.tolist()
    if scores.labels is not None:
        labels: list[Any] = scores.labels.tolist()
        # a regressor's rows in A/B beside a classifier: no label, the score as the decision
        decisions = [
            repr(s) if label is None else label for label, s in zip(labels, score_list, strict=True)
        ]
    else:
        labels, decisions = [None] * n, [repr(s) for s in score_list]
    if out.row_variant is None:
        variant, served = out.served[0]
        rows_served = [(variant, served)] * n
    else:
        rows_served = [out.served[k] for k in out.row_variant.tolist()]
    probabilities: list[Any] = [None] * n
    if scores.probabilities is not None:
        probabilities = [
            None if row is None else dict(zip(m.model.classes, row, strict=True))
            for (_, m), row in zip(rows_served, scores.probabilities.tolist(), strict=True)
        ]
    shown, audited = out.ids("predictions"), out.ids("audit")
    predictions = [
        {
            "event_id": shown.event_ids[j],
            "sensor_id": shown.sensor_ids[j],
            "event_time": events.event_times[j],
            "model_name": rows_served[j][1].name,
            "model_version": rows_served[j][1].version,
            "variant": rows_served[j][0],
            "predicted_label": labels[j],
            "score": score_list[j],
            "probabilities": probabilities[j],
            "processed_at": out.processed_at,
        }
        for j in range(n)
    ]
    base = {} if pipeline.channel is None else {"channel": pipeline.channel}
    audits = []
    for j, i in enumerate(events.indices):
        here = pipeline.channel is None
        audits.append(
            {
                "action": "scored",
                "event_id": audited.event_ids[j],
                "sensor_id": audited.sensor_ids[j],
                "model_name": rows_served[j][1].name,
                "model_version": rows_served[j][1].version,
                "decision": decisions[j],
                "input_digest": hashlib.blake2b(raw.values[i] or b"", digest_size=16).hexdigest(),
                "source_topic": raw.topics[i] if here else None,
                "source_partition": raw.partitions[i] if here else None,
                "source_offset": raw.offsets[i] if here else None,
                "actor": pipeline.actor,
                "occurred_at": out.processed_at,
                "details": {**base, "variant": rows_served[j][0]}
                if out.row_variant is not None
                else base,
            }
        )
    return predictions, audits


def reference_bytes(serde: Serde, schema: str, records: list[dict[str, Any]]) -> list[bytes]:
    if serde.format == "json":
        return [json.dumps(r, separators=(",", ":"), allow_nan=False).encode() for r in records]
    parsed = fastavro.parse_schema(load_schema(schema))
    encoded = []
    for record in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        encoded.append(buf.getvalue())
    return encoded


def events(rows: np.ndarray, names: list[str], n: int, *, bad_every: int = 0) -> RawBatch:
    """``n`` Avro events from ``rows`` (every ``bad_every``-th out of range), 3 partitions."""
    serde = AvroSerde("sensor_event")
    values: list[bytes | None] = []
    keys: list[bytes | None] = []
    for i in range(n):
        features = dict(zip(names, rows[i % len(rows)].tolist(), strict=True))
        if bad_every and i % bad_every == bad_every - 1:
            features[names[0]] = 1e300
        event = {"event_id": f"e-{i}", "sensor_id": f"s-{i % 5}",
                 "event_time": 1_704_067_200_000 + i, "features": features}  # fmt: skip
        values.append(serde.encode(event))
        keys.append(None if i % 4 == 0 else f"key-{i % 5}".encode())
    raw = raw_batch_from(values, keys, topic="sensor.events", first_offset=500)
    raw.partitions = [i % 3 for i in range(n)]
    if n > 10:
        raw.topics[7] = "sensor.events.replayed"
    return raw


def pipeline(
    *,
    outputs: str = "avro",
    channel: str | None = None,
    pseudonymiser: Pseudonymiser | None = None,
) -> ScoringPipeline:
    serde = AvroSerde if outputs == "avro" else JsonSerde
    return ScoringPipeline(
        event_serde=AvroSerde("sensor_event"),
        prediction_serde=serde("prediction"),
        audit_serde=serde("audit_event"),
        max_message_bytes=65_536,
        actor="bytes-test",
        channel=channel,
        pseudonymiser=pseudonymiser,
    )


def check(p: ScoringPipeline, raw: RawBatch, out: BatchOutput) -> None:
    assert out.scored > 0
    predictions, audits = reference_records(p, raw, out)
    assert out.prediction_values == reference_bytes(p.prediction_serde, "prediction", predictions)
    assert out.audit_values == reference_bytes(p.audit_serde, "audit_event", audits)


@pytest.mark.parametrize("outputs", ["avro", "json"])
@pytest.mark.parametrize(
    "model", ["binary_champion", "three_class_champion", "regression_champion"]
)
def test_outputs_are_the_bytes_of_the_records(
    request: pytest.FixtureRequest, rows: np.ndarray, model: str, outputs: str
) -> None:
    champion: ServingModel = request.getfixturevalue(model)
    p = pipeline(outputs=outputs)
    for n in (1, 2, 37, 300):  # batches of different sizes through the same pipeline
        raw = events(rows, FEATURES, n, bad_every=9)
        check(p, raw, p.run(raw, champion, now_ms=NOW + n))


@pytest.mark.parametrize(
    "variants",
    [
        ("three_class_champion", "three_class_challenger"),  # the same classes
        ("binary_champion", "three_class_challenger"),  # different classes
        ("binary_champion", "regression_champion"),  # a classifier and a regressor
    ],
)
def test_ab_outputs_are_the_bytes_of_the_records(
    request: pytest.FixtureRequest, rows: np.ndarray, variants: tuple[str, str]
) -> None:
    champion, challenger = (request.getfixturevalue(v) for v in variants)
    ab = ABRouting.build(AB, {"champion": champion, "challenger": challenger})
    p = pipeline()
    raw = events(rows, FEATURES, 200, bad_every=13)
    out = p.run(raw, champion, ab=ab, now_ms=NOW)
    assert out.row_variant is not None and len(set(out.row_variant.tolist())) == 2
    check(p, raw, out)


def test_http_door_outputs_are_the_bytes_of_the_records(
    rows: np.ndarray, three_class_champion: ServingModel
) -> None:
    p = pipeline(channel="http")
    raw = events(rows, FEATURES, 40)
    check(p, raw, p.run(raw, three_class_champion, now_ms=NOW))


def test_pseudonymised_outputs_are_the_bytes_of_the_records(
    rows: np.ndarray, binary_champion: ServingModel
) -> None:
    key = PrivacyKey.from_secret(bytes(range(32)))
    settings = PrivacySettings(key="k" * 64, pseudonymise=["sensor_id", "event_id"])
    p = pipeline(pseudonymiser=Pseudonymiser.for_key(key, settings))
    raw = events(rows, FEATURES, 60)
    out = p.run(raw, binary_champion, now_ms=NOW)
    assert out.identities is not None
    check(p, raw, out)
