"""A self-contained HTML page of drift records, so a person can look instead of read.

:func:`render_drift_report` takes DriftEvent dicts (as produced by
:class:`streams.drift.monitor.DriftMonitor` or read back from ``sensor.drift``) and returns
one HTML document: inline CSS and SVG only, no scripts, no external assets, so it
can be mailed, attached to a ticket or opened offline. Sections:

1. summary — records by detector, status and severity; models; time span;
2. PSI per feature over windows — one small chart per feature, points coloured by
   severity, lines joining the windows of one incident, dashed threshold lines;
3. reference vs current histograms of the most-shifted features (from the
   ``top_bins`` of each feature's highest-PSI record);
4. the two-sample tests — KS and chi-squared of every record that has them, against
   their calibrated thresholds, with the test that raised the severity;
5. the champion's score distribution against its reference;
6. ADWIN changes — the stream mean before and after each detected change;
7. the incident list, with the tests that raised each incident.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

SEVERITY_COLOURS = {"none": "#8a8f98", "warning": "#e08a00", "alert": "#d1242f"}
REFERENCE_COLOUR = "#7a9cc6"
CURRENT_COLOUR = "#d1242f"

Record = dict[str, Any]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem;
       color: #1f2328; max-width: 1100px; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
  border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
.muted { color: #656d76; } .grid { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem; }
figcaption { font-size: .85rem; color: #656d76; }
table { border-collapse: collapse; font-size: .85rem; } td, th { border: 1px solid #d0d7de;
  padding: .25rem .5rem; text-align: left; } th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev-alert { color: #d1242f; font-weight: 600; } .sev-warning { color: #e08a00; }
.sev-none { color: #656d76; }
svg text { font: 10px system-ui, sans-serif; fill: #57606a; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


# --------------------------------------------------------------------------- x axis


def _x_axis(
    records: Sequence[Record],
) -> tuple[str, Callable[[Record], float], Callable[[float], str]]:
    """The shared x axis: event time if every record has it, else offsets, else order."""
    if records and all(r.get("window_end") is not None for r in records):
        return "window end (UTC)", lambda r: float(r["window_end"]), lambda x: _fmt_ms(int(x))[11:]
    if records and all(r.get("window_last_offset") is not None for r in records):
        return (
            "window last offset",
            lambda r: float(r["window_last_offset"]),
            lambda x: f"{x:,.0f}",
        )
    order = {id(r): float(i) for i, r in enumerate(records)}
    return "record", lambda r: order[id(r)], lambda x: f"{x:.0f}"


# --------------------------------------------------------------------------- charts


def _line_chart(
    points: list[tuple[float, float, str, str]],
    x_range: tuple[float, float],
    x_label: Callable[[float], str],
    thresholds: dict[str, float],
    *,
    width: int = 520,
    height: int = 170,
) -> str:
    """Points ``(x, y, severity, incident_id)``; lines join points of one incident."""
    left, right, top, bottom = 44, 10, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    x0, x1 = x_range
    span = (x1 - x0) or 1.0
    y_max = max([p[1] for p in points] + list(thresholds.values()) + [1e-9]) * 1.1

    def sx(x: float) -> float:
        return left + (x - x0) / span * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfbfc" '
        'stroke="#d0d7de"/>',
    ]
    for i in range(5):
        y = y_max * i / 4
        parts.append(
            f'<text x="{left - 4}" y="{sy(y) + 3:.1f}" text-anchor="end">{_fmt_num(y)}</text>'
        )
    for i in range(4):
        x = x0 + span * i / 3
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(
            f'<text x="{sx(x):.1f}" y="{height - 8}" text-anchor="{anchor}">{_e(x_label(x))}</text>'
        )
    for severity, value in thresholds.items():
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(value):.1f}" y2="{sy(value):.1f}" '
            f'stroke="{SEVERITY_COLOURS[severity]}" stroke-dasharray="4 3"/>'
            f'<text x="{left + plot_w - 2}" y="{sy(value) - 3:.1f}" text-anchor="end">'
            f"{severity} {_fmt_num(value)}</text>"
        )
    by_incident: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for x, y, _, incident in points:
        by_incident[incident].append((x, y))
    for line in by_incident.values():
        if len(line) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(line))
            parts.append(f'<polyline points="{path}" fill="none" stroke="#9aa4b2"/>')
    for x, y, severity, incident in points:
        colour = SEVERITY_COLOURS.get(severity, SEVERITY_COLOURS["none"])
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.2" fill="{colour}">'
            f"<title>{_e(incident)}: {_fmt_num(y)} ({_e(severity)})</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _bin_sort_key(label: str) -> tuple[int, float]:
    """Bins in profile order: '(lo, hi]' by lo, '=v' by v, 'other' last."""
    if label == "other":
        return (2, 0.0)
    match = re.match(r"^\(\s*([^,]+),", label) or re.match(r"^=(.+)$", label)
    if match:
        try:
            return (0, float(match.group(1)))
        except ValueError:
            pass
    return (1, 0.0)


def _histogram(bins: list[dict[str, Any]], *, width: int = 520, height: int = 200) -> str:
    """Grouped bars of reference vs current fraction per bin."""
    bins = sorted(bins, key=lambda b: _bin_sort_key(str(b["bin"])))
    left, right, top, bottom = 40, 10, 18, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max([max(b["reference"], b["current"]) for b in bins] + [1e-9]) * 1.1
    slot = plot_w / max(len(bins), 1)
    bar = slot * 0.38
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfbfc" '
        'stroke="#d0d7de"/>',
        f'<rect x="{left}" y="3" width="9" height="9" fill="{REFERENCE_COLOUR}"/>'
        f'<text x="{left + 12}" y="11">reference</text>'
        f'<rect x="{left + 75}" y="3" width="9" height="9" fill="{CURRENT_COLOUR}"/>'
        f'<text x="{left + 87}" y="11">current</text>',
    ]
    for i in range(3):
        y = y_max * i / 2
        ypix = top + plot_h - y / y_max * plot_h
        parts.append(f'<text x="{left - 4}" y="{ypix + 3:.1f}" text-anchor="end">{y:.0%}</text>')
    for i, b in enumerate(bins):
        x = left + i * slot + slot * 0.1
        for k, (key, colour) in enumerate(
            (("reference", REFERENCE_COLOUR), ("current", CURRENT_COLOUR))
        ):
            h = float(b[key]) / y_max * plot_h
            parts.append(
                f'<rect x="{x + k * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(b["bin"])} {key}: '
                f"{float(b[key]):.2%}</title></rect>"
            )
        parts.append(
            f'<text x="{x + bar:.1f}" y="{top + plot_h + 12}" text-anchor="end" '
            f'transform="rotate(-30 {x + bar:.1f} {top + plot_h + 12})">{_e(b["bin"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- sections


def _summary(records: Sequence[Record]) -> str:
    counts = Counter((r["detector"], r["status"], r["severity"]) for r in records)
    models = sorted({f"{r['model_name']} {r['model_version']}" for r in records})
    starts = [r["window_start"] for r in records if r.get("window_start") is not None]
    ends = [r["window_end"] for r in records if r.get("window_end") is not None]
    rows = "".join(
        f"<tr><td>{_e(d)}</td><td>{_e(st)}</td><td class='sev-{_e(sv)}'>{_e(sv)}</td>"
        f"<td class='num'>{n}</td></tr>"
        for (d, st, sv), n in sorted(counts.items())
    )
    span = f"{_fmt_ms(min(starts))} - {_fmt_ms(max(ends))} UTC" if starts and ends else "-"
    return (
        f"<p class='muted'>{len(records)} records &middot; models: {_e(', '.join(models))} "
        f"&middot; windows from {_e(span)}</p>"
        "<table><tr><th>detector</th><th>status</th><th>severity</th><th>records</th></tr>"
        f"{rows}</table>"
    )


def _psi_severity(r: Record) -> str:
    """PSI's own severity: its ``tests`` entry (a two-sample test may have raised the record's)."""
    entry = next((t for t in r.get("tests") or [] if t["test"] == "psi"), None)
    return str(r["severity"] if entry is None else entry["severity"])


def _ratio(r: Record) -> float:
    threshold = float(r["threshold"])
    return float(r["statistic"]) / threshold if threshold > 0 else 0.0


def _series_section(
    records: Sequence[Record],
    detector: str,
    axis: tuple[str, Callable[[Record], float], Callable[[float], str]],
    x_range: tuple[float, float],
) -> str:
    label, x_of, x_label = axis
    # A retrain request repeats the point of its window's update.
    chosen = [
        r for r in records if r["detector"] == detector and r["status"] != "retrain_requested"
    ]
    targets = sorted({r["target"] for r in chosen})
    if not targets:
        return f"<p class='muted'>No {detector} records.</p>"
    figures = []
    for target in targets:
        mine = [r for r in chosen if r["target"] == target]
        thresholds: dict[str, float] = {}
        if detector == "psi":
            # PSI records carry PSI's alert threshold at its alert severity, else the warning one.
            for r in mine:
                thresholds["alert" if _psi_severity(r) == "alert" else "warning"] = r["threshold"]
        if detector == "distribution":
            # KS or chi-squared, whichever is closest to its threshold: plotted as the ratio.
            thresholds["alert"] = 1.0
            points = [(x_of(r), _ratio(r), r["severity"], r["incident_id"]) for r in mine]
        else:
            points = [
                (x_of(r), float(r["statistic"]), r["severity"], r["incident_id"]) for r in mine
            ]
        peak = max(p[1] for p in points)
        figures.append(
            f"<figure>{_line_chart(points, x_range, x_label, thresholds)}"
            f"<figcaption><b>{_e(target)}</b> &middot; {len(mine)} records &middot; "
            f"peak {_fmt_num(peak)} &middot; x: {_e(label)}</figcaption></figure>"
        )
    return f"<div class='grid'>{''.join(figures)}</div>"


def _shifted_section(records: Sequence[Record], top: int) -> str:
    peaks: dict[str, Record] = {}
    for r in records:
        if r["detector"] != "psi" or not r.get("top_bins"):
            continue
        best = peaks.get(r["target"])
        if best is None or r["statistic"] > best["statistic"]:
            peaks[r["target"]] = r
    if not peaks:
        return "<p class='muted'>No PSI records with bins.</p>"
    ranked = sorted(peaks.values(), key=lambda r: -float(r["statistic"]))[:top]
    figures = []
    for r in ranked:
        figures.append(
            f"<figure>{_histogram(list(r['top_bins']))}<figcaption><b>{_e(r['target'])}</b> "
            f"&middot; PSI {_fmt_num(float(r['statistic']))} "
            f"(<span class='sev-{_e(r['severity'])}'>{_e(r['severity'])}</span>) &middot; "
            f"window {_e(_window_text(r))} &middot; {len(r['top_bins'])} bins shown"
            "</figcaption></figure>"
        )
    return f"<div class='grid'>{''.join(figures)}</div>"


def _window_text(r: Record) -> str:
    if r.get("window_start") is not None and r.get("window_end") is not None:
        return f"{_fmt_ms(r['window_start'])} - {_fmt_ms(r['window_end'])[11:]}"
    if r.get("window_first_offset") is not None:
        return f"offsets {r['window_first_offset']}-{r['window_last_offset']}"
    return f"{r.get('window_events', 0)} events"


def _adwin_table(records: Sequence[Record]) -> str:
    rows = []
    for r in records:
        if r["detector"] != "adwin" or r["severity"] == "none":
            continue
        mean = next((b for b in r.get("top_bins") or [] if b["bin"] == "mean"), None)
        before = f"{mean['reference']:.4g}" if mean else "-"
        after = f"{mean['current']:.4g}" if mean else "-"
        rows.append(
            f"<tr><td>{_e(r['target'])}</td><td>{_e(r['status'])}</td>"
            f"<td>{_e(_window_text(r))}</td><td class='num'>{_e(before)}</td>"
            f"<td class='num'>{_e(after)}</td><td class='num'>{float(r['statistic']):.4g}</td>"
            f"<td class='num'>{float(r['threshold']):g}</td></tr>"
        )
    if not rows:
        return "<p class='muted'>ADWIN found no change.</p>"
    return (
        "<table><tr><th>stream</th><th>status</th><th>window</th><th>mean before</th>"
        "<th>mean after</th><th>|change|</th><th>delta</th></tr>" + "".join(rows) + "</table>"
    )


def _test_cell(r: Record, name: str) -> str:
    entry = next((t for t in r.get("tests") or [] if t["test"] == name), None)
    if entry is None:
        return "<td class='num'>-</td>"
    return (
        f"<td class='num sev-{_e(entry['severity'])}'>{float(entry['statistic']):.4g} / "
        f"{float(entry['threshold']):.4g}</td>"
    )


def _tests_table(records: Sequence[Record]) -> str:
    rows = []
    for r in records:
        names = {t["test"] for t in r.get("tests") or []}
        if not names & {"ks", "chi2"}:
            continue
        rows.append(
            f"<tr><td>{_e(r['detector'])}</td><td>{_e(r['target'])}</td><td>{_e(r['status'])}</td>"
            f"<td>{_e(_window_text(r))}{' (hop)' if r.get('hop') else ''}</td>"
            f"{_test_cell(r, 'psi')}{_test_cell(r, 'ks')}{_test_cell(r, 'chi2')}"
            f"<td class='sev-{_e(r['severity'])}'>{_e(r.get('trigger') or '-')}</td></tr>"
        )
    if not rows:
        return "<p class='muted'>No two-sample test results in these records.</p>"
    return (
        "<p class='muted'>Statistic / threshold; thresholds come from the false-alarm budget. "
        "A hop record was raised inside its window, over the last window of events.</p>"
        "<table><tr><th>detector</th><th>target</th><th>status</th><th>window</th>"
        "<th>PSI</th><th>KS</th><th>chi-squared</th><th>raised by</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_RANK = {"none": 0, "warning": 1, "alert": 2}


def incidents(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One summary per incident id, in order of first appearance."""
    found: dict[str, dict[str, Any]] = {}
    for r in records:
        inc = found.setdefault(
            r["incident_id"],
            {
                "incident_id": r["incident_id"],
                "detector": r["detector"],
                "target": r["target"],
                "model": f"{r['model_name']} {r['model_version']}",
                "opened": None,
                "closed": None,
                "windows": 0,
                "peak_severity": "none",
                "peak_statistic": 0.0,
                "retrain_requested": False,
                "raised_by": [],
            },
        )
        trigger = r.get("trigger")
        if trigger and trigger not in inc["raised_by"]:
            inc["raised_by"].append(trigger)
        when = r.get("window_end") if r.get("window_end") is not None else r.get("detected_at")
        if r["status"] == "open":
            inc["opened"] = when
        elif r["status"] == "closed":
            inc["closed"] = when
        elif r["status"] == "retrain_requested":
            inc["retrain_requested"] = True
        if r["status"] in ("open", "update", "closed"):
            inc["windows"] += 1
        if _RANK.get(r["severity"], 0) > _RANK[inc["peak_severity"]]:
            inc["peak_severity"] = r["severity"]
        inc["peak_statistic"] = max(inc["peak_statistic"], float(r["statistic"]))
    return list(found.values())


