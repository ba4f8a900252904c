"""The champion as bytes: what a Dask worker needs to serve the stream's model.

An onnxruntime session cannot be pickled, so the driver resolves the champion the
way the processor does (:func:`streams.scoring.model_watcher.model_source`: bundle
folders or the MLflow aliases), checks it loads, and ships the bundle's bytes and
metadata. Each worker process builds its :class:`ServingModel` from them once and
keeps it for every partition it scores.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from models.bundle import BundleMeta, load_bundle
from models.serving import ServingModel
from schemas.errors import ConfigError, ModelError
from schemas.settings import Settings
from streams.scoring.model_watcher import RegistryModelSource, model_source

_built: dict[str, ServingModel] = {}
_building = threading.Lock()


@dataclass(frozen=True)
class ModelPayload:
    onnx_bytes: bytes
    meta: BundleMeta
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    #: SHA-256 of the ONNX bytes: the key of the model built on each worker.
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(self.onnx_bytes).hexdigest())

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    def serving(self) -> ServingModel:
        """The model, built at the first call in this process and kept."""
        with _building:
            model = _built.get(self.digest)
            if model is None:
                model = ServingModel.build(
                    self.onnx_bytes,
                    self.meta,
                    intra_op_threads=self.intra_op_threads,
                    inter_op_threads=self.inter_op_threads,
                    providers=self.providers,
                )
                _built[self.digest] = model
            return model


def champion_payload(settings: Settings) -> ModelPayload:
    """The champion the processor would serve now, ready to ship to workers."""
    source = model_source(settings)
    try:
        champion = source.load("champion")
        if isinstance(source, RegistryModelSource):  # the version just loaded: cached
            folder = source.registry.fetch(source.model_name, "champion").path
        else:
            folder = settings.models.champion_path
        onnx_bytes, meta = load_bundle(folder)
    except ModelError as exc:
        raise ConfigError(
            f"no usable champion: {exc}. Run `streamscore train`, or `streamscore models "
            "train` for the MLflow registry, or give --champion FOLDER"
        ) from exc
    if meta.version != champion.version:
        raise ConfigError(
            f"the champion moved from v{champion.version} to v{meta.version} while it was "
            "loaded; run the job again"
        )
    p = settings.processor
    return ModelPayload(
        onnx_bytes,
        meta,
        intra_op_threads=p.ort_intra_op_threads,
        inter_op_threads=p.ort_inter_op_threads,
        providers=tuple(p.ort_providers),
    )
