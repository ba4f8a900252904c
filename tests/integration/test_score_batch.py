"""score-batch on a real Dask LocalCluster, against the stream on the same rows.

One Parquet table of 50,000 sampled events (1 % spoilt) and a CSV copy of part of
it are scored on a LocalCluster of two workers; a sample of the same events is
sent through Kafka to a real processor. Predictions must be identical event for
event, and the rejected rows must carry the dead letters' reasons and messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer as PlainProducer

from connectors.kafka_admin import ensure_topics
from schemas.serde import AvroSerde
from schemas.settings import Settings
from streams.batch.driver import BatchJob, BatchSummary, run_batch
from streams.batch.output import OutputTarget
from streams.batch.partition import ENVELOPE
from streams.batch.payload import ModelPayload, champion_payload
from streams.batch.sample import write_sample
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import read_topic

pytestmark = [
    pytest.mark.integration,
    # dask's own Parquet reader, under pandas 3.1: not ours to fix.
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

ROWS = 50_000
STREAMED = 2_000
COMPARED = ("event_id", "sensor_id", "event_time", "model_name", "model_version", "variant")


#: The CSV row whose last feature (f9) is made a word.
WORD_ROW = 10


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    parquet = folder / "events.parquet"
    write_sample(str(parquet), ROWS, invalid_fraction=0.01, seed=21, row_group=10_000)
    head = pq.read_table(parquet).slice(0, 5_000)
    assert all(v not in (None, "") for v in head.slice(WORD_ROW, 1).to_pylist()[0].values())
    csv = folder / "events.csv"
    pa_csv.write_csv(head, csv)
    lines = csv.read_text().splitlines()
    line = WORD_ROW + 1  # after the header
    lines[line] = lines[line].rsplit(",", 1)[0] + ",not-a-number"
    csv.write_text("\n".join(lines) + "\n")
    return {"parquet": parquet, "csv": csv}


def _csv_parts(folder: Path) -> pa.Table:
    return pa.concat_tables(pa_csv.read_csv(p) for p in sorted(folder.glob("part-*.csv")))


@pytest.fixture(scope="module")
def payload(models_dir: Path) -> ModelPayload:
    return champion_payload(Settings(models={"dir": models_dir}))


@pytest.fixture(scope="module")
def parquet_run(
    tables: dict[str, Path], payload: ModelPayload, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BatchSummary, OutputTarget]:
    output = tmp_path_factory.mktemp("out") / "scores.parquet"
    job = BatchJob(str(tables["parquet"]), "parquet", OutputTarget.at(str(output)))
    summary = run_batch(job, payload, workers=2, processes=False, progress=False)
    return summary, job.target


def _by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {r["event_id"]: r for r in table.to_pylist()}


def test_every_row_is_scored_or_rejected_with_the_streams_reasons(
    tables: dict[str, Path], parquet_run: tuple[BatchSummary, OutputTarget]
) -> None:
    summary, target = parquet_run
    assert summary.workers == 2 and summary.chunks == 5  # one partition per row group
    assert summary.rows == ROWS == summary.predictions + summary.rejected
    predictions = pq.read_table(target.predictions)
    rejected = pq.read_table(target.rejected)
    assert predictions.num_rows == summary.predictions
    assert rejected.num_rows == summary.rejected
    assert 350 < summary.rejected < 650
    assert Counter(rejected.column("reason").to_pylist()) == summary.rejected_by_reason
    assert set(summary.rejected_by_reason) == {
        "MissingFeature",
        "NonFiniteValue",
        "OutOfRange",
        "InvalidField",
    }
    # Every input event id once, on one side or the other.
    source_ids = pq.read_table(tables["parquet"], columns=["event_id"]).column(0).to_pylist()
    out_ids = predictions.column("event_id").to_pylist() + rejected.column("event_id").to_pylist()
    assert Counter(out_ids) == Counter(source_ids)


def test_predictions_and_dead_letters_equal_the_streams(
    make_settings, tables: dict[str, Path], parquet_run: tuple[BatchSummary, OutputTarget]
) -> None:
    """A sample of the same events through Kafka and a real processor (JSON input: tables
    are checked the way the stream checks untyped events)."""
    _, target = parquet_run
    settings = make_settings(formats={"events": "json"})
    ensure_topics(settings)
    sample = pq.read_table(tables["parquet"]).slice(0, STREAMED).to_pylist()
    producer = PlainProducer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for row in sample:
        features = {k: v for k, v in row.items() if k not in ENVELOPE and v is not None}
        event = {**{k: row[k] for k in ENVELOPE}, "features": features}
        producer.produce(settings.topics.events, json.dumps(event).encode(), row["sensor_id"])
    producer.flush(30)

    summary = run_processor(settings, exit_when_idle=2)

    assert summary["events_in"] == STREAMED
    batch_predictions = _by_id(pq.read_table(target.predictions))
    batch_rejected = pq.read_table(target.rejected).to_pylist()
    streamed = [
        AvroSerde("prediction").decode(r.value)
        for r in read_topic(settings, settings.topics.predictions, summary["predictions"])
    ]
    assert len(streamed) == summary["predictions"] > 0.95 * STREAMED
    for record in streamed:
        batch = batch_predictions[record["event_id"]]
        assert {k: batch[k] for k in COMPARED} == {k: record[k] for k in COMPARED}
        assert batch["score"] == record["score"]
        assert batch["predicted_label"] == record["predicted_label"]
        assert dict(batch["probabilities"]) == record["probabilities"]
    dead = read_topic(settings, settings.topics.dlq, STREAMED - len(streamed))
    sample_ids = {row["event_id"] for row in sample}
    in_sample = [r for r in batch_rejected if r["chunk"] == 0 and r["row"] < STREAMED]
    assert {r["event_id"] for r in in_sample} <= sample_ids
    header = "__connect.errors."

    def verdict(headers: dict[str, bytes], name: str) -> str:
        return headers[header + name].decode()

    assert Counter(
        (
            json.loads(d.value)["event_id"],
            verdict(d.headers, "stage"),
            verdict(d.headers, "exception.class.name"),
            verdict(d.headers, "exception.message"),
        )
        for d in dead
    ) == Counter((r["event_id"], r["stage"], r["reason"], r["message"]) for r in in_sample)


def test_csv_scores_like_parquet_through_the_command(
    tables: dict[str, Path],
    parquet_run: tuple[BatchSummary, OutputTarget],
    models_dir: Path,
    tmp_path: Path,
) -> None:
    """The real command, its own LocalCluster of worker processes, CSV in and out."""
    _, target = parquet_run
    output = tmp_path / "scores.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "score-batch",
            str(tables["csv"]),
            "-o",
            str(output),
            "--champion",
            str(models_dir / "champion"),
            "--workers",
            "1",
            "--json",
        ],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert summary["rows"] == 5_000 == summary["predictions"] + summary["rejected"]
    from_csv = _by_id(_csv_parts(output))
    from_parquet = _by_id(pq.read_table(target.predictions))
    assert len(from_csv) == summary["predictions"]
    for event_id, row in from_csv.items():
        batch = from_parquet[event_id]
        assert row["score"] == batch["score"]
        assert str(row["predicted_label"]) == batch["predicted_label"]
        assert json.loads(row["probabilities"]) == dict(batch["probabilities"])
    rejected = _csv_parts(tmp_path / "scores.rejected.csv").to_pylist()
    assert len(rejected) == summary["rejected"]
    word = [r for r in rejected if r["reason"] == "NonNumericFeature"]
    assert [(r["row"], r["message"]) for r in word] == [
        (WORD_ROW, "feature f9 is not a number: 'not-a-number'")
    ]
    assert f"batch-{WORD_ROW}" not in from_csv and f"batch-{WORD_ROW}" in from_parquet
