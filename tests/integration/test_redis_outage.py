"""A real Redis stops and comes back: every prediction written meanwhile reaches it, 0 lost.

The test starts a Redis of its own (the binary the embedded stack uses,
``connectors.embedded.redis_binary``) on a free port, so stopping it touches
nothing the session's other tests use. Unlike the embedded stack's Redis it
keeps an append-only file (fsync on every write) in ``tmp_path``: what was
written before the stop must still be there after the restart, so that "every
event id is in the store" is a statement about the backlog, not about what a
restart forgets. No broker is needed: the writer is fed as the loop feeds it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from connectors.embedded import port_open, redis_binary
from connectors.redis_store import PredictionStore, ping
from schemas.settings import RedisSettings
from streams.ops.metrics import Health, Metrics
from streams.scoring.store_writer import StoreWriter
from tests.conftest import free_port

pytestmark = pytest.mark.integration

#: Events per batch; batches before, during and after the outage.
N = 50
VERSION = "3"


class PrivateRedis:
    """One Redis server process, persistent in ``folder``, restartable on the same port."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.settings = RedisSettings(url=f"redis://127.0.0.1:{port}/0", embedded=False)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        command = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--dir", str(self.folder),
        ]  # fmt: skip
        with open(self.folder / "redis.log", "ab") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not (port_open("127.0.0.1", self.port) and ping(self.settings)):
            if self._proc.poll() is not None:
                log_text = (self.folder / "redis.log").read_text(errors="replace")
                raise AssertionError(f"redis exited with {self._proc.returncode}:\n{log_text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"redis not ready on port {self.port} after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, as an operator's restart would; SIGKILL if it does not go in time."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)
        self._proc = None
        assert not ping(self.settings, timeout=0.2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, free_port())
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


def batch_ids(batch: int) -> list[str]:
    return [f"outage-{batch:03d}-{i:03d}" for i in range(N)]


def write(writer: StoreWriter, batch: int, variant: str = "champion") -> None:
    ids = batch_ids(batch)
    labels: list[str | None] = [str(i % 2) for i in range(N)]
    writer.put_batch(variant, VERSION, ids, labels, [i / N for i in range(N)])
    assert writer.worker.drain(10.0), "the store writer did not catch up within 10 s"


def test_predictions_written_while_redis_is_down_are_stored_when_it_returns(
    redis_server: PrivateRedis,
) -> None:
    metrics, health = Metrics(CollectorRegistry()), Health()
    store = PredictionStore(redis_server.settings)
    writer = StoreWriter(store, metrics, health, max_pending=64)
    try:
        for batch in range(3):
            write(writer, batch)
        assert writer.backlog.events == 0

        redis_server.stop()
        for batch in range(3, 8):
            write(writer, batch)
        write(writer, 8, "challenger")
        assert writer.backlog.events == 6 * N
        assert writer.gap_events == 0
        assert (
            metrics.registry.get_sample_value("streamscore_prediction_store_backlog_events")
            == 6 * N
        )
        assert "300 predictions waiting" in health.problems["redis"]

        redis_server.start()
        write(writer, 9)  # the next batch after Redis returns carries the backlog with it
        assert writer.backlog.events == 0
        assert writer.replayed_events == 6 * N
        assert "redis" not in health.problems
    finally:
        writer.close()

    champion_ids = [e for batch in [*range(8), 9] for e in batch_ids(batch)]
    stored = store.get_many(champion_ids, ["champion"])
    missing = [e for e, entry in zip(champion_ids, stored, strict=True) if "champion" not in entry]
    assert missing == []
    assert {entry["champion"].model_version for entry in stored} == {VERSION}
    assert stored[0]["champion"].label == "0" and stored[1]["champion"].label == "1"
    challenger = store.get_many(batch_ids(8), ["challenger"])
    assert all("challenger" in entry for entry in challenger)
    assert writer.gap_events == 0
    assert metrics.registry.get_sample_value("streamscore_prediction_store_gap_events_total") == 0
    assert writer.report()["prediction_store"]["gap_events_by_variant"] == {}
