"""Columnar encoding vs fastavro: a batch given as columns gives the bytes of its records.

The reference is fastavro on ``records_from_columns(columns, n)``. Columns are drawn from
the same random records as the codec's own tests (``test_codec.RecordMaker``); each field
is turned at random into a column of values, a ``Same`` value (every record given the
first record's value) or, for a ``map<double>``, ``KeyedRows``.
"""

from __future__ import annotations

import math
import random
from typing import Any

import fastavro
import numpy as np
import pytest

from schemas.codec import Codec, KeyedRows, Same, compile_codec, records_from_columns
from schemas.codec.columns import MAX_SHAPES
from schemas.serde import AvroSerde, ConfluentAvroSerde, JsonSerde
from tests.unit.schemas.test_codec import ALL, SCHEMAS, RecordMaker, fastavro_bytes


def _map_double(field_type: Any) -> bool:
    branches = field_type if isinstance(field_type, list) else [field_type]
    return any(
        isinstance(b, dict) and b.get("type") == "map" and b.get("values") == "double"
        for b in branches
    )


def random_columns(name: str, n: int, seed: int) -> dict[str, Any]:
    """Columns of ``n`` random records of schema ``name``, each field of a random kind."""
    schema = SCHEMAS[name]
    maker = RecordMaker(schema, seed)
    records = [maker.record() for _ in range(n)]
    rng = random.Random(seed)
    columns: dict[str, Any] = {}
    for f in schema["fields"]:
        field, roll = f["name"], rng.random()
        if _map_double(f["type"]) and roll < 0.5:
            keys = tuple(rng.choice([["a", "b"], [f"c{i}" for i in range(9)], ["ü", "日本"]]))
            rows = [[rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, rng.random()])
                     for _ in keys] for _ in range(n)]  # fmt: skip
            # as lists, or as the float64 matrix the scoring loop hands over
            matrix = rng.random() < 0.5
            columns[field] = KeyedRows(keys, np.array(rows) if matrix else rows)
        elif roll < 0.75:
            columns[field] = Same(records[0][field])
        else:
            columns[field] = [r[field] for r in records]
    return columns


@pytest.fixture(scope="module")
def codecs() -> dict[str, Codec]:
    return {name: compile_codec(schema) for name, schema in SCHEMAS.items()}


@pytest.mark.parametrize("name", ALL)
def test_columns_give_the_bytes_of_their_records(codecs: dict[str, Codec], name: str) -> None:
    codec, schema = codecs[name], SCHEMAS[name]
    for seed in range(40):
        n = 1 + seed % 7
        columns = random_columns(name, n, seed)
        expected = [fastavro_bytes(schema, r) for r in records_from_columns(columns, n)]
        assert codec.columns.encode(columns, n) == expected, f"seed {seed}"
    assert codec.columns.fallbacks == 0


def loop_batch(n: int) -> dict[str, Any]:
    """Prediction columns as the scoring loop hands them over."""
    return {
        "event_id": [f"evt-{i}" for i in range(n)],
        "sensor_id": [f"sensor-{i % 4}" for i in range(n)],
        "event_time": [1_704_067_200_000 + 17 * i for i in range(n)],
        "model_name": Same("shuttle"),
        "model_version": Same("12"),
        "variant": Same("champion"),
        "predicted_label": [("Rad Flow", "Fpv Close", "日本")[i % 3] for i in range(n)],
        "score": [i / n for i in range(n)],
        "probabilities": KeyedRows(
            ("Rad Flow", "Fpv Close", "日本"), [[i / n, 1 - i / n, 0.0] for i in range(n)]
        ),
        "processed_at": Same(1_704_067_260_000),
    }


def test_a_prediction_batch_as_the_loop_hands_it_over(codecs: dict[str, Codec]) -> None:
    codec, schema = codecs["prediction"], SCHEMAS["prediction"]
    n = 50
    columns = loop_batch(n)
    expected = [fastavro_bytes(schema, r) for r in records_from_columns(columns, n)]
    assert codec.columns.encode(columns, n) == expected
    # a regressor: no label, no probabilities (left out: the schema defaults)
    del columns["predicted_label"], columns["probabilities"]
    records = records_from_columns(columns, n)
    assert codec.columns.encode(columns, n) == [fastavro_bytes(schema, r) for r in records]


@pytest.mark.parametrize(
    "rows",
    [
        np.array([[0.25, 0.75], [-0.0, math.nan], [math.inf, -math.inf], [5e-324, 1e308]]),
        np.zeros((0, 2)),
        np.array([[1, 2], [3, 4], [5, 6], [7, 8]]),  # integers: fastavro writes doubles
        np.array([[0.5, 0.5], [0.25, 0.75]])[:, ::-1].repeat(2, axis=0),  # not contiguous
        np.float32([[0.1, 0.9]] * 4),
    ],
    ids=["edges", "empty", "int", "strided", "float32"],
)
def test_keyed_rows_as_a_numpy_matrix_give_the_bytes_of_their_records(
    codecs: dict[str, Codec], rows: np.ndarray
) -> None:
    codec, schema = codecs["prediction"], SCHEMAS["prediction"]
    n = len(rows)
    columns = {**loop_batch(n), "probabilities": KeyedRows(("0", "ü"), rows)}
    records = records_from_columns(columns, n)
    assert all(type(v) in (int, float) for r in records for v in r["probabilities"].values())
    assert codec.columns.encode(columns, n) == [fastavro_bytes(schema, r) for r in records]
    assert codec.columns.fallbacks == 0


