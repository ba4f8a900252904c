"""The bench result as a report: plain-text tables for the terminal (:func:`format_report`)
and a README snippet in markdown (:func:`markdown`), both built from the same tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from streams.bench.common import LATENCY_MIN_S, LATENCY_WARMUP, LATENCY_WARMUP_S
from streams.bench.run import latency_phases

_LATENCY_ROWS = (
    ("loop_ms", "loop: input CreateTime -> prediction CreateTime"),
    ("in_loop_ms", "in-loop: consumed -> produced (histogram)"),
    ("end_to_end_ms", "end-to-end: event time -> prediction consumed"),
)


def _broker_share(loops: dict[str, dict[str, Any]]) -> str:
    """How busy the embedded broker was during each loop's latency run (empty if unknown)."""
    shares = {kind: loop.get("broker_cpu_share") for kind, loop in loops.items()}
    if any(v is None for v in shares.values()):
        return ""
    parts = ", ".join(f"{kind} {v:.0%}" for kind, v in shares.items())
    return f"; the embedded broker's CPU, of one core: {parts}"


def _n(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


@dataclass
class Table:
    """One table of the report; rendered as aligned text or as markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def text(self) -> list[str]:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
            for i, h in enumerate(self.headers)
        ]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  " + "  ".join([first, *rest])

        return [self.title, line(self.headers), *(line(r) for r in self.rows)]

    def markdown(self) -> list[str]:
        align = ["---"] + ["---:"] * (len(self.headers) - 1)
        return [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in self.rows),
        ]


def _headline(result: dict[str, Any]) -> list[str]:
    m, v, b, p = result["machine"], result["versions"], result["broker"], result["params"]
    broker = (
        f"{b['name']} {b['version']} (embedded, {b['storage']} storage)"
        if b["kind"] == "embedded"
        else f"external Kafka at {b['bootstrap_servers']}"
    )
    s = result["settings"]["processor"]
    extra = result["settings"]["kafka"].get("client_config") or {}
    config = f"; client_config {extra}" if extra else ""
    return [
        f"streamscore bench: {p['events']:,} events, best of {p['repeats']} run(s), "
        f"{result['elapsed_s']:.0f} s, started {result['started_at']}",
        f"machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_mb'] or '?'} MB, load {m['load_average']} -> {m.get('load_average_end')}",
        f"broker: {broker}; Python {v['python']}, confluent-kafka {v['confluent-kafka']} "
        f"(librdkafka {v['librdkafka']}), onnxruntime {v['onnxruntime']}, "
        f"fastavro {v['fastavro']}, numpy {v['numpy']}",
        f"batch: latency_target_ms {s.get('latency_target_ms', '-')}, "
        f"max_batch {s['max_batch']}, max_wait_ms {s['max_wait_ms']}, "
        f"commit_interval_ms {s['commit_interval_ms']}, linger_ms {s['linger_ms']}; "
        f"{result['settings']['topics']['partitions']} partitions; "
        f"{result['preload']['mean_event_bytes']:.0f}-byte Avro events; "
        f"side paths: {s.get('side_paths', 'thread')}{config}",
    ]


def tables(result: dict[str, Any]) -> list[Table]:
    """Every table of the report, in order."""
    t = result["throughput"]
    limit_eps = t["pass_through"]["eps"]
    fan = ", ".join(f"{role} x{n}" for role, n in t["fan_out"].items())
    loops = [("pass-through limit", t["pass_through"]), ("full pipeline", t["pipeline"])]
    if t.get("json_input"):
        loops.append(("full pipeline, JSON input", t["json_input"]["pipeline"]))
    avro_eps = t["pipeline"]["eps"]
    out = [
        Table(
            f"Throughput: first record consumed -> last offset committed "
            f"(outputs per input: {fan}; CPU = the loop's process, every thread; "
            f"side CPU = its side-path process)",
            [
                "loop",
                "events/s",
                "us/event",
                "CPU us/event",
                "side CPU us/event",
                "broker CPU us/event",
                "vs limit",
                "vs Avro",
            ],
            [
                [
                    label,
                    _n(r["eps"], 0),
                    _n(r["us_per_event"], 2),
                    _n(r.get("cpu_us_per_event"), 2),
                    _n(r.get("side_process_cpu_us_per_event"), 2),
                    _n(r.get("broker_cpu_us_per_event"), 2),
                    _n(r["eps"] / limit_eps if limit_eps else None, 2),
                    _n(r["eps"] / avro_eps, 2) if label != "pass-through limit" else "-",
                ]
                for label, r in loops
            ],
        )
    ]
    limit, pipeline = t["pass_through"]["stage_us_per_event"], t["pipeline"]["stage_us_per_event"]
    order = list(pipeline) + [k for k in limit if k not in pipeline]
    rows = [[name, _n(limit.get(name), 2), _n(pipeline.get(name), 2)] for name in order]
    rows.append(
        ["total", _n(t["pass_through"]["us_per_event"], 2), _n(t["pipeline"]["us_per_event"], 2)]
    )
    out.append(Table("Where the time goes: wall us per event", ["stage", "pass-through",
                                                                 "pipeline"], rows))  # fmt: skip
    stages = result.get("stages")
    if stages:
        out.append(
            Table(
                f"Stage profile: one stage switched off at a time "
                f"(best of {stages['repeats']}; CPU = this process, every thread)",
                ["switched off", "events/s", "us/event", "saved", "CPU us/event", "CPU saved"],
                [
                    [
                        row["variant"],
                        _n(row["eps"], 0),
                        _n(row["us_per_event"], 2),
                        _n(row["saved_us_per_event"], 2),
                        _n(row["cpu_us_per_event"], 2),
                        _n(row["saved_cpu_us_per_event"], 2),
                    ]
                    for row in stages["variants"]
                ],
            )
        )
    for latency in latency_phases(result):
        share = latency["offered_eps"] / t["pipeline"]["eps"] if t["pipeline"]["eps"] else 0.0
        rows = []
        for kind, loop in latency["loops"].items():
            for key, label in _LATENCY_ROWS:
                q = loop[key]
                rows.append(
                    [f"{kind}: {label}", *(_n(q.get(k), 1) for k in ("p50", "p95", "p99", "max"))]
                )
        added = latency.get("processor_added_ms", {})
        rows.append(
            [
                "processor-added: pipeline loop - pass-through loop",
                *(_n(added.get(k), 1) for k in ("p50", "p95", "p99", "max")),
            ]
        )
        out.append(
            Table(
                f"Latency (ms) at {latency['offered_eps']:,.0f} events/s offered "
                f"({share:.0%} of the pipeline's max), {latency.get('events', 0):,} events "
                f"(at least {latency.get('min_seconds', LATENCY_MIN_S):g} s); the first "
                f"{LATENCY_WARMUP:.0%} or {LATENCY_WARMUP_S:g} s left out; "
                f"per loop the round with the lowest loop p99 of {latency.get('rounds', 1)}"
                f"{_broker_share(latency['loops'])}",
                ["loop: measure", "p50", "p95", "p99", "max"],
                rows,
            )
        )
    cpu = result.get("cpu_profile")
    if cpu:
        names = list(cpu["stages"]["avro"])
        out.append(
            Table(
                f"CPU profile: pipeline stages, CPU us per event (least of {cpu['rounds']} "
                f"batches of {cpu['batch']:,}; the broker not involved)",
                ["stage", "Avro input", "JSON input"],
                [
                    [
                        name,
                        _n(cpu["stages"]["avro"].get(name), 3),
                        _n(cpu["stages"]["json"].get(name), 3),
                    ]
                    for name in names
                ],
            )
        )
        parsers = cpu.get("json_parsers", {})
        if parsers:
            out.append(
                Table(
                    "CPU profile: JSON parsers on the same events, CPU us per event",
                    ["parser", "CPU us/event"],
                    [[name, _n(us, 3)] for name, us in parsers.items()],
                )
            )
        out.append(
            Table(
                "CPU profile: shadow challenger + prediction store, CPU us per event "
                "(the same batches handed over, then drained)",
                ["processor.side_paths", "loop's process (every thread)", "side-path process"],
                [
                    [
                        mode,
                        _n(row["loop_process_cpu_us_per_event"], 3),
                        _n(row["side_process_cpu_us_per_event"], 3),
                    ]
                    for mode, row in cpu["side_paths"].items()
                ],
            )
        )
    scaling = result.get("scaling")
    if scaling:
        out.append(
            Table(
                "Scaling: N consumer-group members, each a process (streamscore run --workers N)",
                ["members", "events/s", "vs 1 member", "events per member", "CPU us/event"],
                [
                    [
                        str(row["members"]),
                        _n(row["eps"], 0),
                        _n(row["speedup"], 2),
                        " / ".join(f"{n:,}" for n in row["per_member_events"]),
                        _n(row["cpu_us_per_event"], 2),
                    ]
                    for row in scaling["rows"]
                ],
            )
        )
    return out


def _soak_line(soak: dict[str, Any]) -> str:
    slope = soak["slope_mb_per_million_events"]
    return (
        f"Soak: {soak['events']:,} events at {soak['throughput_eps']:,.0f} events/s; processor "
        f"RSS {soak['rss_start_mb']:.1f} MB (after {soak['rss_start_after_events']:,} events) "
        f"-> {soak['rss_end_mb']:.1f} MB at the end ({soak['growth_pct']:+.2f} %), "
        f"slope {_n(slope, 2)} MB per million events, peak {soak['rss_peak_mb']:.1f} MB"
    )


def format_report(result: dict[str, Any]) -> str:
    """The result as plain-text tables for the terminal."""
    lines = _headline(result)
    if result.get("command"):
        lines.append(f"command: {result['command']}")
    for table in tables(result):
        lines += ["", *table.text()]
    if result.get("soak"):
        lines += ["", _soak_line(result["soak"])]
    if result.get("targets"):
        lines += ["", "Targets (goals of issues 7 and 17, not assertions)"]
        lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def markdown(result: dict[str, Any]) -> str:
    """A README snippet: the command, the machine, and the tables."""
    lines = [
        f"Measured with `{result.get('command') or 'streamscore bench'}`:",
        "",
        *[f"- {line}" for line in _headline(result)],
    ]
    for table in tables(result):
        lines += ["", *table.markdown()]
    if result.get("soak"):
        lines += ["", _soak_line(result["soak"])]
    if result.get("targets"):
        lines += [""]
        lines += [f"- [{'x' if ok else ' '}] {name}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"
