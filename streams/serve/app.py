"""The routes of ``streamscore serve``: one handler per endpoint, errors in each door's shape.

* Open Inference Protocol v2: ``/v2``, ``/v2/health/{live,ready}``,
  ``/v2/models/{name}[/versions/{v}][/ready|/infer]``, ``/v2/repository/index``;
  errors are ``{"error": "..."}``.
* Sensor events: ``POST /v1/score`` answers the processor's ``Prediction`` records;
  refused events are HTTP 422 with the DLQ's reason names and messages.
* Model ops: ``/v1/models`` (versions, aliases, cards), promote, rollback, aliases,
  ``/v1/predictions/{event_id}`` and ``/v1/shadow/report``; mutating calls need an
  ``operator`` key and are audited with the key's name as actor.
* ``/metrics`` (the processor's metric names, ``channel="http"``) and ``/docs``.

Handlers stay thin: reading and writing tensors is :mod:`streams.serve.oip`, scoring
is :mod:`streams.serve.service` behind the batchers, keys are :mod:`streams.serve.keys`.
"""

# No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` dependencies
# of the handlers below at definition time, and some are local to the route builders.
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import InfrastructureError
from streams.scoring.stages import check_matrix
from streams.serve.auth import Auth
from streams.serve.keys import KeyEntry
from streams.serve.oip import (
    HEADER_LENGTH,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ModelMetadataResponse,
    ModelReadyResponse,
    OipError,
    RepositoryModel,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
    encode_response,
    output_metadata,
    parse_request,
    request_matrix,
    score_outputs,
)
from streams.serve.ops_routes import ops_routes
from streams.serve.service import EventsJob, TensorJob
from streams.serve.wiring import ServeContext

log = logging.getLogger(__name__)

try:
    VERSION = package_version("streamscore")
except PackageNotFoundError:  # a checkout that was never installed
    VERSION = "0.0.0"

JSON = "application/json"


# -- documentation models of the JSON door (bodies are read by hand: the processor's reasons) --


class SensorEventIn(BaseModel):
    """One reading, as on ``sensor.events`` (``event_time``: epoch ms or ISO-8601)."""

    event_id: str = Field(examples=["evt-1"])
    sensor_id: str = Field(examples=["sensor-7"])
    event_time: int | str = Field(examples=[1767225600000])
    features: dict[str, float] = Field(
        examples=[
            {
                "f1": 50.0,
                "f2": 0.0,
                "f3": 86.0,
                "f4": 0.0,
                "f5": 36.0,
                "f6": 0.0,
                "f7": 30.0,
                "f8": 50.0,
                "f9": 20.0,
            }
        ]
    )


class PredictionOut(BaseModel):
    event_id: str
    sensor_id: str
    event_time: int
    model_name: str
    model_version: str
    variant: str
    predicted_label: str | None
    score: float
    probabilities: dict[str, float] | None
    processed_at: int


class Refused(BaseModel):
    index: int
    event_id: str | None
    stage: str
    reason: str = Field(examples=["OutOfRange"])
    message: str


class ScoreResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]
    rejected: list[Refused] = []
    error: str | None = None


# -- middleware: body limit and request metrics ------------------------------------------------