@pytest.mark.parametrize(
    "keys",
    [
        tuple(f"class-{i}" for i in range(300)),  # more classes than one layout writes
        ("a", "a"),  # a repeated key: a dict keeps one
        (),  # no classes at all
    ],
)
def test_keyed_rows_a_layout_cannot_write_are_written_as_maps(
    codecs: dict[str, Codec], keys: tuple[str, ...]
) -> None:
    codec, schema = codecs["prediction"], SCHEMAS["prediction"]
    n = 3
    columns = random_columns("prediction", n, 1)
    columns["probabilities"] = KeyedRows(keys, [[0.25 * j for j in range(len(keys))]] * n)
    expected = [fastavro_bytes(schema, r) for r in records_from_columns(columns, n)]
    assert codec.columns.encode(columns, n) == expected


@pytest.mark.parametrize(
    ("field", "column"),
    [
        ("score", [1, 2, 3]),  # ints for a double: fastavro writes them as doubles
        ("score", [True, 0.5, 1.0]),  # a bool: fastavro's coercion
        ("probabilities", KeyedRows(("a", "b"), [[1, 2], [0.5, True], [0.0, 1.0]])),
        ("event_time", [1.0, 2, 3]),  # a float for a long
        ("event_id", ["a", "b", b"c"]),  # bytes for a string
    ],
)
def test_values_the_fast_loop_does_not_take_get_fastavros_bytes(field: str, column: Any) -> None:
    codec, schema = compile_codec(SCHEMAS["prediction"]), SCHEMAS["prediction"]
    columns = {**random_columns("prediction", 3, 2), field: column}
    records = records_from_columns(columns, 3)
    try:
        expected: Any = [fastavro_bytes(schema, r) for r in records]
    except Exception as exc:  # noqa: BLE001 - then the column encoder must raise the same
        with pytest.raises(type(exc)):
            codec.columns.encode(columns, 3)
        return
    assert codec.columns.encode(columns, 3) == expected


def test_a_value_fastavro_refuses_raises_its_error(codecs: dict[str, Codec]) -> None:
    columns = {**random_columns("prediction", 2, 3), "event_id": ["ok", None]}
    with pytest.raises(TypeError) as fastavros:
        fastavro_bytes(SCHEMAS["prediction"], records_from_columns(columns, 2)[1])
    with pytest.raises(TypeError) as ours:
        codecs["prediction"].columns.encode(columns, 2)
    assert str(ours.value) == str(fastavros.value)


def test_columns_of_the_wrong_length_or_name_are_refused(codecs: dict[str, Codec]) -> None:
    encoder = codecs["prediction"].columns
    columns = random_columns("prediction", 3, 4)
    with pytest.raises(ValueError, match="not 3"):
        encoder.encode({**columns, "event_id": ["a", "b"]}, 3)
    with pytest.raises(ValueError, match="not 3"):
        encoder.encode({**columns, "probabilities": KeyedRows(("a",), [[1.0]])}, 3)
    with pytest.raises(ValueError, match="no such field"):
        encoder.encode({**columns, "colour": Same("red")}, 3)
    without = dict(columns)
    del without["event_id"]
    with pytest.raises(ValueError, match="required field 'event_id'"):
        encoder.encode(without, 3)


def test_an_empty_batch_is_no_records(codecs: dict[str, Codec]) -> None:
    assert codecs["prediction"].columns.encode(loop_batch(0), 0) == []


def test_more_shapes_than_compiled_still_give_the_same_bytes() -> None:
    codec, schema = compile_codec(SCHEMAS["audit_event"]), SCHEMAS["audit_event"]
    fields = [f["name"] for f in schema["fields"]]
    rng = random.Random(9)
    for _ in range(4 * MAX_SHAPES):
        columns = random_columns("audit_event", 2, rng.randrange(1000))
        for name in fields:  # many different shapes
            if rng.random() < 0.5 and isinstance(columns[name], Same):
                columns[name] = [columns[name].value] * 2
        expected = [fastavro_bytes(schema, r) for r in records_from_columns(columns, 2)]
        assert codec.columns.encode(columns, 2) == expected
    assert len(codec.columns.sources) <= MAX_SHAPES


def test_every_serde_encodes_columns_like_their_records() -> None:
    columns = loop_batch(4)
    records = records_from_columns(columns, 4)
    parsed = fastavro.parse_schema(SCHEMAS["prediction"])
    for serde in (
        AvroSerde("prediction"),
        JsonSerde("prediction"),
        ConfluentAvroSerde("prediction", 7, lambda _id: parsed),
    ):
        assert serde.encode_columns(columns, 4) == serde.encode_many(records), serde.format
