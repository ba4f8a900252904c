"""The Faust app's broker credentials, per security protocol."""

from __future__ import annotations

import faust
import pytest

from schemas.errors import ConfigError
from schemas.settings import KafkaSettings
from streams.evaluation.app import broker_credentials


def test_broker_credentials_follow_the_security_protocol() -> None:
    assert broker_credentials(KafkaSettings()) is None
    sasl = broker_credentials(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="eval",
            sasl_password="secret",  # type: ignore[arg-type]
        )
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == (
        "eval", "secret", "SCRAM-SHA-256",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="sasl_username"):
        broker_credentials(KafkaSettings(security_protocol="SASL_SSL"))
