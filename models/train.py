"""Training the reference champion and challenger, and exporting them to ONNX.

Champion: gradient-boosted trees (50 trees); challenger: a random forest.
Both are trained on the same stratified split of the Shuttle data, exported
with skl2onnx (plain probability tensors, no ZipMap, so scoring stays one
numpy array per batch) and saved as bundles with their reference profile and
offline metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

from models.bundle import BundleMeta, save_bundle
from models.datasets import Dataset, shuttle
from models.profile import build_profile

SEED = 42

#: name -> (role, estimator factory, parameters)
REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "champion": {
        "name": "shuttle-gbm",
        "algorithm": "GradientBoostingClassifier",
        "params": {"n_estimators": 50, "max_depth": 3, "learning_rate": 0.1, "random_state": SEED},
    },
    "challenger": {
        "name": "shuttle-rf",
        "algorithm": "RandomForestClassifier",
        "params": {"n_estimators": 40, "max_depth": 8, "random_state": SEED, "n_jobs": 1},
    },
}

_ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "GradientBoostingClassifier": GradientBoostingClassifier,
    "RandomForestClassifier": RandomForestClassifier,
}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Offline metrics of a binary classifier from its positive-class probabilities."""
    predicted = (proba >= 0.5).astype(int)
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, proba)),
    }


def to_onnx(estimator: Any, n_features: int) -> bytes:
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = skl_to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


def split(data: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X_train, X_test, y_train, y_test = train_test_split(
        data.X, data.y, test_size=0.2, stratify=data.y, random_state=SEED
    )
    return X_train, X_test, y_train, y_test


def train_reference(role: str, version: str = "1") -> tuple[bytes, BundleMeta, Any]:
    """Train the reference model for ``role``; returns ONNX bytes, metadata and the estimator."""
    spec = REFERENCE_MODELS[role]
    data = shuttle()
    X_train, X_test, y_train, y_test = split(data)
    estimator = _ESTIMATORS[spec["algorithm"]](**spec["params"])
    estimator.fit(X_train.astype(np.float32), y_train)
    proba = estimator.predict_proba(X_test.astype(np.float32))[:, 1]
    meta = BundleMeta(
        name=spec["name"],
        version=version,
        task="classification",
        feature_names=data.feature_names,
        classes=[str(c) for c in estimator.classes_],
        profile=build_profile(X_train, data.feature_names),
        metrics=classification_metrics(y_test, proba),
        params=spec["params"],
        algorithm=spec["algorithm"],
        dataset={
            "name": data.name,
            "sha256": data.content_hash,
            "rows": int(data.X.shape[0]),
            "train_rows": int(X_train.shape[0]),
            "test_rows": int(X_test.shape[0]),
        },
        created_at=datetime.now(UTC).isoformat(),
    )
    return to_onnx(estimator, len(data.feature_names)), meta, estimator


def ensure_reference_models(models_dir: Path, *, force: bool = False) -> dict[str, Path]:
    """Train and save the champion and challenger bundles unless they already exist."""
    from models.bundle import bundle_exists

    paths = {}
    for role in REFERENCE_MODELS:
        folder = models_dir / role
        if force or not bundle_exists(folder):
            onnx_bytes, meta, _ = train_reference(role)
            save_bundle(folder, onnx_bytes, meta)
        paths[role] = folder
    return paths
