"""The throughput phase: preload N events, then the pipeline and the pass-through limit over
them ``repeats`` times (fresh output topics and consumer group for each run, the same input
topic), then the stage profile over the same input.

The pass-through forwards each input as many times, per topic role, as the first pipeline
run produced records of it (its fan-out), so both loops write the same number of records.

With ``json_input`` the same events are preloaded once more, JSON-encoded, into an input
topic of their own, and the pipeline runs over them ``repeats`` times (``events`` read as
JSON, everything else as built): the JSON row, next to the Avro one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from schemas.settings import Settings
from streams.bench.common import BenchError, Progress
from streams.bench.feed import Topics, preload
from streams.bench.loops import LoopRun, fastest, run_pass_through, run_pipeline
from streams.bench.stage_profile import (
    Samples,
    Variant,
    pick,
    samples_from,
    side_path_name,
    stage_profile,
    variants,
)

if TYPE_CHECKING:
    from models.serving import ServingModel
    from streams.scoring.processor import Processor


def fan_out_of(run: LoopRun) -> tuple[dict[str, int], dict[str, float]]:
    """Output records per input by topic role, rounded for the pass-through, and exact."""
    exact = {role: count / run.events for role, count in run.outputs.items()}
    rounded = {role: round(share) for role, share in exact.items() if round(share) >= 1}
    if "predictions" not in rounded:
        raise BenchError(f"the pipeline produced no predictions: {run.outputs}")
    return rounded, {role: round(share, 4) for role, share in exact.items()}


def throughput_phase(
    result: dict[str, Any],
    topics: Topics,
    events: int,
    repeats: int,
    stages: bool,
    run_id: str,
    say: Progress,
    *,
    json_input: bool = False,
    stage_variants: Sequence[str] = (),
) -> ServingModel:
    """Preload, then pipeline and pass-through ``repeats`` times, then the stage profile
    (only ``stage_variants``, by name, when given).

    Fills ``result["preload"]``, ``["throughput"]`` and ``["stages"]``; returns the champion.
    """
    input_settings = topics.single("input")
    say(f"preload: {events:,} events into {input_settings.topics.events}")
    result["preload"], factory = preload(input_settings, events, run_id)
    input_topic = input_settings.topics.events
    pipelines: list[LoopRun] = []
    limits: list[LoopRun] = []
    champions: list[ServingModel] = []
    side_paths: list[str] = []
    holder: list[Samples] = []
    fan_out: dict[str, int] = {}
    exact: dict[str, float] = {}
    profiled: list[Variant] = []

    def first_build(processor: Processor) -> None:
        if champions:
            return
        champions.append(processor.champion)
        side_paths.extend(side_path_name(sp) for sp in processor.side_paths)
        if stages:
            holder.append(samples_from(processor, factory))

    for i in range(repeats):
        say(f"pipeline: {events:,} events (run {i + 1} of {repeats})")
        phase = topics.phase(f"pipeline-{i}", events_topic=input_topic)
        run = run_pipeline(phase, events=events, on_build=first_build)
        run.topics = _output_topics(phase, run.outputs)
        pipelines.append(run)
        topics.drop(phase)
        if not fan_out:
            fan_out, exact = fan_out_of(run)
            profiled = pick(variants(side_paths, topics.settings.processor.side_paths),
                            stage_variants) if stages else []  # fmt: skip
        say(f"pass-through: {events:,} events, fan-out {fan_out}")
        phase = topics.phase(f"limit-{i}", events_topic=input_topic)
        limit = run_pass_through(phase, champions[0], fan_out, events=events)
        limit.topics = _output_topics(phase, limit.outputs)
        limits.append(limit)
        topics.drop(phase)
    pipeline, limit = fastest(pipelines), fastest(limits)
    result["throughput"] = {
        "input_topic": input_topic,
        "fan_out": fan_out,
        "fan_out_exact": exact,
        "pass_through": limit.as_dict(),
        "pipeline": pipeline.as_dict(),
        "ratio": round(pipeline.eps / limit.eps, 4) if limit.eps else None,
        "runs": [
            {"loop": r.name, "eps": round(r.eps, 1)}
            for pair in zip(pipelines, limits, strict=True)
            for r in pair
        ],
    }
    if json_input:
        result["throughput"]["json_input"] = _json_rows(topics, events, repeats, run_id, say)
        avro = result["throughput"]["pipeline"]["eps"]
        json_eps = result["throughput"]["json_input"]["pipeline"]["eps"]
        result["throughput"]["json_input"]["vs_avro"] = round(json_eps / avro, 4) if avro else None
    if stages:
        result["stages"] = stage_profile(
            topics,
            input_topic,
            events,
            holder[0],
            profiled,
            say,
            repeats=repeats,
        )
    return champions[0]


def _json_rows(
    topics: Topics, events: int, repeats: int, run_id: str, say: Progress
) -> dict[str, Any]:
    """The pipeline over the same events JSON-encoded: its best of ``repeats`` runs."""
    json_settings = topics.single("input-json")
    formats = json_settings.formats.model_copy(update={"events": "json"})
    json_settings = json_settings.model_copy(update={"formats": formats})
    say(f"preload: {events:,} JSON events into {json_settings.topics.events}")
    preloaded, _ = preload(json_settings, events, run_id)
    runs = []
    for i in range(repeats):
        say(f"pipeline, JSON input: {events:,} events (run {i + 1} of {repeats})")
        phase = topics.phase(f"pipeline-json-{i}", events_topic=json_settings.topics.events)
        phase = phase.model_copy(update={"formats": formats})
        runs.append(run_pipeline(phase, events=events, name="pipeline, JSON input"))
        topics.drop(phase)
    best = fastest(runs)
    return {
        "mean_event_bytes": preloaded["mean_event_bytes"],
        "pipeline": best.as_dict(),
        "runs": [round(r.eps, 1) for r in runs],
    }


def _output_topics(settings: Settings, outputs: dict[str, int]) -> dict[str, str]:
    by_role = settings.topics.by_role()
    return {role: by_role[role] for role in outputs if role in by_role}
