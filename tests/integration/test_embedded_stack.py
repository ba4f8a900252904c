"""The embedded stack: real Tansu and Valkey processes on free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connectors.embedded import EmbeddedStack, port_open
from connectors.kafka_admin import Admin
from connectors.redis_store import ping
from schemas.errors import StackError
from schemas.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _settings(home: Path, kafka_port: int, redis_port: int, **extra: object) -> Settings:
    return Settings(
        home=home,
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}", "embedded": True},
        redis={"url": f"redis://127.0.0.1:{redis_port}/0", "embedded": True},
        **extra,
    )


def test_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    settings = _settings(tmp_path, free_port(), free_port())
    stack = EmbeddedStack(settings)
    try:
        first = {s.name: s for s in stack.up()}
        assert {s.state for s in first.values()} == {"started"}
        assert Admin(settings.kafka).reachable() and ping(settings.redis)
        again = {s.name: s for s in stack.up()}
        assert {s.state for s in again.values()} == {"running"}
        assert {n: s.pid for n, s in again.items()} == {n: s.pid for n, s in first.items()}
        assert {s.name: s.state for s in stack.status()} == {"kafka": "running", "redis": "running"}
        assert (tmp_path / "run" / "kafka.pid").is_file()
        assert (tmp_path / "run" / "kafka.log").is_file()
    finally:
        down = stack.down()
    assert {s.state for s in down} == {"stopped"}
    assert not port_open("127.0.0.1", settings.kafka.port)
    assert not port_open("127.0.0.1", settings.redis.port)
    assert {s.name: s.state for s in stack.status()} == {"kafka": "stopped", "redis": "stopped"}


def test_a_taken_port_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        stack = EmbeddedStack(_settings(tmp_path, taken, free_port()))
        with pytest.raises(StackError, match=f"port {taken} is taken by another process"):
            stack.up()
        assert {s.name: s.state for s in stack.status()}["kafka"] == "foreign"


def test_external_services_are_never_started(tmp_path: Path) -> None:
    kafka_port, redis_port = free_port(), free_port()
    settings = Settings(
        home=tmp_path,
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka_port}"},
        redis={"url": f"redis://127.0.0.1:{redis_port}/0"},
    )
    assert not settings.kafka.is_embedded and not settings.redis.is_embedded
    rows = EmbeddedStack(settings).up()
    assert {s.state for s in rows} == {"external"}
    assert not port_open("127.0.0.1", kafka_port)
    assert not (tmp_path / "run" / "kafka.pid").exists()
