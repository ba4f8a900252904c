"""One partition of a table, scored the way the stream scores one batch.

A table holds one event per row: ``event_id``, ``sensor_id``, ``event_time`` and a
column per feature (other columns are ignored). :func:`score_partition` is pure:
a pandas frame in, two Arrow tables out — the predictions, with the fields of the
stream's ``Prediction`` records, and the rejected rows, with the DLQ's stage, reason
and message. Nothing is decoded (a table has no wire bytes, so there is no size
stage either), but the verdicts are the stream's:

* the fast path, vectorised over the whole partition, vouches only for rows the
  stream would certainly accept: ids that are non-empty strings, an integer (or
  timestamp) ``event_time``, and every feature a finite number within the model's
  hard range;
* every other row is written as the JSON event the stream would have received and
  goes through the stream's own stages (``decode_events`` with the JSON serde, then
  ``build_matrix``): it is rejected with exactly the reason and message a dead letter
  would carry, or accepted exactly as the stream would accept it.

A null cell is a missing feature (``MissingFeature``); NaN or infinity is a value
(``NonFiniteValue``). Text that reads as a number is a number, since CSV has no
other way to write one; any other text is ``NonNumericFeature``.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from models.runtime import Scores
from models.serving import ServingModel
from schemas.errors import Rejection
from schemas.serde import JsonSerde
from streams.scoring.stages import build_matrix, decode_events

#: The event fields every input table must have, beside the model's feature columns.
ENVELOPE = ("event_id", "sensor_id", "event_time")

#: The stream's ``Prediction`` record (schemas/prediction.avsc) as Arrow columns;
#: timestamps are epoch milliseconds, as everywhere in the pipeline.
PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("sensor_id", pa.string(), nullable=False),
        pa.field("event_time", pa.int64(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("predicted_label", pa.string()),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("probabilities", pa.map_(pa.string(), pa.float64())),
        pa.field("processed_at", pa.int64(), nullable=False),
    ]
)

#: One rejected row: where it was (partition ``chunk``, ``row`` within it), the DLQ's
#: ``stage`` / ``reason`` / ``message``, and the row itself as a JSON object.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("chunk", pa.int64(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("record", pa.string(), nullable=False),
    ]
)

_EVENTS = JsonSerde("sensor_event")
#: Integer text the fast path reads as epoch milliseconds (18 digits always fit a long).
_FAST_INTEGER = r"[+-]?\d{1,18}"
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class ScoredPartition:
    predictions: pa.Table
    rejected: pa.Table

    @property
    def rows(self) -> int:
        return self.predictions.num_rows + self.rejected.num_rows


def missing_columns(columns: Sequence[str], feature_names: Sequence[str]) -> list[str]:
    """The envelope and feature columns a table lacks (checked once, before any scoring)."""
    present = set(columns)
    return [name for name in (*ENVELOPE, *feature_names) if name not in present]


def score_partition(
    frame: pd.DataFrame,
    model: ServingModel,
    *,
    processed_at: int,
    chunk: int = 0,
    variant: str = "champion",
) -> ScoredPartition:
    """Validate and score every row of ``frame`` with ``model`` (see the module docstring)."""
    names = model.feature_names
    matrix, nulls = _feature_matrix(frame, names)
    event_times, time_ok = _event_times(frame["event_time"])
    clean = (
        _non_empty_strings(frame["event_id"])
        & _non_empty_strings(frame["sensor_id"])
        & time_ok
        & ~nulls.any(axis=1)
        & np.isfinite(matrix).all(axis=1)
        & (matrix >= model.lower).all(axis=1)
        & (matrix <= model.upper).all(axis=1)
    )
    valid = clean.copy()
    rejections: list[tuple[int, Rejection]] = []
    suspects = np.flatnonzero(~clean)
    if suspects.size:
        accepted, accepted_rows, accepted_times, rejected = _stream_verdicts(
            frame, suspects, time_ok, event_times, model
        )
        valid[accepted] = True
        matrix[accepted] = accepted_rows
        event_times[accepted] = accepted_times
        rejections = rejected
    positions = np.flatnonzero(valid)
    scores = model.model.predict(matrix[positions]) if positions.size else None
    predictions = _prediction_table(
        frame, positions, event_times[positions], scores, model, variant, processed_at
    )
    return ScoredPartition(predictions, _rejected_table(frame, rejections, chunk))


# -- the fast path -----------------------------------------------------------------------------


def _nulls(column: pd.Series) -> np.ndarray:
    """Null cells. A NumPy float column has no null apart from NaN, and NaN is a value."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind == "f":
        return np.zeros(len(column), dtype=bool)
    return np.asarray(column.isna(), dtype=bool)


