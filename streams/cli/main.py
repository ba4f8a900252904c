"""The ``streamscore`` command line (also ``python -m streams``).

Settings are read once here, from defaults < ``streamscore.toml`` (or
``--config``) < ``STREAMSCORE_*`` environment < the flags of each command,
and handed down explicitly.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.errors import ConfigError, InfrastructureError
from schemas.settings import Settings
from streams.cli.autopilot import autopilot_app, retrain
from streams.cli.batch import sample_table, score_batch
from streams.cli.bench import bench, bench_broker
from streams.cli.common import (
    ConfigOption,
    Invocation,
    JsonFlag,
    console,
    fail,
    new_app,
    print_json,
    settings_of,
)
from streams.cli.consume import consume
from streams.cli.drift import app as drift_app
from streams.cli.drift import report as drift_report
from streams.cli.evaluate import evaluate, shadow_report
from streams.cli.models import app as models_app
from streams.cli.ops import ops_app
from streams.cli.privacy import audit_app, dlq_app, privacy_app
from streams.cli.serve import bench_http, serve_app

app = new_app(
    name="streamscore",
    help="Kafka-native real-time ML inference: validate, score with ONNX, watch drift, "
    "shadow-score a challenger.",
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "WARNING",
) -> None:
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"{log_level!r}; use DEBUG, INFO, WARNING or ERROR")
    ctx.obj = Invocation(config=config, debug=level == "DEBUG")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- the embedded stack -------------------------------------------------------------------


def _stack_table(rows: list[Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("service", "address", "state", "pid", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, r.address, r.state, str(r.pid or ""), r.detail)
    return table


@app.command()
def up(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Start the embedded Kafka broker (Tansu) and Redis (Valkey); create the topics."""
    from connectors.embedded import EmbeddedStack
    from connectors.kafka_admin import ensure_topics

    s = settings_of(ctx)
    rows = EmbeddedStack(s).up()
    created = ensure_topics(s)
    if as_json:
        print_json({"services": [r.__dict__ for r in rows], "topics_created": created})
        return
    Console().print(_stack_table(rows, "streamscore stack"))
    if created:
        Console().print(f"created topics: {', '.join(created)}")