class Guard:
    """Refuses bodies over ``max_bytes`` (413) and times every request by route."""

    def __init__(self, app: ASGIApp, *, context: ServeContext) -> None:
        self.app = app
        self.max_bytes = context.settings.serve.max_body_bytes
        self.metrics = context.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = _content_length(scope)
            if length is not None and length > self.max_bytes:
                await _send_json(capture, 413, {"error": self._too_large(length)})
                return
            received = 0

            async def limited() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_bytes:
                        raise StarletteHTTPException(413, self._too_large(received))
                return message

            await self.app(scope, limited, capture)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.http_requests.labels(route=path, status=str(status[0])).inc()
            self.metrics.http_latency.labels(route=path).observe(time.perf_counter() - started)

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes is over serve.max_body_bytes ({self.max_bytes})"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON.encode()),
                            (b"content-length", str(len(payload)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


# -- the app ------------------------------------------------------------------------------------


def create_app(context: ServeContext) -> FastAPI:
    """The FastAPI app over ``context`` (built by :func:`streams.serve.wiring.build_context`)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        context.start()
        try:
            yield
        finally:
            context.close()

    app = FastAPI(
        title="streamscore",
        version=VERSION,
        description=(
            "Score sensor events over HTTP with the processor's models and validation: the "
            "Open Inference Protocol v2 and a JSON door for SensorEvents, plus model ops. "
            "Press **Authorize** and give an API key (`streamscore serve keys add`)."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(Guard, context=context)
    _errors(app)
    guard = Auth(context)
    scoring = guard.scoring()
    _oip_routes(app, context, scoring)
    _score_route(app, context, scoring)
    ops_routes(app, context, guard)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(OipError)
    async def oip_error(_request: Request, exc: OipError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)

    @app.exception_handler(InfrastructureError)
    async def unavailable(_request: Request, exc: InfrastructureError) -> JSONResponse:
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)


# -- Open Inference Protocol ---------------------------------------------------------------------

_OIP_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {"$ref": "#/components/schemas/InferenceRequest"},
                "example": {
                    "id": "req-1",
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [1, 9],
                            "datatype": "FP32",
                            "data": [50, 0, 86, 0, 36, 0, 30, 50, 20],
                        }
                    ],
                },
            }
        },
    }
}


def _oip_routes(
    app: FastAPI, context: ServeContext, scoring: Callable[..., Awaitable[KeyEntry | None]]
) -> None:
    models = context.models
    Caller = Annotated[KeyEntry | None, Depends(scoring)]

    @app.get("/v2", response_model=ServerMetadataResponse, tags=["inference"])
    async def server_metadata() -> ServerMetadataResponse:
        """Server metadata (OIP)."""
        return ServerMetadataResponse(
            name="streamscore",
            version=VERSION,
            extensions=["binary_tensor_data", "model_repository"],
        )

    @app.get("/v2/health/live", response_model=ServerLiveResponse, tags=["health"])
    async def live() -> ServerLiveResponse:
        return ServerLiveResponse(live=True)

    @app.get("/v2/health/ready", response_model=ServerReadyResponse, tags=["health"])
    async def ready() -> JSONResponse:
        """Ready once the champion is loaded; ``problems`` lists degraded dependencies."""
        ok = context.health.champion_loaded
        body: dict[str, Any] = {"ready": ok}
        if context.health.problems:
            body["problems"] = dict(context.health.problems)
        return JSONResponse(body, status_code=200 if ok else 503)

    def served(name: str, version: str | None) -> Any:
        models.between_batches()  # a swap the watcher loaded shows at once, not at the next batch
        model = models.version(name, version)
        if model is None:
            known = sorted({f"{m.name} v{m.version}" for m in _all(context)})
            what = f"{name} v{version}" if version else name
            raise OipError(f"model {what} is not served here; served: {', '.join(known)}", 404)
        return model

    async def metadata(name: str, version: str | None) -> ModelMetadataResponse:
        model = served(name, version)
        names = model.feature_names
        return ModelMetadataResponse(
            name=model.name,
            versions=[m.version for m in models.named(model.name)],
            platform="onnxruntime",
            inputs=[MetadataTensor(name="input", datatype="FP32", shape=[-1, len(names)])]
            + [MetadataTensor(name=f, datatype="FP32", shape=[-1]) for f in names],
            outputs=output_metadata(model.meta.task, len(model.model.classes or [])),
            parameters={"feature_names": ",".join(names), "version": model.version},
        )

    @app.get("/v2/models/{name}", response_model=ModelMetadataResponse, tags=["inference"],
             responses=_OIP_ERRORS)  # fmt: skip
    async def model_metadata(name: str, _caller: Caller) -> ModelMetadataResponse:
        """Inputs (one ``[N, n_features]`` tensor, or one per feature), outputs, versions."""
        return await metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadataResponse,
             tags=["inference"], responses=_OIP_ERRORS)  # fmt: skip
    async def version_metadata(name: str, version: str, _caller: Caller) -> ModelMetadataResponse:
        return await metadata(name, version)

    async def is_ready(name: str, version: str | None) -> ModelReadyResponse:
        served(name, version)
        return ModelReadyResponse(name=name, ready=True)

    @app.get("/v2/models/{name}/ready", response_model=ModelReadyResponse, tags=["inference"],
             responses=_OIP_ERRORS)  # fmt: skip
    async def model_ready(name: str, _caller: Caller) -> ModelReadyResponse:
        return await is_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReadyResponse,
             tags=["inference"], responses=_OIP_ERRORS)  # fmt: skip
    async def version_ready(name: str, version: str, _caller: Caller) -> ModelReadyResponse:
        return await is_ready(name, version)

    @app.post("/v2/repository/index", response_model=list[RepositoryModel], tags=["inference"])
    async def repository_index(_caller: Caller) -> list[RepositoryModel]:
        """Every served model version (the OIP model-repository extension's index)."""
        return [
            RepositoryModel(name=m.name, version=m.version, state="READY") for m in _all(context)
        ]

    async def infer(request: Request, name: str, version: str | None) -> Response:
        model = served(name, version)
        body = await request.body()
        parsed, tail = parse_request(body, request.headers.get(HEADER_LENGTH))
        matrix = request_matrix(parsed, tail, model.feature_names)
        if matrix.shape[0] == 0:
            raise OipError("the request has no rows")
        _, refused = check_matrix(matrix, model.feature_names, model.lower, model.upper)
        if refused:
            for r in refused:
                context.metrics.dead_letters.labels(stage=r.stage, reason=r.reason).inc()
            context.metrics.outcomes.labels(outcome="rejected").inc(len(refused))
            shown = "; ".join(f"row {r.index}: {r.reason}: {r.message}" for r in refused[:5])
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise OipError(f"{len(refused)} of {matrix.shape[0]} rows refused: {shown}{more}")
        variant = "champion" if model is models.served.champion else "challenger"
        job = TensorJob(matrix, parsed.id or uuid.uuid4().hex, model, variant)
        result = await context.tensors.submit(job, matrix.shape[0])
        outputs = score_outputs(result.scores, result.model.model.classes or [])
        payload, header = encode_response(
            parsed, outputs, model_name=result.model.name, model_version=result.model.version
        )
        if header is None:
            return Response(payload, media_type=JSON)
        return Response(
            payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header)}
        )

    @app.post("/v2/models/{name}/infer", response_model=InferenceResponse, tags=["inference"],
              responses=_OIP_ERRORS, openapi_extra=_INFER_BODY)  # fmt: skip
    async def model_infer(request: Request, name: str, _caller: Caller) -> Response:
        """Score rows with the champion (OIP inference)."""
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
              tags=["inference"], responses=_OIP_ERRORS, openapi_extra=_INFER_BODY)  # fmt: skip
    async def version_infer(request: Request, name: str, version: str, _caller: Caller) -> Response:
        """Score rows with one served version (the champion's or the challenger's)."""
        return await infer(request, name, version)


