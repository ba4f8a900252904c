"""The Open Inference Protocol (v2) REST messages, and tensors to and from feature matrices.

The request and response models follow the protocol's REST specification (the shapes
KServe's ``v2_datamodels`` and Triton use), so any OIP client works unchanged. Two
ways to send rows are understood:

* one ``FP32`` / ``FP64`` tensor of shape ``[N, n_features]`` (``[n_features]`` is one
  row) with columns in the model's feature order (``GET /v2/models/{name}`` lists it);
* one tensor per feature, named like the feature, each of shape ``[N]`` or ``[N, 1]``.

Tensor data comes as JSON (flat in row-major order, or nested) or, with the binary
tensor extension that Triton's clients use by default, as raw little-endian bytes after
a JSON header of ``Inference-Header-Content-Length`` bytes. Outputs are ``label``
(``BYTES``, classifiers), ``score`` (``FP64``) and ``probabilities`` (``FP64``,
``[N, n_classes]``, classifiers), in JSON or binary as the request asks.

A request that cannot be read is an :class:`OipError`: HTTP 400 with the protocol's
error body ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.runtime import Scores

#: Datatypes a feature tensor may have, with their little-endian numpy dtype.
FEATURE_DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
#: Every datatype name of the protocol (others are not even a wrong datatype).
OIP_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
HEADER_LENGTH = "Inference-Header-Content-Length"
#: The most elements one tensor may declare (a shape is checked before any allocation).
MAX_ELEMENTS = 50_000_000


class OipError(Exception):
    """A request the protocol refuses: 400 (or ``status``) with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- the protocol's messages ------------------------------------------------------------------

Parameters = dict[str, Any]


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")


class ServerMetadataResponse(_Message):
    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(_Message):
    live: bool


class ServerReadyResponse(_Message):
    ready: bool


class MetadataTensor(_Message):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Message):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class ModelReadyResponse(_Message):
    name: str
    ready: bool


class RequestInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    #: Row-major, flat or nested; absent when the tensor travels as binary.
    data: list[Any] | None = None


class RequestOutput(_Message):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Message):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(_Message):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ErrorResponse(_Message):
    error: str


class RepositoryModel(_Message):
    name: str
    version: str
    state: str
    reason: str = ""


