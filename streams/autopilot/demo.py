"""``make demo``: the whole loop on the embedded stack, with live progress.

1. the embedded stack, topics of this run only (``demo<run>.sensor.*``), and the
   reference champion in the MLflow registry as the only alias (no challenger);
2. the processor (serving from the registry, hot swap polled every second) and
   the evaluator as processes of their own; the autopilot in this process, in
   ``auto`` mode, with guards sized for a demo; Prefect warmed up meanwhile;
3. sensor events at a steady rate, their true labels a few seconds later; from
   half-way feature ``f1`` is shifted by one standard deviation (the champion
   loses ~6 points of accuracy on it);
4. then, by itself: the PSI drift incident, ``retrain_requested``, the Prefect
   retraining flow, the new challenger in the shadow, its paired labels, the
   verdict, the guards, the promotion, the processor's ``model_changed`` — and
   the replaced champion back in the shadow as the challenger;
5. the summary: when each step happened, the evidence, the CBPE estimate next to
   the realised accuracy, and the count of events scored (none lost).

``streamscore demo --quick`` is the scoring-only demo (``streams.cli.demo``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from connectors.embedded import EmbeddedStack
from connectors.kafka import Producer, client_id
from connectors.kafka_admin import ensure_topics
from connectors.model_registry import ModelRegistry, RegistryUnavailable
from connectors.schema_registry import topic_serde
from connectors.source import SourceOptions, event_factory
from connectors.topic_reader import read_topic_from_start
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from schemas.errors import InfrastructureError
from schemas.settings import Settings
from streams.autopilot.app import build_controller, run_autopilot
from streams.autopilot.audit import TopicSink
from streams.autopilot.feeds import TopicTail
from streams.autopilot.state import StateFile

DEMO_MODEL = "shuttle-autopilot-demo"
#: Audit actions the timeline shows (``scored`` records are one per event: skipped).
SHOWN = {
    "retrain_started", "retrain_finished", "retrain_failed", "challenger_registered",
    "promotion_recommended", "promoted", "rolled_back", "model_changed", "model_refused",
    "move_failed", "move_deferred",
}  # fmt: skip


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, Mapping) else value
    return out


def _flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}__{key.upper()}" if prefix else f"STREAMSCORE_{key.upper()}"
        if isinstance(value, Mapping):
            env.update(_flatten(name, value))
        else:
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def demo_overrides(settings: Settings, run: str) -> dict[str, Any]:
    """What the demo changes, as nested settings (passed to the child processes as
    ``STREAMSCORE_*`` variables, so they see exactly what this process sees)."""
    topics = {role: f"demo{run}.{name}" for role, name in settings.topics.by_role().items()}
    return {
        "home": str(settings.home.resolve()),
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "redis": {"url": settings.redis.url},
        "topics": topics,
        "processor": {"group_id": f"streamscore-demo-{run}", "max_wait_ms": 50},
        "models": {"source": "registry"},
        "registry": {"model_name": DEMO_MODEL, "poll_interval_s": 1.0},
        "shadow": {"mode": "shadow"},
        "drift": {"window_events": 3000, "min_window_events": 1000, "retrain_after_windows": 4},
        "autopilot": {
            "mode": "auto",
            "interval_s": 1.0,
            "min_paired_labels": 1000,
            "min_shadow_s": 15.0,
            "cooldown_s": 60.0,
            "retrain": {"min_labels": 1500, "window_s": 600.0, "label_wait_s": 5.0},
            "cbpe": {"window_s": 10.0, "min_window_predictions": 200},
        },
    }


def _registry_ready(settings: Settings) -> tuple[ModelRegistry, str]:
    """The demo model with its reference champion as the only alias (registered once)."""
    from models.train import train_reference

    registry = ModelRegistry.open(settings.home)
    name = settings.registry.model_name
    try:
        versions = registry.list_versions(name)
    except RegistryUnavailable:  # a new home: no registry database yet
        versions = []
    reference = [v for v in versions if v.tags.get("streamscore.reference_role") == CHAMPION]
    if reference:
        version = reference[-1].version
    else:
        onnx_bytes, meta, _ = train_reference(CHAMPION)
        tags = {"streamscore.reference_role": CHAMPION}
        event = registry.log_and_register(
            onnx_bytes, meta, registered_name=name, actor="demo", tags=tags
        )
        version = event.model_version
    registry.set_alias(name, CHAMPION, version, actor="demo")
    for alias in (CHALLENGER, PREVIOUS_CHAMPION):
        registry.delete_alias(name, alias, actor="demo")
    StateFile(settings.home, name).path.unlink(missing_ok=True)
    return registry, version


class Source:
    """Events at a steady rate, each valid one's label ``delay_s`` later (a thread)."""

    def __init__(self, settings: Settings, *, rate: float, shift_at: int, delay_s: float) -> None:
        options = SourceOptions(
            count=10**9, rate=rate, shift_at=shift_at, shift_feature="f1", shift_sigma=1.0,
            run_id=f"ev{int(time.time())}", seed=11,
        )  # fmt: skip
        self.factory = event_factory(settings, options, None)
        self.settings = settings
        self.rate = rate
        self.shift_at = shift_at
        self.delay_s = delay_s
        self.produced = 0
        self.labels = 0
        self.shifted_at: float | None = None
        self.shifted_wall: float | None = None
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="demo-source", daemon=True)

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # noqa: BLE001 - reported by the demo's main thread
            self.failure = exc

    def _produce(self) -> None:
        s = self.settings
        producer = Producer(s.kafka, client_id=client_id("demo-source"), linger_ms=5)
        label_serde = topic_serde(s, "labels")
        waiting: deque[tuple[float, str, str | None]] = deque()
        started = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            now_ms = int(time.time() * 1000)
            for n in range(self.produced, due):
                key, value, _ = self.factory.make(n, now_ms)
                producer.produce(s.topics.events, value, key)
                waiting.append((time.monotonic() + self.delay_s, self.factory.event_id(n),
                                self.factory.label(n)))  # fmt: skip
                if n == self.shift_at:
                    self.shifted_at = time.monotonic()
                    self.shifted_wall = time.time()
            self.produced = max(self.produced, due)
            now = time.monotonic()
            ready: list[dict[str, Any]] = []
            keys: list[bytes | None] = []
            while waiting and waiting[0][0] <= now:
                _, event_id, label = waiting.popleft()
                ready.append({"event_id": event_id, "label": label, "labelled_at": now_ms})
                keys.append(event_id.encode())
            if ready:
                producer.produce_many(s.topics.labels, label_serde.encode_many(ready), keys)
                self.labels += len(ready)
            producer.poll(0)
            time.sleep(0.05)
        producer.flush()


