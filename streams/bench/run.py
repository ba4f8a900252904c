"""``run_bench``: every phase of ``streamscore bench`` in order, one result dict.

Phases (fresh topics and consumer groups for each, so none sees another's records):

1. **preload** N Avro sensor events (the source's :class:`~connectors.source.EventFactory`)
   into a fresh input topic (:mod:`streams.bench.feed`);
2. **pipeline** and 3. **pass-through limit** over the N events, ``repeats`` times
   (:mod:`streams.bench.throughput`, the loops in :mod:`streams.bench.loops`);
4. **stages** (optional): the per-stage seconds of the pipeline run, and the pipeline
   again with one stage switched off at a time (:mod:`streams.bench.stage_profile`);
5. **latency** at a fixed offered rate, for the pass-through and the pipeline
   (:mod:`streams.bench.latency`), at ``rate_fraction`` of the pipeline's maximum and at
   each of ``extra_rate_fractions`` (a light load);
6. **cpu profile** (optional): CPU time per event of the pipeline's stages (Avro and JSON
   input) and of the side paths (in their process and on threads), off the broker's
   clock (:mod:`streams.bench.cpu_profile`);
7. **scaling** (optional): the pipeline as 1 .. N members of one group, each a process
   (:mod:`streams.bench.scaling`);
8. **soak** (optional): the pipeline in a process of its own over many events, its
   resident memory sampled (:mod:`streams.bench.soak`).

With ``json_input`` the throughput phase also runs the pipeline over the same events
JSON-encoded.

The machine, the versions and the broker (:mod:`streams.bench.probes`) go into the result
next to the numbers; :mod:`streams.bench.report` renders it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.settings import Settings
from streams.bench.common import LATENCY_MIN_S, Progress
from streams.bench.cpu_profile import cpu_profile
from streams.bench.feed import Topics
from streams.bench.latency import latency_phase
from streams.bench.probes import broker_info, machine_info, versions
from streams.bench.scaling import scaling_phase
from streams.bench.soak import soak_run
from streams.bench.throughput import throughput_phase

log = logging.getLogger(__name__)


#: Processor-added latency goal (p99, ms) by offered load (share of the pipeline's max).
LATENCY_GOALS_MS = ((0.25, 10.0), (1.0, 20.0))


def latency_goal_ms(share: float) -> float:
    """The goal for a load: 10 ms up to a quarter of the maximum, 20 ms above."""
    return next((goal for upto, goal in LATENCY_GOALS_MS if share <= upto + 1e-9), 20.0)


def targets(result: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals, checked against this run (reported, never asserted)."""
    checks: dict[str, bool] = {}
    throughput = result.get("throughput", {})
    ratio = throughput.get("ratio")
    if ratio is not None:
        checks["full pipeline >= 50 % of the pass-through limit (events/s)"] = ratio >= 0.5
    vs_avro = throughput.get("json_input", {}).get("vs_avro")
    if vs_avro is not None:
        checks["JSON input within 10 % of Avro input (events/s)"] = vs_avro >= 0.9
    for latency in latency_phases(result):
        share = latency["offered_eps"] / throughput["pipeline"]["eps"]
        goal = latency_goal_ms(share)
        p99 = latency["loops"]["pipeline"]["in_loop_ms"].get("p99")
        if p99 is not None:
            checks[
                f"in-loop latency (consumed -> produced) p99 <= {goal:g} ms at {share:.0%} load"
            ] = p99 <= goal
        added = latency.get("processor_added_ms", {}).get("p99")
        if added is not None:
            checks[
                f"processor-added latency (loop - pass-through) p99 <= {goal:g} ms "
                f"at {share:.0%} load"
            ] = added <= goal
    soak = result.get("soak")
    if soak:
        checks[f"resident memory growth <= 10 % over {soak['events']:,} events"] = (
            soak["growth_pct"] <= 10.0
        )
    return checks