def _incident_table(records: Sequence[Record]) -> str:
    rows = []
    for inc in incidents(records):
        state = "closed" if inc["closed"] is not None else "open"
        rows.append(
            f"<tr><td>{_e(inc['incident_id'])}</td><td>{_e(inc['detector'])}</td>"
            f"<td>{_e(inc['target'])}</td><td>{_e(inc['model'])}</td><td>{state}</td>"
            f"<td>{_e(_fmt_ms(inc['opened']))}</td><td>{_e(_fmt_ms(inc['closed']))}</td>"
            f"<td class='num'>{inc['windows']}</td>"
            f"<td class='sev-{_e(inc['peak_severity'])}'>{_e(inc['peak_severity'])}</td>"
            f"<td class='num'>{inc['peak_statistic']:.4g}</td>"
            f"<td>{'yes' if inc['retrain_requested'] else ''}</td>"
            f"<td>{_e(', '.join(inc['raised_by']))}</td></tr>"
        )
    return (
        "<table><tr><th>incident</th><th>detector</th><th>target</th><th>model</th>"
        "<th>state</th><th>opened (UTC)</th><th>closed (UTC)</th><th>windows</th>"
        "<th>peak severity</th><th>peak statistic</th><th>retrain requested</th>"
        "<th>raised by</th></tr>" + "".join(rows) + "</table>"
    )


