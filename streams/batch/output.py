"""Where a batch job writes: one part file per partition, any fsspec URL.

``OUTPUT`` is a dataset folder of ``part-NNNNN.parquet`` (or ``.csv``) files, one per
input partition, written by the worker that scored it: nothing travels back to the
driver but counts. The rejected rows go beside it, in a folder named like the
output with ``.rejected`` before its suffix (``scores.parquet`` →
``scores.rejected.parquet``); a partition without rejected rows writes no part there.

In CSV, ``probabilities`` (a map in Parquet) is a JSON object per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from schemas.errors import ConfigError
from streams.batch.partition import ScoredPartition

TableFormat = Literal["parquet", "csv"]
FORMATS: tuple[TableFormat, ...] = ("parquet", "csv")
_SUFFIXES = (".parquet", ".parq", ".pq", ".csv")


def format_of(url: str, given: str | None) -> TableFormat:
    """``given``, else what the URL's suffix says (``.csv``: CSV, anything else: Parquet)."""
    if given is not None:
        if given not in FORMATS:
            raise ConfigError(f"unknown table format {given!r}; use parquet or csv")
        return "csv" if given == "csv" else "parquet"
    name = url.rstrip("/").rsplit("/", 1)[-1].lower()
    return "csv" if name.endswith(".csv") else "parquet"


def rejected_url(output: str) -> str:
    """``out/scores.parquet`` → ``out/scores.rejected.parquet``; ``out/scores`` → ``…rejected``."""
    url = output.rstrip("/")
    for suffix in _SUFFIXES:
        if url.lower().endswith(suffix) and len(url) > len(suffix):
            return f"{url[: -len(suffix)]}.rejected{url[-len(suffix) :]}"
    return f"{url}.rejected"


@dataclass(frozen=True)
class OutputTarget:
    predictions: str
    rejected: str
    format: TableFormat = "parquet"

    @classmethod
    def at(cls, output: str, fmt: str | None = None) -> OutputTarget:
        return cls(output.rstrip("/"), rejected_url(output), format_of(output, fmt))

    def prepare(self, *, overwrite: bool) -> None:
        """Make the output folder; an existing one is refused unless ``overwrite``."""
        for url in (self.predictions, self.rejected):
            fs, path = fsspec.core.url_to_fs(url)
            if fs.exists(path):
                if not overwrite:
                    raise ConfigError(
                        f"{url} already exists; choose another --output or pass --overwrite"
                    )
                fs.rm(path, recursive=True)
        fs, path = fsspec.core.url_to_fs(self.predictions)
        fs.makedirs(path, exist_ok=True)

    def write(self, scored: ScoredPartition, chunk: int) -> None:
        """The partition's part files (predictions always, rejected rows when there are any)."""
        self._write(scored.predictions, self.predictions, chunk)
        if scored.rejected.num_rows:
            self._write(scored.rejected, self.rejected, chunk)

    def _write(self, table: pa.Table, folder: str, chunk: int) -> None:
        fs, path = fsspec.core.url_to_fs(folder)
        fs.makedirs(path, exist_ok=True)
        with fs.open(f"{path}/part-{chunk:05d}.{self.format}", "wb") as handle:
            if self.format == "parquet":
                pq.write_table(table, handle)
            else:
                pa_csv.write_csv(_flat(table), handle)


def _flat(table: pa.Table) -> pa.Table:
    """CSV has no maps: ``probabilities`` becomes a JSON object per row."""
    if "probabilities" not in table.column_names:
        return table
    index = table.column_names.index("probabilities")
    as_json = [
        None if pairs is None else json.dumps(dict(pairs))
        for pairs in table.column(index).to_pylist()
    ]
    return table.set_column(index, "probabilities", pa.array(as_json, type=pa.string()))
