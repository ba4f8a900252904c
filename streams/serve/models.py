"""The models the HTTP door serves, swapped between batches exactly as in the processor.

The champion (and the challenger, with ``shadow.mode`` shadow or ab) come from the
processor's model source: file bundles or the MLflow aliases
(:func:`streams.scoring.model_watcher.model_source`). A :class:`ModelWatcher` loads
a moved version in the background; :meth:`ServedModels.between_batches` switches to
it before the next batch is scored, never during one, and audits ``model_changed``
(or ``model_refused``) with ``channel=http``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from models.serving import ServingModel
from schemas.errors import InfrastructureError, ModelError
from schemas.settings import Settings
from streams.ops.metrics import Health, Metrics
from streams.scoring.model_watcher import ModelSource, ModelWatcher, check_features
from streams.scoring.routing import ABRouting

log = logging.getLogger(__name__)

#: Publishes one lifecycle audit record (``action``, the model, details).
Audit = Callable[[str, ServingModel, dict[str, str]], None]


@dataclass(frozen=True, slots=True)
class Served:
    """What one batch is scored with: taken once, so a swap never splits a batch."""

    champion: ServingModel
    challenger: ServingModel | None
    ab: ABRouting | None


class ServedModels:
    """Champion and challenger of the HTTP door, and their hot swap."""

    def __init__(
        self,
        settings: Settings,
        source: ModelSource,
        champion: ServingModel,
        *,
        metrics: Metrics,
        health: Health,
        audit: Audit,
    ) -> None:
        self.settings = settings
        self.mode = settings.shadow.mode
        self.metrics = metrics
        self.health = health
        self.audit = audit
        self._lock = threading.Lock()
        self._served = Served(champion, None, None)
        current = {"champion": champion.version}
        if self.mode != "off":
            challenger = self._first_challenger(source, champion)
            if challenger is not None:
                current["challenger"] = challenger.version
                self._served = self._with(champion, challenger)
        self.watcher = ModelWatcher(
            source,
            stream_features=list(champion.feature_names),
            current=current,
            poll_interval_s=settings.registry.poll_interval_s,
            roles=("champion",) if self.mode == "off" else ("champion", "challenger"),
        )
        self._publish_info()

    def _first_challenger(self, source: ModelSource, champion: ServingModel) -> ServingModel | None:
        try:
            challenger = source.load("challenger")
            check_features(challenger, champion.feature_names)
        except (ModelError, InfrastructureError) as exc:
            self.metrics.model_load_failures.labels(role="challenger").inc()
            self.health.problems["challenger"] = f"not loaded: {exc}"
            log.warning("no challenger (%s): the champion serves alone", exc)
            return None
        return challenger

    def _with(self, champion: ServingModel, challenger: ServingModel | None) -> Served:
        ab = None
        if challenger is not None and self.mode == "ab":
            ab = ABRouting.build(
                self.settings.shadow.ab_weights, {"champion": champion, "challenger": challenger}
            )
        return Served(champion, challenger, ab)

    @property
    def served(self) -> Served:
        return self._served

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    def between_batches(self) -> Served:
        """Switch to what the watcher loaded (audited), then the models for this batch."""
        with self._lock:
            ready, refusals = self.watcher.take()
            for refusal in refusals:
                self.metrics.model_load_failures.labels(role=refusal.role).inc()
                self.health.problems[f"{refusal.role}_refused"] = (
                    f"v{refusal.version}: {refusal.reason}"
                )
                self.audit(
                    "model_refused",
                    self._served.champion,
                    {"role": refusal.role, "refused_version": refusal.version,
                     "reason": refusal.reason[:500], "channel": "http"},
                )  # fmt: skip
            for role, model in ready.items():
                self._swap(role, model)
            return self._served

    def _swap(self, role: str, model: ServingModel) -> None:
        served = self._served
        old = served.champion if role == "champion" else served.challenger
        if role == "champion":
            self._served = self._with(model, served.challenger)
        else:
            self._served = self._with(served.champion, model)
        self.health.problems.pop(f"{role}_refused", None)
        self.metrics.model_swaps.labels(role=role).inc()
        self._publish_info()
        self.audit(
            "model_changed",
            model,
            {"role": role, "old_version": old.version if old else "",
             "new_version": model.version, "channel": "http",
             "switched_at": str(int(time.time() * 1000))},
        )  # fmt: skip
        log.info("%s switched %s -> v%s", role, old.version if old else "none", model.version)

    def _publish_info(self) -> None:
        served = self._served
        for role, model in (("champion", served.champion), ("challenger", served.challenger)):
            if model is not None:
                self.metrics.model_info.labels(role=role).info(
                    {"name": model.name, "version": model.version, "task": model.meta.task}
                )

    def named(self, name: str) -> list[ServingModel]:
        """The served models called ``name``, champion first."""
        served = self._served
        return [m for m in (served.champion, served.challenger) if m is not None and m.name == name]

    def version(self, name: str, version: str | None) -> ServingModel | None:
        """The served model called ``name``: at ``version``, else the first (the champion)."""
        served = self._served
        for model in (served.champion, served.challenger):
            if model is None or model.name != name:
                continue
            if version is None or model.version == version:
                return model
        return None
