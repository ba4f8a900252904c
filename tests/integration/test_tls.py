"""Every client of streamscore over TLS with CA verification, and over mutual TLS.

Two Tansu brokers sit behind stunnel (see ``tls_support``): one behind a TLS listener
(``tls``), one behind a listener that also requires a client certificate (``mtls``);
each advertises its stunnel address, so no client ever reaches a broker in clear. A
third listener serves a certificate naming another host. Valkey, with a password, sits
behind two more (``rediss://``, with and without a client certificate).

Through each of ``tls`` and ``mtls``: the producer (``run_source``) publishes events and
their labels, the processor (``run_processor``) scores them and stores its predictions in
Redis, ``group_lag`` reads the group's lag through the admin API, and ``streamscore
evaluate`` (Faust / aiokafka, with ``broker_credentials``) joins the labels with the
stored predictions. Refusals: a CA that did not sign the broker's certificate, a
certificate for another host, no client certificate, a client certificate from an
untrusted CA, and the same for Redis, each one line naming the cause and no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from prometheus_client import generate_latest

import streams.scoring.compose as compose
from connectors.kafka_admin import require_broker
from connectors.lag import group_lag
from connectors.redis_store import PredictionStore, StoreUnavailable, ping
from connectors.source import SourceOptions, run_source
from schemas.errors import InfrastructureError
from schemas.settings import RedisSettings, Settings
from streams.ops.metrics import Metrics
from streams.scoring.compose import run_processor
from tests.integration.kafka_io import read_topic
from tests.integration.tls_support import (
    Pki,
    Server,
    Tunnel,
    free_port,
    make_pki,
    start_stunnel,
    start_tansu,
    start_valkey,
    stunnel_binary,
)

pytestmark = pytest.mark.integration

Mode = Literal["tls", "mtls"]
#: Recognisable secrets: none may appear in an error message or a log.
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"
KEY_PASSWORD = f"key-pw-{uuid.uuid4().hex}"


@dataclass
class SecureStack:
    pki: Pki
    home: Path
    #: stunnel ports: Kafka per mode, a Kafka listener with a wrong-host certificate, Redis.
    kafka: dict[str, int]
    wrong_host: int
    redis: dict[str, int]


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    stunnel_binary()  # skips, with the reason, before anything starts
    home = tmp_path_factory.mktemp("tls")
    pki = make_pki(home / "pki", client_key_password=KEY_PASSWORD)
    kafka = {"tls": free_port(), "mtls": free_port()}
    redis_ports = {"tls": free_port(), "mtls": free_port()}
    wrong_host = free_port()
    servers: list[Server] = []
    try:
        brokers = {
            mode: start_tansu(home, f"tansu-{mode}", advertised_port=kafka[mode]) for mode in kafka
        }
        servers += brokers.values()
        valkey = start_valkey(home, password=REDIS_PASSWORD)
        servers.append(valkey)
        cert, key = pki.server_cert, pki.server_key
        tunnels = [
            Tunnel("kafka-tls", kafka["tls"], brokers["tls"].port, cert, key),
            Tunnel("kafka-mtls", kafka["mtls"], brokers["mtls"].port, cert, key, pki.ca),
            Tunnel("kafka-wrong-host", wrong_host, brokers["tls"].port,
                   pki.wrong_host_cert, pki.wrong_host_key),
            Tunnel("redis-tls", redis_ports["tls"], valkey.port, cert, key),
            Tunnel("redis-mtls", redis_ports["mtls"], valkey.port, cert, key, pki.ca),
        ]  # fmt: skip
        servers.append(start_stunnel(home, tunnels))
        yield SecureStack(pki, home, kafka, wrong_host, redis_ports)
    finally:
        for server in reversed(servers):
            server.stop()


def secure_settings(
    stack: SecureStack, mode: Mode, models_dir: Path, *, kafka_port: int | None = None, **kafka: Any
) -> Settings:
    """Settings for ``mode`` with fresh topics and group; ``kafka`` overrides security fields."""
    run = uuid.uuid4().hex[:8]
    pki = stack.pki
    kafka_fields: dict[str, Any] = {
        "bootstrap_servers": f"127.0.0.1:{kafka_port or stack.kafka[mode]}",
        "embedded": False,
        "security_protocol": "SSL",
        "ssl_ca_location": str(pki.ca),
    }
    redis_fields: dict[str, Any] = {
        "url": f"rediss://127.0.0.1:{stack.redis[mode]}/0",
        "embedded": False,
        "password": REDIS_PASSWORD,
        "ssl_ca_location": str(pki.ca),
    }
    if mode == "mtls":
        kafka_fields |= {
            "ssl_certificate_location": str(pki.client_cert),
            "ssl_key_location": str(pki.client_key),
            "ssl_key_password": pki.client_key_password,
        }
        redis_fields |= {
            "ssl_certfile": str(pki.client_cert),
            "ssl_keyfile": str(pki.client_key_plain),
        }
    return Settings(
        home=stack.home / f"home-{run}",
        kafka=kafka_fields | kafka,
        redis=redis_fields,
        topics={role: f"{mode}{run}.{name}" for role, name in Settings().topics.by_role().items()},
        processor={"group_id": f"g{run}", "commit_interval_ms": 100},
        models={"dir": models_dir},
        metrics={"enabled": False},
    )


def environment(settings: Settings) -> dict[str, str]:
    """The settings as ``STREAMSCORE_*`` variables, for a ``streamscore`` subprocess."""
    values: dict[str, str] = {"STREAMSCORE_HOME": str(settings.home)}
    for section in ("kafka", "redis", "topics", "models", "metrics"):
        for name, value in getattr(settings, section).model_dump().items():
            if value is None or isinstance(value, dict):
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            values[f"STREAMSCORE_{section.upper()}__{name.upper()}"] = str(value)
    return {**os.environ, **values}


def evaluate(settings: Settings) -> dict[str, Any]:
    """``streamscore evaluate`` until idle; its JSON summary."""
    settings.home.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "streams", "evaluate",
        "--app-id", f"{settings.processor.group_id}-evaluator",
        "--emit-interval", "0.5", "--exit-when-idle", "2", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=environment(settings), cwd=settings.home, capture_output=True, timeout=120
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    assert REDIS_PASSWORD not in output and KEY_PASSWORD not in output
    summary: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return summary


# -- every client, through each listener ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["tls", "mtls"])
def test_every_client_works_over_tls(
    secure_stack: SecureStack,
    models_dir: Path,
    mode: Mode,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = secure_settings(secure_stack, mode, models_dir)
    n = 300
    options = SourceOptions(count=n, seed=3, run_id=f"{mode}-{uuid.uuid4().hex[:6]}")

    report = run_source(settings, options, keep_ids=True, labels_after_s=0.0)  # producer
    assert (report.valid, report.labels) == (n, n)

    made: list[Metrics] = []  # the processor's metrics, read after the run

    class Recorded(Metrics):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(compose, "Metrics", Recorded)
    summary = run_processor(settings, exit_when_idle=1.5)  # consumer, producer, admin, Redis
    assert (summary["events_in"], summary["predictions"]) == (n, n)
    assert len(read_topic(settings, settings.topics.predictions, n)) == n

    lag = group_lag(settings.kafka, settings.processor.group_id, [settings.topics.events])
    assert lag and all(p.committed is not None for p in lag)
    assert sum(p.lag for p in lag) == 0

    store = PredictionStore(settings.redis)  # rediss://, the processor's writes read back
    stored = store.get_many(report.valid_ids[:20], ["champion"])
    assert all("champion" in entry for entry in stored)

    result = evaluate(settings)  # Faust over TLS (and mTLS), Redis over TLS
    assert result["outcomes"].get("received") == n
    assert result["outcomes"].get("missing", 0) == 0

    exposition = generate_latest(made[0].registry).decode()  # metric names and labels
    for shown in (caplog.text, exposition):
        assert REDIS_PASSWORD not in shown and KEY_PASSWORD not in shown


# -- refusals ----------------------------------------------------------------------------------


def refusal(settings: Settings) -> str:
    """The one-line error ``require_broker`` (what every command calls first) raises."""
    with pytest.raises(InfrastructureError) as caught:
        require_broker(settings.kafka, timeout=10)
    message = str(caught.value)
    assert "\n" not in message
    assert REDIS_PASSWORD not in message and KEY_PASSWORD not in message
    return message


def test_a_ca_that_did_not_sign_the_broker_certificate_is_refused(
    secure_stack: SecureStack, models_dir: Path
) -> None:
    other_ca = str(secure_stack.pki.other_ca)
    message = refusal(secure_settings(secure_stack, "tls", models_dir, ssl_ca_location=other_ca))
    assert "refused the connection" in message
    assert "signed by a CA that kafka.ssl_ca_location does not hold" in message
    with pytest.raises(InfrastructureError, match="signed by a CA"):  # the producer says so too
        run_source(
            secure_settings(secure_stack, "tls", models_dir, ssl_ca_location=other_ca),
            SourceOptions(count=1),
        )


def test_a_certificate_for_another_host_is_refused(
    secure_stack: SecureStack, models_dir: Path
) -> None:
    settings = secure_settings(secure_stack, "tls", models_dir, kafka_port=secure_stack.wrong_host)
    message = refusal(settings)
    assert "does not name 127.0.0.1" in message
    assert "mismatch" in message  # OpenSSL's own words, after ours


def test_mutual_tls_refuses_a_client_without_a_certificate(
    secure_stack: SecureStack, models_dir: Path
) -> None:
    message = refusal(
        secure_settings(secure_stack, "tls", models_dir, kafka_port=secure_stack.kafka["mtls"])
    )
    assert "requires a client certificate" in message
    assert "kafka.ssl_certificate_location" in message


def test_mutual_tls_refuses_a_certificate_from_an_untrusted_ca(
    secure_stack: SecureStack, models_dir: Path
) -> None:
    pki = secure_stack.pki
    settings = secure_settings(
        secure_stack,
        "tls",
        models_dir,
        kafka_port=secure_stack.kafka["mtls"],
        ssl_certificate_location=str(pki.rogue_client_cert),
        ssl_key_location=str(pki.rogue_client_key),
    )
    message = refusal(settings)
    assert "client certificate" in message and "signed by a CA it trusts" in message


def test_rediss_refuses_a_wrong_ca_and_a_wrong_password_in_one_line(
    secure_stack: SecureStack, models_dir: Path
) -> None:
    settings = secure_settings(secure_stack, "tls", models_dir)
    assert ping(settings.redis)
    wrong_ca = settings.redis.model_copy(update={"ssl_ca_location": str(secure_stack.pki.other_ca)})
    assert not ping(wrong_ca)
    with pytest.raises(StoreUnavailable) as caught:
        PredictionStore(wrong_ca).put_batch("champion", "1", ["e1"], ["ok"], [0.5])
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) and "\n" not in str(caught.value)

    no_client_cert = settings.redis.model_copy(
        update={"url": f"rediss://127.0.0.1:{secure_stack.redis['mtls']}/0"}
    )
    assert not ping(no_client_cert)

    # A password in the URL is moved out of it; the server's refusal never repeats it.
    url = f"rediss://:not-the-password@127.0.0.1:{secure_stack.redis['tls']}/0"
    fields = settings.redis.model_dump() | {"url": url, "password": None}
    wrong_password = RedisSettings(**fields)
    assert "not-the-password" not in wrong_password.url
    with pytest.raises(StoreUnavailable) as caught:
        PredictionStore(wrong_password).put_batch("champion", "1", ["e1"], ["ok"], [0.5])
    message = str(caught.value)
    assert "not-the-password" not in message and REDIS_PASSWORD not in message
    assert "\n" not in message
