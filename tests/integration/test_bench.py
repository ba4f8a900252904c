"""The benchmark harness on a tiny stream: it runs, reports every number, accounts for records.

Speeds are never asserted: the machine is shared and the point is the harness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schemas.settings import Settings
from streams.bench.report import format_report, markdown
from streams.bench.run import run_bench
from streams.bench.stats import histogram_percentiles
from streams.cli.main import app
from tests.integration.kafka_io import read_topic, stack_env

pytestmark = pytest.mark.integration

EVENTS = 3000
LATENCY_EVENTS = 1200
SOAK = 5000
STAGE_VARIANTS = ("side paths off", "decode+score+encode off")


def test_histogram_percentiles_interpolate_within_buckets() -> None:
    edges = (0.001, 0.002, 0.004)
    # 10 values in (0, 1 ms], 10 in (1, 2 ms], none above: like histogram_quantile.
    counts = np.array([10, 10, 0, 0])
    q = histogram_percentiles(counts, edges)
    assert q["count"] == 20
    assert q["p50"] == pytest.approx(1.0)
    assert q["p95"] == pytest.approx(1.9)
    assert q["max"] == pytest.approx(2.0)
    overflow = histogram_percentiles(np.array([0, 0, 0, 5]), edges)
    assert overflow["p99"] == pytest.approx(4.0) and overflow["max"] == pytest.approx(4.0)


def test_bench_on_a_tiny_stream(make_settings: Callable[..., Settings]) -> None:
    # A shorter session timeout makes each of the bench's consumer groups join in ~2 s, not 3.
    settings = make_settings(kafka={"session_timeout_ms": 3000})
    result = run_bench(
        settings,
        events=EVENTS,
        latency_events=LATENCY_EVENTS,
        latency_min_s=0.0,  # the tiny stream's runs as they are (the default: 10 s)
        extra_rate_fractions=(0.1,),
        json_input=True,
        soak=SOAK,
        stages=True,
        # Two variants of the profile's eight or more, one of each kind (each run joins a
        # group anew); which variants there are is tests/unit/bench/test_stage_variants.py.
        stage_variants=STAGE_VARIANTS,
        keep_topics=True,
        command="pytest",
    )

    t = result["throughput"]
    pipeline, limit = t["pipeline"], t["pass_through"]
    # The pipeline makes a prediction and an audit record of every valid event (and a
    # shadow record when a challenger is loaded); the pass-through mirrors that fan-out.
    assert t["fan_out"]["predictions"] == 1 and t["fan_out"]["audit"] == 1
    assert pipeline["events"] == EVENTS and limit["events"] == EVENTS
    for role, copies in t["fan_out"].items():
        assert pipeline["outputs"][role] == EVENTS * copies
        assert limit["outputs"][role] == EVENTS * copies
    # What the loops say they produced is on the broker.
    for loop in (pipeline, limit):
        for role in ("predictions", "audit"):
            records = read_topic(settings, loop["topics"][role], EVENTS, settle=0.5)
            assert len(records) == EVENTS, (loop["topics"][role], len(records))
    for loop in (pipeline, limit):
        assert loop["eps"] > 0 and loop["us_per_event"] > 0 and loop["join_s"] > 0
        assert all(v >= 0 for v in loop["stage_us_per_event"].values())
    assert t["ratio"] > 0
    # The same events JSON-encoded, through the pipeline as built.
    json_row = t["json_input"]
    assert json_row["pipeline"]["events"] == EVENTS
    assert json_row["pipeline"]["outputs"]["predictions"] == EVENTS
    assert json_row["vs_avro"] > 0
    for stage in ("decode", "validate", "score", "encode", "produce", "commit"):
        assert pipeline["stage_us_per_event"][stage] > 0, stage

    variants = {row["variant"]: row for row in result["stages"]["variants"]}
    assert list(variants) == ["full", *STAGE_VARIANTS]
    assert all(row["eps"] > 0 for row in variants.values())
    assert result["params"]["stage_variants"] == list(STAGE_VARIANTS)

    latency = result["latency"]
    assert latency["offered_eps"] == pytest.approx(0.5 * pipeline["eps"], rel=0.01)
    for kind in ("pass-through", "pipeline"):
        loop = latency["loops"][kind]
        assert loop["events"] == LATENCY_EVENTS
        assert loop["predictions_observed"] == LATENCY_EVENTS
        for measure in ("loop_ms", "in_loop_ms", "end_to_end_ms"):
            q = loop[measure]
            assert q["count"] > 0
            assert 0 < q["p50"] <= q["p95"] <= q["p99"] <= q["max"], (kind, measure, q)
        # A prediction is seen by the observer after the processor produced it.
        assert loop["end_to_end_ms"]["p50"] >= loop["loop_ms"]["p50"] - 1.0
        share = loop["broker_cpu_share"]
        assert (share is not None and share >= 0) if settings.kafka.is_embedded else share is None
    assert latency["rounds"] == 1 and len(latency["loop_p99_ms_by_round"]["pipeline"]) == 1
    added = latency["processor_added_ms"]
    pipeline_loop, limit_loop = latency["loops"]["pipeline"], latency["loops"]["pass-through"]
    assert added["p99"] == pytest.approx(
        pipeline_loop["loop_ms"]["p99"] - limit_loop["loop_ms"]["p99"], abs=0.01
    )

    (light,) = result["latency_more"]
    assert light["offered_eps"] == pytest.approx(0.1 * pipeline["eps"], rel=0.01)
    # At least once: a rebalance during the run may replay a few predictions.
    observed = light["loops"]["pipeline"]["predictions_observed"]
    assert LATENCY_EVENTS <= observed <= 1.1 * LATENCY_EVENTS

    soak = result["soak"]
    assert soak["events"] == SOAK
    assert soak["rss_start_mb"] > 0 and soak["rss_end_mb"] > 0 and soak["samples"]

    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu_model"]
    assert result["versions"]["librdkafka"] and result["broker"]["kind"] in ("embedded", "external")
    # ratio, JSON vs Avro, in-loop and processor-added p99 at 50 % and at 10 %, memory
    assert len(result["targets"]) == 7, result["targets"]
    json.dumps(result)
    report = format_report(result)
    assert "pass-through limit" in report and "full pipeline" in report and "Soak" in report
    assert "full pipeline, JSON input" in report and "(10% of the pipeline's max)" in report
    if settings.kafka.is_embedded:
        assert report.count("the embedded broker's CPU, of one core: pass-through ") == 2
    snippet = markdown(result)
    assert snippet.startswith("Measured with `pytest`") and "| full pipeline |" in snippet


def test_a_stage_variant_of_a_side_path_not_built_is_one_line_naming_the_variants(
    stack_settings: Settings, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no streamscore.toml of the checkout is read
    env = stack_env(
        stack_settings,
        STREAMSCORE_MODELS__DIR=str(models_dir),
        STREAMSCORE_METRICS__ENABLED="false",
        STREAMSCORE_KAFKA__SESSION_TIMEOUT_MS="3000",
    )
    args = ["bench", "--events", "200", "--latency-events", "0", "--no-json-input",
            "--scale-workers", "0", "--no-cpu-profile", "--stage", "StoreWriter off"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    # A side path's name passes the check before the run (the processor is not built yet);
    # side paths run in a process by default, so the store's side path is StoreHandOver.
    assert "no stage variant 'StoreWriter off'; the variants are: " in line
    assert "'StoreHandOver off'" in line and "'decode off'" in line
