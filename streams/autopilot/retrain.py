"""Retraining as a Prefect flow: a window of labelled events → the champion's model
family, refitted → judged against the champion on a held-out slice → the challenger.

Flow ``streamscore-retrain``, one task per step (retries only where a retry can
help: the steps that talk to Kafka or MLflow, and only on infrastructure errors):

1. ``champion`` — the champion's bundle from the registry: its model family
   (``algorithm``), hyperparameters (the ``params`` logged with its MLflow run),
   feature order, classes, hard ranges, and its ONNX model to compare with;
2. ``training-window`` — events joined with labels over the window
   (:mod:`streams.autopilot.dataset`);
3. too few labels (overall, or for a class of a classifier) ends the run:
   ``rejected / too_few_labels``;
4. ``fit-candidate`` — the same family with the champion's hyperparameters, the
   overrides on top, fitted on all but the newest ``holdout_fraction`` of the
   window, exported to ONNX; a failing fit ends the run: ``failed / fit_failed``;
5. ``compare`` — both ONNX models on the held-out slice: accuracy (classifiers)
   or MAE (regressors); a candidate worse than the champion by more than
   ``tolerance`` ends the run: ``rejected / worse_than_champion``;
6. ``register-challenger`` — logged and registered with its lineage (source
   topics and offset ranges, rows, data SHA-256, parent version, the flow run),
   its CBPE calibration (fitted on the held-out slice), and the ``challenger``
   alias pointed at it. The step is idempotent: a retry that finds the version a
   lost answer already registered (same retrain key) reuses it.

Only step 6 changes the registry: every other ending changes no alias.

Prefect runs in-process. With ``autopilot.prefect_api_url`` unset (the embedded
default) its API is a temporary local server whose database lives in
``autopilot.prefect_home`` (``<home>/prefect``); measured on a 2-core machine:
~13 s for the first flow run on a new home, ~7 s on an existing one, ~1 s per
run after that in the same process. Set the URL to use a Prefect server.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import PrefectException
from prefect.utilities.annotations import quote

from connectors.model_registry import ModelRegistry, RegistryError
from connectors.schema_registry import topic_serde
from models.bundle import BundleMeta
from models.lifecycle import LifecycleEvent
from models.profile import build_profile
from models.roles import CHALLENGER, CHAMPION
from models.runtime import OnnxModel
from models.serving import ServingModel
from schemas.errors import InfrastructureError, ModelError, StreamscoreError
from schemas.settings import Settings
from streams.autopilot.audit import audit_record
from streams.autopilot.cbpe import CALIBRATION_TAG
from streams.autopilot.dataset import TrainingWindow, join_window, read_recent
from streams.autopilot.reference import calibrate_on

log = logging.getLogger(__name__)

Outcome = Literal["registered", "rejected", "failed"]

#: Model families the flow can refit: the estimator's class name -> its module and task.
FAMILIES: dict[str, tuple[str, str]] = {
    "GradientBoostingClassifier": ("sklearn.ensemble", "classification"),
    "RandomForestClassifier": ("sklearn.ensemble", "classification"),
    "ExtraTreesClassifier": ("sklearn.ensemble", "classification"),
    "HistGradientBoostingClassifier": ("sklearn.ensemble", "classification"),
    "DecisionTreeClassifier": ("sklearn.tree", "classification"),
    "LogisticRegression": ("sklearn.linear_model", "classification"),
    "GradientBoostingRegressor": ("sklearn.ensemble", "regression"),
    "RandomForestRegressor": ("sklearn.ensemble", "regression"),
    "ExtraTreesRegressor": ("sklearn.ensemble", "regression"),
    "DecisionTreeRegressor": ("sklearn.tree", "regression"),
    "Ridge": ("sklearn.linear_model", "regression"),
    "LinearRegression": ("sklearn.linear_model", "regression"),
}
TAG_RETRAIN_KEY = "streamscore.retrain.key"
TAG_PARENT = "lineage.parent_version"
#: What scikit-learn and skl2onnx raise for parameters or data they cannot fit or export.
FIT_ERRORS = (ValueError, TypeError, RuntimeError, ArithmeticError)


class FitFailed(StreamscoreError):
    """The candidate could not be fitted or exported (bad hyperparameters, bad data)."""


@dataclass(frozen=True)
class RetrainJob:
    """One retraining: for which model, why, over which window, with which overrides."""

    settings: Settings
    model_name: str
    actor: str
    trigger: str
    since_ms: int
    until_ms: int
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainResult:
    outcome: Outcome
    reason: str
    detail: str = ""
    champion_version: str | None = None
    candidate_version: str | None = None
    metric: str = ""
    champion_metric: float | None = None
    candidate_metric: float | None = None
    rows: int = 0
    train_rows: int = 0
    holdout_rows: int = 0
    lineage: dict[str, str] = field(default_factory=dict)
    flow_run_id: str | None = None
    #: The registry's events (registered, alias_set) when a challenger was registered.
    events: list[LifecycleEvent] = field(default_factory=list)

    def details(self) -> dict[str, str]:
        """Audit details of the run (text)."""
        out = {
            "outcome": self.outcome,
            "reason": self.reason,
            "detail": self.detail,
            "metric": self.metric,
            "rows": str(self.rows),
            "train_rows": str(self.train_rows),
            "holdout_rows": str(self.holdout_rows),
            "flow_run_id": self.flow_run_id or "",
        }
        if self.champion_version is not None:
            out["parent_version"] = self.champion_version
        if self.candidate_version is not None:
            out["new_version"] = self.candidate_version
        metrics = {"champion": self.champion_metric, "candidate": self.candidate_metric}
        for name, value in metrics.items():
            if value is not None:
                out[f"{name}_{self.metric}"] = f"{value:.6f}"
        out.update(self.lineage)
        return {k: v for k, v in out.items() if v != ""}


@dataclass(frozen=True)
class Champion:
    version: str
    model: ServingModel


@dataclass(frozen=True)
class Candidate:
    estimator: Any
    onnx: bytes
    meta: BundleMeta


# --------------------------------------------------------------------------- Prefect


@contextmanager
def prefect_environment(settings: Settings) -> Iterator[None]:
    """Prefect's settings for this run: its home under ours and the ephemeral API, or the
    configured server; its loggers no louder than ours."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOGGING_TO_API_ENABLED,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    a = settings.autopilot
    home = (a.prefect_home or settings.home / "prefect").resolve()
    home.mkdir(parents=True, exist_ok=True)
    updates: dict[Any, Any] = {
        PREFECT_HOME: str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        # Its default (20 s) is too short on a busy 2-core machine: measured 13 s when idle.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120,
        PREFECT_LOGGING_TO_API_ENABLED: a.prefect_api_url is not None,
    }
    restore: set[Any] = set()
    if a.prefect_api_url is None:
        restore.add(PREFECT_API_URL)  # an inherited PREFECT_API_URL must not win
    else:
        updates[PREFECT_API_URL] = a.prefect_api_url
    level = max(logging.getLogger().getEffectiveLevel(), logging.INFO)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).setLevel(level)
    with temporary_settings(updates=updates, restore_defaults=restore):
        yield


