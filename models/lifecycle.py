"""One lifecycle action on a registered model, as data: the record the audit trail keeps.

The registry (``connectors.model_registry``) returns one :class:`LifecycleEvent`
per action it takes; the ``streamscore models`` commands print them and put them
on the audit topic. The event is field for field an ``AuditEvent``
(``schemas/audit_event.avsc``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["registered", "alias_set", "promoted", "rolled_back"]


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One lifecycle action, field for field an ``AuditEvent`` (``schemas/audit_event.avsc``).

    ``details`` holds ``old_version`` / ``new_version`` (``old_version`` is absent
    when there was none) and action-specific facts such as the alias or the run id.
    """

    action: Action
    model_name: str
    model_version: str
    actor: str
    occurred_at: int  # epoch milliseconds
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def now(
        cls, action: Action, name: str, version: str, actor: str, **details: str | None
    ) -> LifecycleEvent:
        """The event of an action just taken; details that are None are left out."""
        return cls(
            action=action,
            model_name=name,
            model_version=version,
            actor=actor,
            occurred_at=int(time.time() * 1000),
            details={key: value for key, value in details.items() if value is not None},
        )

    @property
    def old_version(self) -> str | None:
        return self.details.get("old_version")

    @property
    def new_version(self) -> str:
        return self.details.get("new_version", self.model_version)

    def audit_record(self) -> dict[str, Any]:
        """The ``AuditEvent`` record, ready for the audit serde."""
        return {
            "action": self.action,
            "event_id": None,
            "sensor_id": None,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "decision": None,
            "input_digest": None,
            "source_topic": None,
            "source_partition": None,
            "source_offset": None,
            "actor": self.actor,
            "occurred_at": self.occurred_at,
            "details": dict(self.details),
        }
