"""SASL against the embedded broker with ``--authentication``: what can be proven here.

Tansu 0.6.0 with ``--authentication`` requires SASL before any other request, offers
SCRAM-SHA-256 and SCRAM-SHA-512 and refuses PLAIN (its SASL library was built without
it: "no shared mechanism"). A successful login cannot be shown with this build:

* users are provisioned with ``tansu user create``, which sends AlterUserScramCredentials
  *to the broker*, unauthenticated, so a broker that requires authentication refuses it;
* the only storage engine compiled in (``dynostore``: ``memory://`` and ``s3://``) stores
  no SCRAM credential at all: its ``upsert_user_scram_credential`` does nothing and its
  lookup returns none, so even a second, open broker on a shared S3 bucket (tried, with
  ``moto[server]``) creates users that the authenticating broker never finds.

What *is* shown: each client sends the configured mechanism and user through the whole
SCRAM exchange (the broker answers "unknown-user" at its end, which it can only do once
it has read the client's user name and proof), over plain TCP and inside TLS; the
refusal is one line that names SASL and the settings to check; the password appears in
no message and no log line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from connectors.kafka_admin import Admin, require_broker
from schemas.errors import InfrastructureError
from schemas.settings import KafkaSettings
from tests.integration.tls_support import (
    Pki,
    Server,
    Tunnel,
    free_port,
    make_pki,
    start_stunnel,
    start_tansu,
    stunnel_binary,
)

pytestmark = pytest.mark.integration

PASSWORD = f"sasl-pw-{uuid.uuid4().hex}"


@dataclass
class AuthBroker:
    port: int
    #: stunnel in front of the same broker, for SASL_SSL.
    tls_port: int
    pki: Pki


@pytest.fixture(scope="session")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthBroker]:
    stunnel_binary()
    folder = tmp_path_factory.mktemp("sasl")
    pki = make_pki(folder / "pki", client_key_password=uuid.uuid4().hex)
    tls_port = free_port()
    servers: list[Server] = []
    try:
        broker = start_tansu(folder, "tansu-auth", advertised_port=tls_port, authentication=True)
        servers.append(broker)
        tunnel = Tunnel("kafka-sasl-ssl", tls_port, broker.port, pki.server_cert, pki.server_key)
        servers.append(start_stunnel(folder, [tunnel]))
        yield AuthBroker(broker.port, tls_port, pki)
    finally:
        for server in reversed(servers):
            server.stop()


def refused(kafka: KafkaSettings) -> str:
    with pytest.raises(InfrastructureError) as caught:
        require_broker(kafka, timeout=10)
    message = str(caught.value)
    assert "\n" not in message and PASSWORD not in message
    return message


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_scram_runs_to_the_broker_verdict_and_the_refusal_is_one_line(
    auth_broker: AuthBroker, mechanism: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    tls = protocol == "SASL_SSL"
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{auth_broker.tls_port if tls else auth_broker.port}",
        embedded=False,
        security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism,
        sasl_username="streamscore",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
        ssl_ca_location=str(auth_broker.pki.ca) if tls else None,
    )
    message = refused(kafka)
    assert "refused the connection: SASL authentication failed" in message
    assert "unknown-user" in message  # the broker's answer to the client's final SCRAM message
    assert "kafka.sasl_password" in message
    assert PASSWORD not in caplog.text


def test_plain_is_refused_by_the_embedded_broker_naming_sasl(auth_broker: AuthBroker) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{auth_broker.port}",
        embedded=False,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="streamscore",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
    )
    message = refused(kafka)
    assert "SASL authentication failed" in message and "PLAIN" in message


def test_a_client_without_sasl_gets_nothing_from_an_authenticating_broker(
    auth_broker: AuthBroker,
) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{auth_broker.port}", embedded=False)
    assert not Admin(kafka, quiet=True).reachable(timeout=3)
