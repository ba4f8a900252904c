"""The one exception tree of streamscore.

Two families matter to the scoring loop:

* bad input is *data*, never an exception that escapes a stage: each rejected
  event becomes a :class:`Rejection` routed to the dead-letter topic, named by
  its stage and reason, and the loop goes on;
* infrastructure failures (:class:`InfrastructureError`) are raised loudly; the
  process stops without committing and the next run replays from the last commit.

Foreign exceptions (librdkafka, redis, MLflow, onnxruntime) are translated into
this tree at the edge that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Stable stage names: used in DLQ headers, metric labels and logs alike.
Stage = Literal["size", "decode", "validate", "score"]


class StreamscoreError(Exception):
    """Root of every error streamscore raises on purpose."""


class ConfigError(StreamscoreError):
    """The settings cannot work (bad value, missing file, conflicting options)."""


class InfrastructureError(StreamscoreError):
    """A broker, Redis, MLflow or local process failed; replay from the last commit."""


class DeliveryFailed(InfrastructureError):
    """The broker did not acknowledge an output record; offsets must not be committed."""


class StackError(InfrastructureError):
    """The embedded stack could not be started, stopped or reached."""


class ModelError(StreamscoreError):
    """A model cannot be loaded or does not fit the feature schema."""


class SignatureMismatch(ModelError):
    """The model's inputs do not match the features it is given."""


class DecodeError(StreamscoreError, ValueError):
    """Bytes that are not a record of the expected schema."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event that a stage refused, and why. ``index`` is its place in the batch."""

    index: int
    stage: Stage
    reason: str  # stable error class, e.g. "OutOfRange"
    message: str
