"""A table of sensor events to score: the reference Shuttle rows, resampled.

For trying ``score-batch`` and measuring it: ``rows`` events drawn with replacement
from :func:`models.datasets.shuttle` (seeded), ids ``<run_id>-<n>``, one event per
millisecond from ``start_ms``, and a share of rows spoilt the ways a table can be
(a null feature, NaN, a value far out of range, an empty event id). Written in
slices of ``row_group`` rows, so memory stays flat however many rows are asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from models.datasets import shuttle
from streams.batch.output import TableFormat

#: 2024-01-01T00:00:00Z
START_MS = 1_704_067_200_000
#: How each spoilt row is spoilt, and the reason the stream gives it.
SPOILS = {
    "null": "MissingFeature",
    "nan": "NonFiniteValue",
    "out_of_range": "OutOfRange",
    "empty_id": "InvalidField",
}


def sample_slices(
    rows: int,
    *,
    seed: int = 7,
    invalid_fraction: float = 0.0,
    run_id: str = "batch",
    sensors: int = 100,
    row_group: int = 100_000,
) -> Iterator[pa.Table]:
    """The sample table, ``row_group`` rows at a time."""
    data = shuttle()
    rng = np.random.default_rng(seed)
    span = data.X.max(axis=0) - data.X.min(axis=0)
    kinds = list(SPOILS)
    for first in range(0, rows, row_group):
        n = min(row_group, rows - first)
        numbers = np.arange(first, first + n)
        matrix = data.X[rng.integers(0, len(data.X), size=n)]
        nulls = np.zeros(matrix.shape, dtype=bool)
        event_ids = np.char.add(f"{run_id}-", numbers.astype(str)).astype(object)
        spoilt = np.flatnonzero(rng.random(n) < invalid_fraction)
        for i, kind in zip(spoilt, rng.integers(0, len(kinds), size=spoilt.size), strict=True):
            j = int(rng.integers(0, matrix.shape[1]))
            match kinds[kind]:
                case "null":
                    nulls[i, j] = True
                case "nan":
                    matrix[i, j] = np.nan
                case "out_of_range":
                    matrix[i, j] = data.X[:, j].max() + 10 * max(span[j], 1.0)
                case _:
                    event_ids[i] = ""
        columns: dict[str, pa.Array] = {
            "event_id": pa.array(event_ids, type=pa.string()),
            "sensor_id": pa.array(
                np.char.add("sensor-", np.char.zfill((numbers % sensors).astype(str), 4)),
                type=pa.string(),
            ),
            "event_time": pa.array(START_MS + numbers, type=pa.int64()),
        }
        for j, name in enumerate(data.feature_names):
            columns[name] = pa.array(matrix[:, j], mask=nulls[:, j], type=pa.float64())
        yield pa.table(columns)


def write_sample(
    url: str,
    rows: int,
    *,
    fmt: TableFormat = "parquet",
    seed: int = 7,
    invalid_fraction: float = 0.0,
    row_group: int = 100_000,
) -> int:
    """Write the sample table to ``url`` (one file, any fsspec URL); returns the rows written."""
    slices = sample_slices(rows, seed=seed, invalid_fraction=invalid_fraction, row_group=row_group)
    first = next(slices, None)
    if first is None:
        return 0
    written = 0
    with fsspec.open(url, "wb") as handle:
        writer: pq.ParquetWriter | pa_csv.CSVWriter
        if fmt == "parquet":
            writer = pq.ParquetWriter(handle, first.schema)
        else:
            writer = pa_csv.CSVWriter(handle, first.schema)
        with writer:
            for table in itertools.chain([first], slices):
                writer.write_table(table)
                written += table.num_rows
    return written