def render_drift_report(
    records: list[dict[str, Any]], *, title: str = "streamscore drift report", top: int = 4
) -> str:
    """One self-contained HTML page (inline SVG, no scripts) of ``records``.

    ``top`` is how many of the most-shifted features get a histogram.

    >>> page = render_drift_report([])
    >>> page.startswith("<!DOCTYPE html>") and "No drift records" in page
    True
    """
    head = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
    )
    if not records:
        return head + "<p class='muted'>No drift records.</p></body></html>\n"
    ordered = sorted(
        records,
        key=lambda r: (
            r.get("window_end") or 0,
            r.get("window_last_offset") or 0,
            r.get("detected_at") or 0,
        ),
    )
    axis = _x_axis(ordered)
    xs = [axis[1](r) for r in ordered]
    x_range = (min(xs), max(xs))
    body = [
        _summary(ordered),
        "<h2>PSI per feature over windows</h2>",
        "<p class='muted'>Records exist for windows of an incident (open, updates, close); "
        "dots are coloured by severity, lines join the windows of one incident.</p>",
        _series_section(ordered, "psi", axis, x_range),
        "<h2>Most-shifted features: reference vs current</h2>",
        _shifted_section(ordered, top),
        "<h2>Two-sample tests: KS and chi-squared</h2>",
        _tests_table(ordered),
        "<h2>Score distribution against its reference</h2>",
        _series_section(ordered, "distribution", axis, x_range),
        "<h2>ADWIN: score and error streams</h2>",
        _series_section(ordered, "adwin", axis, x_range),
        _adwin_table(ordered),
        "<h2>Incidents</h2>",
        _incident_table(ordered),
    ]
    return head + "".join(body) + "</body></html>\n"
