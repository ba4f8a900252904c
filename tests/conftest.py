"""Shared fixtures: reference models trained once, and a real broker + Redis.

Integration tests get the embedded stack (Tansu + Valkey) started once per
session on free ports in a temporary home, or an external Kafka / Redis when
``STREAMSCORE_TEST_KAFKA`` / ``STREAMSCORE_TEST_REDIS`` name one (for example
the Apache Kafka of ``docker-compose.kafka.yml``). Each test gets fresh topic
names and a fresh consumer group.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from schemas.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference champion and challenger bundles, trained once per session."""
    from models.train import ensure_reference_models

    folder = tmp_path_factory.mktemp("models")
    ensure_reference_models(folder)
    return folder


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running broker and Redis for the whole session."""
    from connectors.embedded import EmbeddedStack

    home = tmp_path_factory.mktemp("home")
    kafka = os.environ.get("STREAMSCORE_TEST_KAFKA")
    redis_url = os.environ.get("STREAMSCORE_TEST_REDIS")
    settings = Settings(
        home=home,
        kafka={
            "bootstrap_servers": kafka or f"127.0.0.1:{free_port()}",
            "embedded": kafka is None,
        },
        redis={
            "url": redis_url or f"redis://127.0.0.1:{free_port()}/0",
            "embedded": redis_url is None,
        },
        metrics={"enabled": False},
    )
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        yield settings
    finally:
        stack.down()


@pytest.fixture
def make_settings(stack_settings: Settings, models_dir: Path) -> Callable[..., Settings]:
    """Fresh topics and group per call, on the session's broker and Redis."""

    def make(**overrides: object) -> Settings:
        run = uuid.uuid4().hex[:8]
        topics = {role: f"t{run}.{name}" for role, name in stack_settings.topics.by_role().items()}
        data = stack_settings.model_dump()
        data["topics"] = {**data["topics"], **topics}
        data["processor"] = {
            **data["processor"],
            "group_id": f"g{run}",
            "commit_interval_ms": 100,
        }
        data["models"] = {"dir": models_dir}
        for key, value in overrides.items():
            if isinstance(value, dict):
                data[key] = {**data.get(key, {}), **value}
            else:
                data[key] = value
        return Settings(**data)

    return make
