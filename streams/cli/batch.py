"""``streamscore score-batch`` and ``streamscore sample-table``: scoring tables on Dask.

Mounted in :mod:`streams.cli.main`::

    app.command("score-batch")(score_batch)
    app.command("sample-table")(sample_table)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from schemas.errors import ConfigError
from streams.cli.common import JsonFlag, print_json, settings_of


def score_batch(
    ctx: typer.Context,
    input_url: Annotated[
        str,
        typer.Argument(metavar="INPUT", help="Parquet or CSV: a path, a glob or any fsspec URL."),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Dataset folder of part files (rejected rows go to OUTPUT.rejected beside it, "
            "before the suffix: scores.parquet -> scores.rejected.parquet).",
        ),
    ],
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of a running Dask scheduler, e.g. tcp://dask:8786 "
            "(default: a LocalCluster on this machine)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="LocalCluster worker processes (default: one per CPU)."),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option("--input-format", help="parquet or csv (default: from INPUT's suffix)."),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option("--output-format", help="parquet or csv (default: from OUTPUT's suffix)."),
    ] = None,
    blocksize: Annotated[
        str,
        typer.Option(
            help="CSV: bytes of text per partition, e.g. 16MiB. Parquet: one partition per "
            "row group."
        ),
    ] = "16MiB",
    champion: Annotated[
        Path | None,
        typer.Option(help="Champion bundle folder (default: the processor's model source)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace OUTPUT and its rejected rows if they exist.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Score a Parquet or CSV table on Dask with the stream's checks and champion."""
    from streams.batch.driver import BatchJob, run_batch
    from streams.batch.output import OutputTarget, format_of
    from streams.batch.payload import champion_payload

    overrides: dict[str, Any] = {
        "models": (
            {"source": "files", "dir": champion.parent, "champion": champion.name}
            if champion
            else None
        ),
    }
    payload = champion_payload(settings_of(ctx, **overrides))
    job = BatchJob(
        input=input_url,
        input_format=format_of(input_url, input_format),
        target=OutputTarget.at(output, output_format),
        blocksize=blocksize,
    )
    summary = run_batch(
        job,
        payload,
        scheduler=scheduler,
        workers=workers,
        progress=progress and not as_json,
        overwrite=overwrite,
    )
    if as_json:
        print_json(summary.as_dict())
    else:
        Console().print(summary.as_dict())


def sample_table(
    output: Annotated[
        str, typer.Argument(metavar="OUTPUT", help="File to write: a path or any fsspec URL.")
    ],
    rows: Annotated[int, typer.Option(min=1, help="How many events.")] = 1_000_000,
    invalid_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of spoilt rows (rejected by scoring).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="parquet or csv (default: from OUTPUT's suffix)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a table of sensor events resampled from the reference data (for score-batch)."""
    from streams.batch.output import format_of
    from streams.batch.sample import write_sample

    table_format = format_of(output, fmt)
    try:
        written = write_sample(
            output, rows, fmt=table_format, seed=seed, invalid_fraction=invalid_fraction
        )
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc}") from exc
    result = {"output": output, "format": table_format, "rows": written}
    if as_json:
        print_json(result)
    else:
        Console().print(result)
