"""The MLflow model registry, behind one small adapter: the only module that imports mlflow.

What it keeps in MLflow, per model version:

* a run with the parameters, offline metrics, lineage (dataset name and content
  hash), the bundle (``bundle/model.onnx`` + ``bundle/bundle.json``), the ONNX
  signature and feature order (``signature.json``), the reference profile
  (``profile.json``), evaluation plots (``plots/``) and ``model_card.md``;
* a registered model version whose source is ``runs:/<run>/bundle``, tagged with
  the SHA-256 of its ``model.onnx`` so a download can be verified.

Roles are aliases on the registered model: ``champion`` scores the stream,
``challenger`` is shadow-scored, ``previous-champion`` is where :meth:`rollback`
goes. A promotion also tags the new champion version with the version it
replaced, so successive rollbacks walk back through the promotions.

The processor never loads a model through MLflow: :meth:`ModelRegistry.fetch`
resolves ``models:/<name>@<alias>`` to a version, downloads the bundle once into
the local model cache (:mod:`models.cache`: ``<cache>/<name>/<version>/``) and
records the alias there. When the registry cannot be reached, it serves the
version last recorded for that alias and says so (``FetchedModel.offline``).

What a run says about its model is written by ``models/``, which knows nothing
of MLflow: the run's files (:mod:`models.artifacts`: evaluation, plots,
signature, profile, model card), the metadata of a user's own ONNX file
(:mod:`models.signature`) and the lifecycle events (:mod:`models.lifecycle`).

Errors: anything MLflow, its HTTP client or its database raise is translated
here into :class:`RegistryUnavailable` (the registry cannot answer: infrastructure)
or :class:`RegistryError` (it answered no: unknown model, version or alias, or a
lifecycle action its state does not allow). Bad model files are
:class:`~schemas.errors.ModelError`.

The module is one piece (about 700 lines): every public method is one
conversation with MLflow behind the same store check (:meth:`_require_store`)
and error translation (:func:`_translated`); what is not MLflow already lives
in ``models/``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow.artifacts
import numpy as np
import requests
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from models.artifacts import BUNDLE_FOLDER, MODEL_CARD_FILE, write_artifacts, write_model_card
from models.bundle import MODEL_FILE, BundleMeta
from models.cache import FetchedModel, ModelCache
from models.card import DEFAULT_INTENDED_USE
from models.lifecycle import LifecycleEvent
from models.roles import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from models.signature import read_onnx_file
from schemas.errors import ConfigError, InfrastructureError, StreamscoreError
from schemas.redaction import mask_url_passwords

log = logging.getLogger(__name__)


DEFAULT_MODEL_NAME = "shuttle-anomaly"
DEFAULT_EXPERIMENT = "streamscore"
#: Artifact folder of a run that holds the bundle; the model version's source.
BUNDLE_ARTIFACT = BUNDLE_FOLDER

TAG_ONNX_SHA256 = "streamscore.onnx_sha256"
TAG_PREVIOUS_CHAMPION = "streamscore.previous_champion"
TAG_ORIGIN = "streamscore.origin"
TAG_BUNDLE_NAME = "streamscore.bundle_name"
TAG_PROFILE = "streamscore.profile"

#: MLflow error codes that mean "the registry answered no", not "it cannot answer".
_REFUSALS = {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_PARAM_VALUE_LIMIT = 6000


class RegistryUnavailable(InfrastructureError):
    """MLflow (server, database or artifact store) cannot be reached or cannot answer."""


class RegistryError(StreamscoreError):
    """The registry answered, but refuses: unknown model, version or alias, or a
    lifecycle action that the current aliases do not allow."""


# -- results (also models.lifecycle.LifecycleEvent and models.cache.FetchedModel) -------------


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    aliases: list[str]
    run_id: str
    source: str
    created_at: int  # epoch milliseconds
    description: str
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    #: Top-level run artifacts (folders end with ``/``); filled by :meth:`ModelRegistry.describe`.
    artifacts: list[str] = field(default_factory=list)


# -- the adapter ------------------------------------------------------------------------------


class ModelRegistry:
    """MLflow tracking + registry for streamscore models, and the local model cache.

    ``tracking_uri`` is a ``sqlite:///`` file (embedded) or an MLflow server
    ``http(s)://`` address; ``registry_uri`` defaults to it. ``artifact_location``
    is where a newly created experiment keeps its artifacts (a server chooses
    its own when None). Use :meth:`open` for the usual construction.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        cache_dir: Path,
        registry_uri: str | None = None,
        artifact_location: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.cache_dir = cache_dir
        self.artifact_location = artifact_location
        self.experiment = experiment
        self.probe_timeout_s = probe_timeout_s

    @functools.cached_property
    def _client(self) -> MlflowClient:
        # Created on first use, after _require_store: a sqlite client creates its
        # database as soon as it exists, and a read must not create an empty registry.
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        cache_dir: Path | None = None,
        probe_timeout_s: float = 2.0,
    ) -> ModelRegistry:
        """The registry of ``home``: embedded (sqlite + local artifacts under
        ``<home>/mlflow``) unless a ``tracking_uri`` is given; the model cache is
        ``<home>/cache/models`` either way."""
        cache = cache_dir or home / "cache" / "models"
        if tracking_uri:
            return cls(
                tracking_uri=tracking_uri,
                registry_uri=registry_uri,
                cache_dir=cache,
                experiment=experiment,
                probe_timeout_s=probe_timeout_s,
            )
        mlflow_dir = home.resolve() / "mlflow"
        return cls(
            tracking_uri=f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            registry_uri=registry_uri,
            cache_dir=cache,
            artifact_location=(mlflow_dir / "artifacts").as_uri(),
            experiment=experiment,
            probe_timeout_s=probe_timeout_s,
        )

    def __repr__(self) -> str:
        shown = mask_url_passwords(self.tracking_uri)
        return f"ModelRegistry(tracking_uri={shown!r}, cache_dir={self.cache_dir!s})"

    # -- registering -----------------------------------------------------------------------

    def log_and_register(
        self,
        onnx_bytes: bytes,
        meta: BundleMeta,
        *,
        registered_name: str,
        actor: str,
        estimator: Any = None,
        X_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        intended_use: str = DEFAULT_INTENDED_USE,
        origin: str = "trained by `streamscore models train`",
        validate: bool = True,
    ) -> LifecycleEvent:
        """Log one model as an MLflow run and register it as a new version of ``registered_name``.

        The run's files are :func:`models.artifacts.write_artifacts`'s: with
        ``X_test`` / ``y_test`` the exported ONNX model is evaluated (metrics, slices,
        plots) and those metrics replace ``meta.metrics``; with a fitted ``estimator``
        its feature importance is plotted and picks the sliced features.
        ``validate=False`` registers the bytes unchecked: only for rehearsing how
        consumers refuse a broken version (:meth:`fetch` still refuses it).
        """
        _check_name(registered_name)
        with tempfile.TemporaryDirectory(prefix="streamscore-run-") as tmp:
            staging = Path(tmp)
            artifacts = write_artifacts(
                staging,
                onnx_bytes,
                meta,
                estimator=estimator,
                X_test=X_test,
                y_test=y_test,
                validate=validate,
            )
            meta = artifacts.meta
            onnx_sha = hashlib.sha256(onnx_bytes).hexdigest()
            version_tags = {
                TAG_ONNX_SHA256: onnx_sha,
                TAG_ORIGIN: origin,
                TAG_BUNDLE_NAME: meta.name,
                TAG_PROFILE: "present" if meta.profile.features else "absent",
                "streamscore.algorithm": meta.algorithm or "unknown",
                "streamscore.task": meta.task,
                "streamscore.registered_by": actor,
                "dataset.name": str(meta.dataset.get("name", "unknown")),
                "dataset.sha256": str(meta.dataset.get("sha256", "unknown")),
                **(tags or {}),
            }
            self._require_store(create=True)
            with _translated(f"registering {registered_name}"):
                experiment_id = self._experiment_id()
                run = self._client.create_run(
                    experiment_id,
                    run_name=meta.name,
                    tags={"mlflow.user": actor, **version_tags},
                )
                run_id = run.info.run_id
                try:
                    self._client.log_batch(
                        run_id, metrics=_metrics(meta), params=_params(meta), synchronous=True
                    )
                    self._client.log_artifacts(run_id, str(staging))
                    self._ensure_registered_model(registered_name)
                    version = self._client.create_model_version(
                        registered_name,
                        source=f"runs:/{run_id}/{BUNDLE_ARTIFACT}",
                        run_id=run_id,
                        tags=version_tags,
                        description=description or None,
                    )
                    version_id = str(version.version)
                    card = write_model_card(
                        artifacts,
                        registered_name=registered_name,
                        version=version_id,
                        run_id=run_id,
                        source=origin,
                        intended_use=intended_use,
                    )
                    self._client.log_artifact(run_id, str(card))
                except Exception:
                    with contextlib.suppress(MlflowException, requests.RequestException):
                        self._client.set_terminated(run_id, "FAILED")
                    raise
                self._client.set_terminated(run_id, "FINISHED")
        log.info("registered %s v%s (run %s)", registered_name, version_id, run_id)
        return LifecycleEvent.now(
            "registered",
            registered_name,
            version_id,
            actor,
            new_version=version_id,
            run_id=run_id,
            onnx_sha256=onnx_sha,
            dataset_sha256=str(meta.dataset.get("sha256", "unknown")),
            origin=origin,
        )

    def register_onnx_file(
        self,
        path: Path,
        *,
        registered_name: str,
        actor: str,
        feature_names: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        reference: np.ndarray | None = None,
        X_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
    ) -> LifecycleEvent:
        """Register a user's own ONNX model (a ``.onnx`` file or a bundle folder).

        Its feature order, classes and reference profile are found as
        :func:`models.signature.read_onnx_file` says; a model that does not load
        against that order is not registered (:class:`~schemas.errors.ModelError`).
        Without a profile the version is registered with an empty one (tag
        ``streamscore.profile=absent``): the processor can then only type-check
        inputs (no range checks) and cannot compute PSI drift for it; the model
        card says so.
        """
        file = path / MODEL_FILE if path.is_dir() else path
        onnx_bytes, meta = read_onnx_file(
            file, feature_names=feature_names, classes=classes, reference=reference
        )
        return self.log_and_register(
            onnx_bytes,
            meta,
            registered_name=registered_name,
            actor=actor,
            X_test=X_test,
            y_test=y_test,
            tags=tags,
            description=description,
            origin=f"imported from `{file.name}` with `streamscore models register`",
        )

    # -- aliases and lifecycle -------------------------------------------------------------

    def current_versions(self, name: str) -> dict[str, str]:
        """Alias -> version of a registered model in one registry call (empty if unknown).

        Cheap enough to poll every few seconds; a missing model is not an error here.
        """
        self._require_store()
        with _translated(f"reading the aliases of {name}"):
            try:
                model = self._client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise
        return {alias: str(version) for alias, version in model.aliases.items()}

    def version_for(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None when the alias (or model) does not exist."""
        return self.current_versions(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str, *, actor: str) -> LifecycleEvent:
        """Point ``alias`` at ``version`` (which must exist)."""
        old = self.version_for(name, alias)
        with _translated(f"setting {name}@{alias} to version {version}"):
            self._client.get_model_version(name, version)
            self._client.set_registered_model_alias(name, alias, version)
        return LifecycleEvent.now(
            "alias_set",
            name,
            str(version),
            actor,
            alias=alias,
            new_version=str(version),
            old_version=old,
        )

    def promote(self, name: str, *, actor: str) -> LifecycleEvent:
        """Move ``champion`` to the challenger's version; remember the old champion.

        ``previous-champion`` points at the replaced version, and the new champion
        version is tagged with it (so a later :meth:`rollback` can walk further back).
        """
        aliases = self.current_versions(name)
        challenger = aliases.get(CHALLENGER)
        if challenger is None:
            raise RegistryError(f"{name} has no {CHALLENGER} alias: nothing to promote")
        old = aliases.get(CHAMPION)
        if old == challenger:
            raise RegistryError(f"{name} v{challenger} is already {CHAMPION}")
        with _translated(f"promoting {name} v{challenger}"):
            if old is not None:
                self._client.set_registered_model_alias(name, PREVIOUS_CHAMPION, old)
                self._client.set_model_version_tag(name, challenger, TAG_PREVIOUS_CHAMPION, old)
            else:
                self._delete_alias(name, PREVIOUS_CHAMPION)
                tags = self._client.get_model_version(name, challenger).tags
                if TAG_PREVIOUS_CHAMPION in tags:
                    self._client.delete_model_version_tag(name, challenger, TAG_PREVIOUS_CHAMPION)
            self._client.set_registered_model_alias(name, CHAMPION, challenger)
        log.info("promoted %s v%s to %s (was v%s)", name, challenger, CHAMPION, old)
        return LifecycleEvent.now(
            "promoted",
            name,
            challenger,
            actor,
            alias=CHAMPION,
            new_version=challenger,
            old_version=old,
        )

    def rollback(self, name: str, *, actor: str) -> LifecycleEvent:
        """Put ``champion`` back on the ``previous-champion`` version.

        ``previous-champion`` then moves one promotion further back (from the tag
        the restored version got when it was promoted), or is removed.
        """
        aliases = self.current_versions(name)
        current = aliases.get(CHAMPION)
        target = aliases.get(PREVIOUS_CHAMPION)
        if current is None:
            raise RegistryError(f"{name} has no {CHAMPION}: nothing to roll back")
        if target is None:
            raise RegistryError(f"{name} has no {PREVIOUS_CHAMPION}: nothing to roll back to")
        with _translated(f"rolling {name} back to v{target}"):
            earlier = self._client.get_model_version(name, target).tags.get(TAG_PREVIOUS_CHAMPION)
            self._client.set_registered_model_alias(name, CHAMPION, target)
            if earlier and earlier != target:
                self._client.set_registered_model_alias(name, PREVIOUS_CHAMPION, earlier)
            else:
                self._delete_alias(name, PREVIOUS_CHAMPION)
        log.info("rolled %s back from v%s to v%s", name, current, target)
        return LifecycleEvent.now(
            "rolled_back",
            name,
            target,
            actor,
            alias=CHAMPION,
            old_version=current,
            new_version=target,
        )

    def delete_alias(self, name: str, alias: str, *, actor: str) -> LifecycleEvent:
        """Remove ``alias`` (a no-op when it is not set): the inverse of :meth:`set_alias`,
        so that a half-done alias move can be undone exactly."""
        old = self.version_for(name, alias)
        if old is not None:
            with _translated(f"deleting {name}@{alias}"):
                self._client.delete_registered_model_alias(name, alias)
        return LifecycleEvent.now(
            "alias_set", name, old or "", actor, alias=alias, old_version=old, deleted="true"
        )

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Tag one version (lineage, calibration, autopilot marks); values are text."""
        self._require_store()
        with _translated(f"tagging {name} v{version}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(name, version, key, str(value))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of one version (one registry call)."""
        self._require_store()
        with _translated(f"reading the tags of {name} v{version}"):
            return dict(self._client.get_model_version(name, version).tags)

    # -- reading ---------------------------------------------------------------------------

    def list_versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first, with its run's metrics and parameters."""
        _check_name(name)
        self._require_store()
        with _translated(f"listing the versions of {name}"):
            versions = self._client.search_model_versions(f"name = '{name}'")
            infos = [self._info(v) for v in versions]
        # Search results do not carry aliases in every store; the model itself does.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.current_versions(name).items():
            by_version.setdefault(version, []).append(alias)
        for info in infos:
            info.aliases[:] = sorted(by_version.get(info.version, []))
        return sorted(infos, key=lambda i: int(i.version) if i.version.isdigit() else 0)

    def describe(self, name: str, version: str) -> VersionInfo:
        """One version with its run's metrics, parameters and artifacts (two levels deep)."""
        self._require_store()
        with _translated(f"describing {name} v{version}"):
            info = self._info(self._client.get_model_version(name, version))
            if info.run_id:
                for item in self._client.list_artifacts(info.run_id):
                    if not item.is_dir:
                        info.artifacts.append(item.path)
                        continue
                    inner = self._client.list_artifacts(info.run_id, item.path)
                    info.artifacts.extend(i.path + ("/" if i.is_dir else "") for i in inner)
        return info

    def model_card(self, name: str, version: str) -> str:
        """The model card (``model_card.md``) logged with a version's run."""
        self._require_store()
        with (
            _translated(f"reading the model card of {name} v{version}"),
            tempfile.TemporaryDirectory(prefix="streamscore-card-") as tmp,
        ):
            run_id = self._client.get_model_version(name, version).run_id
            if not run_id:
                raise RegistryError(f"{name} v{version} has no run, hence no model card")
            local = self._client.download_artifacts(run_id, MODEL_CARD_FILE, dst_path=tmp)
            return Path(local).read_text(encoding="utf-8")

    # -- loading ---------------------------------------------------------------------------

    def fetch(self, name: str, alias: str, cache_dir: Path | None = None) -> FetchedModel:
        """The bundle of ``models:/<name>@<alias>``, from the local cache by version.

        The alias is resolved on every call (one registry call); the bundle is
        downloaded only when that version is not cached yet, and the cache checks
        it (the ONNX SHA-256 recorded at registration, then a load) before it is
        visible there (:meth:`models.cache.ModelCache.install`).

        Raises :class:`RegistryError` when the alias is not set,
        :class:`ModelError` when the version's bundle is unusable, and
        :class:`RegistryUnavailable` only when the registry is unreachable *and*
        the cache has no version recorded for the alias; otherwise that cached
        version is returned with ``offline=True`` and a warning is logged.
        """
        _check_name(name)
        cache = ModelCache(cache_dir or self.cache_dir, name)
        try:
            version = self._resolve(name, alias)
            folder = cache.folder(version.version)
            downloaded = False
            if not cache.has(version.version):
                self._download(cache, version)
                downloaded = True
        except RegistryUnavailable as exc:
            served = cache.offline(alias, reason=str(exc))
            if served is None:
                raise
            log.warning(
                "MLflow registry unavailable (%s); serving %s@%s from the cache: v%s",
                exc,
                name,
                alias,
                served.version,
            )
            return served
        cache.record(alias, version.version)
        return FetchedModel(name, alias, version.version, folder, downloaded=downloaded)

    def cached_versions(self, name: str, cache_dir: Path | None = None) -> dict[str, str]:
        """Alias -> version as last recorded in the local cache (no registry call)."""
        return ModelCache(cache_dir or self.cache_dir, name).recorded()

    # -- internals -------------------------------------------------------------------------

    def _resolve(self, name: str, alias: str) -> _Resolved:
        self._require_store()
        with _translated(f"resolving models:/{name}@{alias}"):
            try:
                version = self._client.get_model_version_by_alias(name, alias)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise RegistryError(
                        f"models:/{name}@{alias} is not set: {exc.message}"
                    ) from exc
                raise
        return _Resolved(str(version.version), dict(version.tags))

    def _download(self, cache: ModelCache, version: _Resolved) -> None:
        """Download a version's bundle into a scratch folder of the cache, which checks it
        (the SHA-256 tagged at registration, then a load) and moves it into place."""
        name = cache.name
        with cache.staging(version.version) as staging:
            with _translated(f"downloading {name} v{version.version}"):
                uri = self._client.get_model_version_download_uri(name, version.version)
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=str(staging / "download"),
                    tracking_uri=self.tracking_uri,
                )
            folder = cache.install(
                version.version,
                Path(local),
                staging,
                expected_sha256=version.tags.get(TAG_ONNX_SHA256),
            )
        log.info("cached %s v%s in %s", name, version.version, folder)

    def _info(self, version: ModelVersion) -> VersionInfo:
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if version.run_id:
            try:
                run = self._client.get_run(version.run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                metrics, params = dict(run.data.metrics), dict(run.data.params)
        return VersionInfo(
            name=version.name,
            version=str(version.version),
            aliases=sorted(version.aliases),
            run_id=version.run_id or "",
            source=version.source or "",
            created_at=int(version.creation_timestamp or 0),
            description=version.description or "",
            tags=dict(version.tags),
            metrics=metrics,
            params=params,
        )

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(
                self._client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            )
        except MlflowException as exc:  # created concurrently by another process
            again = self._client.get_experiment_by_name(self.experiment)
            if again is None:
                raise exc from None
            return str(again.experiment_id)

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self._client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            with contextlib.suppress(MlflowException):  # lost a creation race: fine
                self._client.create_registered_model(
                    name, description="Registered by streamscore; roles are aliases."
                )

    def _delete_alias(self, name: str, alias: str) -> None:
        if alias in self._client.get_registered_model(name).aliases:
            self._client.delete_registered_model_alias(name, alias)

    def _require_store(self, *, create: bool = False) -> None:
        """Fail fast (and without side effects) when the registry cannot be reached.

        An embedded sqlite store that does not exist is not created by a read: the
        registry is unavailable. A server gets one short ``/health`` probe, because
        MLflow's own client retries a refused connection for minutes.
        """
        for uri in {self.tracking_uri, self.registry_uri}:
            if uri.startswith("sqlite:///"):
                db = Path(uri.removeprefix("sqlite:///"))
                if create:
                    db.parent.mkdir(parents=True, exist_ok=True)
                elif not db.is_file():
                    raise RegistryUnavailable(f"no MLflow registry database at {db}")
            elif uri.startswith(("http://", "https://")):
                self._probe(uri)

    def _probe(self, uri: str) -> None:
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=self.probe_timeout_s):  # noqa: S310 - http(s) only: the caller checks the scheme
                pass
        except urllib.error.HTTPError:
            return  # the server answered; the real call will say what it thinks
        except (urllib.error.URLError, OSError) as exc:
            shown = mask_url_passwords(uri)  # a tracking URI may carry basic-auth credentials
            raise RegistryUnavailable(f"MLflow server {shown} unreachable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Resolved:
    version: str
    tags: dict[str, str]


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate MLflow's, its HTTP client's and its database's exceptions at the edge."""
    try:
        yield
    except MlflowException as exc:
        if exc.error_code in _REFUSALS:
            raise RegistryError(f"{what}: {exc.message}") from exc
        raise RegistryUnavailable(f"{what}: {exc.message}") from exc
    except (requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise RegistryUnavailable(f"{what}: {exc}") from exc


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"invalid registered model name {name!r}: use letters, digits, '_', '.', '-'"
        )


def _params(meta: BundleMeta) -> list[Param]:
    values: dict[str, Any] = {
        **{f"model.{k}": v for k, v in meta.params.items()},
        "algorithm": meta.algorithm or "unknown",
        "task": meta.task,
        "n_features": len(meta.feature_names),
        "feature_order": ",".join(meta.feature_names),
        "classes": ",".join(meta.classes),
        **{f"dataset.{k}": v for k, v in meta.dataset.items()},
    }
    params = []
    for key, value in values.items():
        text = str(value)
        if len(text) > _PARAM_VALUE_LIMIT:
            text = text[: _PARAM_VALUE_LIMIT - 40] + " ... (full value in signature.json)"
        params.append(Param(key, text))
    return params


def _metrics(meta: BundleMeta) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in meta.metrics.items()]
