"""``streamscore bench-broker`` on a short run: every record read, every window reported.

Speeds are never asserted; the point is that the rows account for what was sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.kafka_admin import Admin
from schemas.settings import Settings
from streams.bench.broker import format_table, run_broker_bench
from streams.cli.main import app
from tests.integration.kafka_io import stack_env

pytestmark = pytest.mark.integration


def test_a_short_run_reads_every_record_and_reports_each_window(stack_settings: Settings) -> None:
    result = run_broker_bench(
        stack_settings, rate=400, seconds=3, linger_ms=5, fetch_wait_ms=20, partitions=2,
        window_s=1.0, command="streamscore bench-broker --rate 400 --seconds 3",
    )  # fmt: skip
    assert result["sent"] == 1200
    assert result["received"] == 1200
    rows = result["windows"]
    assert len(rows) >= 2
    assert sum(r["records"] for r in rows) <= 1200  # a last sliver is not a row
    assert [r["batches_stored"] for r in rows] == sorted(r["batches_stored"] for r in rows)
    # At least one batch per partition, and never more batches than records.
    assert 2 <= result["batches_stored"] <= 1200
    for row in rows:
        assert row["hop_ms"]["count"] == row["records"] > 0
        assert 0 < row["hop_ms"]["p50"] <= row["hop_ms"]["p99"]
        if stack_settings.kafka.is_embedded:
            assert row["broker_cpu_pct"] is not None and row["broker_cpu_pct"] >= 0
    table = format_table(result)
    assert "1,200 of 1,200 records read" in table
    assert table.count("\n| ") == len(rows) + 1  # the header and one line per window
    # The bench leaves no topic behind.
    assert result["topic"] not in Admin(stack_settings.kafka).topics()


def test_the_command_prints_the_table_and_writes_the_json(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no streamscore.toml of the checkout is read
    env = stack_env(stack_settings)
    out = tmp_path / "broker.json"
    args = ["bench-broker", "--rate", "200", "--seconds", "2", "--window", "1", "--partitions", "1"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "| t (s) | records | batches stored | broker CPU |" in result.output
    assert "400 of 400 records read" in result.output
    written = json.loads(out.read_text())
    assert written["sent"] == written["received"] == 400 and written["partitions"] == 1
