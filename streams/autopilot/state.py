"""What the controller remembers across restarts, in one JSON file under the home.

The registry says which version plays which role; only the controller knows
when a challenger arrived, which versions it rolled back (never promoted again
by it), what it promoted and on which baseline it watches it, which retrain
requests it already answered, and an alias move it could neither finish nor
undo (MLflow went away half-way: see :mod:`streams.autopilot.transitions`).
The file is replaced atomically (write, fsync, rename), so a crash leaves the
old state or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Watch:
    """A champion the autopilot promoted, and what it is held to."""

    version: str
    replaced: str | None
    promoted_at_s: float
    #: The new champion's error rate in the shadow, on ``baseline_labels`` labels.
    baseline_error_rate: float
    baseline_labels: int
    #: Its cumulative champion counts when it was promoted (usually none).
    labels_at_promotion: int = 0
    errors_at_promotion: int = 0


@dataclass
class PendingMove:
    """An alias move that failed half-way and could not be undone at once."""

    kind: str
    before: dict[str, str]
    after: dict[str, str]
    details: dict[str, str]
    started_at_s: float


@dataclass
class AutopilotState:
    #: The challenger last seen, and since when it has been the challenger (epoch s):
    #: reset whenever the alias moves, also back to a version that was challenger before.
    challenger: str | None = None
    challenger_since_s: float | None = None
    last_move_s: float | None = None
    rolled_back: list[str] = field(default_factory=list)
    watch: Watch | None = None
    pending: PendingMove | None = None
    #: Retrain requests answered (drift incident ids), and the last retrain's start.
    answered_requests: list[str] = field(default_factory=list)
    last_retrain_s: float | None = None
    #: Versions the autopilot's retraining registered -> the champion they were trained from.
    retrained: dict[str, str] = field(default_factory=dict)
    #: Recommendations already published: ``kind|champion|challenger``.
    recommended: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutopilotState:
        watch = data.get("watch")
        pending = data.get("pending")
        return cls(
            challenger=data.get("challenger"),
            challenger_since_s=data.get("challenger_since_s"),
            last_move_s=data.get("last_move_s"),
            rolled_back=list(data.get("rolled_back", [])),
            watch=Watch(**watch) if watch else None,
            pending=PendingMove(**pending) if pending else None,
            answered_requests=list(data.get("answered_requests", [])),
            last_retrain_s=data.get("last_retrain_s"),
            retrained={str(k): str(v) for k, v in data.get("retrained", {}).items()},
            recommended=list(data.get("recommended", [])),
        )


class StateFile:
    """The state of one registered model's autopilot: ``<home>/autopilot/<model>.json``."""

    def __init__(self, home: Path, model_name: str) -> None:
        self.path = home / "autopilot" / f"{model_name}.json"

    def load(self) -> AutopilotState:
        if not self.path.is_file():
            return AutopilotState()
        return AutopilotState.from_dict(json.loads(self.path.read_text(encoding="utf-8")))

    def save(self, state: AutopilotState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(state.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