def _all(context: ServeContext) -> list[Any]:
    served = context.models.served
    return [m for m in (served.champion, served.challenger) if m is not None]


# -- the JSON door ----------------------------------------------------------------------------

_SCORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/SensorEventIn"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/SensorEventIn"}},
                    ]
                },
                "example": {
                    "event_id": "evt-1",
                    "sensor_id": "sensor-7",
                    "event_time": 1767225600000,
                    "features": {
                        "f1": 50,
                        "f2": 0,
                        "f3": 86,
                        "f4": 0,
                        "f5": 36,
                        "f6": 0,
                        "f7": 30,
                        "f8": 50,
                        "f9": 20,
                    },
                },
            }
        },
    }
}


def _score_route(
    app: FastAPI, context: ServeContext, scoring: Callable[..., Awaitable[KeyEntry | None]]
) -> None:
    Caller = Annotated[KeyEntry | None, Depends(scoring)]

    @app.post("/v1/score", response_model=ScoreResponse, tags=["score"],
              responses={400: {"model": ErrorResponse}, 422: {"model": ScoreResponse}},
              openapi_extra=_SCORE_BODY)  # fmt: skip
    async def score(request: Request, _caller: Caller) -> Response:
        """Score one SensorEvent or a list: the processor's ``Prediction`` records.

        Events it refuses make the answer HTTP 422, each with the DLQ's reason and
        message (``MissingFeature``, ``OutOfRange``, ...); the valid events of the same
        list are scored and answered alongside, as the processor would.
        """
        body = await request.body()
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return JSONResponse(
                {"error": f"not JSON: {exc}", "reason": "Undecodable"}, status_code=400
            )
        events = document if isinstance(document, list) else [document]
        if not events:
            return JSONResponse({"error": "no events"}, status_code=400)
        values = [json.dumps(e, separators=(",", ":")).encode() for e in events]
        result = await context.events.submit(EventsJob(values), len(values))
        head = json.dumps({"model_version": result.model_version}, separators=(",", ":"))[
            :-1
        ].encode()
        parts = [head, b',"predictions":[', b",".join(result.predictions), b"]"]
        status = 200
        if result.rejections:
            status = 422
            rejected = [
                {"index": r.index, "event_id": _event_id(events[r.index]), "stage": r.stage,
                 "reason": r.reason, "message": r.message}
                for r in result.rejections
            ]  # fmt: skip
            error = f"{len(rejected)} of {len(events)} event(s) refused"
            parts.append(f',"rejected":{json.dumps(rejected)},"error":{json.dumps(error)}'.encode())
        parts.append(b"}")
        return Response(b"".join(parts), status_code=status, media_type=JSON)


def _event_id(event: Any) -> str | None:
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the bodies the door reads by hand (tensors, sensor events)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (InferenceRequest, SensorEventIn):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    app.openapi_schema = schema
    return schema
