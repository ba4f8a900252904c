"""Where a batch job writes, the champion it ships, and the command's one-line errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.batch.output import OutputTarget, format_of, rejected_url
from streams.batch.partition import PREDICTION_SCHEMA, REJECTED_SCHEMA, ScoredPartition
from streams.batch.payload import champion_payload
from streams.batch.sample import sample_slices
from streams.cli.main import app


@pytest.mark.parametrize(
    ("output", "rejected"),
    [
        ("out/scores.parquet", "out/scores.rejected.parquet"),
        ("/data/scores.csv", "/data/scores.rejected.csv"),
        ("s3://bucket/run-1/scores.parquet/", "s3://bucket/run-1/scores.rejected.parquet"),
        ("scores", "scores.rejected"),
        ("memory://x/my.scores.pq", "memory://x/my.scores.rejected.pq"),
    ],
)
def test_rejected_rows_go_beside_the_output(output: str, rejected: str) -> None:
    assert rejected_url(output) == rejected


def test_the_format_follows_the_suffix_unless_given() -> None:
    assert format_of("a/b.csv", None) == "csv"
    assert format_of("s3://a/b.parquet", None) == "parquet"
    assert format_of("a/folder", None) == "parquet"
    assert format_of("a/b.csv", "parquet") == "parquet"
    with pytest.raises(ConfigError, match="unknown table format 'orc'"):
        format_of("a/b", "orc")


def _scored() -> ScoredPartition:
    predictions = pa.Table.from_pylist(
        [
            {
                "event_id": "e-1",
                "sensor_id": "s",
                "event_time": 1,
                "model_name": "m",
                "model_version": "2",
                "variant": "champion",
                "predicted_label": "1",
                "score": 0.75,
                "probabilities": [("0", 0.25), ("1", 0.75)],
                "processed_at": 3,
            }
        ],
        schema=PREDICTION_SCHEMA,
    )
    return ScoredPartition(predictions, REJECTED_SCHEMA.empty_table())


def test_parts_are_written_per_chunk_and_an_existing_output_is_refused(tmp_path: Path) -> None:
    target = OutputTarget.at(str(tmp_path / "scores.parquet"))
    target.prepare(overwrite=False)
    target.write(_scored(), 7)
    assert sorted(p.name for p in (tmp_path / "scores.parquet").iterdir()) == ["part-00007.parquet"]
    assert not (tmp_path / "scores.rejected.parquet").exists()  # nothing was rejected
    table = pq.read_table(tmp_path / "scores.parquet")
    assert table.column("probabilities").to_pylist() == [[("0", 0.25), ("1", 0.75)]]
    with pytest.raises(ConfigError, match="already exists; choose another --output"):
        target.prepare(overwrite=False)
    target.prepare(overwrite=True)
    assert list((tmp_path / "scores.parquet").iterdir()) == []


def test_csv_parts_hold_probabilities_as_json(tmp_path: Path) -> None:
    target = OutputTarget.at(str(tmp_path / "scores.csv"))
    target.prepare(overwrite=False)
    target.write(_scored(), 0)
    table = pa_csv.read_csv(tmp_path / "scores.csv" / "part-00000.csv")
    assert json.loads(table.column("probabilities")[0].as_py()) == {"0": 0.25, "1": 0.75}
    assert table.column("score").to_pylist() == [0.75]


def test_the_champion_ships_as_bytes_and_is_built_once_per_process(models_dir: Path) -> None:
    payload = champion_payload(Settings(models={"dir": models_dir}))
    shipped = pickle.loads(pickle.dumps(payload))
    assert shipped.digest == payload.digest and shipped.version == payload.version
    model = shipped.serving()
    assert shipped.serving() is model and payload.serving() is model
    row = np.zeros((1, len(model.feature_names)))
    assert model.model.predict(row).score.shape == (1,)


def test_no_champion_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no usable champion"):
        champion_payload(Settings(models={"dir": tmp_path}))


def test_the_sample_spoils_the_asked_share_of_rows() -> None:
    table = pa.concat_tables(sample_slices(20_000, invalid_fraction=0.05, row_group=7_000))
    assert table.num_rows == 20_000
    assert table.column("event_id").to_pylist()[:2] == ["batch-0", "batch-1"]
    nulls = sum(table.column(f"f{j}").null_count for j in range(1, 10))
    empty_ids = table.column("event_id").to_pylist().count("")
    assert 150 < nulls < 350 and 150 < empty_ids < 350  # a quarter of 5 % each


def test_score_batch_names_a_missing_input_and_exits_2(models_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "score-batch",
            str(tmp_path / "nothing.parquet"),
            "-o",
            str(tmp_path / "out.parquet"),
            "--champion",
            str(models_dir / "champion"),
        ],
    )
    assert result.exit_code == 2
    assert "no file matches" in result.output and "nothing.parquet" in result.output


def test_score_batch_names_missing_columns_and_exits_2(models_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("event_id,sensor_id,f1\na,b,1\n")
    result = CliRunner().invoke(
        app,
        [
            "score-batch",
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "out.parquet"),
            "--champion",
            str(models_dir / "champion"),
        ],
    )
    assert result.exit_code == 2
    assert "has no column(s) event_time, f2" in result.output
