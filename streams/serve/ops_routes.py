"""Model ops of the HTTP door: versions, aliases, cards, promote, rollback, predictions, report.

Mutating calls need an ``operator`` key and are audited (``sensor.audit``) with the
key's name as actor and ``channel=http``; reads need a ``reader`` key. ``/metrics``
is open. MLflow, Redis and Kafka are reached on FastAPI's thread pool (plain ``def``
handlers): a slow registry never holds the event loop.
"""

# No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` dependencies
# of the handlers at definition time, and they are local to :func:`ops_routes`.
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from schemas.errors import InfrastructureError, StreamscoreError
from streams.serve.auth import Auth
from streams.serve.keys import KeyEntry
from streams.serve.wiring import ServeContext

log = logging.getLogger(__name__)


class AliasBody(BaseModel):
    version: str = Field(examples=["2"])


def ops_routes(app: FastAPI, context: ServeContext, guard: Auth) -> None:
    """Mount the model-ops routes and ``/metrics`` on ``app``."""
    settings = context.settings
    Reader = Annotated[KeyEntry, Depends(guard.needs("reader"))]
    Operator = Annotated[KeyEntry, Depends(guard.needs("operator"))]

    def registry() -> Any:
        if settings.models.source != "registry":
            raise HTTPException(
                409,
                "model ops move MLflow aliases: set models.source = 'registry' "
                "(file bundles are swapped by replacing their folder)",
            )
        return context.registry()

    def refused(exc: StreamscoreError) -> HTTPException:
        from connectors.model_registry import RegistryError

        if isinstance(exc, RegistryError):
            return HTTPException(409, str(exc))
        return HTTPException(400, f"{type(exc).__name__}: {exc}")

    def lifecycle(event: Any, caller: KeyEntry) -> dict[str, Any]:
        record = event.audit_record()
        record["details"] = {**record["details"], "channel": "http", "key": caller.name}
        context.audit_record(record)
        log.info("%s by %s: %s v%s", event.action, caller.name, event.model_name,
                 event.model_version)  # fmt: skip
        return record

    @app.get("/v1/models", tags=["models"])
    def list_models(_caller: Reader) -> dict[str, Any]:
        """What is served now; with the MLflow registry, every version and its aliases."""
        served = context.models.served
        body: dict[str, Any] = {
            "source": settings.models.source,
            "served": {
                role: {"name": m.name, "version": m.version, "task": m.meta.task,
                       "features": m.feature_names}
                for role, m in (("champion", served.champion), ("challenger", served.challenger))
                if m is not None
            },
        }  # fmt: skip
        if settings.models.source == "registry":
            name = settings.registry.model_name
            versions = context.registry().list_versions(name)
            body["name"] = name
            body["versions"] = [
                {"version": v.version, "aliases": v.aliases, "created_at": v.created_at,
                 "description": v.description, "metrics": v.metrics, "run_id": v.run_id,
                 "card": f"/v1/models/{name}/versions/{v.version}/card"}
                for v in versions
            ]  # fmt: skip
        return body

    @app.get("/v1/models/{name}/versions/{version}/card", tags=["models"],
             response_class=PlainTextResponse)  # fmt: skip
    def model_card(name: str, version: str, _caller: Reader) -> PlainTextResponse:
        """The model card (Markdown) logged with the version."""
        try:
            text = registry().model_card(name, version)
        except InfrastructureError:
            raise
        except StreamscoreError as exc:
            raise refused(exc) from exc
        return PlainTextResponse(text, media_type="text/markdown")

    @app.post("/v1/models/{name}/promote", tags=["models"])
    def promote(name: str, caller: Operator) -> dict[str, Any]:
        """Move ``champion`` to the challenger's version (serving swaps at the next batch)."""
        try:
            event = registry().promote(name, actor=caller.name)
        except InfrastructureError:
            raise
        except StreamscoreError as exc:
            raise refused(exc) from exc
        return lifecycle(event, caller)

    @app.post("/v1/models/{name}/rollback", tags=["models"])
    def rollback(name: str, caller: Operator) -> dict[str, Any]:
        """Put ``champion`` back on the previous champion."""
        try:
            event = registry().rollback(name, actor=caller.name)
        except InfrastructureError:
            raise
        except StreamscoreError as exc:
            raise refused(exc) from exc
        return lifecycle(event, caller)

    @app.post("/v1/models/{name}/aliases/{alias}", tags=["models"])
    def set_alias(name: str, alias: str, body: AliasBody, caller: Operator) -> dict[str, Any]:
        """Point ``alias`` (e.g. ``challenger``) at a version."""
        try:
            event = registry().set_alias(name, alias, body.version, actor=caller.name)
        except InfrastructureError:
            raise
        except StreamscoreError as exc:
            raise refused(exc) from exc
        return lifecycle(event, caller)

    @app.get("/v1/predictions/{event_id}", tags=["models"])
    def prediction(event_id: str, _caller: Reader) -> dict[str, Any]:
        """What was predicted for an event, per variant, from the Redis prediction store."""
        from connectors.redis_store import PredictionStore
        from streams.privacy.keys import load_keyring
        from streams.privacy.pseudonym import store_lookup

        s = settings.store
        store = PredictionStore(settings.redis, ttl_s=s.ttl_s, bucket_s=s.bucket_s)
        get_many = store_lookup(store.get_many, settings.privacy, load_keyring(settings.privacy))
        variants = ["champion", "challenger", *settings.shadow.ab_weights]
        found = get_many([event_id], list(dict.fromkeys(variants)))[0]
        if not found:
            raise HTTPException(404, f"no stored prediction for {event_id!r} (or it expired)")
        return {
            "event_id": event_id,
            "predictions": {
                v: {"model_version": p.model_version, "label": p.label, "score": p.score}
                for v, p in found.items()
            },
        }

    @app.get("/v1/shadow/report", tags=["models"])
    def shadow_report(_caller: Reader) -> dict[str, Any]:
        """Per-variant quality and the champion-vs-challenger verdict (``sensor.evaluation``)."""
        from streams.evaluation.records import latest_report

        return latest_report(settings, idle_s=0.5, timeout_s=10.0)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus metrics: the processor's names, with ``channel="http"``."""
        return Response(
            context.metrics.exposition_with(channel="http"), media_type=CONTENT_TYPE_LATEST
        )
