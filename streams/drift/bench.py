"""Drift detection quality, measured on seeded streams with known change points.

``streamscore drift bench`` runs :class:`~streams.drift.monitor.DriftMonitor` with its
default settings (10,000-event windows, PSI 0.1 / 0.25, KS and chi-squared every 1,000
events at a budget of one false alarm per 10⁹ events, the score's distribution, ADWIN
delta 0.002 on the error) over the streams of :mod:`streams.drift.bench_streams`, and
reports per change and detector the share detected, within two windows, and the delay:

* ``psi`` — PSI alone at window closes (the default view, 0.25 alert);
* ``monitor`` — what the changed feature's incident sees: PSI, KS and chi-squared;
* ``distribution`` — the champion's score against its reference (the joint check);
* ``adwin`` on the score — the detector it replaces, for comparison; ADWIN on the
  error stream for concept drift.

False alarms are counted on stationary streams: alert windows for PSI, alarm onsets
(the first hop of a run above the thresholds, where an incident would open) for the
two-sample tests — at the default budget and, where they are countable, at a loose one
(10 per 10⁶ events), with the stream drawn from the reference and with the reference a
bootstrap sample of the stream's population. The cost is µs per event of the monitor.
"""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from typing import Any

import numpy as np

from schemas.settings import DriftSettings
from streams.drift.bench_streams import (
    CHANGES,
    JOINT,
    SIGMA_SHIFTS,
    BenchConfig,
    calibration_check,
    concept_runs,
    concept_streams,
    shuttle_data,
    shuttle_runs,
    stationary,
)

__all__ = ["CHANGES", "format_table", "run_drift_bench"]

#: The loose budget of the calibration check: 10 false alarms per 10⁶ events.
CHECK_BUDGET_EVENTS = 1e5


def _delays(values: list[int], window: int) -> dict[str, Any]:
    hits = [v for v in values if v >= 0]
    return {
        "runs": len(values),
        "detected": len(hits),
        "detection_rate": len(hits) / len(values) if values else 0.0,
        "within_two_windows": sum(1 for v in hits if v <= 2 * window) / len(values)
        if values
        else 0.0,
        "median_delay": float(np.median(hits)) if hits else None,
        "p90_delay": float(np.quantile(hits, 0.9)) if hits else None,
    }


def _rows(shuttle: list[dict[str, Any]], concept: list[dict[str, Any]], names: list[str],
          concept_names: list[str], window: int) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    for change in names:
        runs = [r for r in shuttle if r["change"] == change]
        for detector, stream, key in (
            ("psi", "features", "psi_delay"),
            ("monitor", "features", "monitor_delay"),
            ("distribution", "score", "score_delay"),
            ("adwin", "score", "adwin_delay"),
        ):
            row = {
                "detector": detector,
                "stream": stream,
                "change": change,
                **_delays([r[key] for r in runs], window),
            }
            if detector == "monitor":
                row["raised_by"] = dict(Counter(t for r in runs for t in r["over"]))
            rows.append(row)
    for name in concept_names:
        runs = [r for r in concept if r["change"] == name]
        rows.append(
            {
                "detector": "adwin",
                "stream": "error",
                "change": name,
                **_delays([r["adwin_delay"] for r in runs], window),
                "error_before": float(np.mean([r["error_before"] for r in runs])),
                "error_after": float(np.mean([r["error_after"] for r in runs])),
            }
        )
    return rows


def _false_alarms(
    still: dict[str, Any], check: dict[str, Any], settings: DriftSettings
) -> list[dict[str, Any]]:
    shuttle = still["shuttle"]
    events = shuttle["events"]
    rows: list[dict[str, Any]] = [
        {"detector": "psi", "stream": "features (all 9)", "events": events,
         "alarms": shuttle["psi_alert_windows"], "warnings": shuttle["psi_warning_windows"],
         "budget": None},
        {"detector": "ks + chi2", "stream": "features + score", "events": events,
         "alarms": shuttle["onsets"], "incidents": shuttle["incidents"],
         "budget": settings.false_alarm_events},
    ]  # fmt: skip
    for stream in ("reference rows", "fresh reference samples"):
        found = check[stream]
        rows.append(
            {
                "detector": "ks + chi2",
                "stream": f"features + score, {stream}",
                "events": found["events"],
                "alarms": found["onsets"],
                "incidents": found["incidents"],
                "alarm_hops": found["alarm_hops"],
                "target_hops": found["target_hops"],
                "budget": check["budget_events"],
            }
        )
    rows.append(
        {"detector": "adwin", "stream": "score", "events": events,
         "alarms": shuttle["adwin_score_detections"], "budget": None}
    )  # fmt: skip
    for name, found in still.items():
        if name not in ("shuttle", "cost"):
            rows.append(
                {"detector": "adwin", "stream": f"error ({name})", "events": found["events"],
                 "alarms": found["adwin_detections"], "budget": None}
            )  # fmt: skip
    for row in rows:
        row["per_million"] = row["alarms"] * 1e6 / row["events"]
        row["budget_per_million"] = None if row["budget"] is None else 1e6 / row["budget"]
    return rows


