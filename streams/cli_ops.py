"""Operations commands: consumer-group lag from the terminal, and a lag exporter.

Mounted on the main CLI with ``app.add_typer(ops_app)`` (no name: the commands
join the top level), they give::

    streamscore lag [--group G] [--topic T ...] [--watch] [--interval S] [--count N] [--json]
    streamscore groups [--json]
    streamscore lag-exporter [--group G ...] [--topic T ...] [--host H] [--port P]

Lag is read from the outside through the admin API (:mod:`connectors.lag`), so
it works for any group, including groups that are not streamscore's, and keeps
working while every member of the group is down. That is why the exporter
exists next to the processors' own ``streamscore_consumer_lag_records``: a
stopped processor cannot report the lag piling up behind it.

Settings come from ``ctx.obj`` when the main CLI put a :class:`Settings` there,
else from :func:`streams.settings.load_settings`, with the root command's
``--config`` file if it has that option.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from connectors.kafka import PartitionOffsets
from connectors.lag import group_lag, list_groups
from streams.errors import StreamscoreError
from streams.settings import Settings, load_settings

log = logging.getLogger(__name__)

LagKey = tuple[str, int]

LOWER_BOUND_NOTE = (
    "embedded broker: end offsets and lag are lower bounds (understated by up to one "
    "producer batch per partition)"
)

ops_app = typer.Typer(
    help="Operations: consumer-group lag and the lag exporter.", no_args_is_help=True
)


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, slots=True)
class LagRow:
    """One partition of one lag sample; ``delta`` is the lag change since the previous sample."""

    topic: str
    partition: int
    committed: int | None
    low: int
    end: int
    lag: int
    delta: int | None

    @property
    def trend(self) -> str:
        if self.delta is None:
            return "new"
        if self.delta > 0:
            return "growing"
        if self.delta < 0:
            return "shrinking"
        return "steady"

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "low": self.low,
            "end": self.end,
            "lag": self.lag,
            "lag_delta": self.delta,
            "trend": self.trend,
        }


def lag_rows(
    offsets: Sequence[PartitionOffsets], previous: Mapping[LagKey, int] | None = None
) -> list[LagRow]:
    """Rows for ``offsets``; deltas against ``previous`` lags (None where there is none)."""
    rows = []
    for o in offsets:
        before = None if previous is None else previous.get((o.topic, o.partition))
        rows.append(
            LagRow(
                topic=o.topic,
                partition=o.partition,
                committed=o.committed,
                low=o.low,
                end=o.high,
                lag=o.lag,
                delta=None if before is None else o.lag - before,
            )
        )
    return rows


@dataclass(frozen=True)
class LagSample:
    """Lag of one group at one moment, or the error that prevented reading it."""

    group: str
    taken_at: float
    rows: list[LagRow] = field(default_factory=list)
    #: Seconds since the previous sample of the same watch, if any.
    interval_s: float | None = None
    error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(r.lag for r in self.rows)

    @property
    def total_delta(self) -> int | None:
        deltas = [r.delta for r in self.rows if r.delta is not None]
        return sum(deltas) if deltas else None

    def lags(self) -> dict[LagKey, int]:
        return {(r.topic, r.partition): r.lag for r in self.rows}

    def as_dict(self, *, lower_bound: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "group": self.group,
            "timestamp": self.taken_at,
            "interval_s": self.interval_s,
            "total_lag": self.total_lag,
            "total_lag_delta": self.total_delta,
            "end_is_lower_bound": lower_bound,
            "partitions": [r.as_dict() for r in self.rows],
        }
        if self.error is not None:
            body["error"] = self.error
        return body


def watch_lag(
    lookup: Callable[[], list[PartitionOffsets]],
    group: str,
    *,
    interval: float,
    count: int | None,
    keep_going: bool,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[LagSample]:
    """Sample ``lookup`` every ``interval`` seconds, ``count`` times (None = forever).

    With ``keep_going`` a failed lookup becomes a sample carrying the error and
    the watch goes on (a broker restart should not end a watch); without it the
    error propagates.
    """
    previous: dict[LagKey, int] | None = None
    previous_at: float | None = None
    taken = 0
    while count is None or taken < count:
        if taken:
            sleep(interval)
        now = clock()
        try:
            offsets = lookup()
        except StreamscoreError as exc:
            if not keep_going:
                raise
            yield LagSample(group, now, error=str(exc))
        else:
            sample = LagSample(
                group,
                now,
                lag_rows(offsets, previous),
                interval_s=None if previous_at is None else now - previous_at,
            )
            previous, previous_at = sample.lags(), now
            yield sample
        taken += 1


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


# --------------------------------------------------------------------------- exporter


class GroupLagCollector(Collector):
    """Prometheus collector that looks the lag of consumer groups up at each scrape.

    Pull, not push: the lookup runs when Prometheus scrapes, so the numbers are
    as fresh as the scrape and nothing runs between scrapes. A group whose
    lookup fails reports ``streamscore_lag_exporter_up{consumer_group} 0`` and
    no partition series (a stale number would look like a healthy one).
    """

    METRIC_NAMES = (
        "streamscore_group_lag_records",
        "streamscore_group_committed_offset",
        "streamscore_partition_end_offset",
        "streamscore_lag_exporter_up",
    )

    def __init__(
        self, groups: Sequence[str], lookup: Callable[[str], list[PartitionOffsets]]
    ) -> None:
        self.groups = list(groups)
        self.lookup = lookup

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        partition_labels = ["consumer_group", "topic", "partition"]
        return (
            GaugeMetricFamily(
                "streamscore_group_lag_records",
                "Log end offset minus committed offset of a consumer group, per partition "
                "(read through the admin API, independent of the group's members).",
                labels=partition_labels,
            ),
            GaugeMetricFamily(
                "streamscore_group_committed_offset",
                "Committed offset (next offset to read) of a consumer group, per partition.",
                labels=partition_labels,
            ),
            GaugeMetricFamily(
                "streamscore_partition_end_offset",
                "Log end offset (high watermark) per partition.",
                labels=["topic", "partition"],
            ),
            GaugeMetricFamily(
                "streamscore_lag_exporter_up",
                "1 when the last lag lookup of the consumer group answered, else 0.",
                labels=["consumer_group"],
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, committed, end, up = self._families()
        ends_seen: set[LagKey] = set()
        for group in self.groups:
            try:
                offsets = self.lookup(group)
            except StreamscoreError as exc:
                log.warning("lag lookup of group %s failed: %s", group, exc)
                up.add_metric([group], 0.0)
                continue
            up.add_metric([group], 1.0)
            for o in offsets:
                labels = [group, o.topic, str(o.partition)]
                lag.add_metric(labels, float(o.lag))
                if o.committed is not None:
                    committed.add_metric(labels, float(o.committed))
                if (o.topic, o.partition) not in ends_seen:
                    ends_seen.add((o.topic, o.partition))
                    end.add_metric([o.topic, str(o.partition)], float(o.high))
        yield from (lag, committed, end, up)


# --------------------------------------------------------------------------- commands


def _settings(ctx: typer.Context) -> Settings:
    """The invocation's settings: a Settings the main CLI put in ``ctx.obj``, else loaded
    here, from the root command's ``--config`` file when it has one."""
    if isinstance(ctx.obj, Settings):
        return ctx.obj
    config = ctx.find_root().params.get("config")
    return load_settings(config if isinstance(config, Path) else None)


def _target(
    settings: Settings, groups: list[str] | None, topics: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """Groups and topics to look at. With no group: the processor's group on the events topic."""
    if not groups:
        return [settings.processor.group_id], topics or [settings.topics.events]
    return groups, topics or None


def _fail(console: Console, exc: StreamscoreError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=1)


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
    settings = _settings(ctx)
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
    except StreamscoreError as exc:
        raise _fail(console, exc) from exc
    except KeyboardInterrupt:
        return


@ops_app.command("groups")
def groups(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the consumer groups the cluster knows."""
    settings = _settings(ctx)
    console = Console(stderr=as_json)
    try:
        names = list_groups(settings.kafka)
    except StreamscoreError as exc:
        raise _fail(console, exc) from exc
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
    settings = _settings(ctx)
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


if __name__ == "__main__":
    ops_app()
