"""The evaluation records of ``sensor.evaluation``: built from a table value, keyed, summarised.

The evaluator emits one record per table value (a closed window, or a
cumulative total) with :func:`evaluation_record`, and re-emits it whenever the
value changes, so the topic holds several states of each; :func:`evaluation_key`
names what a record is the latest state of, and :func:`summarise_evaluations`
keeps the newest of each and reads the verdict back from its evidence (the
shadow report). :func:`latest_report` reads the topic for
``streamscore shadow report``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.schema_registry import topic_serde
from connectors.topic_reader import read_topic_from_start
from schemas.errors import DecodeError
from schemas.settings import Settings
from streams.evaluation.quality import QualityStats
from streams.evaluation.verdict import Verdict

EvaluationRecord = dict[str, Any]


def evaluation_record(
    value: Mapping[str, Any],
    now_ms: int,
    *,
    late: int | None = None,
    extra: Mapping[str, float] | None = None,
    verdict: Verdict | None = None,
) -> EvaluationRecord:
    """The record of one table value (a window or a cumulative total), emitted at ``now_ms``.

    Metrics are derived from the value's statistics here, plus ``late`` (labels
    that came after the window closed) and ``extra`` (the label counts); a
    cumulative record spans its first to its last label.
    """
    stats = QualityStats.from_dict(value["stats"])
    metrics = stats.metrics()
    if late is not None:
        metrics["late"] = float(late)
    if extra:
        metrics.update(extra)
    if value["window"] == "cumulative":
        start, end = stats.first_ms or 0, stats.last_ms or 0
    else:
        start, end = value["start"], value["end"]
    return {
        "variant": value["variant"],
        "model_version": value["model_version"],
        "window": value["window"],
        "window_start": int(start),
        "window_end": int(end),
        "count": stats.n,
        "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)},
        "verdict": verdict.decision if verdict is not None else None,
        "evidence": verdict.to_evidence() if verdict is not None else {},
        "emitted_at": now_ms,
    }


def evaluation_key(record: EvaluationRecord) -> str:
    """What an evaluation record is the latest state of: ``variant|version|window[|start]``.

    A cumulative record has no start in its key (its ``window_start`` is the first
    label seen, which an older late label may move).
    """
    parts = [record["variant"], record["model_version"], record["window"]]
    if record["window"] != "cumulative":
        parts.append(str(record["window_start"]))
    return "|".join(parts)


def latest_by_window(records: Iterable[EvaluationRecord]) -> list[EvaluationRecord]:
    """The newest record (by ``emitted_at``, then arrival) per :func:`evaluation_key`."""
    latest: dict[str, EvaluationRecord] = {}
    for record in records:
        key = evaluation_key(record)
        if key not in latest or record["emitted_at"] >= latest[key]["emitted_at"]:
            latest[key] = record
    return list(latest.values())


def _role_order(item: tuple[str, Any]) -> tuple[int, str]:
    """Champion first, then challenger, then any other variant by name."""
    return ({"champion": 0, "challenger": 1}.get(item[0], 2), item[0])


def summarise_evaluations(records: Sequence[EvaluationRecord]) -> dict[str, Any]:
    """The shadow report: per variant its newest cumulative record, and the verdict.

    For each variant the model version reported is the one with the newest
    cumulative record; the verdict is taken from the newest cumulative record
    that carries one. Window records are summarised by count.
    """
    latest = latest_by_window(records)
    cumulative = [r for r in latest if r["window"] == "cumulative"]
    newest: dict[str, EvaluationRecord] = {}
    for record in cumulative:
        current = newest.get(record["variant"])
        if current is None or record["emitted_at"] >= current["emitted_at"]:
            newest[record["variant"]] = record
    variants = [
        {
            "variant": r["variant"],
            "model_version": r["model_version"],
            "count": r["count"],
            "window_start": r["window_start"],
            "window_end": r["window_end"],
            "emitted_at": r["emitted_at"],
            "metrics": dict(r["metrics"]),
        }
        for _, r in sorted(newest.items(), key=_role_order)
    ]
    with_verdict: dict[str, EvaluationRecord] = {}
    for record in cumulative:
        if record.get("verdict"):
            current = with_verdict.get(record["variant"])
            if current is None or record["emitted_at"] >= current["emitted_at"]:
                with_verdict[record["variant"]] = record
    verdict: dict[str, Any] | None = None
    if with_verdict:
        chosen = max(with_verdict.values(), key=lambda r: r["emitted_at"])
        parsed = Verdict.from_evidence(chosen["evidence"])
        verdict = {
            "decision": parsed.decision,
            "metric": parsed.metric,
            "alpha": parsed.alpha,
            "n": parsed.n,
            "challenger_wins": parsed.challenger_wins,
            "champion_wins": parsed.champion_wins,
            "effect": parsed.effect,
            "ci_low": parsed.ci_low,
            "ci_high": parsed.ci_high,
            "e_value": parsed.e_value,
            "p_value_sequential": parsed.p_value_sequential,
            "e_value_keep": parsed.e_value_keep,
            "p_value_keep": parsed.p_value_keep,
            "mcnemar_p": parsed.mcnemar_p,
            "versions": {
                v: r["model_version"] for v, r in sorted(with_verdict.items(), key=_role_order)
            },
            "emitted_at": chosen["emitted_at"],
        }
    labels: dict[str, float] = {}
    if variants:
        newest_record = max(newest.values(), key=lambda r: r["emitted_at"])
        labels = {
            k.removeprefix("labels/"): v
            for k, v in newest_record["metrics"].items()
            if k.startswith("labels/")
        }
    windows: dict[str, int] = {}
    for record in latest:
        if record["window"] != "cumulative":
            windows[record["window"]] = windows.get(record["window"], 0) + 1
    return {
        "records": len(records),
        "variants": variants,
        "verdict": verdict,
        "labels": labels,
        "windows": windows,
    }


def latest_report(
    settings: Settings, *, idle_s: float = 1.0, timeout_s: float = 30.0
) -> dict[str, Any]:
    """The newest evaluation records of ``sensor.evaluation``, summarised for
    ``streamscore shadow report`` (see :func:`summarise_evaluations`)."""
    serde = topic_serde(settings, "evaluation")
    raw = read_topic_from_start(
        settings.kafka, settings.topics.evaluation, idle_s=idle_s, timeout_s=timeout_s
    )
    records = []
    undecodable = 0
    for record in raw:
        if record.value is None:
            continue
        try:
            records.append(serde.decode(record.value))
        except DecodeError:
            undecodable += 1
    report = summarise_evaluations(records)
    report["topic"] = settings.topics.evaluation
    report["undecodable"] = undecodable
    return report