@app.command()
def down(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Stop the embedded services (their in-memory data is gone)."""
    from connectors.embedded import EmbeddedStack

    rows = EmbeddedStack(settings_of(ctx)).down()
    if as_json:
        print_json({"services": [r.__dict__ for r in rows]})
    else:
        Console().print(_stack_table(rows, "streamscore stack"))


@app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Show the stack, the topics and the models."""
    from connectors.embedded import EmbeddedStack
    from connectors.kafka_admin import Admin
    from models.bundle import bundle_exists, load_bundle

    s = settings_of(ctx)
    rows = EmbeddedStack(s).status()
    topics: dict[str, int] = {}
    if any(r.name == "kafka" and r.state in ("running", "external", "foreign") for r in rows):
        try:
            topics = Admin(s.kafka).topics(timeout=3)
        except InfrastructureError:
            topics = {}
    models = {}
    for role, path in (
        ("champion", s.models.champion_path),
        ("challenger", s.models.challenger_path),
    ):
        if bundle_exists(path):
            _, meta = load_bundle(path)
            models[role] = f"{meta.name} v{meta.version}"
        else:
            models[role] = "missing"
    if as_json:
        print_json({"services": [r.__dict__ for r in rows], "topics": topics, "models": models})
        return
    out = Console()
    out.print(_stack_table(rows, "streamscore stack"))
    table = Table(title="topics")
    table.add_column("role")
    table.add_column("topic")
    table.add_column("partitions")
    for role, name in s.topics.by_role().items():
        table.add_row(role, name, str(topics.get(name, "missing")))
    out.print(table)
    for role, label in models.items():
        out.print(f"{role}: {label}")


# -- models (file bundles) --------------------------------------------------------------------


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(help="Retrain even if the bundles exist.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train the reference champion and challenger on the Shuttle data (file bundles)."""
    from models.bundle import load_bundle
    from models.train import ensure_reference_models

    s = settings_of(ctx)
    paths = ensure_reference_models(s.models.dir, force=force)
    result = {}
    for role, path in paths.items():
        _, meta = load_bundle(path)
        result[role] = {
            "name": meta.name,
            "version": meta.version,
            "path": str(path),
            **meta.metrics,
        }
    if as_json:
        print_json(result)
        return
    for role, info in result.items():
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in info.items() if isinstance(v, float))
        Console().print(f"{role}: {info['name']} v{info['version']} at {info['path']} ({metrics})")


# -- the processor ----------------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (overrides settings).")
    ] = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    input_topic: Annotated[str | None, typer.Option("--input-topic", help="Input topic.")] = None,
    input_format: Annotated[
        str | None, typer.Option("--input-format", help="avro, avro-confluent or json.")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Micro-batch size limit.")] = None,
    max_wait_ms: Annotated[int | None, typer.Option(help="Micro-batch wait limit.")] = None,
    champion: Annotated[
        Path | None,
        typer.Option(
            help="Champion bundle folder (default: models.dir/champion), or an .onnx file "
            "(with --features unless the model has one input per feature)."
        ),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="With --champion FILE.onnx: feature order, comma-separated.")
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="With --champion FILE.onnx: class names, comma-separated.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of /metrics, /healthz, /readyz (0 = off).")
    ] = None,
    exit_when_idle: Annotated[
        float | None,
        typer.Option(help="Exit once no input arrived for this many seconds (backfills, tests)."),
    ] = None,
    max_events: Annotated[
        int | None, typer.Option(help="Exit after this many input events (per worker).")
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="Consumer-group members, each a process, under one supervisor with one "
            "metrics endpoint: a number, or auto (= cores). Default 1."
        ),
    ] = None,
    from_timestamp: Annotated[
        str | None,
        typer.Option(
            help="Replay: score the records stamped from this time (ISO-8601, UTC without a "
            "zone, or epoch ms); partitions without a committed offset start there."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Replay: stop each partition at its first record stamped after this time "
            "(default with --from-timestamp: now), and exit once all have."
        ),
    ] = None,
    output_topic: Annotated[
        str | None, typer.Option("--output-topic", help="Predictions topic (overrides settings).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the scoring processor (one consumer-group member) until stopped."""
    from streams.scoring.compose import run_processor
    from streams.scoring.supervisor import run_workers, worker_count

    n_workers = worker_count(workers)
    if from_timestamp is not None and until is None:
        until = str(int(time.time() * 1000))  # one "now" for every worker: the end at start

    if champion is not None and champion.is_file():
        champion = _bundle_from_onnx(settings_of(ctx), champion, features, classes)
    elif features or classes:
        raise ConfigError("--features and --classes go with --champion FILE.onnx")
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap_servers} if bootstrap_servers else None,
        "processor": {
            k: v
            for k, v in {
                "group_id": group_id,
                "max_batch": max_batch,
                "max_wait_ms": max_wait_ms,
                "start_from_timestamp_ms": from_timestamp,
                "stop_at_timestamp_ms": until,
            }.items()
            if v is not None
        },
        "topics": {
            k: v for k, v in {"events": input_topic, "predictions": output_topic}.items() if v
        },
        "formats": {"events": input_format} if input_format else None,
        "models": {"dir": champion.parent, "champion": champion.name} if champion else None,
        "metrics": (
            {"port": metrics_port, "enabled": metrics_port != 0}
            if metrics_port is not None
            else None
        ),
    }
    settings = settings_of(ctx, **overrides)
    if n_workers > 1:
        summary = run_workers(
            settings, n_workers, exit_when_idle=exit_when_idle, max_events=max_events
        )
    else:
        summary = run_processor(settings, exit_when_idle=exit_when_idle, max_events=max_events)
    if as_json:
        print_json(summary)
    else:
        Console().print(summary)


def _bundle_from_onnx(
    settings: Settings, file: Path, features: str | None, classes: str | None
) -> Path:
    """A bundle folder under ``<home>/models/from-onnx`` for a bare ``.onnx`` champion."""
    from models.bundle import save_bundle
    from models.profile import NO_PROFILE_WARNING
    from models.signature import read_onnx_file

    if file.suffix.lower() != ".onnx":
        raise ConfigError(f"--champion {file}: give a bundle folder or an .onnx file")

    def split(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",") if t.strip()] if text else None

    onnx_bytes, meta = read_onnx_file(file, feature_names=split(features), classes=split(classes))
    folder = settings.home / "models" / "from-onnx" / file.stem
    save_bundle(folder, onnx_bytes, meta)
    if not meta.profile.features:
        console.print(f"[yellow]warning:[/] {file.name}: {NO_PROFILE_WARNING}", soft_wrap=True)
    return folder


# -- the source --------------------------------------------------------------------------------


