"""A model bundle: the ONNX file plus everything scoring needs to use it safely.

On disk a bundle is a folder::

    model.onnx     the model
    bundle.json    name, version, task, feature order, classes, reference
                   profile, offline metrics, lineage

Nothing in the scoring loop knows which dataset a bundle came from: the feature
order, the classes and the profile travel with the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.profile import ReferenceProfile
from schemas.errors import ModelError

MODEL_FILE = "model.onnx"
META_FILE = "bundle.json"


class BundleMeta(BaseModel):
    name: str
    version: str
    task: Literal["classification", "regression"]
    feature_names: list[str]
    #: Class names, in the order of the model's probability columns. Scores carry
    #: these names: a model whose labels are integer codes emits the name at its
    #: code's position among the classes it declares.
    classes: list[str] = []
    profile: ReferenceProfile
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    algorithm: str = ""
    dataset: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""


def save_bundle(folder: Path, onnx_bytes: bytes, meta: BundleMeta) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_bytes(onnx_bytes)
    (folder / META_FILE).write_text(meta.model_dump_json(indent=2), encoding="utf-8")
    return folder


def load_bundle(folder: Path) -> tuple[bytes, BundleMeta]:
    """Read a bundle folder; a missing or unreadable part is a :class:`ModelError`."""
    try:
        onnx_bytes = (folder / MODEL_FILE).read_bytes()
        meta = BundleMeta.model_validate(json.loads((folder / META_FILE).read_text("utf-8")))
    except FileNotFoundError as exc:
        raise ModelError(f"no model bundle at {folder}: {exc.filename} is missing") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable model bundle at {folder}: {exc}") from exc
    return onnx_bytes, meta


def bundle_exists(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / META_FILE).is_file()
