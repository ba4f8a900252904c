"""Where the serving models come from, and how they are swapped while the stream flows.

A *model source* names the version behind each role (``champion``,
``challenger``) and loads it:

* :class:`FileModelSource` — bundle folders (``<dir>/champion``, ``<dir>/challenger``);
  replacing a folder with a new version swaps it;
* :class:`RegistryModelSource` — MLflow aliases ``champion`` / ``challenger``;
  versions are downloaded once into a local cache keyed by version, and when
  MLflow is unreachable at start the cached versions serve.

:class:`ModelWatcher` polls the source on its own thread, loads a new version
in the background and hands it over *between two batches*; the loop never
waits for a download and never scores with a half-loaded model. A version that
fails to load or does not fit the stream's features is refused (remembered, so
it is not retried on every poll): the current model keeps serving, and the
refusal shows in logs, metrics and the audit topic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.bundle import bundle_exists, load_bundle
from models.runtime import DEFAULT_PROVIDERS
from models.serving import ServingModel
from schemas.errors import InfrastructureError, ModelError, SignatureMismatch
from schemas.settings import Settings

log = logging.getLogger(__name__)

ROLES = ("champion", "challenger")


class ModelSource(Protocol):
    def versions(self) -> dict[str, str]:
        """The version currently behind each role (cheap: polled every few seconds)."""
        ...

    def load(self, role: str) -> ServingModel:
        """Load the current version of ``role``; ModelError / SignatureMismatch if unusable."""
        ...


@dataclass
class FileModelSource:
    champion_path: Path
    challenger_path: Path
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = DEFAULT_PROVIDERS

    def _path(self, role: str) -> Path:
        return self.champion_path if role == "champion" else self.challenger_path

    def versions(self) -> dict[str, str]:
        found = {}
        for role in ROLES:
            path = self._path(role)
            if bundle_exists(path):
                try:
                    _, meta = load_bundle(path)
                except ModelError:
                    found[role] = "unreadable"
                    continue
                found[role] = meta.version
        return found

    def load(self, role: str) -> ServingModel:
        return ServingModel.from_bundle(
            self._path(role),
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            providers=self.providers,
        )


class RegistryModelSource:
    """MLflow aliases through ``connectors.model_registry`` (imported lazily: MLflow is heavy)."""

    def __init__(self, settings: Settings) -> None:
        from connectors.model_registry import ModelRegistry

        r = settings.registry
        self.model_name = r.model_name
        self.registry = ModelRegistry.open(
            settings.home,
            tracking_uri=r.tracking_uri,
            registry_uri=r.registry_uri,
            experiment=r.experiment,
            cache_dir=r.cache_dir,
            probe_timeout_s=r.probe_timeout_s,
        )
        self.threads = (
            settings.processor.ort_intra_op_threads,
            settings.processor.ort_inter_op_threads,
        )
        self.providers = tuple(settings.processor.ort_providers)
        #: Set when the last load came from the cache because MLflow was unreachable.
        self.offline_reason: str | None = None

    def versions(self) -> dict[str, str]:
        return {
            role: v
            for role, v in self.registry.current_versions(self.model_name).items()
            if role in ROLES
        }

    def load(self, role: str) -> ServingModel:
        from connectors.model_registry import RegistryError

        try:
            fetched = self.registry.fetch(self.model_name, role)
        except RegistryError as exc:
            raise ModelError(str(exc)) from exc
        self.offline_reason = fetched.reason if fetched.offline else None
        if fetched.offline:
            log.warning(
                "MLflow unreachable: serving cached %s v%s (%s)",
                role, fetched.version, fetched.reason,
            )  # fmt: skip
        intra, inter = self.threads
        return ServingModel.from_bundle(
            fetched.path, intra_op_threads=intra, inter_op_threads=inter, providers=self.providers
        )


def model_source(settings: Settings) -> ModelSource:
    if settings.models.source == "registry":
        return RegistryModelSource(settings)
    p = settings.processor
    return FileModelSource(
        settings.models.champion_path,
        settings.models.challenger_path,
        p.ort_intra_op_threads,
        p.ort_inter_op_threads,
        tuple(p.ort_providers),
    )


def check_features(model: ServingModel, stream_features: Sequence[str]) -> None:
    """A model may only ask for features the stream carries."""
    missing = [f for f in model.feature_names if f not in set(stream_features)]
    if missing:
        raise SignatureMismatch(
            f"{model.name} v{model.version} needs features the stream does not carry: {missing}"
        )


@dataclass
class Refusal:
    role: str
    version: str
    reason: str


@dataclass
class ModelWatcher:
    """Polls a model source on a thread; the loop collects loaded models between batches."""

    source: ModelSource
    stream_features: list[str]
    current: dict[str, str]
    poll_interval_s: float = 5.0
    #: The roles this watcher follows (``champion`` only when there is no challenger role).
    roles: tuple[str, ...] = ROLES
    _pending: dict[str, ServingModel] = field(default_factory=dict)
    #: (role, version) pairs refused already (at start, or by an earlier poll): not retried.
    refused: set[tuple[str, str]] = field(default_factory=set)
    _refusals: list[Refusal] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    polls: int = 0
    source_up: bool = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        """Look at the source once; load what moved (also callable directly, e.g. in tests)."""
        self.polls += 1
        try:
            versions = self.source.versions()
            self.source_up = True
        except InfrastructureError as exc:
            if self.source_up:
                log.warning("model source unreachable, keeping current models: %s", exc)
            self.source_up = False
            return
        for role, version in versions.items():
            if role not in self.roles:
                continue
            if version == self.current.get(role) or (role, version) in self.refused:
                continue
            with self._lock:
                if role in self._pending and self._pending[role].version == version:
                    continue
            try:
                model = self.source.load(role)
                check_features(model, self.stream_features)
            except (ModelError, SignatureMismatch) as exc:
                self._refuse(role, version, f"{type(exc).__name__}: {exc}")
                continue
            except InfrastructureError as exc:
                log.warning("cannot load %s v%s yet: %s", role, version, exc)
                continue
            if model.version != version:
                log.info("%s moved again while loading: got v%s", role, model.version)
            with self._lock:
                self._pending[role] = model
            log.info("%s v%s loaded; switching at the next batch boundary", role, model.version)

    def _refuse(self, role: str, version: str, reason: str) -> None:
        log.error("refusing %s v%s: %s", role, version, reason)
        with self._lock:
            self.refused.add((role, version))
            self._refusals.append(Refusal(role, version, reason))

    def take(self) -> tuple[dict[str, ServingModel], list[Refusal]]:
        """Models ready to switch to, and refusals since the last call (called between batches)."""
        with self._lock:
            pending, refusals = self._pending, self._refusals
            self._pending, self._refusals = {}, []
        for role, model in pending.items():
            self.current[role] = model.version
        return pending, refusals