# -- reading a request ------------------------------------------------------------------------


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON part of an inference request and its binary tail (empty without one)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise OipError(f"{HEADER_LENGTH} is not a number: {header_length[:40]!r}") from None
        if not 0 < n <= len(body):
            raise OipError(f"{HEADER_LENGTH} {n} is outside the body's {len(body)} bytes")
        head, tail = body[:n], body[n:]
    else:
        head, tail = body, b""
    try:
        document = json.loads(head)
    except (ValueError, RecursionError) as exc:
        raise OipError(f"the request body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OipError("an inference request is a JSON object with 'inputs'")
    try:
        return InferenceRequest.model_validate(document), tail
    except ValueError as exc:  # pydantic's ValidationError
        raise OipError(f"not an inference request: {_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    first = errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _tensor(tensor: RequestInput, tail: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One input tensor as a float64 array of its declared shape; the next binary offset."""
    if tensor.datatype not in FEATURE_DATATYPES:
        known = "" if tensor.datatype in OIP_DATATYPES else " (no such OIP datatype)"
        raise OipError(
            f"input {tensor.name!r}: datatype {tensor.datatype}{known} not accepted; "
            "features are FP32 or FP64"
        )
    shape = tensor.shape
    if any(d < 0 for d in shape) or len(shape) > 2 or not shape:
        raise OipError(f"input {tensor.name!r}: shape {shape} must be [N, n] or [n]")
    size = math.prod(shape)
    if size > MAX_ELEMENTS:
        raise OipError(f"input {tensor.name!r}: {size} elements is more than {MAX_ELEMENTS}")
    params = tensor.parameters or {}
    binary_size = params.get("binary_data_size")
    if binary_size is not None:
        if tensor.data is not None:
            raise OipError(f"input {tensor.name!r} has both data and binary_data_size")
        dtype = FEATURE_DATATYPES[tensor.datatype]
        if not isinstance(binary_size, int) or binary_size != size * dtype.itemsize:
            raise OipError(
                f"input {tensor.name!r}: binary_data_size {binary_size} is not "
                f"{size} x {dtype.itemsize} bytes for shape {shape}"
            )
        if offset + binary_size > len(tail):
            raise OipError(f"input {tensor.name!r}: the body ends before its binary data")
        array = np.frombuffer(tail, dtype=dtype, count=size, offset=offset).astype(np.float64)
        return array.reshape(shape), offset + binary_size
    if tensor.data is None:
        raise OipError(f"input {tensor.name!r} has no data")
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise OipError(f"input {tensor.name!r}: data is not a regular array of numbers") from None
    if array.dtype.kind not in "iuf":
        raise OipError(f"input {tensor.name!r}: data must be numbers for {tensor.datatype}")
    if array.size != size:
        raise OipError(
            f"input {tensor.name!r}: {array.size} values do not fill shape {shape} ({size})"
        )
    if tensor.datatype == "FP32":
        array = array.astype(np.float32)  # the values the client meant: FP32 precision
    return array.astype(np.float64).reshape(shape), offset


def request_matrix(
    request: InferenceRequest, tail: bytes, feature_names: Sequence[str]
) -> np.ndarray:
    """The ``[N, n_features]`` float64 matrix of a request, in ``feature_names`` order."""
    n_features = len(feature_names)
    offset = 0
    if len(request.inputs) == 1 and request.inputs[0].name not in feature_names:
        array, offset = _tensor(request.inputs[0], tail, offset)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.shape[1] != n_features:
            raise OipError(
                f"input {request.inputs[0].name!r}: shape {request.inputs[0].shape} has "
                f"{array.shape[1]} columns; the model takes [N, {n_features}] "
                f"({', '.join(feature_names)})"
            )
        return array
    columns: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        if tensor.name not in feature_names:
            raise OipError(
                f"input {tensor.name!r} is no feature of the model; send one [N, "
                f"{n_features}] tensor or one tensor per feature ({', '.join(feature_names)})"
            )
        if tensor.name in columns:
            raise OipError(f"input {tensor.name!r} appears twice")
        array, offset = _tensor(tensor, tail, offset)
        if array.ndim == 2 and array.shape[1] != 1:
            raise OipError(f"input {tensor.name!r}: shape {tensor.shape} must be [N] or [N, 1]")
        columns[tensor.name] = array.reshape(-1)
    missing = [n for n in feature_names if n not in columns]
    if missing:
        raise OipError(f"MissingFeature: missing feature(s): {', '.join(missing)}")
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise OipError(f"feature tensors have different lengths: {sorted(lengths)}")
    return np.column_stack([columns[n] for n in feature_names])


# -- writing a response -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray


def score_outputs(scores: Scores, classes: Sequence[str]) -> list[Output]:
    """``label``, ``score`` and ``probabilities`` of a scored matrix."""
    n = int(scores.score.shape[0])
    outputs = []
    if scores.labels is not None:
        outputs.append(Output("label", "BYTES", [n], np.asarray(scores.labels, dtype=object)))
    outputs.append(Output("score", "FP64", [n], np.asarray(scores.score, dtype=np.float64)))
    if scores.probabilities is not None:
        p = np.asarray(scores.probabilities, dtype=np.float64)
        outputs.append(Output("probabilities", "FP64", [n, len(classes)], p))
    return outputs


def output_metadata(task: str, n_classes: int) -> list[MetadataTensor]:
    """What :func:`score_outputs` answers for a model of ``task``."""
    score = MetadataTensor(name="score", datatype="FP64", shape=[-1])
    if task != "classification":
        return [score]
    return [
        MetadataTensor(name="label", datatype="BYTES", shape=[-1]),
        score,
        MetadataTensor(name="probabilities", datatype="FP64", shape=[-1, n_classes]),
    ]


def _wants_binary(request: InferenceRequest) -> dict[str, bool]:
    default = bool((request.parameters or {}).get("binary_data_output", False))
    wanted = {
        o.name: bool((o.parameters or {}).get("binary_data", default))
        for o in request.outputs or []
    }
    return {"*": default, **wanted}


def _binary(output: Output) -> bytes:
    if output.datatype == "BYTES":
        parts = []
        for value in output.values.tolist():
            data = str(value).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(output.values, dtype="<f8").tobytes()


def _json_data(output: Output) -> list[Any]:
    values = output.values.reshape(-1).tolist()
    return [str(v) for v in values] if output.datatype == "BYTES" else values


def encode_response(
    request: InferenceRequest,
    outputs: list[Output],
    *,
    model_name: str,
    model_version: str,
    parameters: Parameters | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    requested = [o.name for o in request.outputs or []]
    known = {o.name for o in outputs}
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise OipError(f"unknown output(s) {unknown}; this model answers {sorted(known)}")
    chosen = [o for o in outputs if o.name in requested] if requested else outputs
    binary = _wants_binary(request)
    described: list[dict[str, Any]] = []
    tails: list[bytes] = []
    for output in chosen:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if binary.get(output.name, binary["*"]):
            blob = _binary(output)
            entry["parameters"] = {"binary_data_size": len(blob)}
            tails.append(blob)
        else:
            entry["data"] = _json_data(output)
        described.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    if parameters:
        document["parameters"] = parameters
    document["outputs"] = described
    head = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    if not tails:
        return head, None
    return head + b"".join(tails), len(head)
