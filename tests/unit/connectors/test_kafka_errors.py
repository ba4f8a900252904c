"""librdkafka's connection errors, said as one line with the cause and the setting.

The texts are librdkafka 2.x's own, as its error callback reported them against the
TLS listeners of tests/integration/test_tls.py and the SASL broker of test_sasl.py.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from connectors.kafka_errors import ConnectionErrors, describe_refusal
from schemas.settings import KafkaSettings

VERIFY_FAILED = (
    "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    "certificate verify failed: broker certificate could not be verified, verify that "
    "ssl.ca.location is correctly configured or root CA certificates are installed (install "
    "ca-certificates package) (after 5ms in state SSL_HANDSHAKE)"
)
CERT_REQUIRED = (
    "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert "
    "certificate required: SSL alert number 116 (after 0ms in state APIVERSION_QUERY)"
)
BAD_CLIENT_CERT = (
    "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A000413:SSL routines::ssl/tls alert "
    "unsupported certificate: SSL alert number 43 (after 16ms in state APIVERSION_QUERY)"
)
SCRAM_REFUSED = (
    "sasl_plaintext://127.0.0.1:1/bootstrap: SASL authentication error: SASL SCRAM "
    "authentication failed: broker responded with unknown-user (after 31ms in state AUTH_REQ)"
)

#: Port 1 on the loopback: nothing answers, so the verification is never tried again.
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", security_protocol="SSL")


def test_an_unverified_certificate_that_cannot_be_tried_again_says_so() -> None:
    message = describe_refusal(KafkaError(KafkaError._SSL, VERIFY_FAILED), KAFKA)
    assert message == (
        "the broker's TLS certificate did not verify (certificate verify failed); "
        "kafka.ssl_ca_location (STREAMSCORE_KAFKA__SSL_CA_LOCATION) must name the CA that "
        "signed the broker's certificate, and that certificate must name the host in "
        "kafka.bootstrap_servers"
    )


def test_mutual_tls_without_a_client_certificate() -> None:
    message = describe_refusal(KafkaError(KafkaError._TRANSPORT, CERT_REQUIRED), KAFKA)
    assert message == (
        "the broker requires a client certificate (mutual TLS) and none is configured; "
        "set kafka.ssl_certificate_location and kafka.ssl_key_location"
    )


def test_mutual_tls_with_a_certificate_the_broker_does_not_accept() -> None:
    kafka = KAFKA.model_copy(update={"ssl_certificate_location": "client.pem"})
    required = describe_refusal(KafkaError(KafkaError._TRANSPORT, CERT_REQUIRED), kafka)
    assert required == (
        "the broker requires a client certificate (mutual TLS) signed by a CA it trusts, "
        "and kafka.ssl_certificate_location holds none it accepts"
    )
    refused = describe_refusal(KafkaError(KafkaError._TRANSPORT, BAD_CLIENT_CERT), kafka)
    assert refused == (
        "the broker refused the client certificate (unsupported certificate); "
        "kafka.ssl_certificate_location and kafka.ssl_key_location must name a client "
        "certificate signed by a CA the broker trusts"
    )


def test_a_sasl_refusal_names_the_sasl_settings() -> None:
    message = describe_refusal(KafkaError(KafkaError._AUTHENTICATION, SCRAM_REFUSED), KAFKA)
    assert message == (
        "SASL authentication failed (SASL authentication error: SASL SCRAM authentication "
        "failed: broker responded with unknown-user); check kafka.sasl_mechanism, "
        "kafka.sasl_username and kafka.sasl_password"
    )


@pytest.mark.parametrize(
    "err",
    [None, KafkaError(KafkaError._TRANSPORT, "127.0.0.1:1/bootstrap: Connection refused")],
)
def test_anything_else_is_not_a_refusal(err: KafkaError | None) -> None:
    assert describe_refusal(err, KAFKA) is None


def test_the_callback_keeps_the_telling_error() -> None:
    errors = ConnectionErrors()
    errors(KafkaError(KafkaError._SSL, VERIFY_FAILED))
    errors(KafkaError(KafkaError._TRANSPORT, "certificate verify failed"))
    errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert errors.last is not None and errors.last.code() == KafkaError._SSL