def _feature_matrix(frame: pd.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 matrix in feature order, null cells). A cell that is no number is NaN here."""
    matrix = np.empty((len(frame), len(names)), dtype=np.float64)
    nulls = np.empty((len(frame), len(names)), dtype=bool)
    for j, name in enumerate(names):
        column = frame[name]
        nulls[:, j] = _nulls(column)
        if pd.api.types.is_bool_dtype(column.dtype):
            matrix[:, j] = np.nan  # a boolean is not a number to the stream either
        elif pd.api.types.is_numeric_dtype(column.dtype):
            matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            numbers_ = pd.to_numeric(column, errors="coerce")
            matrix[:, j] = numbers_.to_numpy(dtype=np.float64, na_value=np.nan)
    return matrix, nulls


def _is_text(dtype: Any) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    return isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    )


def _non_empty_strings(column: pd.Series) -> np.ndarray:
    if _is_text(column.dtype):
        lengths = column.str.len().to_numpy(dtype=np.float64, na_value=0.0)
        return lengths > 0
    if column.dtype == object:
        return np.fromiter(
            (isinstance(v, str) and v != "" for v in column), dtype=bool, count=len(column)
        )
    return np.zeros(len(column), dtype=bool)


def _event_times(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(epoch milliseconds, rows the fast path read). Other rows go the stream's way."""
    n = len(column)
    dtype = column.dtype
    if pd.api.types.is_signed_integer_dtype(dtype):
        ok = ~np.asarray(column.isna(), dtype=bool)
        return np.array(column.to_numpy(dtype=np.int64, na_value=0)), ok
    if pd.api.types.is_datetime64_any_dtype(dtype):
        # A zone-less timestamp is UTC, as in the JSON serde.
        utc = column.dt.tz_convert(None) if getattr(column.dt, "tz", None) is not None else column
        nat = np.datetime64("NaT")
        millis = utc.to_numpy(dtype="datetime64[ms]", na_value=nat).astype(np.int64)
        return millis, ~np.asarray(column.isna(), dtype=bool)
    if _is_text(dtype):
        ok = column.str.fullmatch(_FAST_INTEGER).to_numpy(dtype=bool, na_value=False)
        millis = np.zeros(n, dtype=np.int64)
        if ok.any():
            millis[ok] = pd.to_numeric(column[ok]).to_numpy(dtype=np.int64)
        return millis, ok
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)


# -- the stream's verdict on the other rows ------------------------------------------------------