@app.command()
def produce(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(help="How many events.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible).")] = 0.0,
    source: Annotated[
        Path | None, typer.Option(help="CSV or JSONL file to replay (default: the Shuttle data).")
    ] = None,
    invalid_fraction: Annotated[
        float, typer.Option(help="Fraction of invalid events to mix in (0..1).")
    ] = 0.0,
    shift_at: Annotated[int | None, typer.Option(help="Event index where a shift starts.")] = None,
    shift_feature: Annotated[str | None, typer.Option(help="Feature to shift.")] = None,
    shift_sigma: Annotated[float, typer.Option(help="Shift size in standard deviations.")] = 1.0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: topics.events).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="avro, avro-confluent or json.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    run_id: Annotated[str, typer.Option(help="Prefix of the event ids.")] = "evt",
    rewrite_ids: Annotated[
        bool,
        typer.Option(
            "--rewrite-ids",
            help="With --source: generate event_id, sensor_id and event_time even where the "
            "file has its own (default: the file's own are kept).",
        ),
    ] = False,
    labels_after: Annotated[
        float | None,
        typer.Option(
            help="Also publish each valid event's true label to the labels topic, this many "
            "seconds after the last event (delayed ground truth for the evaluator)."
        ),
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option(
            "--stdin",
            help="Send the sensor events read from standard input instead, one JSON object a "
            "line (event_id, sensor_id, event_time in epoch ms, features), each checked "
            "against the event schema first. Each rejected line is named on stderr "
            "('line N: reason'), then 'sent X, rejected Y'. Exit code 0 when every line was "
            "sent, 1 when any was rejected. Only --topic, --format and --json apply.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Publish sensor events to Kafka (replay, invalid mix, feature shift, delayed labels),
    or the JSON lines of standard input (--stdin)."""
    from connectors.source import run_source

    overrides: dict[str, Any] = {
        "topics": {"events": topic} if topic else None,
        "formats": {"events": fmt} if fmt else None,
    }
    if stdin:
        from streams.cli.consume import refuse_options, send_stdin

        refuse_options(ctx, "--stdin", allowed={"stdin", "topic", "fmt", "as_json"})
        code = send_stdin(settings_of(ctx, **overrides), sys.stdin.buffer, as_json=as_json)
        raise typer.Exit(code)
    from connectors.source import SourceOptions

    options = SourceOptions(
        count=count,
        rate=rate,
        invalid_fraction=invalid_fraction,
        shift_at=shift_at,
        shift_feature=shift_feature,
        shift_sigma=shift_sigma,
        seed=seed,
        run_id=run_id,
        keep_file_fields=not rewrite_ids,
    )
    try:
        report = run_source(
            settings_of(ctx, **overrides), options, source=source, labels_after_s=labels_after
        )
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print_json(report.as_dict())
    else:
        Console().print(report.as_dict())


@app.command()
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="How many events to stream.")] = 60_000,
    rate: Annotated[float, typer.Option(help="Producer rate, events/s (0 = max).")] = 10_000.0,
    invalid_fraction: Annotated[float, typer.Option(help="Share of invalid events.")] = 0.02,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Only stream and score events (file bundles, no registry, labels or autopilot); "
            "--events, --rate and --invalid-fraction apply to it.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The model autopilot end to end: drift, retrain, shadow, verdict, promotion (--quick:
    bring the stack up, train models if missing, stream events, score them, summarise)."""
    if quick:
        from streams.cli.demo import run_demo

        summary = run_demo(
            settings_of(ctx), events=events, rate=rate, invalid_fraction=invalid_fraction
        )
    else:
        from streams.autopilot.demo import run_loop_demo

        summary = run_loop_demo(settings_of(ctx))
    if as_json:
        print_json(summary)


app.add_typer(models_app, name="models")
app.add_typer(drift_app, name="drift")
app.add_typer(ops_app)
reports = new_app(help="Reports a person can look at.")
reports.command("drift")(drift_report)
app.add_typer(reports, name="report")
app.command("bench")(bench)
app.command("bench-http")(bench_http)
app.command("bench-broker")(bench_broker)
app.add_typer(serve_app, name="serve")
app.command("score-batch")(score_batch)
app.command("sample-table")(sample_table)
app.command("evaluate")(evaluate)
app.command("consume")(consume)
app.command("retrain")(retrain)
app.add_typer(autopilot_app, name="autopilot")
shadow = new_app(help="Champion vs challenger: the evidence.")
shadow.command("report")(shadow_report)
app.add_typer(shadow, name="shadow")
app.add_typer(privacy_app, name="privacy")
app.add_typer(audit_app, name="audit")
app.add_typer(dlq_app, name="dlq")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
