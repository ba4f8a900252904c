"""The autopilot's audit records: every action on ``sensor.audit``, with its evidence.

Records have the shape of the registry's lifecycle events
(:meth:`models.lifecycle.LifecycleEvent.audit_record`, an ``AuditEvent``): the
action, the model and version it concerns, the actor (``autopilot``, or the
person who ran ``streamscore retrain``), the time, and ``details`` as text:

================================  ==================================================
action                            details (besides ``old_version`` / ``new_version``)
================================  ==================================================
``retrain_started``               ``trigger``, ``window_start`` / ``window_end``
``retrain_finished``              ``outcome`` (registered / rejected), ``reason``, rows,
                                  both models' held-out metric, lineage, flow run
``retrain_failed``                ``reason`` (fit_failed, infrastructure, ...), error
``challenger_registered``         the candidate version, its parent, its metric
``promotion_recommended``         the verdict's evidence and ``guard.<name>`` results
``rollback_recommended``          why, and the evidence
``promoted`` / ``rolled_back``    the registry's event plus the evidence
``alias_set``                     the registry's event (a move written or undone)
``move_failed`` / ``move_deferred``  what failed; the aliases are as before / pending
================================  ==================================================

:class:`TopicSink` keeps what it could not deliver and sends it first next time:
an action is audited at least once, even across a broker outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.kafka import Producer, client_id
from connectors.schema_registry import topic_serde
from models.lifecycle import LifecycleEvent
from schemas.errors import InfrastructureError
from schemas.settings import Settings

log = logging.getLogger(__name__)

ACTOR = "autopilot"
#: Audit detail values are cut at this length (a stack trace is not evidence).
_DETAIL_LIMIT = 2000


def audit_record(
    action: str,
    model_name: str,
    model_version: str,
    details: Mapping[str, str | None],
    *,
    actor: str = ACTOR,
    occurred_at_ms: int | None = None,
) -> dict[str, Any]:
    """An ``AuditEvent`` record of an autopilot action (None details are left out)."""
    return {
        "action": action,
        "event_id": None,
        "sensor_id": None,
        "model_name": model_name,
        "model_version": model_version,
        "decision": None,
        "input_digest": None,
        "source_topic": None,
        "source_partition": None,
        "source_offset": None,
        "actor": actor,
        "occurred_at": occurred_at_ms if occurred_at_ms is not None else int(time.time() * 1000),
        "details": {k: str(v)[:_DETAIL_LIMIT] for k, v in details.items() if v is not None},
    }


def lifecycle_record(event: LifecycleEvent, evidence: Mapping[str, str] | None = None) -> dict:
    """A registry lifecycle event as its audit record, with the autopilot's evidence added."""
    record = event.audit_record()
    if evidence:
        record["details"] = {**record["details"], **evidence}
    return record


class TopicSink:
    """Publishes records to the topic of one role; what the broker did not acknowledge is
    kept and sent first next time (at least once: a record may then arrive twice)."""

    def __init__(
        self,
        settings: Settings,
        role: str,
        key: Callable[[dict[str, Any]], str],
        *,
        flush_timeout_s: float = 10.0,
    ) -> None:
        self.topic = getattr(settings.topics, role)
        self.serde = topic_serde(settings, role)
        self.key = key
        self.producer = Producer(settings.kafka, client_id=client_id("autopilot"))
        self.flush_timeout_s = flush_timeout_s
        self.backlog: list[dict[str, Any]] = []
        #: Every record this process published, oldest first (the demo and tests read it).
        self.published: list[dict[str, Any]] = []

    def publish(self, records: Sequence[dict[str, Any]]) -> None:
        """Send the backlog and ``records``; raises :class:`InfrastructureError` (keeping
        them for the next call) when the broker does not acknowledge them."""
        self.backlog.extend(records)
        if not self.backlog:
            return
        batch = list(self.backlog)
        values = self.serde.encode_many(batch)
        keys: list[bytes | None] = [self.key(r).encode() for r in batch]
        self.producer.produce_many(self.topic, values, keys)
        try:
            self.producer.flush(self.flush_timeout_s)
        except InfrastructureError:
            log.warning("%d record(s) for %s not acknowledged; resent next time", len(batch),
                        self.topic)  # fmt: skip
            raise
        del self.backlog[: len(batch)]
        self.published.extend(batch)


def audit_sink(settings: Settings) -> TopicSink:
    """The audit topic, keyed by model name (as the registry's events are)."""
    return TopicSink(settings, "audit", lambda r: str(r["model_name"]))


def evaluation_sink(settings: Settings) -> TopicSink:
    """The evaluation topic (CBPE windows), keyed as the evaluator keys its records."""
    from streams.evaluation.records import evaluation_key

    return TopicSink(settings, "evaluation", evaluation_key)