def _infrastructure(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect retry condition: retry Kafka / MLflow failures, nothing else."""
    try:
        state.result()
    except InfrastructureError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final: the flow decides
        return False
    return False


def _step(job: RetrainJob, fn: Any, *args: Any, retry: bool = False) -> Any:
    """Run one task; ``retry``: with the configured retries on infrastructure errors.

    Arguments are quoted: Prefect would otherwise walk into them (settings, models,
    arrays) looking for futures to resolve, which these never hold."""
    if retry:
        r = job.settings.autopilot.retrain
        fn = fn.with_options(
            retries=r.retries,
            retry_delay_seconds=r.retry_delay_s,
            retry_condition_fn=_infrastructure,
        )
    return fn(*(quote(arg) for arg in args))


def open_registry(settings: Settings) -> ModelRegistry:
    r = settings.registry
    return ModelRegistry.open(
        settings.home,
        tracking_uri=r.tracking_uri,
        registry_uri=r.registry_uri,
        experiment=r.experiment,
        cache_dir=r.cache_dir,
        probe_timeout_s=r.probe_timeout_s,
    )


# --------------------------------------------------------------------------- the steps


@task(name="champion", cache_policy=NO_CACHE)
def load_champion(job: RetrainJob) -> Champion:
    fetched = open_registry(job.settings).fetch(job.model_name, CHAMPION)
    if fetched.offline:
        raise InfrastructureError(f"MLflow unreachable: {fetched.reason}")
    return Champion(fetched.version, ServingModel.from_bundle(fetched.path))


@task(name="training-window", cache_policy=NO_CACHE)
def load_window(job: RetrainJob, champion: Champion) -> TrainingWindow:
    s = job.settings
    rows = s.autopilot.retrain.max_rows
    meta = champion.model.meta
    return join_window(
        read_recent(s.kafka, s.topics.events, rows),
        read_recent(s.kafka, s.topics.labels, rows),
        event_serde=topic_serde(s, "events"),
        label_serde=topic_serde(s, "labels"),
        topics=(s.topics.events, s.topics.labels),
        feature_names=meta.feature_names,
        lower=champion.model.lower,
        upper=champion.model.upper,
        since_ms=job.since_ms,
        until_ms=job.until_ms,
        task=meta.task,
        classes=meta.classes,
    )


def too_few_labels(window: TrainingWindow, job: RetrainJob, champion: Champion) -> str | None:
    """Why the window cannot train a model (None: it can)."""
    r = job.settings.autopilot.retrain
    if window.rows < r.min_labels:
        return f"{window.rows} labelled events in the window, {r.min_labels} needed"
    if champion.model.meta.task == "classification":
        counts = window.class_counts()
        short = {c: counts.get(c, 0) for c in champion.model.meta.classes}
        short = {c: n for c, n in short.items() if n < r.min_class_labels}
        if short:
            return f"classes with fewer than {r.min_class_labels} labels: {short}"
    return None


def export_onnx(estimator: Any, n_features: int, *, classifier: bool) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if classifier else None
    onx = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


@task(name="fit-candidate", cache_policy=NO_CACHE)
def fit_candidate(
    job: RetrainJob, champion: Champion, window: TrainingWindow, train: np.ndarray
) -> Candidate:
    meta = champion.model.meta
    family = FAMILIES.get(meta.algorithm)
    if family is None:
        raise FitFailed(f"model family {meta.algorithm or 'unknown'!r} cannot be refitted "
                        f"(known: {', '.join(sorted(FAMILIES))})")  # fmt: skip
    module, task_kind = family
    params = {
        **meta.params,
        **job.settings.autopilot.retrain.hyperparameters,
        **job.hyperparameters,
    }
    classifier = task_kind == "classification"
    X = window.X[train].astype(np.float32)
    if classifier:
        classes = list(meta.classes)
        y: np.ndarray = np.array([classes.index(str(v)) for v in window.y[train]], np.int64)
    else:
        y = window.y[train].astype(np.float64)
    try:
        estimator = getattr(importlib.import_module(module), meta.algorithm)(**params)
        estimator.fit(X, y)
        onnx_bytes = export_onnx(estimator, X.shape[1], classifier=classifier)
    except FIT_ERRORS as exc:
        raise FitFailed(f"{meta.algorithm}({params}) failed: {type(exc).__name__}: {exc}") from exc
    fitted_classes = (
        [meta.classes[int(c)] for c in estimator.classes_] if classifier else list(meta.classes)
    )
    candidate = BundleMeta(
        name=meta.name,
        version="candidate",
        task=meta.task,
        feature_names=list(meta.feature_names),
        classes=fitted_classes,
        profile=build_profile(window.X[train], meta.feature_names),
        params={k: v for k, v in params.items() if v is not None},
        algorithm=meta.algorithm,
        dataset={
            "name": "streamscore.retrain",
            "sha256": window.data_sha256,
            "rows": window.rows,
            "train_rows": int(train.size),
            "test_rows": window.rows - int(train.size),
            "window_start_ms": window.since_ms,
            "window_end_ms": window.until_ms,
            "parent_version": champion.version,
        },
        created_at=datetime.now(UTC).isoformat(),
    )
    return Candidate(estimator, onnx_bytes, candidate)


@dataclass(frozen=True)
class Comparison:
    metric: str
    champion: float
    candidate: float
    not_worse: bool


def quality(model: OnnxModel, X: np.ndarray, y: np.ndarray, task_kind: str) -> float:
    """Accuracy (classifiers) or MAE (regressors) of a model on labelled rows."""
    scores = model.predict(np.asarray(X, dtype=np.float64))
    if task_kind == "classification":
        assert scores.labels is not None  # noqa: S101 - narrows the type for mypy, never a check
        return float(np.mean(np.asarray(scores.labels).astype(str) == y.astype(str)))
    return float(np.mean(np.abs(scores.score - y.astype(np.float64))))


@task(name="compare", cache_policy=NO_CACHE)
def compare(
    job: RetrainJob,
    champion: Champion,
    candidate: Candidate,
    window: TrainingWindow,
    holdout: np.ndarray,
) -> Comparison:
    meta = candidate.meta
    model = OnnxModel(
        candidate.onnx, meta.feature_names, name=meta.name, version="candidate",
        classes=meta.classes,
    )  # fmt: skip
    X, y = window.X[holdout], window.y[holdout]
    ours = quality(champion.model.model, X, y, meta.task)
    theirs = quality(model, X, y, meta.task)
    tolerance = job.settings.autopilot.retrain.tolerance
    if meta.task == "classification":
        return Comparison("accuracy", ours, theirs, theirs >= ours - tolerance)
    return Comparison("mae", ours, theirs, theirs <= ours * (1 + tolerance))


def retrain_key(window: TrainingWindow, champion: Champion, candidate: Candidate) -> str:
    """The same data, parent and hyperparameters make the same key (idempotent register)."""
    params = json.dumps(candidate.meta.params, sort_keys=True, default=str)
    text = f"{window.data_sha256}|{champion.version}|{candidate.meta.algorithm}|{params}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@task(name="register-challenger", cache_policy=NO_CACHE)
def register_challenger(
    job: RetrainJob,
    champion: Champion,
    candidate: Candidate,
    window: TrainingWindow,
    holdout: np.ndarray,
    flow_run_id: str,
) -> tuple[str, list[LifecycleEvent]]:
    registry = open_registry(job.settings)
    name = job.model_name
    key = retrain_key(window, champion, candidate)
    events: list[LifecycleEvent] = []
    existing = [v for v in registry.list_versions(name) if v.tags.get(TAG_RETRAIN_KEY) == key]
    if existing:
        version = existing[-1].version
    else:
        meta = candidate.meta
        X_hold, y_hold = window.X[holdout], window.y[holdout]
        tags = {
            **window.lineage(),
            TAG_PARENT: champion.version,
            TAG_RETRAIN_KEY: key,
            "streamscore.retrain.trigger": job.trigger,
            "streamscore.retrain.flow_run": flow_run_id,
        }
        if meta.task == "classification":
            model = ServingModel.build(candidate.onnx, meta)
            method = job.settings.autopilot.cbpe.method
            tags[CALIBRATION_TAG] = calibrate_on(model, X_hold, y_hold, method).to_json()
        event = registry.log_and_register(
            candidate.onnx,
            meta,
            registered_name=name,
            actor=job.actor,
            estimator=candidate.estimator,
            X_test=X_hold,
            y_test=y_hold,
            tags=tags,
            description=f"Retrained from v{champion.version} ({job.trigger}).",
            origin=f"retrained by the autopilot (Prefect flow run {flow_run_id})",
        )
        events.append(event)
        version = event.model_version
    if registry.version_for(name, CHALLENGER) != version:
        events.append(registry.set_alias(name, CHALLENGER, version, actor=job.actor))
    return version, events


# --------------------------------------------------------------------------- the flow


@flow(name="streamscore-retrain", validate_parameters=False)
def retrain_flow(job: RetrainJob) -> RetrainResult:
    """Steps 1-6 of the module docstring; every ending is a :class:`RetrainResult`."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id or "")
    champion = _step(job, load_champion, job, retry=True)
    window = _step(job, load_window, job, champion, retry=True)
    base: dict[str, Any] = {
        "champion_version": champion.version,
        "rows": window.rows,
        "lineage": {**window.lineage(), TAG_PARENT: champion.version},
        "flow_run_id": run_id,
    }
    short = too_few_labels(window, job, champion)
    if short is not None:
        skipped = ", ".join(f"{k} {v}" for k, v in window.skipped.items())
        return RetrainResult("rejected", "too_few_labels", f"{short} (left out: {skipped})",
                             **base)  # fmt: skip
    train, holdout = window.split(job.settings.autopilot.retrain.holdout_fraction)
    base.update(train_rows=int(train.size), holdout_rows=int(holdout.size))
    try:
        candidate = _step(job, fit_candidate, job, champion, window, train)
    except FitFailed as exc:
        return RetrainResult("failed", "fit_failed", str(exc), **base)
    judged = _step(job, compare, job, champion, candidate, window, holdout)
    base.update(metric=judged.metric, champion_metric=judged.champion,
                candidate_metric=judged.candidate)  # fmt: skip
    if not judged.not_worse:
        return RetrainResult(
            "rejected", "worse_than_champion",
            f"held-out {judged.metric}: candidate {judged.candidate:.6f}, champion "
            f"{judged.champion:.6f}", **base,
        )  # fmt: skip
    version, events = _step(
        job, register_challenger, job, champion, candidate, window, holdout, run_id, retry=True
    )
    return RetrainResult(
        "registered", "registered", f"v{version} is the challenger",
        candidate_version=version, events=events, **base,
    )  # fmt: skip


def run_retrain(job: RetrainJob) -> RetrainResult:
    """Run the flow in this process (see the module docstring for where Prefect keeps its
    state); infrastructure that stays down past the retries is a ``failed`` result."""
    with prefect_environment(job.settings):
        try:
            result: RetrainResult = retrain_flow(quote(job))  # type: ignore[call-overload]
        except (InfrastructureError, RegistryError, ModelError) as exc:
            return RetrainResult("failed", "infrastructure", f"{type(exc).__name__}: {exc}")
        except PrefectException as exc:
            return RetrainResult("failed", "orchestrator", f"{type(exc).__name__}: {exc}")
    return result


# --------------------------------------------------------------------------- audit


def started_record(job: RetrainJob, champion_version: str) -> dict[str, Any]:
    """The ``retrain_started`` audit record of a job."""
    return audit_record(
        "retrain_started",
        job.model_name,
        champion_version,
        {
            "trigger": job.trigger,
            "window_start_ms": str(job.since_ms),
            "window_end_ms": str(job.until_ms),
            "hyperparameters": (
                json.dumps(dict(job.hyperparameters), default=str) if job.hyperparameters else None
            ),
        },
        actor=job.actor,
    )


def result_records(job: RetrainJob, result: RetrainResult) -> list[dict[str, Any]]:
    """The audit records of a finished run: ``retrain_finished`` (registered or rejected)
    or ``retrain_failed``; for a registered candidate also ``challenger_registered`` and the
    registry's own events (``registered``, ``alias_set``)."""
    action = "retrain_failed" if result.outcome == "failed" else "retrain_finished"
    version = result.candidate_version or result.champion_version or ""
    details = {"trigger": job.trigger, **result.details()}
    records = [audit_record(action, job.model_name, version, details, actor=job.actor)]
    if result.outcome == "registered" and result.candidate_version is not None:
        records += [event.audit_record() for event in result.events]
        records.append(
            audit_record(
                "challenger_registered",
                job.model_name,
                result.candidate_version,
                {
                    "new_version": result.candidate_version,
                    "parent_version": result.champion_version,
                    "metric": result.metric,
                    f"candidate_{result.metric}": f"{result.candidate_metric:.6f}"
                    if result.candidate_metric is not None
                    else None,
                    f"champion_{result.metric}": f"{result.champion_metric:.6f}"
                    if result.champion_metric is not None
                    else None,
                    "flow_run_id": result.flow_run_id,
                    **result.lineage,
                },
                actor=job.actor,
            )
        )
    return records


@flow(name="streamscore-warm-up", validate_parameters=False)
def _warm_up_flow() -> None:
    """Nothing: starting Prefect's local API is the point (see :func:`warm_up`)."""


def warm_up(settings: Settings) -> float:
    """Start Prefect's embedded API now (its first flow run pays ~7-13 s on 2 cores), so
    that the first retraining does not; returns the seconds it took."""
    started = time.perf_counter()
    with prefect_environment(settings):
        _warm_up_flow()
    return time.perf_counter() - started
