"""The pieces every settings section is built from: the Section base (a misspelt key is
an error), shared literals and constants.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    model_validator,
)

Format = Literal["avro", "avro-confluent", "json"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class Section(BaseModel):
    """A settings section: a misspelt key is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


EMBEDDED_KAFKA = "127.0.0.1:9092"

EMBEDDED_REDIS = "redis://127.0.0.1:6379/0"

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

ENV_PREFIX = "STREAMSCORE_"


def epoch_ms(text: str) -> int:
    """Milliseconds since the epoch from digits or ISO-8601 (UTC when it names no zone).

    >>> epoch_ms("2023-11-14T22:13:20Z"), epoch_ms("1700000000000")
    (1700000000000, 1700000000000)
    """
    from datetime import UTC, datetime

    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2024-05-01T12:00:00Z) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class _OrderedThresholds(Section):
    """A warning and an alert threshold, the alert never below the warning."""

    warning: float
    alert: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.alert < self.warning:
            raise ValueError("alert threshold below the warning threshold")
        return self