def _targets(
    rows: list[dict[str, Any]], false_alarms: list[dict[str, Any]], settings: DriftSettings
) -> dict[str, bool]:
    window = settings.window_events
    by = {(r["detector"], r["change"]): r for r in rows}
    shifts = [by["psi", f"mean +{k:g} sd"] for k in SIGMA_SHIFTS]
    fa = {(r["detector"], r["stream"]): r for r in false_alarms}
    adwin_error = [r["per_million"] for r in false_alarms if r["stream"].startswith("error")]
    tests_default = fa["ks + chi2", "features + score"]
    fresh = fa["ks + chi2", "features + score, fresh reference samples"]
    median = by["monitor", "mean +1 sd"]["median_delay"]
    budget = f"{1e6 / settings.false_alarm_events:g}"
    return {
        "psi: every mean shift >= 0.25 sd detected within two windows": all(
            r["within_two_windows"] == 1.0 for r in shifts
        ),
        "psi: zero alerts on stationary data": fa["psi", "features (all 9)"]["alarms"] == 0,
        "adwin (error stream): <= 1 alarm per million stationary events": max(adwin_error) <= 1.0,
        "monitor: sd x1.5 detected within two windows in >= 95 % of runs": by["monitor", "sd x1.5"][
            "within_two_windows"
        ]
        >= 0.95,
        "monitor: sd x0.5 detected within two windows in >= 95 % of runs": by["monitor", "sd x0.5"][
            "within_two_windows"
        ]
        >= 0.95,
        "monitor: top value vanishes detected within two windows in >= 95 % of runs": by[
            "monitor", "top value vanishes"
        ]["within_two_windows"]
        >= 0.95,
        f"monitor: median delay at mean +1 sd <= {0.3 * window:,.0f} events": median is not None
        and median <= 0.3 * window,
        f"two-sample tests: <= 1 false alarm per 10^6 stationary events (budget {budget})": (
            tests_default["per_million"] <= 1.0
        ),
        "two-sample tests: a 10 per 10^6 budget holds with fresh reference samples": (
            fresh["per_million"] <= fresh["budget_per_million"]
        ),
    }


def run_drift_bench(seed: int = 7, quick: bool = False) -> dict[str, Any]:
    """Run every scenario; returns rows per (detector, stream, change) and the targets.

    ``quick`` (one seed, shorter stationary streams, no Agrawal) takes seconds and
    is what the tests run; the full run takes a few minutes.
    """
    started = time.perf_counter()
    config = BenchConfig.for_mode(quick)
    settings = DriftSettings()
    window = settings.window_events
    data = shuttle_data()
    shuttle = shuttle_runs(data, config, seed, settings)
    concept, pools = concept_runs(config, seed, settings)
    still = stationary(data, pools, config, seed, settings)
    loose = settings.model_copy(update={"false_alarm_events": CHECK_BUDGET_EVENTS})
    check = calibration_check(data, config, seed, loose)
    names = [c.name for c in CHANGES] + [JOINT.name]
    rows = _rows(shuttle, concept, names, [n for n, *_ in concept_streams(config)], window)
    false_alarms = _false_alarms(still, check, settings)
    return {
        "seed": seed,
        "quick": quick,
        "window_events": window,
        "settings": settings.model_dump(),
        "seeds": config.seeds,
        "rows": rows,
        "false_alarms": false_alarms,
        "stationary_psi_max": still["shuttle"]["psi_max"],
        "monitor_us_per_event": still["cost"]["default"],
        "cost_us_per_event": still["cost"],
        "used_features": [data.profile.names[j] for j in data.used_features],
        "targets": _targets(rows, false_alarms, settings),
        "runs": {"shuttle": shuttle, "concept": concept},
        "elapsed_s": time.perf_counter() - started,
        "machine": (
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        ),
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _raised_by(row: dict[str, Any]) -> str:
    found = row.get("raised_by")
    if not found:
        return ""
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items(), key=lambda kv: -kv[1]))


def format_table(result: dict[str, Any]) -> str:
    """The bench result as markdown: detection table, false alarms, cost, targets."""
    lines = [
        f"Drift bench (seed {result['seed']}, {result['seeds']} seed(s), "
        f"{'quick' if result['quick'] else 'full'}, windows of {result['window_events']:,} "
        f"events, {result['elapsed_s']:.0f} s)",
        "",
        "| detector | stream | change | runs | detected | within 2 windows "
        "| median delay (events) | p90 delay (events) | over threshold at the first alert |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['detector']} | {r['stream']} | {r['change']} | {r['runs']} "
            f"| {r['detection_rate']:.0%} | {r['within_two_windows']:.0%} "
            f"| {_num(r['median_delay'])} | {_num(r['p90_delay'])} | {_raised_by(r)} |"
        )
    lines += [
        "",
        "| detector | stationary stream | events | alarms | false alarms / 1M events "
        "| budget / 1M events |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["false_alarms"]:
        budget = "-" if r["budget_per_million"] is None else f"{r['budget_per_million']:g}"
        lines.append(
            f"| {r['detector']} | {r['stream']} | {r['events']:,} | {r['alarms']} "
            f"| {r['per_million']:.2f} | {budget} |"
        )
    cost = result["cost_us_per_event"]
    lines += [
        "",
        f"Stationary PSI: highest {result['stationary_psi_max']:.4f} over all windows. "
        f"DriftMonitor cost per event (batches of 1,000, after calibration): "
        + "; ".join(f"{name} {us:.2f} µs" for name, us in cost.items())
        + f"; on {result['machine']}. Joint-only changes: each of "
        f"{', '.join(result['used_features'])} (the features the champion uses) decoupled.",
        "",
    ]
    for name, ok in result["targets"].items():
        lines.append(f"- [{'x' if ok else ' '}] {name}")
    return "\n".join(lines) + "\n"
