"""Predicted labels are the bundle's class names, whatever the model's label output holds.

Real models trained here with scikit-learn and exported with skl2onnx (fixed seeds):
integer-coded labels named in the bundle (7 classes, 30 classes, binary, codes that
are not column indices), string labels, integer labels without names, a regressor.
Every expected label is what sklearn predicts, mapped to its name by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression, LogisticRegression

from models.bundle import BundleMeta
from models.profile import build_profile
from models.runtime import OnnxModel
from models.serving import ServingModel
from schemas.errors import SignatureMismatch

OPSET = {"": 17, "ai.onnx.ml": 3}
N_FEATURES = 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
#: Seven class names, deliberately not in alphabetical order.
SEVEN = ["Rad Flow", "Fpv Close", "Fpv Open", "High", "Bypass", "Bpv Close", "Bpv Open"]


def clustered(n_classes: int, codes: np.ndarray | None = None, seed: int = 0) -> tuple[Any, Any]:
    """Rows around one centre per class; ``y`` holds ``codes[k]`` for class ``k``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_classes, N_FEATURES))
    k = np.repeat(np.arange(n_classes), 20)
    X = (centres[k] + rng.normal(size=(k.size, N_FEATURES))).astype(np.float32)
    return X, (k if codes is None else codes[k])


def export(estimator: Any, *, zipmap: bool = False) -> bytes:
    onx = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={id(estimator): {"zipmap": zipmap}},
        target_opset=OPSET,
    )
    return bytes(onx.SerializeToString())


def serving(onnx_bytes: bytes, X: np.ndarray, classes: list[str], task: str) -> ServingModel:
    meta = BundleMeta(
        name="named",
        version="1",
        task=task,  # type: ignore[arg-type]
        feature_names=FEATURES,
        classes=classes,
        profile=build_profile(X.astype(np.float64), FEATURES),
    )
    return ServingModel.build(onnx_bytes, meta)


