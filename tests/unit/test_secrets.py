"""No secret is ever shown: settings, ``status``, ``bench`` JSON, validation errors.

Every secret is set to a recognisable value and each output is searched for it. The
settings' own dumps show a secret as ``**********`` (pydantic's ``SecretStr``); a
password written into a URL is moved out of it; librdkafka properties that hold
secrets are masked in JSON. The TLS and SASL integration tests search the errors and
logs of real refusals, and the processor's metrics, the same way.
"""

from __future__ import annotations

import json
import types
import typing
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from typer.testing import CliRunner

import streams.bench.run as bench_run
from schemas.redaction import SECRET_SHOWN, is_secret_property
from schemas.settings import RedisSettings, Settings, describe_validation_error
from streams.cli.main import app
from tests.conftest import free_port

#: One recognisable value per secret; none may appear in any output.
SECRET = f"S3cret-{uuid.uuid4().hex}"
KAFKA_SECRETS: dict[str, Any] = {
    "sasl_username": "streamscore",
    "sasl_password": f"{SECRET}-sasl",
    "ssl_key_password": f"{SECRET}-key",
    "schema_registry_basic_auth_user_info": f"registry:{SECRET}-registry",
    "schema_registry_url": f"https://registry:{SECRET}-url@registry.example:8081",
    "client_config": {
        "sasl.oauthbearer.client.secret": f"{SECRET}-oauth",
        "ssl.key.pem": f"-----BEGIN PRIVATE KEY-----{SECRET}-pem",
        "linger.ms": "5",
    },
}


