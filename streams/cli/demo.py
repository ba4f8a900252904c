"""``streamscore demo``: the whole system on one machine, with live progress.

1. bring the embedded stack up (nothing is started for an external Kafka/Redis);
2. train the reference models if they are missing;
3. start the processor as its own process (so it has a core of its own);
4. publish sensor events: a share of them invalid, a feature shift half-way;
5. show live progress from the broker: produced, predictions, dead letters, lag;
6. when the processor has gone idle, print its summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.embedded import EmbeddedStack
from connectors.kafka import Consumer
from connectors.kafka_admin import ensure_topics
from connectors.source import ProduceReport, SourceOptions, run_source
from models.train import ensure_reference_models
from schemas.errors import InfrastructureError
from schemas.settings import Settings
from streams.scoring.processor import client_id


class _TopicCounter:
    """Sums of partition end offsets of topics; a lower bound on the embedded broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer(
            settings.kafka, group_id=settings.processor.group_id, client_id=client_id("demo")
        )

    def ends(self, topic: str) -> int:
        return sum(p.high for p in self.consumer.offsets(topic, timeout=5))

    def committed(self, topic: str) -> int:
        """Sum of the group's committed offsets: exact, unlike end offsets."""
        return sum(p.committed or p.low for p in self.consumer.offsets(topic, timeout=5))

    def lag(self, topic: str) -> int:
        return sum(p.lag for p in self.consumer.offsets(topic, timeout=5))

    def close(self) -> None:
        self.consumer.close()


def _processor_env(settings: Settings) -> dict[str, str]:
    """The settings the demo runs with, for the processor child process."""
    env = dict(os.environ)
    env.update(
        {
            "STREAMSCORE_HOME": str(settings.home),
            "STREAMSCORE_MODELS__DIR": str(settings.models.dir),
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "STREAMSCORE_PROCESSOR__GROUP_ID": settings.processor.group_id,
        }
    )
    return env


def run_demo(
    settings: Settings,
    *,
    events: int = 60_000,
    rate: float = 10_000.0,
    invalid_fraction: float = 0.02,
    shift_feature: str = "f1",
    idle_seconds: float = 4.0,
) -> dict[str, Any]:
    console = Console(stderr=True)
    started = time.monotonic()
    console.rule("[bold]streamscore demo")
    console.print("starting the embedded stack …")
    for service in EmbeddedStack(settings).up():
        console.print(f"  {service.name:6} {service.address:22} {service.state}")
    created = ensure_topics(settings)
    if created:
        console.print(f"  created topics: {', '.join(created)}")
    console.print("training the reference models if missing …")
    for role, path in ensure_reference_models(settings.models.dir).items():
        console.print(f"  {role:10} {path}")

    counter = _TopicCounter(settings)
    topics = settings.topics
    produced_before = counter.ends(topics.events)
    committed_before = counter.committed(topics.events)
    log_path = settings.home / "run" / "demo-processor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "streams", "run", "--json",
        "--exit-when-idle", str(idle_seconds),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        processor = subprocess.Popen(  # noqa: S603 - this Python running streamscore, an argument list
            command, env=_processor_env(settings), stdout=subprocess.PIPE, stderr=log
        )
    console.print(
        f"processor started (pid {processor.pid}); metrics on "
        f"http://{settings.metrics.host}:{settings.metrics.port}/metrics"
    )

    report: dict[str, ProduceReport] = {}
    failure: list[BaseException] = []
    options = SourceOptions(
        count=events,
        rate=rate,
        invalid_fraction=invalid_fraction,
        shift_at=events // 2,
        shift_feature=shift_feature,
        shift_sigma=1.0,
        run_id=f"demo{int(time.time())}",
    )

    def produce() -> None:
        try:
            report["done"] = run_source(settings, options)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            failure.append(exc)

    producer_thread = threading.Thread(target=produce, name="demo-source", daemon=True)
    producer_thread.start()

    progress = Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        TextColumn("{task.completed:>9,.0f} / {task.total:,.0f}"),
        TimeElapsedColumn(),
    )
    produced_task = progress.add_task("produced", total=events)
    scored_task = progress.add_task("committed", total=events)
    stats = Table.grid(padding=(0, 2))
    with Live(Group(progress, stats), console=console, refresh_per_second=4) as live:
        while processor.poll() is None:
            produced = counter.ends(topics.events) - produced_before
            committed = counter.committed(topics.events) - committed_before
            progress.update(produced_task, completed=min(produced, events))
            progress.update(scored_task, completed=min(committed, events))
            stats = Table.grid(padding=(0, 2))
            stats.add_row("committed (processed and acknowledged)", f"{committed:,}",
                          "lag", f"{counter.lag(topics.events):,}")  # fmt: skip
            live.update(Group(progress, stats))
            time.sleep(0.25)
    producer_thread.join()
    counter.close()
    stdout = processor.stdout.read().decode() if processor.stdout else ""
    if failure:
        raise InfrastructureError(f"the demo source failed: {failure[0]}")
    if processor.returncode != 0 or not stdout.strip():
        tail = Path(log_path).read_text(errors="replace")[-3000:]
        raise InfrastructureError(f"the processor failed (exit {processor.returncode}):\n{tail}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    produced_report = report["done"]
    result = {
        "events_produced": produced_report.produced,
        "events_valid": produced_report.valid,
        "events_in": summary["events_in"],
        "predictions": summary["predictions"],
        "dead_letters": summary["dead_letters"],
        "dead_letters_by_reason": summary["dead_letters_by_reason"],
        "throughput_eps": summary["throughput_eps"],
        "processor_busy_s": summary["busy_s"],
        "lag_at_end": _final_lag(settings),
        "model": summary["model"],
        "shadow": summary.get("shadow"),
        "drift": summary.get("drift"),
        "prediction_store": summary.get("prediction_store"),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    console.print()
    console.print(_summary_panel(result))
    return result


def _final_lag(settings: Settings) -> int:
    counter = _TopicCounter(settings)
    try:
        return counter.lag(settings.topics.events)
    finally:
        counter.close()


def _summary_panel(result: dict[str, Any]) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_row("events in", f"{result['events_in']:,}")
    table.add_row("predictions", f"{result['predictions']:,}")
    table.add_row("dead letters", f"{result['dead_letters']:,}")
    for reason, count in sorted(result["dead_letters_by_reason"].items()):
        table.add_row(f"  {reason}", f"{count:,}")
    table.add_row("throughput", f"{result['throughput_eps']:,.0f} events/s (first to last event)")
    if result["processor_busy_s"]:
        capacity = result["events_in"] / result["processor_busy_s"]
        table.add_row("capacity", f"{capacity:,.0f} events/s (events / processor busy time)")
    table.add_row("lag at end", f"{result['lag_at_end']:,}")
    model = result["model"]
    table.add_row("champion", f"{model['name']} v{model['version']}")
    shadow = result.get("shadow")
    if shadow:
        agreement = shadow["agreement"]
        table.add_row(
            "challenger (shadow)",
            f"{shadow['challenger']}: {shadow['compared']:,} compared, "
            + (f"{agreement:.2%} agree" if agreement is not None else "no comparisons"),
        )
    drift = result.get("drift")
    if drift and drift.get("windows"):
        incidents = ", ".join(f"{d}:{t}" for d, t in drift["open_incidents"]) or "none"
        table.add_row(
            "drift",
            f"{drift['windows']} windows; max PSI {drift['max_psi']} on "
            f"{drift['max_psi_feature']}; open incidents: {incidents}",
        )
    table.add_row("elapsed", f"{result['elapsed_s']} s")
    return Panel(table, title="summary", expand=False)
