"""``streamscore drift ...``: the drift bench and the HTML drift report.

A Typer sub-app mounted by :mod:`streams.cli.main`. ``report`` reads drift records
from a JSONL file here (one DriftEvent object per line, timestamps as epoch ms);
reading them from the drift topic is the caller's job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from schemas.errors import DecodeError
from schemas.settings import Settings
from streams.cli.common import new_app, settings_of

app = new_app(
    help="Drift detection: measure its quality (bench) and render records as HTML (report)."
)
console = Console(stderr=True)


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="One seed and short streams (seconds, for tests).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every generated stream.")] = 7,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the full result (every run) here.")
    ] = None,
) -> None:
    """Seeded streams with known change points: detection rate, delay, false alarms."""
    from streams.drift.bench import format_table, run_drift_bench

    console.print(f"running the drift bench ({'quick' if quick else 'full'}, seed {seed}) ...")
    result = run_drift_bench(seed=seed, quick=quick)
    sys.stdout.write(format_table(result))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        console.print(f"wrote {json_path}")
    if not all(result["targets"].values()):
        raise typer.Exit(1)


def load_records(path: Path) -> list[dict[str, Any]]:
    """DriftEvent dicts from a JSONL file (checked like the drift topic's JSON format)."""
    from schemas.serde import JsonSerde

    serde = JsonSerde("drift_event")
    records = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(serde.decode(line))
            except DecodeError as exc:
                raise DecodeError(f"{path}:{number}: {exc}") from exc
    return records


def records_from_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the drift topic, decoded in its configured format."""
    from connectors.schema_registry import topic_serde
    from connectors.topic_reader import read_topic_from_start

    serde = topic_serde(settings, "drift")
    records = read_topic_from_start(settings.kafka, settings.topics.drift, idle_s=2.0)
    return [serde.decode(r.value) for r in records if r.value is not None]


@app.command()
def report(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="JSONL file of drift records (default: the drift topic).",
            exists=True,
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the HTML page.")
    ] = Path("drift-report.html"),
    top: Annotated[int, typer.Option(help="Most-shifted features to draw histograms of.")] = 4,
) -> None:
    """Render drift records as one self-contained HTML page."""
    from streams.drift.report import render_drift_report

    records = load_records(input_path) if input_path else records_from_topic(settings_of(ctx))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_drift_report(records, top=top), encoding="utf-8")
    console.print(f"wrote {output} ({len(records)} records)")
