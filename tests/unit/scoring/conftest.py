"""Tiny real models for the side-path tests, trained once per session, and batch-output twins.

Every model is a scikit-learn estimator fitted on seeded rows, exported to ONNX the
way ``models.train`` does (skl2onnx, one ``[N, n_features]`` float input, no ZipMap)
and wrapped in a :class:`ServingModel` with its :class:`BundleMeta`, as a bundle
on disk would be. Challengers name their features in another order than the
champions, so a test sees at once when columns are not re-aligned.

Besides the models: a fresh metrics registry per test, an in-memory twin of the
prediction store that can be switched down, and a factory of batch outputs as
the scoring pipeline hands them to the side paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LinearRegression, LogisticRegression

from connectors.redis_store import StoreUnavailable
from models.bundle import BundleMeta
from models.profile import build_profile
from models.serving import ServingModel
from models.train import to_onnx
from streams.ops.metrics import Metrics
from streams.scoring.pipeline import BatchOutput
from streams.scoring.stages import EventBatch

#: The champions' feature order.
FEATURES = ["temp", "pressure", "rpm"]
#: The challengers' feature order: the same features, another order.
CHALLENGER_FEATURES = ["rpm", "temp", "pressure"]
#: Columns of a FEATURES-ordered matrix in CHALLENGER_FEATURES order.
TO_CHALLENGER = [2, 0, 1]
#: Processing time stamped on every batch output.
PROCESSED_AT = 1_704_067_260_000

OutputFactory = Callable[..., BatchOutput]


def bundle_meta(
    rows: np.ndarray,
    names: Sequence[str],
    *,
    name: str,
    version: str,
    classes: Sequence[str] = (),
) -> BundleMeta:
    """What ``bundle.json`` holds for a model trained on ``rows`` (a classifier has classes)."""
    return BundleMeta(
        name=name,
        version=version,
        task="classification" if classes else "regression",
        feature_names=list(names),
        classes=list(classes),
        profile=build_profile(rows, list(names)),
    )


def serving_model(
    onnx_bytes: bytes,
    rows: np.ndarray,
    names: Sequence[str],
    *,
    name: str,
    version: str,
    classes: Sequence[str] = (),
) -> ServingModel:
    meta = bundle_meta(rows, names, name=name, version=version, classes=classes)
    return ServingModel.build(onnx_bytes, meta)


def classifier(
    estimator: Any, rows: np.ndarray, names: Sequence[str], *, name: str, version: str
) -> ServingModel:
    """A fitted classifier as a serving model; classes as text, as ``models.train`` saves them."""
    classes = [str(c) for c in estimator.classes_]
    return serving_model(
        to_onnx(estimator, len(names)), rows, names, name=name, version=version, classes=classes
    )


def regressor(
    estimator: Any, rows: np.ndarray, names: Sequence[str], *, name: str, version: str
) -> ServingModel:
    """A fitted regressor as a serving model (skl2onnx has no ZipMap option for regressors)."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = skl_to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, len(names)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return serving_model(onx.SerializeToString(), rows, names, name=name, version=version)


@pytest.fixture(scope="session")
def rows() -> np.ndarray:
    """200 seeded rows in FEATURES order; float32 values, so ONNX sees them exactly."""
    rng = np.random.default_rng(7)
    return rng.normal(size=(200, 3)).astype(np.float32).astype(np.float64)


def _signal(rows: np.ndarray) -> np.ndarray:
    return rows @ np.array([1.0, -1.0, 0.5])


@pytest.fixture(scope="session")
def binary_champion(rows: np.ndarray) -> ServingModel:
    """Logistic regression, classes "0" / "1", on FEATURES."""
    y = (_signal(rows) > 0).astype(int)
    estimator = LogisticRegression().fit(rows.astype(np.float32), y)
    return classifier(estimator, rows, FEATURES, name="lr-champion", version="1")