def _native(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _cells(column: pd.Series) -> list[Any]:
    """The cells as plain Python values, None for a null (never for a NaN that is a value)."""
    nulls = _nulls(column)
    return [None if null else _native(v) for v, null in zip(column.tolist(), nulls, strict=True)]


def _number_or_text(value: Any) -> Any:
    """A feature cell as the JSON value the stream would see."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return str(value)


def _event_time_value(value: Any) -> Any:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _stream_verdicts(
    frame: pd.DataFrame,
    suspects: np.ndarray,
    time_ok: np.ndarray,
    event_times: np.ndarray,
    model: ServingModel,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, Rejection]]]:
    """Run the ``suspects`` rows through the stream's JSON decode and validate stages.

    Returns (accepted positions in ``frame``, their feature rows, their event times,
    [(position in ``frame``, rejection)]).
    """
    names = model.feature_names
    rows = frame.iloc[suspects]
    ids, sensors, raw_times = (_cells(rows[c]) for c in ENVELOPE)
    cells = {n: _cells(rows[n]) for n in names}
    values: list[bytes | None] = []
    for k, position in enumerate(suspects.tolist()):
        when = int(event_times[position]) if time_ok[position] else raw_times[k]
        features = {n: _number_or_text(cells[n][k]) for n in names if cells[n][k] is not None}
        event = {
            "event_id": ids[k],
            "sensor_id": sensors[k],
            "event_time": _event_time_value(when),
            "features": features,
        }
        values.append(json.dumps(event, default=str).encode())
    events, rejected = decode_events(values, range(len(values)), _EVENTS, typed=False)
    accepted_rows, keep, bad = build_matrix(events, names, model.lower, model.upper, typed=False)
    rejected += bad
    accepted = events.select(keep)
    positions = suspects[np.asarray(accepted.indices, dtype=np.int64)]
    times = np.asarray(accepted.event_times, dtype=np.int64)
    verdicts = [(int(suspects[r.index]), r) for r in rejected]
    verdicts.sort(key=lambda pair: pair[0])
    return positions, accepted_rows, times, verdicts


# -- the output tables -------------------------------------------------------------------------


def _strings(column: pd.Series, positions: np.ndarray) -> pa.Array:
    """The cells at ``positions`` as an Arrow string array (they are strings: validated)."""
    array = pa.array(column.iloc[positions], type=pa.string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _prediction_table(
    frame: pd.DataFrame,
    positions: np.ndarray,
    event_times: np.ndarray,
    scores: Scores | None,
    model: ServingModel,
    variant: str,
    processed_at: int,
) -> pa.Table:
    n = int(positions.size)
    if scores is None or n == 0:
        return PREDICTION_SCHEMA.empty_table()
    if scores.labels is not None:
        labels = pa.array(scores.labels.tolist(), type=pa.string())
    else:
        labels = pa.nulls(n, pa.string())
    probabilities: pa.Array
    if scores.probabilities is not None:
        classes = list(model.model.classes)
        width = len(classes)
        probabilities = pa.MapArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
            pa.array(classes * n, type=pa.string()),
            pa.array(np.asarray(scores.probabilities, dtype=np.float64).ravel()),
        )
    else:
        probabilities = pa.nulls(n, PREDICTION_SCHEMA.field("probabilities").type)
    columns = [
        _strings(frame["event_id"], positions),
        _strings(frame["sensor_id"], positions),
        pa.array(event_times, type=pa.int64()),
        pa.repeat(pa.scalar(model.name), n),
        pa.repeat(pa.scalar(model.version), n),
        pa.repeat(pa.scalar(variant), n),
        labels,
        pa.array(np.asarray(scores.score, dtype=np.float64)),
        probabilities,
        pa.repeat(pa.scalar(processed_at, pa.int64()), n),
    ]
    return pa.Table.from_arrays(columns, schema=PREDICTION_SCHEMA)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # strict JSON has no NaN or infinity
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _rejected_table(
    frame: pd.DataFrame, rejections: list[tuple[int, Rejection]], chunk: int
) -> pa.Table:
    if not rejections:
        return REJECTED_SCHEMA.empty_table()
    positions = [position for position, _ in rejections]
    rows = frame.iloc[positions]
    cells = {str(c): _cells(rows[c]) for c in rows.columns}
    records = [
        json.dumps({c: _jsonable(values[k]) for c, values in cells.items()}, default=str)
        for k in range(len(positions))
    ]
    event_ids = cells["event_id"]
    return pa.Table.from_pydict(
        {
            "chunk": [chunk] * len(positions),
            "row": positions,
            "event_id": [None if v is None else str(v) for v in event_ids],
            "stage": [r.stage for _, r in rejections],
            "reason": [r.reason for _, r in rejections],
            "message": [r.message for _, r in rejections],
            "record": records,
        },
        schema=REJECTED_SCHEMA,
    )
