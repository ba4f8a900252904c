"""Operations commands: consumer-group lag from the terminal, and a lag exporter.

Mounted on the main CLI with ``app.add_typer(ops_app)`` (no name: the commands
join the top level), they give::

    streamscore lag [--group G] [--topic T ...] [--watch] [--interval S] [--count N] [--json]
    streamscore groups [--json]
    streamscore lag-exporter [--group G ...] [--topic T ...] [--host H] [--port P]

The samples, the watch and the exporter's collector live in :mod:`streams.ops.lag`;
this module is the commands and their tables.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import nullcontext
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from connectors.kafka import PartitionOffsets
from connectors.lag import group_lag, list_groups
from schemas.settings import Settings
from streams.cli.common import new_app, settings_of
from streams.ops.lag import (
    LOWER_BOUND_NOTE,
    GroupLagCollector,
    LagRow,
    LagSample,
    watch_lag,
)

log = logging.getLogger(__name__)

ops_app = new_app(help="Operations: consumer-group lag and the lag exporter.")


# --------------------------------------------------------------------------- rendering


def _trend_text(row: LagRow) -> Text:
    if row.delta is None:
        return Text("·", style="dim")
    if row.delta > 0:
        return Text(f"▲ +{row.delta:,}", style="bold red")
    if row.delta < 0:
        return Text(f"▼ {row.delta:,}", style="green")
    return Text("= 0", style="dim")


def lag_table(sample: LagSample, *, lower_bound: bool) -> Table:
    """A rich table of one sample: per partition committed, end, lag and trend, then a total."""
    when = time.strftime("%H:%M:%S", time.localtime(sample.taken_at))
    title = f"consumer group [bold]{sample.group}[/] at {when}"
    if sample.interval_s is not None:
        title += f" (trend over {sample.interval_s:.1f}s)"
    table = Table(title=title, title_justify="left", show_footer=bool(sample.rows), min_width=72)
    total_delta = sample.total_delta
    footer_trend = (
        _trend_text(LagRow("", 0, None, 0, 0, 0, total_delta)) if total_delta is not None else ""
    )
    table.add_column("topic", footer="total")
    table.add_column("partition", justify="right")
    table.add_column("committed", justify="right")
    table.add_column("end", justify="right")
    table.add_column("lag", justify="right", footer=f"{sample.total_lag:,}")
    table.add_column("trend", justify="right", footer=footer_trend)
    for row in sample.rows:
        committed = "-" if row.committed is None else f"{row.committed:,}"
        table.add_row(
            row.topic,
            str(row.partition),
            committed,
            f"{row.end:,}",
            f"{row.lag:,}",
            _trend_text(row),
        )
    captions = []
    if sample.error is not None:
        captions.append(f"[red]lookup failed: {sample.error}[/]")
    elif not sample.rows:
        captions.append(
            "no partitions: the group has no committed offsets (name topics with --topic)"
        )
    if lower_bound:
        captions.append(f"[dim]{LOWER_BOUND_NOTE}[/]")
    if captions:
        table.caption = "\n".join(captions)
        table.caption_justify = "left"
    return table


# --------------------------------------------------------------------------- commands


def _target(
    settings: Settings, groups: list[str] | None, topics: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """Groups and topics to look at. With no group: the processor's group on the events topic."""
    if not groups:
        return [settings.processor.group_id], topics or [settings.topics.events]
    return groups, topics or None


GroupOption = Annotated[
    str | None,
    typer.Option(
        "--group",
        "-g",
        help="Consumer group (any group, not only streamscore's). "
        "Default: the processor's group, on the events topic.",
    ),
]
TopicOption = Annotated[
    list[str] | None,
    typer.Option(
        "--topic",
        "-t",
        help="Topic to show, all its partitions (repeatable). "
        "Default with --group: every topic the group committed offsets for.",
    ),
]


@ops_app.command("lag")
def lag(
    ctx: typer.Context,
    group: GroupOption = None,
    topic: TopicOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh every --interval seconds.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.1, help="Seconds between samples.")
    ] = 2.0,
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="With --watch: stop after this many samples."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per sample (JSON lines with --watch)."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for Kafka per lookup.")
    ] = 10.0,
) -> None:
    """Per partition: committed offset, end offset, lag, and its trend since the last sample."""
    settings = settings_of(ctx)
    console = Console(stderr=as_json)
    groups, topics = _target(settings, [group] if group else None, topic)
    target_group = groups[0]
    lower_bound = settings.kafka.is_embedded

    def lookup() -> list[PartitionOffsets]:
        return group_lag(settings.kafka, target_group, topics, timeout=timeout)

    samples = watch_lag(
        lookup,
        target_group,
        interval=interval,
        count=count if watch else 1,
        keep_going=watch,
    )
    live = (
        Live(console=console, auto_refresh=False, transient=False)
        if watch and not as_json
        else nullcontext()
    )
    try:
        with live:
            for sample in samples:
                if as_json:
                    typer.echo(json.dumps(sample.as_dict(lower_bound=lower_bound)))
                elif isinstance(live, Live):
                    hint = Text("Ctrl-C to stop", style="dim")
                    live.update(Group(lag_table(sample, lower_bound=lower_bound), hint))
                    live.refresh()
                else:
                    console.print(lag_table(sample, lower_bound=lower_bound))
    except KeyboardInterrupt:
        return


@ops_app.command("groups")
def groups(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the consumer groups the cluster knows."""
    settings = settings_of(ctx)
    console = Console(stderr=as_json)
    names = list_groups(settings.kafka)
    if as_json:
        typer.echo(json.dumps(names))
        return
    if not names:
        console.print("no consumer groups")
    for name in names:
        console.print(name)


@ops_app.command("lag-exporter")
def lag_exporter(
    ctx: typer.Context,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            "-g",
            help="Consumer group to export (repeatable). Default: the processor's group.",
        ),
    ] = None,
    topic: TopicOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to serve /metrics on. Default: metrics.host.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to serve /metrics on. Default: metrics.port.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for Kafka per lookup.")
    ] = 5.0,
) -> None:
    """Serve consumer-group lag as Prometheus metrics, looked up at each scrape.

    Lag keeps being reported while the group's members are down: alerts on
    lag piling up behind a stopped processor are built on it.
    """
    settings = settings_of(ctx)
    console = Console(stderr=True)
    groups_, topics = _target(settings, group, topic)
    registry = CollectorRegistry()
    registry.register(
        GroupLagCollector(groups_, lambda g: group_lag(settings.kafka, g, topics, timeout=timeout))
    )
    bind_host = host or settings.metrics.host
    bind_port = port if port is not None else settings.metrics.port
    server, _thread = start_http_server(bind_port, addr=bind_host, registry=registry)
    console.print(
        f"lag exporter for {', '.join(groups_)} on http://{bind_host}:{bind_port}/metrics"
    )
    if settings.kafka.is_embedded:
        console.print(f"[dim]{LOWER_BOUND_NOTE}[/]")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