@pytest.fixture(scope="session")
def binary_challenger(rows: np.ndarray) -> ServingModel:
    """Another target, strong regularisation, on CHALLENGER_FEATURES."""
    y = (rows @ np.array([1.0, -0.6, 1.2]) > 0.2).astype(int)
    reordered = rows[:, TO_CHALLENGER]
    estimator = LogisticRegression(C=0.05).fit(reordered.astype(np.float32), y)
    return classifier(estimator, reordered, CHALLENGER_FEATURES, name="lr-challenger", version="2")


def _levels(signal: np.ndarray) -> np.ndarray:
    cuts = np.quantile(signal, [1 / 3, 2 / 3])
    return np.array(["low", "mid", "high"])[np.digitize(signal, cuts)]


@pytest.fixture(scope="session")
def three_class_champion(rows: np.ndarray) -> ServingModel:
    """Three classes named "low", "mid", "high" (sklearn sorts them: high, low, mid)."""
    estimator = LogisticRegression(max_iter=1000).fit(
        rows.astype(np.float32), _levels(_signal(rows))
    )
    return classifier(estimator, rows, FEATURES, name="levels-champion", version="4")


@pytest.fixture(scope="session")
def three_class_challenger(rows: np.ndarray) -> ServingModel:
    """The same three classes from a different signal, on CHALLENGER_FEATURES."""
    levels = _levels(rows @ np.array([1.0, -0.5, 1.0]))
    reordered = rows[:, TO_CHALLENGER]
    estimator = LogisticRegression(max_iter=1000).fit(reordered.astype(np.float32), levels)
    return classifier(
        estimator, reordered, CHALLENGER_FEATURES, name="levels-challenger", version="5"
    )


@pytest.fixture(scope="session")
def linear_regression(rows: np.ndarray) -> LinearRegression:
    """y = temp - pressure + 0.5 rpm + 0.25, fitted exactly (no noise)."""
    return LinearRegression().fit(rows.astype(np.float32), _signal(rows) + 0.25)


@pytest.fixture(scope="session")
def regression_champion(rows: np.ndarray, linear_regression: LinearRegression) -> ServingModel:
    return regressor(linear_regression, rows, FEATURES, name="lin-champion", version="7")


@pytest.fixture
def metrics() -> Metrics:
    """Every metric in a registry of its own: counts start at zero in each test."""
    return Metrics(CollectorRegistry())


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """The current value of one sample (0.0 when it was never touched)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class MemoryStore:
    """The prediction store's ``put_batch`` in memory; ``down`` makes it raise StoreUnavailable."""

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[str, str, list[str], list[str | None] | None, list[float]]] = []
        self.refused = 0

    def put_batch(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
    ) -> None:
        if self.down:
            self.refused += 1
            raise StoreUnavailable("redis://127.0.0.1:6379/0: connection refused")
        self.calls.append(
            (
                variant,
                model_version,
                list(event_ids),
                None if labels is None else list(labels),
                list(scores),
            )
        )


@pytest.fixture
def make_output() -> OutputFactory:
    """A BatchOutput twin: ``matrix`` scored by ``model``, ids ``e-<n>``, keys = sensor ids.

    Only what the side paths read is filled in: the encoded predictions are placeholders.
    """

    def make(
        model: ServingModel,
        matrix: np.ndarray,
        *,
        first: int = 0,
        served: list[tuple[str, ServingModel]] | None = None,
        row_variant: np.ndarray | None = None,
    ) -> BatchOutput:
        n = matrix.shape[0]
        numbers = range(first, first + n)
        sensors = [f"sensor-{i % 7}" for i in numbers]
        events = EventBatch(
            indices=list(range(n)),
            event_ids=[f"e-{i}" for i in numbers],
            sensor_ids=sensors,
            event_times=[PROCESSED_AT - 1000 + i for i in numbers],
            features=[dict(zip(model.feature_names, row, strict=True)) for row in matrix.tolist()],
        )
        return BatchOutput(
            prediction_values=[b"prediction"] * n,
            audit_values=[b"audit"] * n,
            keys=[s.encode() for s in sensors],
            events=events,
            matrix=matrix,
            scores=model.model.predict(matrix),
            processed_at=PROCESSED_AT,
            served=served if served is not None else [("champion", model)],
            row_variant=row_variant,
        )

    return make