def latency_phases(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every latency phase of the run: the main load's, then the extra ones."""
    main = [result["latency"]] if result.get("latency") else []
    return main + list(result.get("latency_more", []))


def ensure_stack(settings: Settings) -> list[dict[str, Any]]:
    """Start the embedded broker / Redis the settings point at, if they are not running."""
    if not (settings.kafka.is_embedded or settings.redis.is_embedded):
        return []
    from connectors.embedded import EmbeddedStack

    return [dataclasses.asdict(s) for s in EmbeddedStack(settings).up()]


def _ensure_models(settings: Settings) -> None:
    from models.bundle import bundle_exists

    source = getattr(settings.models, "source", "files")
    if source == "files" and not bundle_exists(settings.models.champion_path):
        from models.train import ensure_reference_models

        ensure_reference_models(settings.models.dir)


def run_bench(
    settings: Settings,
    *,
    events: int = 200_000,
    rate_fraction: float = 0.5,
    latency_events: int = 50_000,
    latency_min_s: float = LATENCY_MIN_S,
    extra_rate_fractions: Sequence[float] = (),
    json_input: bool = False,
    scale_workers: int = 0,
    cpu: bool = False,
    soak: int | None = None,
    stages: bool = True,
    stage_variants: Sequence[str] = (),
    rate: float | None = None,
    repeats: int = 1,
    keep_topics: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every phase once (throughput ``repeats`` times) and return the result as a dict.

    ``rate`` fixes the offered rate of the latency phase in events/s; by default it is
    ``rate_fraction`` of the pipeline's measured maximum. ``latency_events=0`` skips the
    latency phase, ``soak=None`` the soak; a latency run lasts at least ``latency_min_s``.
    ``keep_topics`` leaves the bench's topics on the
    broker (the result names them) instead of deleting each after its phase.
    ``extra_rate_fractions`` adds a latency phase at each of those shares of the maximum
    (e.g. 0.1); ``json_input`` the JSON-input pipeline row; ``scale_workers`` > 0 the
    scaling row with 1 .. that many group members (at most one per partition); ``cpu``
    the CPU profile; ``stage_variants`` runs only those variants of the stage profile (by
    name, as in its table; all when empty).
    """
    if events < 1 or repeats < 1:
        raise ValueError("events and repeats must be at least 1")
    say = progress or (lambda message: log.info("%s", message))
    started = time.time()
    run_id = uuid.uuid4().hex[:8]
    result: dict[str, Any] = {
        "bench": "streamscore",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "run_id": run_id,
        "params": {
            "events": events,
            "rate_fraction": rate_fraction,
            "rate": rate,
            "latency_events": latency_events,
            "latency_min_s": latency_min_s,
            "extra_rate_fractions": list(extra_rate_fractions),
            "json_input": json_input,
            "scale_workers": scale_workers,
            "cpu_profile": cpu,
            "soak": soak,
            "stages": stages,
            "stage_variants": list(stage_variants),
            "repeats": repeats,
        },
        "machine": machine_info(),
        "versions": versions(),
        "broker": broker_info(settings),
        "settings": settings.model_dump(mode="json"),
    }
    result["stack"] = ensure_stack(settings)
    _ensure_models(settings)
    topics = Topics(settings, run_id, keep=keep_topics)
    try:
        champion = throughput_phase(
            result,
            topics,
            events,
            repeats,
            stages,
            run_id,
            say,
            json_input=json_input,
            stage_variants=stage_variants,
        )
        best_pipeline = result["throughput"]["pipeline"]["eps"]
        if latency_events > 0:
            offered = rate if rate is not None else rate_fraction * best_pipeline
            offers = [offered] + [share * best_pipeline for share in extra_rate_fractions]
            phases = [
                latency_phase(
                    topics,
                    offered=rate_eps,
                    count=latency_events,
                    champion=champion,
                    fan_out=result["throughput"]["fan_out"],
                    repeats=repeats,
                    run_id=run_id,
                    say=say,
                    min_seconds=latency_min_s,
                )
                for rate_eps in offers
            ]
            result["latency"], result["latency_more"] = phases[0], phases[1:]
        if cpu:
            result["cpu_profile"] = cpu_profile(topics, run_id, say)
        if scale_workers > 0:
            members = min(scale_workers, settings.topics.partitions)
            result["scaling"] = scaling_phase(topics, members, events, run_id, say)
        if soak:
            say(f"soak: {soak:,} events through a processor process of its own")
            result["soak"] = soak_run(topics, soak, run_id, say)
    finally:
        topics.drop_all()
    result["targets"] = targets(result)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.time() - started, 1)
    return result
