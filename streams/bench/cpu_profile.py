"""The CPU profile: what the loop's work costs in CPU time, measured without the broker in
the way, so a busy shared machine disturbs it far less than the events/s of a run.

pipeline stages
    :meth:`~streams.scoring.pipeline.ScoringPipeline.run` over one batch of ``batch`` real
    events (the bench's stream), Avro and JSON input: the thread CPU time of each stage,
    the least of ``rounds`` runs, per event.
JSON parsers
    the parsers the JSON input could use, on the same JSON events: the standard library,
    msgspec (what :class:`~schemas.serde.JsonSerde` uses), orjson when it is installed,
    and one parse of the whole batch joined into a JSON array.
side paths
    the side paths exactly as :func:`~streams.scoring.compose.build_processor` wires them
    (shadow challenger, prediction store; drift left out, it is synchronous either way),
    handed the same scored batch ``rounds`` times with a pause between hand-overs, then
    drained: the CPU time of the loop's process (every thread: the challenger scoring,
    the hand-over, the pickling; with side paths on threads also the record building,
    encoding and Redis writes) and of its side-path process, per event. Both settings of
    ``processor.side_paths``. Real Redis, real producer.
"""

from __future__ import annotations

import time
from typing import Any

from schemas.serde import make_serde
from schemas.settings import Settings
from streams.bench.common import Progress
from streams.bench.feed import Topics, event_source

#: Events per profiled batch, and batches per measurement.
BATCH = 1000
ROUNDS = 30
#: Pause between side-path hand-overs: the loop's own work between two batches.
PAUSE_S = 0.004


def _stage_cpu(settings: Settings, run_id: str) -> dict[str, dict[str, float]]:
    from streams.scoring.compose import build_processor
    from streams.scoring.pipeline import raw_batch_from

    processor = build_processor(settings.model_copy(
        update={"processor": settings.processor.model_copy(update={"side_paths": "thread"})}
    ))  # fmt: skip
    try:
        result = {}
        for fmt in ("avro", "json"):
            formats = settings.formats.model_copy(update={"events": fmt})
            factory = event_source(settings.model_copy(update={"formats": formats}), BATCH, run_id)
            now = int(time.time() * 1000)
            raw = raw_batch_from([factory.make(n, now)[1] for n in range(BATCH)])
            pipeline = processor.pipeline
            pipeline.event_serde, pipeline.typed = make_serde(fmt, "sensor_event"), fmt != "json"
            best: dict[str, float] = {}
            for _ in range(ROUNDS):
                started = time.thread_time()
                out = pipeline.run(raw, processor.champion)
                spent = time.thread_time() - started
                for stage, seconds in {**out.stage_seconds, "total (CPU)": spent}.items():
                    best[stage] = min(best.get(stage, float("inf")), seconds)
            result[fmt] = {stage: round(s * 1e6 / BATCH, 3) for stage, s in best.items()}
        return result
    finally:
        processor.release(clean=True)  # nothing was consumed: delivers, commits nothing


def _parser_cpu(settings: Settings, run_id: str) -> dict[str, float]:
    import json

    import msgspec

    formats = settings.formats.model_copy(update={"events": "json"})
    factory = event_source(settings.model_copy(update={"formats": formats}), BATCH, run_id)
    values = [factory.make(n, 0)[1] for n in range(BATCH)]
    decode = msgspec.json.Decoder().decode
    parsers = {
        "json.loads (standard library)": lambda: [json.loads(v) for v in values],
        "msgspec (used)": lambda: [decode(v) for v in values],
        "msgspec, whole batch as one array": lambda: decode(b"[" + b",".join(values) + b"]"),
    }
    try:
        import orjson

        parsers["orjson"] = lambda: [orjson.loads(v) for v in values]
        parsers["orjson, whole batch as one array"] = lambda: orjson.loads(
            b"[" + b",".join(values) + b"]"
        )
    except ImportError:
        pass
    result = {}
    for name, parse in parsers.items():
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.thread_time()
            parse()
            best = min(best, time.thread_time() - started)
        result[name] = round(best * 1e6 / BATCH, 3)
    return result


def _side_path_cpu(settings: Settings, mode: str, run_id: str) -> dict[str, Any]:
    from streams.bench.loops import side_process_of
    from streams.scoring.compose import build_processor
    from streams.scoring.pipeline import raw_batch_from

    processor_settings = settings.processor.model_copy(update={"side_paths": mode})
    processor = build_processor(settings.model_copy(update={"processor": processor_settings}))
    try:
        factory = event_source(settings, BATCH, run_id)
        now = int(time.time() * 1000)
        raw = raw_batch_from([factory.make(n, now)[1] for n in range(BATCH)])
        out = processor.pipeline.run(raw, processor.champion)
        paths = [sp for sp in processor.side_paths if type(sp).__name__ != "DriftPath"]
        for side_path in paths:  # warm-up: connections, first produce
            side_path(out, raw)
        _drain(paths)
        side = side_process_of(processor)
        side_before = side.cpu_s if side is not None else 0.0
        started = time.process_time()
        for _ in range(ROUNDS):
            for side_path in paths:
                side_path(out, raw)
            time.sleep(PAUSE_S)
        _drain(paths)
        spent = time.process_time() - started
        time.sleep(0.3)  # the side-path process's last report
        events = ROUNDS * BATCH
        return {
            "side_paths": [type(sp).__name__ for sp in paths],
            "loop_process_cpu_us_per_event": round(spent * 1e6 / events, 3),
            "side_process_cpu_us_per_event": (
                round((side.cpu_s - side_before) * 1e6 / events, 3) if side is not None else None
            ),
        }
    finally:
        processor.release(clean=True)  # nothing was consumed: delivers, commits nothing


def _drain(paths: list[Any]) -> None:
    for side_path in paths:
        for worker in (getattr(side_path, "worker", None), getattr(side_path, "lane", None)):
            if worker is not None:
                worker.drain(120)


def cpu_profile(topics: Topics, run_id: str, say: Progress) -> dict[str, Any]:
    """Pipeline stages (Avro, JSON) and side paths (process, threads), in CPU µs per event."""
    settings = topics.phase("cpu")
    try:
        say(f"cpu profile: pipeline stages, {ROUNDS} batches of {BATCH:,}, Avro and JSON input")
        stages = _stage_cpu(settings, run_id)
        parsers = _parser_cpu(settings, run_id)
        paths = {}
        for mode in ("process", "thread"):
            say(f"cpu profile: side paths on {mode}, {ROUNDS} batches of {BATCH:,}")
            paths[mode] = _side_path_cpu(settings, mode, run_id)
    finally:
        topics.drop(settings)
    return {
        "batch": BATCH,
        "rounds": ROUNDS,
        "stages": stages,
        "json_parsers": parsers,
        "side_paths": paths,
    }