def _child(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as handle:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=handle)  # noqa: S603 - our own commands, an argument list


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 - an http:// URL this demo builds
            return True
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.stdout.read().decode() if process.stdout else ""


def run_loop_demo(
    settings: Settings,
    *,
    rate: float = 1000.0,
    shift_at: int = 12_000,
    label_delay_s: float = 4.0,
    timeout_s: float = 240.0,
) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the summary (raises on a failed step)."""
    console = Console(stderr=True)
    started = time.monotonic()
    run = str(int(time.time()))
    console.rule("[bold]streamscore demo: the model autopilot")
    console.print("starting the embedded stack …")
    for service in EmbeddedStack(settings).up():
        console.print(f"  {service.name:6} {service.address:22} {service.state}")
    overrides = demo_overrides(settings, run)
    demo = Settings(**_merge(settings.model_dump(), overrides))
    ensure_topics(demo)
    from streams.autopilot.retrain import warm_up

    timeline: list[tuple[float, str]] = []
    warmed: dict[str, float] = {}

    def warm() -> None:
        warmed["s"] = warm_up(demo)
        timeline.append(
            (time.monotonic() - started, f"Prefect's local API up ({warmed['s']:.0f} s)")
        )

    threading.Thread(target=warm, name="prefect-warm-up", daemon=True).start()
    with console.status("the reference champion in the MLflow registry …"):
        _, champion = _registry_ready(demo)
    console.print(f"  {DEMO_MODEL}: champion v{champion} (the reference gradient-boosted trees)")
    env = {**os.environ, **_flatten("", {k: v for k, v in overrides.items() if k != "autopilot"})}
    logs = demo.home / "run"
    logs.mkdir(parents=True, exist_ok=True)
    m = demo.metrics
    ready_url = f"http://{m.host}:{m.port}/readyz"
    controller = build_controller(demo)
    stop = threading.Event()
    crashed: list[BaseException] = []

    def steer() -> None:
        try:
            run_autopilot(demo, stop=stop, controller=controller)
        except BaseException as exc:  # noqa: BLE001 - reported by the watch loop below
            crashed.append(exc)

    autopilot = threading.Thread(target=steer, name="autopilot", daemon=True)
    source = Source(demo, rate=rate, shift_at=shift_at, delay_s=label_delay_s)
    summary: dict[str, Any] = {}
    children: dict[str, subprocess.Popen[bytes]] = {}
    outputs: dict[str, str] = {}
    try:
        children["processor"] = _child(
            [sys.executable, "-m", "streams", "run", "--json"], env,
            logs / "demo-autopilot-processor.log",
        )  # fmt: skip
        children["evaluator"] = _child(
            [sys.executable, "-m", "streams", "evaluate",
             "--app-id", f"streamscore-demo-evaluator-{run}", "--emit-interval", "1",
             "--min-samples", "100", "--tumbling", "10", "--hopping", "30", "--hop", "10",
             "--grace", "2", "--json"],
            env, logs / "demo-autopilot-evaluator.log",
        )  # fmt: skip
        with console.status("processor and evaluator starting …"):
            deadline = time.monotonic() + 90
            while not _ready(ready_url):
                if children["processor"].poll() is not None or time.monotonic() > deadline:
                    log = logs / "demo-autopilot-processor.log"
                    raise InfrastructureError(f"the processor did not get ready; see {log}")
                time.sleep(0.5)
        timeline.append((time.monotonic() - started, "processor ready (registry source)"))
        autopilot.start()
        source.thread.start()
        summary = _watch(console, demo, controller, source, timeline, started, timeout_s,
                         children, crashed)  # fmt: skip
    finally:
        source.stop.set()
        stop.set()
        for thread, wait_s in ((source.thread, 30), (autopilot, 60)):
            if thread.ident is not None:
                thread.join(wait_s)
        for name in ("evaluator", "processor"):
            if name in children:
                outputs[name] = _stop(children[name])
    if source.failure is not None:
        raise InfrastructureError(f"the demo source failed: {source.failure}")
    summary.update(_counts(demo, source, outputs.get("processor", "")))
    summary["prefect_warm_up_s"] = round(warmed.get("s", float("nan")), 1)
    sink = controller.evaluation_sink
    shifted_ms = int(source.shifted_wall * 1000) if source.shifted_wall is not None else None
    published = sink.published if isinstance(sink, TopicSink) else []
    summary["cbpe"] = _cbpe_summary(published, shifted_ms)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    console.print(_summary_panel(summary, timeline))
    return summary


def _watch(
    console: Console,
    settings: Settings,
    controller: Any,
    source: Source,
    timeline: list[tuple[float, str]],
    started: float,
    timeout_s: float,
    children: dict[str, subprocess.Popen[bytes]],
    crashed: list[BaseException],
) -> dict[str, Any]:
    """Follow the audit and drift topics until the promoted version serves."""
    audit = TopicTail(settings.kafka, settings.topics.audit, topic_serde(settings, "audit"),
                      from_beginning=True)  # fmt: skip
    drift = TopicTail(settings.kafka, settings.topics.drift, topic_serde(settings, "drift"),
                      from_beginning=True)  # fmt: skip
    seen_incidents: set[str] = set()
    promoted: dict[str, str] | None = None
    swapped_at: float | None = None
    shift_noted = False
    deadline = time.monotonic() + timeout_s

    def note(text: str) -> None:
        timeline.append((time.monotonic() - started, text))

    try:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                if time.monotonic() > deadline:
                    last = timeline[-1][1] if timeline else "none"
                    raise InfrastructureError(
                        f"the loop did not complete in {timeout_s:.0f}s; last step: {last} "
                        f"(logs in {settings.home / 'run'})"
                    )
                for name, child in children.items():
                    if child.poll() is not None:
                        raise InfrastructureError(f"the {name} exited ({child.returncode})")
                if crashed:
                    raise InfrastructureError(f"the autopilot stopped: {crashed[0]}")
                if source.failure is not None:
                    raise InfrastructureError(f"the demo source failed: {source.failure}")
                if source.shifted_at is not None and not shift_noted:
                    shift_noted = True
                    note(f"shift: f1 + 1 sd from event {source.shift_at:,}")
                for record in drift.poll():
                    key = f"{record['incident_id']}|{record['status']}"
                    if record["status"] not in ("open", "retrain_requested"):
                        continue
                    if key not in seen_incidents:
                        seen_incidents.add(key)
                        note(_describe_drift(record))
                for record in audit.poll():
                    if record["action"] not in SHOWN:
                        continue
                    note(_describe(record))
                    d = record["details"]
                    if record["action"] == "promoted":
                        promoted = {"version": record["model_version"], **d}
                    swap = record["action"] == "model_changed" and d.get("role") == CHAMPION
                    if swap and promoted and d.get("new_version") == promoted["version"]:
                        swapped_at = time.monotonic()
                live.update(_live(source, controller, timeline, started))
                if swapped_at is not None and time.monotonic() - swapped_at > 4:
                    return {"promoted": promoted}
                time.sleep(0.25)
    finally:
        audit.close()
        drift.close()


def _describe_drift(record: dict[str, Any]) -> str:
    return (
        f"drift {record['status']}: {record['detector']} {record['target']} "
        f"= {record['statistic']:.2f} against v{record['model_version']}"
    )


def _describe(record: dict[str, Any]) -> str:
    d, action, v = record["details"], record["action"], record["model_version"]
    if action == "model_changed":
        return (
            f"processor: {d.get('role')} v{d.get('old_version') or '-'} → v{d.get('new_version')}"
        )
    if action == "retrain_finished":
        metric = d.get("metric", "accuracy")
        ours, theirs = d.get(f"champion_{metric}", "-"), d.get(f"candidate_{metric}", "-")
        return (
            f"retrain {d.get('outcome')}: {d.get('rows')} rows; held-out {metric}: champion "
            f"{ours}, candidate {theirs}"
        )
    if action in ("promotion_recommended", "promoted"):
        blocked = f", blocked by {d['blocked_by']}" if d.get("blocked_by") else ""
        return (f"{action} v{v}: {d.get('labels')} paired labels, wins {d.get('challenger_wins')}"
                f"/{d.get('champion_wins')}, e-value {d.get('e_value')}{blocked}")  # fmt: skip
    if action == "retrain_started":
        return f"retrain started ({d.get('trigger')})"
    return f"{action} v{v}"


def _live(
    source: Source, controller: Any, timeline: list[tuple[float, str]], started: float
) -> Group:
    stats = Table.grid(padding=(0, 2))
    elapsed = f"{time.monotonic() - started:5.1f} s"
    stats.add_row("elapsed", elapsed, "events", f"{source.produced:,}", "labels",
                  f"{source.labels:,}")  # fmt: skip
    status = controller.status()
    verdict = status.get("verdict") or {}
    aliases = status.get("aliases") or {}
    stats.add_row("champion", f"v{aliases.get(CHAMPION, '-')}", "challenger",
                  f"v{aliases.get(CHALLENGER, '-')}", "verdict",
                  f"{verdict.get('verdict', '-')} ({verdict.get('labels', 0)} labels, "
                  f"e {verdict.get('e_value', '-')})")  # fmt: skip
    steps = Table(show_header=False, box=None)
    for at, text in timeline[-14:]:
        steps.add_row(f"{at:6.1f}s", text)
    return Group(stats, steps)


def _counts(settings: Settings, source: Source, processor_out: str) -> dict[str, Any]:
    """Events produced vs scored (distinct event ids on the predictions topic)."""
    serde = topic_serde(settings, "predictions")
    ids: set[str] = set()
    by_version: dict[str, int] = {}
    for record in read_topic_from_start(settings.kafka, settings.topics.predictions,
                                        idle_s=2.0, timeout_s=60.0):  # fmt: skip
        if record.value is None:
            continue
        p = serde.decode(record.value)
        ids.add(p["event_id"])
        by_version[p["model_version"]] = by_version.get(p["model_version"], 0) + 1
    out: dict[str, Any] = {
        "events_produced": source.produced,
        "events_scored": len(ids),
        "events_lost": source.produced - len(ids),
        "predictions_by_version": by_version,
        "labels_published": source.labels,
    }
    lines = processor_out.strip().splitlines()
    if lines:
        processor = json.loads(lines[-1])
        out["processor"] = {k: processor.get(k) for k in ("events_in", "predictions", "model")}
    return out


def _cbpe_summary(published: list[dict[str, Any]], shifted_ms: int | None) -> list[dict[str, Any]]:
    """Per variant, version and phase (before / after the shift): the CBPE windows that got
    labels, the mean estimate next to the mean realised accuracy, and the estimation error."""
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for record in published:
        if record.get("window") == "cbpe":
            latest[(record["variant"], record["model_version"], record["window_start"])] = record
    rows: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for (variant, version, _), record in sorted(latest.items()):
        if "realised_accuracy" not in record["metrics"]:
            continue
        if shifted_ms is None:
            phase = "all"
        else:
            phase = "before the shift" if record["window_end"] <= shifted_ms else "after the shift"
        rows.setdefault((variant, version, phase), []).append(record["metrics"])
    return [
        {
            "variant": variant,
            "model_version": version,
            "phase": phase,
            "windows": len(ms),
            "estimated_accuracy": round(sum(m["estimated_accuracy"] for m in ms) / len(ms), 4),
            "realised_accuracy": round(sum(m["realised_accuracy"] for m in ms) / len(ms), 4),
            "mean_abs_error": round(sum(abs(m["estimation_error"]) for m in ms) / len(ms), 4),
        }
        for (variant, version, phase), ms in rows.items()
    ]


def _summary_panel(summary: dict[str, Any], timeline: list[tuple[float, str]]) -> Panel:
    table = Table.grid(padding=(0, 2))
    for at, text in timeline:
        table.add_row(f"{at:6.1f}s", text)
    p = summary.get("promoted") or {}
    table.add_row("", "")
    table.add_row(
        "promoted",
        f"v{p.get('version', '-')} over v{p.get('old_version', '-')}: effect "
        f"{p.get('effect', '-')} (CI {p.get('ci_low', '-')}, {p.get('ci_high', '-')}), "
        f"always-valid p {p.get('p_value_sequential', '-')}",
    )
    for row in summary.get("cbpe", []):
        table.add_row(
            "CBPE",
            f"{row['variant']} v{row['model_version']} {row['phase']}: estimated "
            f"{row['estimated_accuracy']}, "
            f"realised {row['realised_accuracy']} (mean |error| {row['mean_abs_error']}, "
            f"{row['windows']} windows)",
        )
    table.add_row(
        "events",
        f"{summary['events_produced']:,} produced, {summary['events_scored']:,} scored, "
        f"{summary['events_lost']:,} lost",
    )
    versions = ", ".join(
        f"v{k} {n:,}" for k, n in sorted(summary["predictions_by_version"].items())
    )
    table.add_row("predictions", versions)
    table.add_row(
        "elapsed", f"{summary['elapsed_s']} s (Prefect warm-up {summary['prefect_warm_up_s']} s)"
    )
    return Panel(table, title="the loop, by itself", expand=False)
