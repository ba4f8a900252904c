"""A model ready to serve: the onnxruntime session plus its bundle's contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bundle import BundleMeta, load_bundle
from models.runtime import DEFAULT_PROVIDERS, OnnxModel
from schemas.errors import SignatureMismatch


@dataclass(frozen=True)
class ServingModel:
    model: OnnxModel
    meta: BundleMeta
    #: Hard range per feature (lower, upper); ±inf when the bundle has no profile entry.
    lower: np.ndarray
    upper: np.ndarray

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def feature_names(self) -> list[str]:
        return self.meta.feature_names

    @classmethod
    def from_bundle(
        cls,
        folder: Path,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> ServingModel:
        """Load and check a bundle; raises ModelError / SignatureMismatch when unusable."""
        onnx_bytes, meta = load_bundle(folder)
        return cls.build(
            onnx_bytes,
            meta,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            providers=providers,
        )

    @classmethod
    def build(
        cls,
        onnx_bytes: bytes,
        meta: BundleMeta,
        *,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> ServingModel:
        """Check ``onnx_bytes`` against ``meta``; ``providers`` in order of preference."""
        model = OnnxModel(
            onnx_bytes,
            meta.feature_names,
            name=meta.name,
            version=meta.version,
            classes=meta.classes,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            providers=providers,
        )
        if model.task != meta.task:
            raise SignatureMismatch(
                f"{meta.name} v{meta.version}: bundle says {meta.task}, the model is a {model.task}"
            )
        profiled = meta.profile.by_name()
        lower = np.array(
            [profiled[n].hard_min if n in profiled else -np.inf for n in meta.feature_names]
        )
        upper = np.array(
            [profiled[n].hard_max if n in profiled else np.inf for n in meta.feature_names]
        )
        return cls(model=model, meta=meta, lower=lower, upper=upper)
