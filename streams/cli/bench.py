"""``streamscore bench``: throughput, latency and memory next to the pass-through limit.

A plain Typer command function, mounted by :mod:`streams.cli.main`. Point it at a broker with
the usual settings (``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS`` ...); an embedded broker that
is not running is started.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from schemas.errors import StreamscoreError
from streams.cli.common import fail, settings_of

console = Console(stderr=True)


def _command() -> str:
    return shlex.join(["streamscore", *sys.argv[1:]])


def _write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")


def bench(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option(help="Events preloaded and run through each throughput phase.")
    ] = 200_000,
    rate_fraction: Annotated[
        float,
        typer.Option(help="Offered rate of the latency phase, as a share of the pipeline's max."),
    ] = 0.5,
    rate: Annotated[
        float | None,
        typer.Option(help="Offered rate of the latency phase in events/s (overrides the share)."),
    ] = None,
    latency_events: Annotated[
        int, typer.Option(help="Events per latency run (0 = no latency phase).")
    ] = 50_000,
    latency_min_seconds: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="A latency run sends at least this long, whatever --latency-events says "
            "(its tail is then of the steady state, not of the start).",
        ),
    ] = 10.0,
    extra_rate_fraction: Annotated[
        list[float] | None,
        typer.Option(
            help="Another latency run at this share of the pipeline's max (repeatable); "
            "default 0.1 (light load). 0 = none."
        ),
    ] = None,
    json_input: Annotated[
        bool,
        typer.Option(
            "--json-input/--no-json-input",
            help="Also run the pipeline over the same events JSON-encoded (input format json).",
        ),
    ] = True,
    cpu_profile: Annotated[
        bool,
        typer.Option(
            "--cpu-profile/--no-cpu-profile",
            help="CPU time per event of the stages and side paths, off the broker's clock.",
        ),
    ] = True,
    scale_workers: Annotated[
        str,
        typer.Option(
            help="Scaling row: 1 .. N consumer-group members as processes; auto = cores, 0 = off."
        ),
    ] = "auto",
    soak: Annotated[
        int | None,
        typer.Option(help="Soak: stream this many events and report resident memory."),
    ] = None,
    stages: Annotated[
        bool,
        typer.Option("--stages/--no-stages", help="Stage profile: switch stages off in turn."),
    ] = True,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="Stage profile: only this variant, named as in its table, e.g. 'decode off' "
            "(repeatable; default: all; the full pipeline always runs)."
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(
            help="Rounds of every throughput, stage and latency run; the best of each is kept."
        ),
    ] = 1,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
    markdown_path: Annotated[
        Path | None, typer.Option("--markdown", help="Write a README snippet (markdown) here.")
    ] = None,
    keep_topics: Annotated[
        bool, typer.Option(help="Leave the bench's topics on the broker.")
    ] = False,
) -> None:
    """Throughput, latency and memory of the scoring loop, next to the pass-through limit."""
    from streams.bench.report import format_report, markdown
    from streams.bench.run import run_bench
    from streams.bench.stage_profile import check_names
    from streams.scoring.supervisor import worker_count

    check_names(stage or ())  # a typo is one line now, not after the first runs
    settings = settings_of(ctx)
    extra = [0.1] if extra_rate_fraction is None else [f for f in extra_rate_fraction if f > 0]
    scale = 0 if scale_workers.strip() == "0" else worker_count(scale_workers)
    try:
        result = run_bench(
            settings,
            events=events,
            rate_fraction=rate_fraction,
            rate=rate,
            latency_events=latency_events,
            latency_min_s=latency_min_seconds,
            extra_rate_fractions=extra,
            json_input=json_input,
            scale_workers=scale if scale > 1 else 0,
            cpu=cpu_profile,
            soak=soak,
            stages=stages,
            stage_variants=stage or (),
            repeats=repeats,
            keep_topics=keep_topics,
            command=_command(),
            progress=lambda message: console.print(f"[dim]{message}[/]"),
        )
    except (StreamscoreError, ValueError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    sys.stdout.write(format_report(result))
    sys.stdout.flush()
    if json_path is not None:
        _write_json(json_path, result)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown(result), encoding="utf-8")
        console.print(f"wrote {markdown_path}")


def bench_broker(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(min=1.0, help="Records a second.")] = 3000.0,
    seconds: Annotated[float, typer.Option(min=1.0, help="How long the producer sends.")] = 60.0,
    linger_ms: Annotated[int, typer.Option(min=0, help="The producer's linger.ms.")] = 5,
    fetch_wait_ms: Annotated[
        int, typer.Option(min=0, help="The consumer's fetch.wait.max.ms.")
    ] = 20,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of the fresh topic.")] = 3,
    window: Annotated[float, typer.Option(min=0.5, help="Seconds per reported row.")] = 10.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
) -> None:
    """The broker's CPU and the hop through it as a topic fills with record batches."""
    from streams.bench.broker import format_table, run_broker_bench
    from streams.bench.run import ensure_stack

    settings = settings_of(ctx)
    try:
        ensure_stack(settings)
        result = run_broker_bench(
            settings, rate=rate, seconds=seconds, linger_ms=linger_ms,
            fetch_wait_ms=fetch_wait_ms, partitions=partitions, window_s=window,
            command=_command(),
        )  # fmt: skip
    except (StreamscoreError, ValueError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}") from exc
    Console().print(format_table(result), highlight=False, soft_wrap=True)
    if json_path is not None:
        _write_json(json_path, result)
