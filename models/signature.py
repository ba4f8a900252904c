"""What an ONNX file says about itself, and whether it keeps its bundle's contract.

:func:`onnx_signature` reads a graph's inputs, outputs, declared class labels,
producer and opsets without building a session. :func:`read_onnx_file` turns a
``.onnx`` file into the bytes and :class:`~models.bundle.BundleMeta` a model
version is registered with: the feature order and profile come from a
``bundle.json`` beside it, from the caller, or from the model's own inputs.
:func:`load_checked` builds the session that proves bytes and metadata agree.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import META_FILE, BundleMeta
from models.profile import ReferenceProfile, build_profile
from models.runtime import OnnxModel
from schemas.errors import ConfigError, ModelError

_ONNX_ELEM_TYPES = {1: "float", 6: "int32", 7: "int64", 8: "string", 9: "bool", 11: "double"}


@dataclass(frozen=True)
class OnnxSignature:
    """Inputs and outputs of an ONNX graph, as ``{"name", "type", "shape"}`` dicts."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    #: Class labels declared by a classifier node (skl2onnx writes them), else empty.
    class_labels: list[str]
    producer: str
    opsets: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "class_labels": self.class_labels,
            "producer": self.producer,
            "opsets": self.opsets,
        }


def onnx_signature(onnx_bytes: bytes) -> OnnxSignature:
    """Read the signature of an ONNX model without building a session.

    Raises ``ValueError`` when the bytes are not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model_from_string(onnx_bytes)
    except DecodeError as exc:
        raise ValueError(f"not an ONNX model: {exc}") from exc
    initializers = {i.name for i in proto.graph.initializer}
    labels: list[str] = []
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and not labels:
                labels = [s.decode("utf-8") for s in attr.strings]
            elif attr.name == "classlabels_int64s" and not labels:
                labels = [str(i) for i in attr.ints]
    return OnnxSignature(
        inputs=[_value_info(v) for v in proto.graph.input if v.name not in initializers],
        outputs=[_value_info(v) for v in proto.graph.output],
        class_labels=labels,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
    )


def _value_info(value: Any) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "type": kind or "unknown", "shape": None}
    tensor = value.type.tensor_type
    shape: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or None)
    elem = _ONNX_ELEM_TYPES.get(tensor.elem_type, str(tensor.elem_type))
    return {"name": value.name, "type": f"tensor({elem})", "shape": shape}


def load_checked(onnx_bytes: bytes, meta: BundleMeta) -> OnnxModel:
    """Build an onnxruntime session against the bundle's feature order (ModelError if not)."""
    return OnnxModel(
        onnx_bytes, meta.feature_names, name=meta.name, version=meta.version, classes=meta.classes
    )


def read_onnx_file(
    file: Path,
    *,
    feature_names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    reference: np.ndarray | None = None,
) -> tuple[bytes, BundleMeta]:
    """The bytes of a ``.onnx`` file and the bundle metadata to register them with.

    The feature order comes from, in turn: a ``bundle.json`` beside the file,
    ``feature_names``, or the model's inputs when it takes one input per
    feature. The reference profile comes from ``bundle.json`` or is built from
    ``reference`` (training rows in feature order), else it is empty. An
    unreadable file or a feature order that cannot be found is a
    :class:`ConfigError`; bytes that are not an ONNX model, or do not load
    against that feature order, are a :class:`ModelError`.
    """
    try:
        onnx_bytes = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read ONNX model {file}: {exc}") from exc
    try:
        signature = onnx_signature(onnx_bytes)
    except ValueError as exc:
        raise ModelError(f"{file} is not an ONNX model: {exc}") from exc
    meta = _meta_for_file(file, onnx_bytes, signature, feature_names, classes, reference)
    return onnx_bytes, meta


def _meta_for_file(
    file: Path,
    onnx_bytes: bytes,
    signature: OnnxSignature,
    feature_names: Sequence[str] | None,
    classes: Sequence[str] | None,
    reference: np.ndarray | None,
) -> BundleMeta:
    beside = file.parent / META_FILE
    base: BundleMeta | None = None
    if beside.is_file():
        try:
            base = BundleMeta.model_validate_json(beside.read_text("utf-8"))
        except ValueError as exc:
            raise ModelError(f"unreadable {beside}: {exc}") from exc
        if feature_names is not None and list(feature_names) != base.feature_names:
            raise ConfigError(
                f"feature names {list(feature_names)} differ from {beside}: {base.feature_names}"
            )
    names = list(feature_names) if feature_names is not None else None
    if names is None and base is not None:
        names = base.feature_names
    if names is None:
        names = _features_from_inputs(file, signature)
    if reference is not None:
        profile = build_profile(np.asarray(reference, dtype=np.float64), names)
    elif base is not None:
        profile = base.profile
    else:
        profile = ReferenceProfile(features=[])
    if profile.features and profile.names != names:
        raise ConfigError(f"the reference profile names {profile.names}, the model {names}")
    labels = list(classes) if classes is not None else None
    if labels is None:
        labels = base.classes if base is not None and base.classes else signature.class_labels
    # The runtime decides what kind of model this is, exactly as the processor will.
    task = OnnxModel(onnx_bytes, names, name=file.name, version="candidate", classes=labels).task
    return BundleMeta(
        name=base.name if base is not None else file.stem,
        version=base.version if base is not None else "0",
        task="regression" if task == "regression" else "classification",
        feature_names=names,
        classes=labels,
        profile=profile,
        metrics=base.metrics if base is not None else {},
        params=base.params if base is not None else {},
        algorithm=base.algorithm if base is not None else f"onnx ({signature.producer or '?'})",
        dataset=base.dataset if base is not None else {},
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _features_from_inputs(file: Path, signature: OnnxSignature) -> list[str]:
    inputs = signature.inputs
    if len(inputs) > 1:
        return [i["name"] for i in inputs]
    if len(inputs) == 1:
        shape = inputs[0]["shape"] or []
        if len(shape) == 2 and shape[-1] == 1:
            return [inputs[0]["name"]]
        width = shape[-1] if shape else "?"
        raise ConfigError(
            f"{file.name} takes one [N, {width}] matrix: its column names are not in the model; "
            "give the feature order (feature_names / --features) or a bundle.json beside it"
        )
    raise ModelError(f"{file.name} has no inputs")
