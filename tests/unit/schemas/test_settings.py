"""Settings: defaults < streamscore.toml < STREAMSCORE_* environment < init (CLI) overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from schemas.settings import (
    EMBEDDED_KAFKA,
    EMBEDDED_REDIS,
    KafkaSettings,
    RedisSettings,
    Settings,
    load_settings,
)

TOML = """
log_level = "WARNING"

[kafka]
bootstrap_servers = "toml-broker:9092"
sasl_username = "toml-user"
security_protocol = "SASL_SSL"

[kafka.client_config]
"enable.idempotence" = "true"

[processor]
max_batch = 10
max_wait_ms = 7
commit_interval_ms = 300

[topics]
events = "toml.events"
"""


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no STREAMSCORE_* variables from the outside."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMSCORE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean: Path) -> None:
    s = Settings()
    assert s.kafka.bootstrap_servers == EMBEDDED_KAFKA
    assert s.redis.url == EMBEDDED_REDIS
    assert s.topics.by_role() == {
        "events": "sensor.events",
        "predictions": "sensor.predictions",
        "audit": "sensor.audit",
        "dlq": "sensor.dlq",
        "shadow": "sensor.shadow",
        "drift": "sensor.drift",
        "labels": "sensor.labels",
        "evaluation": "sensor.evaluation",
    }
    assert s.formats.events == "avro"
    assert (s.processor.max_batch, s.processor.max_wait_ms) == (1000, 50)
    assert s.processor.max_message_bytes == 65_536
    assert s.metrics.port == 9108
    assert s.log_level == "INFO"
    assert s.models.champion_path == Path(".streamscore/models/champion")


def test_toml_then_environment_then_init_overrides(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean / "streamscore.toml").write_text(TOML, encoding="utf-8")

    from_file = Settings()
    assert from_file.kafka.bootstrap_servers == "toml-broker:9092"
    assert from_file.processor.max_batch == 10
    assert from_file.log_level == "WARNING"

    monkeypatch.setenv("STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9093")
    monkeypatch.setenv("STREAMSCORE_PROCESSOR__MAX_BATCH", "20")
    monkeypatch.setenv("STREAMSCORE_LOG_LEVEL", "ERROR")
    from_env = Settings()
    assert from_env.kafka.bootstrap_servers == "env-broker:9093"
    assert from_env.processor.max_batch == 20
    assert from_env.log_level == "ERROR"
    # fields the environment does not name keep the file's values (nested merge)
    assert from_env.kafka.sasl_username == "toml-user"
    assert from_env.processor.max_wait_ms == 7
    assert from_env.topics.events == "toml.events"

    flags = Settings(kafka={"bootstrap_servers": "cli-broker:9094"}, processor={"max_batch": 30})
    assert flags.kafka.bootstrap_servers == "cli-broker:9094"
    assert flags.processor.max_batch == 30
    assert flags.log_level == "ERROR"  # environment, not overridden by a flag
    assert flags.kafka.sasl_username == "toml-user"
    assert flags.kafka.security_protocol == "SASL_SSL"
    assert flags.processor.max_wait_ms == 7
    assert flags.processor.commit_interval_ms == 300
    assert flags.topics.events == "toml.events"
    # untouched by anyone: the defaults
    assert flags.topics.predictions == "sensor.predictions"
    assert flags.processor.max_message_bytes == 65_536


def test_load_settings_reads_a_named_config_file(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = clean / "elsewhere" / "prod.toml"
    config.parent.mkdir()
    config.write_text(TOML, encoding="utf-8")
    (clean / "streamscore.toml").write_text('log_level = "DEBUG"\n', encoding="utf-8")

    s = load_settings(config)
    assert s.kafka.bootstrap_servers == "toml-broker:9092"
    assert s.log_level == "WARNING"  # the named file, not ./streamscore.toml

    monkeypatch.setenv("STREAMSCORE_PROCESSOR__MAX_WAIT_MS", "70")
    s = load_settings(config, processor={"max_batch": 40})
    assert (s.processor.max_batch, s.processor.max_wait_ms) == (40, 70)
    assert isinstance(s, Settings)

    assert load_settings().log_level == "DEBUG"  # no file named: ./streamscore.toml


def test_environment_values_are_validated(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_FORMATS__EVENTS", "protobuf")
    with pytest.raises(ValidationError, match=r"formats\.events"):
        Settings()


def test_unknown_top_level_keys_and_bad_values_are_refused(clean: Path) -> None:
    (clean / "streamscore.toml").write_text("[kafak]\nbootstrap_servers = 'x:1'\n", "utf-8")
    with pytest.raises(ValidationError, match="kafak"):
        Settings()
    with pytest.raises(ValidationError, match="max_batch"):
        Settings(processor={"max_batch": 0})


def test_a_misspelt_nested_key_is_refused(clean: Path) -> None:
    """A typo under [kafka] must not silently fall back to the embedded broker."""
    (clean / "streamscore.toml").write_text("[kafka]\nbootstrap = 'prod:9092'\n", "utf-8")
    with pytest.raises(ValidationError, match="bootstrap"):
        Settings()


def test_secrets_are_hidden_from_repr_and_dumps(clean: Path) -> None:
    s = Settings(
        kafka={"sasl_password": "hunter2", "ssl_key_password": "key-secret"},
        redis={"password": "redis-secret"},
    )
    assert isinstance(s.kafka.sasl_password, SecretStr)
    for text in (repr(s), str(s), repr(s.kafka), s.model_dump_json()):
        assert "hunter2" not in text
        assert "key-secret" not in text
        assert "redis-secret" not in text
    assert "**********" in repr(s.kafka)
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"


def test_secrets_from_the_environment(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_PASSWORD", "from-env")
    s = Settings()
    assert "from-env" not in repr(s)
    assert s.kafka.client_properties()["sasl.password"] == "from-env"


@pytest.mark.parametrize(
    ("fields", "embedded"),
    [
        ({}, True),
        ({"bootstrap_servers": "127.0.0.1:9092"}, True),
        ({"bootstrap_servers": "localhost:9092"}, False),
        ({"bootstrap_servers": "kafka-1:9092,kafka-2:9092"}, False),
        ({"bootstrap_servers": "kafka-1:9092", "embedded": True}, True),
        ({"embedded": False}, False),
    ],
)
def test_kafka_is_embedded_rules(fields: dict[str, object], embedded: bool) -> None:
    assert KafkaSettings(**fields).is_embedded is embedded  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "embedded", "port"),
    [
        ({}, True, 6379),
        ({"url": "redis://127.0.0.1:6390/0"}, False, 6390),
        ({"url": "redis://:pw@cache.internal:6400/2"}, False, 6400),
        ({"url": "redis://cache.internal/0"}, False, 6379),
        ({"url": "redis://cache.internal:7000/0", "embedded": True}, True, 7000),
        ({"embedded": False}, False, 6379),
    ],
)
def test_redis_is_embedded_rules_and_port(
    fields: dict[str, object], embedded: bool, port: int
) -> None:
    redis = RedisSettings(**fields)  # type: ignore[arg-type]
    assert redis.is_embedded is embedded
    assert redis.port == port


def test_kafka_port_is_the_first_bootstrap_server_port() -> None:
    assert KafkaSettings(bootstrap_servers="a:19092,b:29092").port == 19092


def test_client_properties_minimal() -> None:
    assert KafkaSettings(bootstrap_servers="b:1").client_properties() == {
        "bootstrap.servers": "b:1",
        "security.protocol": "PLAINTEXT",
    }


def test_client_properties_pass_security_fields_and_client_config_through() -> None:
    kafka = KafkaSettings(
        bootstrap_servers="broker:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("s3cret"),
        ssl_ca_location="/etc/ca.pem",
        ssl_certificate_location="/etc/cert.pem",
        ssl_key_location="/etc/key.pem",
        ssl_key_password=SecretStr("keypw"),
        client_config={"enable.idempotence": "true", "security.protocol": "SSL"},
    )
    assert kafka.client_properties() == {
        "bootstrap.servers": "broker:9094",
        # client_config is applied last: an explicit librdkafka property wins
        "security.protocol": "SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/cert.pem",
        "ssl.key.location": "/etc/key.pem",
        "ssl.key.password": "keypw",
        "enable.idempotence": "true",
    }


def test_client_config_from_the_toml_file(clean: Path) -> None:
    (clean / "streamscore.toml").write_text(TOML, encoding="utf-8")
    props = Settings().kafka.client_properties()
    assert props["enable.idempotence"] == "true"
    assert props["sasl.username"] == "toml-user"
    assert props["security.protocol"] == "SASL_SSL"
    assert "sasl.password" not in props


def test_model_bundles_default_under_home(clean: Path) -> None:
    assert load_settings(home=str(clean / "h")).models.dir == clean / "h" / "models"
    assert load_settings(home=str(clean / "h"), models={"dir": "elsewhere"}).models.dir == Path(
        "elsewhere"
    )
