"""The Dask driver of ``streamscore score-batch``: a table in, part files out.

1. The champion is resolved like the processor resolves it and shipped to every
   worker once (:mod:`streams.batch.payload`).
2. The input (Parquet or CSV; a path, a glob or any fsspec URL) is read lazily by
   ``dask.dataframe``: only the envelope and feature columns, one partition per
   Parquet row group, or per ``blocksize`` bytes of CSV text.
3. One task per partition reads it, scores it with
   :func:`streams.batch.partition.score_partition` and writes its part files
   (:mod:`streams.batch.output`); only counts travel back. A worker holds a few
   partitions at a time, so memory stays bounded by the partition size, never by
   the input's.
4. The tasks run on a ``LocalCluster`` of this machine (one single-threaded worker
   process per CPU unless told otherwise), or on the cluster behind ``scheduler``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from schemas.errors import ConfigError, InfrastructureError
from streams.batch.output import OutputTarget, TableFormat
from streams.batch.partition import ENVELOPE, missing_columns, score_partition
from streams.batch.payload import ModelPayload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchJob:
    input: str
    input_format: TableFormat
    target: OutputTarget
    #: CSV: bytes of text per partition, e.g. ``16MiB``. Parquet: one partition per row group.
    blocksize: str = "16MiB"


@dataclass(frozen=True)
class ChunkReport:
    """What one task sends back: counts only."""

    chunk: int
    rows: int
    predictions: int
    rejected_by_reason: dict[str, int]


@dataclass
class BatchSummary:
    input: str
    output: str
    rejected_output: str
    model: str
    scheduler: str
    workers: int
    chunks: int = 0
    rows: int = 0
    predictions: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: Wall time from the first task submitted to the last part file written.
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add(self, report: ChunkReport) -> None:
        self.chunks += 1
        self.rows += report.rows
        self.predictions += report.predictions
        reasons = Counter(self.rejected_by_reason)
        reasons.update(report.rejected_by_reason)
        self.rejected_by_reason = dict(sorted(reasons.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rejected_output": self.rejected_output,
            "model": self.model,
            "scheduler": self.scheduler,
            "workers": self.workers,
            "chunks": self.chunks,
            "rows": self.rows,
            "predictions": self.predictions,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds > 0 else None,
        }


def score_chunk(
    frame: pd.DataFrame, payload: ModelPayload, chunk: int, target: OutputTarget
) -> ChunkReport:
    """The task run for each partition, on a worker."""
    scored = score_partition(
        frame, payload.serving(), processed_at=int(time.time() * 1000), chunk=chunk
    )
    target.write(scored, chunk)
    reasons = Counter(scored.rejected.column("reason").to_pylist())
    return ChunkReport(chunk, scored.rows, scored.predictions.num_rows, dict(reasons))


def read_partitions(job: BatchJob, feature_names: list[str]) -> list[Any]:
    """The input's partitions as Dask delayed frames (nothing is read yet but metadata)."""
    import dask.dataframe as dd
    import fsspec

    try:
        fs, _, paths = fsspec.get_fs_token_paths(job.input)
        found = bool(paths) and fs.exists(paths[0])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot open {job.input}: {exc}") from exc
    if not found:
        raise ConfigError(f"no file matches {job.input}; give an existing file, folder or glob")
    try:
        if job.input_format == "parquet":
            frame = dd.read_parquet(job.input, dtype_backend="pyarrow", split_row_groups=True)
        else:
            # Every cell as text: the partition function reads numbers the stream's way,
            # and a stray word in a numeric column cannot break Dask's dtype inference.
            frame = dd.read_csv(
                job.input,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                blocksize=job.blocksize,
            )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {job.input} as {job.input_format}: {exc}") from exc
    missing = missing_columns(list(frame.columns), feature_names)
    if missing:
        raise ConfigError(
            f"{job.input} has no column(s) {', '.join(missing)}; a table to score needs "
            f"{', '.join(ENVELOPE)} and the model's features {', '.join(feature_names)}"
        )
    return list(frame[[*ENVELOPE, *feature_names]].to_delayed())


@contextmanager
def dask_client(scheduler: str | None, workers: int | None, processes: bool) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a LocalCluster started for the job."""
    from distributed import Client, LocalCluster

    # Dask's own loggers are set to INFO by its config: follow the command's level instead.
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InfrastructureError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}"
            ) from exc
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address="127.0.0.1:0",  # a free port: jobs side by side never clash
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_batch(
    job: BatchJob,
    payload: ModelPayload,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> BatchSummary:
    """Score every row of ``job.input`` with ``payload``'s model; see the module docstring."""
    import dask
    from distributed import as_completed

    parts = read_partitions(job, payload.meta.feature_names)
    job.target.prepare(overwrite=overwrite)
    with dask_client(scheduler, workers, processes) as client:
        shipped = client.scatter(payload, broadcast=True)
        task = dask.delayed(score_chunk, pure=False)
        summary = BatchSummary(
            input=job.input,
            output=job.target.predictions,
            rejected_output=job.target.rejected,
            model=f"{payload.name} v{payload.version}",
            scheduler=client.scheduler.address,
            workers=len(client.scheduler_info()["workers"]),
        )
        started = time.perf_counter()
        futures = client.compute(
            [task(part, shipped, chunk, job.target) for chunk, part in enumerate(parts)]
        )
        with _progress(len(futures), enabled=progress) as advance:
            for future in as_completed(futures):
                try:
                    report = future.result()
                except OSError as exc:
                    raise InfrastructureError(f"a partition could not be written: {exc}") from exc
                summary.add(report)
                advance(report.rows)
        summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _progress(chunks: int, *, enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr (partitions done, rows scored); a no-op when disabled."""
    if not enabled:
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("partitions · {task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("score", total=chunks, rows=0)
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            bar.update(task, advance=1, rows=done)

        yield advance