def secret_fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every ``SecretStr`` field of ``model`` and its sections, as paths."""
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
        if annotation is SecretStr or SecretStr in options:
            found.append((*path, name))
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += secret_fields(annotation, (*path, name))
    return found


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for part in reversed(path):
        value = {part: value}
    return dict(value)


def full_of_secrets() -> Settings:
    """Settings with every secret field set (a field that refuses free text is left out)."""
    data: dict[str, Any] = {
        "kafka": dict(KAFKA_SECRETS),
        "redis": {"url": f"redis://:{SECRET}-redis@127.0.0.1:{free_port()}/0"},
    }
    for path in secret_fields(Settings):
        if path[:1] in (("kafka",), ("redis",)):
            continue
        candidate = {**data, **nested(path, f"{SECRET}-{'-'.join(path)}")}
        try:
            Settings(**candidate)
        except ValidationError:
            continue
        section = path[0]
        data[section] = {**data.get(section, {}), **nested(path[1:], f"{SECRET}-{'-'.join(path)}")}
    return Settings(**data)


def test_the_walk_finds_the_connection_secrets() -> None:
    paths = set(secret_fields(Settings))
    assert {
        ("kafka", "sasl_password"),
        ("kafka", "ssl_key_password"),
        ("kafka", "schema_registry_basic_auth_user_info"),
        ("redis", "password"),
    } <= paths


def test_every_secret_prints_as_stars_in_every_dump() -> None:
    settings = full_of_secrets()
    outputs = {
        "repr": repr(settings),
        "str": str(settings),
        "json": settings.model_dump_json(),
        "dump(json)": json.dumps(settings.model_dump(mode="json")),
    }
    for name, text in outputs.items():
        assert SECRET not in text, name
    dumped = settings.model_dump(mode="json")
    assert dumped["kafka"]["sasl_password"] == SECRET_SHOWN
    assert dumped["redis"]["password"] == SECRET_SHOWN
    assert dumped["kafka"]["client_config"] == {
        "sasl.oauthbearer.client.secret": SECRET_SHOWN,
        "ssl.key.pem": SECRET_SHOWN,
        "linger.ms": "5",
    }
    assert dumped["kafka"]["schema_registry_url"] == (
        f"https://registry:{SECRET_SHOWN}@registry.example:8081"
    )


def test_the_python_dump_still_round_trips_the_secrets() -> None:
    """Tests and the CLI rebuild settings from ``model_dump()``: it must keep the values."""
    settings = full_of_secrets()
    again = Settings(**settings.model_dump())
    assert again.kafka.client_properties() == settings.kafka.client_properties()
    assert again.kafka.client_properties()["sasl.password"] == f"{SECRET}-sasl"
    assert again.redis.password == settings.redis.password


def test_a_password_in_the_redis_url_is_moved_out_of_it() -> None:
    redis = RedisSettings(url=f"rediss://app:{SECRET}@cache:6380/0")
    assert redis.url == "rediss://app@cache:6380/0"
    assert redis.password is not None and redis.password.get_secret_value() == SECRET
    assert redis.embedded is False and redis.port == 6380
    same = RedisSettings(url=f"redis://:{SECRET}@cache/0", password=SECRET)
    assert same.url == "redis://cache/0"
    with pytest.raises(ValidationError, match="two different Redis passwords"):
        RedisSettings(url=f"redis://:{SECRET}@cache/0", password="another")


@pytest.mark.parametrize(
    "name",
    ["sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
     "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config", "basic.auth.user.info"],
)  # fmt: skip
def test_librdkafka_secret_properties_are_recognised(name: str) -> None:
    assert is_secret_property(name)


@pytest.mark.parametrize("name", ["linger.ms", "ssl.ca.location", "ssl.certificate.location"])
def test_librdkafka_plain_properties_are_shown(name: str) -> None:
    assert not is_secret_property(name)


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka": {"sasl_password": 12345}},
        {"redis": {"url": f"redis//:{SECRET}@cache:6379/0"}},
        {"redis": {"url": f"http://:{SECRET}@cache:6379/0"}},
        {"kafka": {"schema_registry_basic_auth_user_info": ["user", SECRET]}},
    ],
)
def test_validation_errors_never_show_a_secret(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**overrides)
    line = describe_validation_error(caught.value)
    assert SECRET not in line and "12345" not in line
    assert line.startswith("invalid setting ")


def test_bench_json_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """``streamscore bench`` writes its settings and the broker into the result JSON."""

    class NoTopics:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def drop_all(self) -> None:
            pass

    def no_throughput(result: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        result["throughput"] = {"pipeline": {"eps": 1.0}}

    monkeypatch.setattr(bench_run, "ensure_stack", lambda settings: [])
    monkeypatch.setattr(bench_run, "_ensure_models", lambda settings: None)
    monkeypatch.setattr(bench_run, "Topics", NoTopics)
    monkeypatch.setattr(bench_run, "throughput_phase", no_throughput)
    result = bench_run.run_bench(full_of_secrets(), events=1, latency_events=0, soak=None)
    text = json.dumps(result)
    assert "settings" in result and "broker" in result
    assert SECRET not in text


@pytest.mark.parametrize("as_json", [False, True])
def test_status_shows_no_secret(
    as_json: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "STREAMSCORE_HOME": str(tmp_path / "home"),
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "STREAMSCORE_KAFKA__EMBEDDED": "true",  # not running: status asks it nothing
        "STREAMSCORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMSCORE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMSCORE_KAFKA__SASL_USERNAME": "streamscore",
        "STREAMSCORE_KAFKA__SASL_PASSWORD": f"{SECRET}-sasl",
        "STREAMSCORE_KAFKA__SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"u:{SECRET}-registry",
        "STREAMSCORE_REDIS__URL": f"redis://:{SECRET}-url@127.0.0.1:{free_port()}/0",
    }
    result = CliRunner().invoke(app, ["status", *(["--json"] if as_json else [])], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "redis" in result.output


def test_faust_credentials_do_not_show_the_password() -> None:
    from streams.evaluation.app import broker_credentials

    kafka = Settings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "streamscore",
            "sasl_password": SECRET,
        }
    ).kafka
    credentials = broker_credentials(kafka)
    assert credentials.mechanism.name == "SCRAM_SHA_512"
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)


def test_an_mlflow_uri_with_credentials_is_shown_without_them(tmp_path: Path) -> None:
    from connectors.model_registry import ModelRegistry, RegistryUnavailable

    uri = f"http://streamscore:{SECRET}@127.0.0.1:{free_port()}"
    registry = ModelRegistry(tracking_uri=uri, cache_dir=tmp_path, probe_timeout_s=0.5)
    assert SECRET not in repr(registry)
    with pytest.raises(RegistryUnavailable) as caught:
        registry.current_versions("shuttle-anomaly")
    assert "unreachable" in str(caught.value) and SECRET not in str(caught.value)
