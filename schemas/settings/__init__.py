"""The one settings object of streamscore.

Precedence, lowest to highest: defaults < ``streamscore.toml`` < environment
(``STREAMSCORE_...``, nested with ``__``, e.g. ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``)
< CLI flags (passed as init arguments by the entry point).

Settings are read once at the entry point and handed down as typed sub-configs;
no other module reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.errors import ConfigError
from schemas.redaction import (
    mask_url_passwords,
)
from schemas.settings.base import (
    EMBEDDED_KAFKA,
    EMBEDDED_REDIS,
    ENV_PREFIX,
    REDIS_SCHEMES,
    Format,
    Section,
    SecurityProtocol,
    epoch_ms,
)
from schemas.settings.connections import (
    FormatSettings,
    KafkaSettings,
    MetricsSettings,
    RedisSettings,
    RegistrySettings,
    TopicSettings,
)
from schemas.settings.processing import (
    DriftSettings,
    FeatureThresholds,
    ModelSettings,
    ProcessorSettings,
    ShadowSettings,
    StoreSettings,
)
from schemas.settings.services import (
    AutopilotSettings,
    CbpeSettings,
    DlqSettings,
    PrivacyRole,
    PrivacySettings,
    PseudonymField,
    RetrainSettings,
    ServeSettings,
)


class Settings(BaseSettings):
    """Everything streamscore can be told. See the README for each field."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        toml_file="streamscore.toml",
        extra="forbid",
    )

    #: Where the embedded stack keeps pids, logs, models and caches.
    home: Path = Path(".streamscore")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    formats: FormatSettings = Field(default_factory=FormatSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    #: The HTTP door: ``streamscore serve``.
    serve: ServeSettings = Field(default_factory=ServeSettings)
    #: The model autopilot: retrain, guarded promotion, rollback, CBPE.
    autopilot: AutopilotSettings = Field(default_factory=AutopilotSettings)
    #: Pseudonyms of identifiers, the privacy key, the audit hash chain.
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    #: What the dead-letter topic keeps of rejected bytes: raw, redacted or encrypted.
    dlq: DlqSettings = Field(default_factory=DlqSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _models_under_home(self) -> Self:
        """Like everything the stack writes, model bundles default to ``<home>/models``."""
        if "dir" not in self.models.model_fields_set:
            self.models.dir = self.home / "models"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings once. ``overrides`` are CLI flags as nested dicts (highest precedence).

    A missing ``config_file``, invalid TOML or an unknown ``STREAMSCORE_*`` variable is a
    :class:`ConfigError`; a value that does not validate is pydantic's ``ValidationError``
    (:func:`describe_validation_error` makes one line of it).
    """
    check_environment(os.environ)
    if config_file is None:
        _check_toml(Path("streamscore.toml"))
        return Settings(**overrides)
    if not config_file.is_file():
        raise ConfigError(
            f"config file {config_file} does not exist; give an existing TOML file to --config "
            "or leave the option out to use ./streamscore.toml"
        )
    _check_toml(config_file)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return _FromFile(**overrides)


def _check_toml(path: Path) -> None:
    if not path.is_file():
        return
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    privacy = data.get("privacy")
    if isinstance(privacy, dict) and "key" in privacy:
        raise ConfigError(
            f"{path} holds privacy.key: a key is never written in a settings file; put it in "
            "a file named by privacy.key_file, or in STREAMSCORE_PRIVACY__KEY"
        )


#: Environment names reserved for the test suite (see tests/conftest.py).
TEST_PREFIX = ENV_PREFIX + "TEST_"


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``STREAMSCORE_*`` variables that name no setting (pydantic ignores them).

    ``STREAMSCORE_TEST_*`` is the test suite's own namespace (an external broker or Redis
    for the integration tests) and names no setting by design.
    """
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name.startswith(TEST_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] | None = Settings
        for depth, part in enumerate(path):
            if model is None:
                break  # below a dict-valued setting: any key is allowed
            fields = model.model_fields
            if part not in fields:
                where = ".".join(path[:depth]) or "the top level"
                raise ConfigError(
                    f"unknown environment variable {name}: {where} has no setting {part!r} "
                    f"(known: {', '.join(sorted(fields))}); fix the name or unset it"
                )
            annotation = fields[part].annotation
            is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model = annotation if isinstance(annotation, type) and is_section else None
            if not is_section and depth < len(path) - 1 and not _is_mapping(annotation):
                raise ConfigError(
                    f"unknown environment variable {name}: {'.'.join(path[: depth + 1])} "
                    "is a plain value, not a section; fix the name or unset it"
                )


def _is_mapping(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is dict


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a person: which setting, what is wrong with it, how to fix it."""
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {key!r}: check its spelling against the README")
        else:
            value = error.get("input")
            secret = any(word in key for word in ("password", "secret", "key", "user_info"))
            shown = "" if isinstance(value, dict) or secret else f" = {value!r}"
            shown = mask_url_passwords(shown)  # a URL's password is no less a secret
            problems.append(f"invalid setting {key}{shown}: {error['msg']}")
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}{more}; set it in streamscore.toml, STREAMSCORE_* or the command's flag"


__all__ = [
    "EMBEDDED_KAFKA",
    "EMBEDDED_REDIS",
    "ENV_PREFIX",
    "REDIS_SCHEMES",
    "AutopilotSettings",
    "CbpeSettings",
    "DlqSettings",
    "DriftSettings",
    "FeatureThresholds",
    "Format",
    "FormatSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ModelSettings",
    "PrivacyRole",
    "PrivacySettings",
    "ProcessorSettings",
    "PseudonymField",
    "RedisSettings",
    "RegistrySettings",
    "RetrainSettings",
    "Section",
    "SecurityProtocol",
    "ServeSettings",
    "Settings",
    "ShadowSettings",
    "StoreSettings",
    "TopicSettings",
    "check_environment",
    "describe_validation_error",
    "epoch_ms",
    "load_settings",
]