def fitted(X: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(max_iter=2000).fit(X, y)


# -- integer-coded labels named by the bundle -----------------------------------------------------


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_seven_integer_coded_classes_come_out_as_the_bundle_names(zipmap: bool) -> None:
    X, y = clustered(7)
    estimator = fitted(X, y)
    model = serving(export(estimator, zipmap=zipmap), X, SEVEN, "classification").model
    scores = model.predict(X.astype(np.float64))
    expected = np.take(SEVEN, estimator.predict(X))
    assert scores.labels is not None and scores.probabilities is not None
    assert scores.labels.tolist() == expected.tolist()
    assert scores.labels.dtype == object
    assert set(scores.labels.tolist()) == set(SEVEN)
    # the probability columns (keyed by model.classes when encoded) name the same classes
    assert model.classes == SEVEN
    columns = np.asarray(model.classes, dtype=object)[scores.probabilities.argmax(axis=1)]
    assert columns.tolist() == scores.labels.tolist()
    np.testing.assert_allclose(scores.probabilities, estimator.predict_proba(X), atol=1e-5)


def test_codes_that_are_not_column_indices_map_through_the_declared_classes() -> None:
    """y in {3, 5, 9}: code 9 is the third class, named by the third bundle name."""
    codes = np.array([3, 5, 9])
    X, y = clustered(3, codes, seed=1)
    estimator = fitted(X, y)
    names = ["low", "mid", "high"]
    scores = serving(export(estimator), X, names, "classification").model.predict(X)
    by_code = dict(zip(codes.tolist(), names, strict=True))
    assert scores.labels is not None
    assert scores.labels.tolist() == [by_code[c] for c in estimator.predict(X).tolist()]
    assert scores.labels.tolist().count("high") == int((estimator.predict(X) == 9).sum()) > 0


def test_thirty_classes() -> None:
    X, y = clustered(30, seed=2)
    estimator = fitted(X, y)
    names = [f"cls-{29 - i:02d}" for i in range(30)]  # reversed: names are not sorted codes
    model = serving(export(estimator), X, names, "classification").model
    scores = model.predict(X)
    assert scores.labels is not None and scores.probabilities is not None
    assert scores.probabilities.shape == (600, 30)
    assert scores.labels.tolist() == np.take(names, estimator.predict(X)).tolist()
    assert scores.labels[0] == "cls-29" and scores.labels[-1] == "cls-00"


def test_binary_integer_coded_with_names_scores_the_positive_class() -> None:
    X, y = clustered(2, seed=3)
    estimator = fitted(X, y)
    model = serving(export(estimator), X, ["ok", "faulty"], "classification").model
    scores = model.predict(X)
    assert scores.labels is not None
    assert scores.labels.tolist() == np.take(["ok", "faulty"], estimator.predict(X)).tolist()
    np.testing.assert_allclose(scores.score, estimator.predict_proba(X)[:, 1], atol=1e-5)
    assert scores.labels.tolist().count("faulty") == 20


def test_a_named_champion_and_a_string_challenger_compare_by_name() -> None:
    """The shadow's agreement is ``champion.labels == challenger.labels``: names on both."""
    X, y = clustered(7, seed=4)
    champion = serving(export(fitted(X, y)), X, SEVEN, "classification").model
    challenger = serving(
        export(fitted(X, np.take(SEVEN, y))), X, sorted(SEVEN), "classification"
    ).model
    a, b = champion.predict(X), challenger.predict(X)
    assert a.labels is not None and b.labels is not None
    agree = a.labels == b.labels
    assert agree.dtype == bool
    assert agree.mean() == 1.0


def test_a_bundle_naming_another_number_of_classes_is_refused() -> None:
    X, y = clustered(7, seed=5)
    onnx_bytes = export(fitted(X, y))
    with pytest.raises(SignatureMismatch, match="the model has 7 classes, the bundle names 6"):
        serving(onnx_bytes, X, SEVEN[:6], "classification")


# -- models that carry their own labels -----------------------------------------------------------


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_string_labels_are_names_already(zipmap: bool) -> None:
    X, y = clustered(7, seed=6)
    text = np.take(SEVEN, y)
    estimator = fitted(X, text)
    onnx_bytes = export(estimator, zipmap=zipmap)
    named = serving(onnx_bytes, X, [str(c) for c in estimator.classes_], "classification")
    unnamed = OnnxModel(onnx_bytes, FEATURES, name="m", version="1")
    a, b = named.model.predict(X), unnamed.predict(X)
    assert a.labels is not None and b.labels is not None
    assert a.labels.tolist() == b.labels.tolist() == estimator.predict(X).tolist()
    assert named.model.classes == unnamed.classes == sorted(SEVEN)


def test_string_labels_in_another_order_than_the_bundle_are_refused() -> None:
    X, y = clustered(3, seed=7)
    onnx_bytes = export(fitted(X, np.take(["cat", "dog", "eel"], y)))
    with pytest.raises(SignatureMismatch, match="the model's labels are"):
        serving(onnx_bytes, X, ["dog", "cat", "eel"], "classification")


def test_integer_labels_without_names_stay_the_code_as_text() -> None:
    codes = np.array([3, 5, 9])
    X, y = clustered(3, codes, seed=8)
    estimator = fitted(X, y)
    model = OnnxModel(export(estimator), FEATURES, name="m", version="1")
    scores = model.predict(X)
    assert model.classes == ["3", "5", "9"]
    assert scores.labels is not None
    assert scores.labels.tolist() == [str(c) for c in estimator.predict(X)]


def test_a_regressor_has_no_labels_and_no_classes() -> None:
    rng = np.random.default_rng(9)
    X = rng.normal(size=(40, N_FEATURES)).astype(np.float32)
    estimator = LinearRegression().fit(X, X @ np.array([1.0, -1.0, 2.0, 0.5]))
    onx = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        target_opset=OPSET,
    )
    model = serving(bytes(onx.SerializeToString()), X, [], "regression").model
    scores = model.predict(X)
    assert model.task == "regression" and model.classes == []
    assert scores.labels is None and scores.probabilities is None
    np.testing.assert_allclose(scores.score, estimator.predict(X), atol=1e-4)
