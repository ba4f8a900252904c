"""The Faust app's broker credentials, per security protocol."""

from __future__ import annotations

import faust
import pytest

from schemas.errors import ConfigError
from schemas.settings import KafkaSettings
from streams.evaluation.app import broker_credentials
from streams.evaluation.options import EvaluatorOptions


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


def test_the_evaluator_reads_the_store_with_the_configured_ttl_and_buckets(tmp_path) -> None:
    from schemas.settings import ModelSettings, Settings
    from streams.evaluation.app import build_evaluator

    settings = Settings(
        home=tmp_path,
        models=ModelSettings(dir=tmp_path / "no-models"),
        store={"ttl_s": 120, "bucket_s": 15},
    )
    store = build_evaluator(settings, options=EvaluatorOptions(app_id="ttl")).evaluator.store
    assert (store.ttl_s, store.bucket_s) == (120, 15)
