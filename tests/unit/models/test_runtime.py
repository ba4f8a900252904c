"""OnnxModel on tiny models built here: both input shapes, classifiers with and without
ZipMap, a regressor; signature checks and unusable files. Fixed seeds, exact values."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, compose, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType
from sklearn.linear_model import LinearRegression, LogisticRegression

from models.bundle import BundleMeta
from models.profile import build_profile
from models.runtime import OnnxModel
from models.serving import ServingModel
from schemas.errors import ModelError, SignatureMismatch

OPSET = {"": 17, "ai.onnx.ml": 3}
NAMES = ["f0", "f1", "f2", "f3"]


def three_class_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 30)
    X[y == 1] += 1.5
    X[y == 2] -= 1.5
    return X, y


def export(estimator: Any, inputs: list[tuple[str, Any]], **options: Any) -> bytes:
    onx = to_onnx(
        estimator,
        initial_types=inputs,
        options={id(estimator): options} if options else None,
        target_opset=OPSET,
    )
    return bytes(onx.SerializeToString())


@pytest.fixture(scope="module")
def logistic() -> tuple[LogisticRegression, np.ndarray]:
    X, y = three_class_data()
    return LogisticRegression(max_iter=1000).fit(X, y), X


def reference_run(onnx_bytes: bytes, feed: dict[str, np.ndarray]) -> list[Any]:
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, feed)


# -- classifiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [["0", "1", "2"], []], ids=["bundle-classes", "no-classes"])
def test_three_class_zipmap_on_and_off_give_the_same_scores(
    logistic: tuple[LogisticRegression, np.ndarray], classes: list[str]
) -> None:
    estimator, X = logistic
    inputs = [("x", FloatTensorType([None, 4]))]
    plain = OnnxModel(
        export(estimator, inputs, zipmap=False), NAMES, name="m", version="1", classes=classes
    )
    zipped = OnnxModel(
        export(estimator, inputs, zipmap=True), NAMES, name="m", version="1", classes=classes
    )
    assert plain.task == zipped.task == "classification"
    rows = X[:12].astype(np.float64)
    a, b = plain.predict(rows), zipped.predict(rows)
    assert a.probabilities is not None and b.probabilities is not None
    assert a.probabilities.shape == (12, 3)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.score, b.score)
    assert a.labels is not None and b.labels is not None
    assert a.labels.tolist() == b.labels.tolist()
    assert plain.classes == zipped.classes == ["0", "1", "2"]

    # the exact numbers onnxruntime gives on the float32 rows, in the same order
    label, proba = reference_run(export(estimator, inputs, zipmap=False), {"x": X[:12]})
    np.testing.assert_array_equal(a.probabilities, proba.astype(np.float64))
    np.testing.assert_array_equal(a.score, proba.max(axis=1).astype(np.float64))
    assert a.labels.tolist() == [str(v) for v in label]
    # and the model is the one sklearn trained
    np.testing.assert_allclose(a.probabilities, estimator.predict_proba(X[:12]), rtol=1e-4)
    assert a.labels.tolist() == [str(v) for v in estimator.predict(X[:12])]


def test_string_class_labels(logistic: tuple[LogisticRegression, np.ndarray]) -> None:
    _, X = logistic
    _, y = three_class_data()
    animals = np.array(["cat", "dog", "eel"])[y]
    estimator = LogisticRegression(max_iter=1000).fit(X, animals)
    inputs = [("x", FloatTensorType([None, 4]))]
    zipped = OnnxModel(export(estimator, inputs), NAMES, name="m", version="1")
    plain = OnnxModel(
        export(estimator, inputs, zipmap=False),
        NAMES,
        name="m",
        version="1",
        classes=["cat", "dog", "eel"],
    )
    a, b = zipped.predict(X[:9]), plain.predict(X[:9])
    assert zipped.classes == ["cat", "dog", "eel"]
    assert a.labels is not None and b.labels is not None
    assert a.labels.tolist() == b.labels.tolist() == estimator.predict(X[:9]).tolist()
    assert a.probabilities is not None and b.probabilities is not None
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_binary_score_is_the_positive_class_probability() -> None:
    X, y = three_class_data(seed=1)
    binary = (y == 2).astype(int)
    estimator = LogisticRegression(max_iter=1000).fit(X, binary)
    onnx_bytes = export(estimator, [("x", FloatTensorType([None, 4]))], zipmap=False)
    scores = OnnxModel(onnx_bytes, NAMES, name="m", version="1", classes=["0", "1"]).predict(X)
    _, proba = reference_run(onnx_bytes, {"x": X})
    np.testing.assert_array_equal(scores.score, proba[:, 1].astype(np.float64))
    assert scores.labels is not None
    assert scores.labels.tolist() == [str(v) for v in estimator.predict(X)]


def per_feature_inputs(matrix_model: bytes, names: list[str], matrix_input: str) -> bytes:
    """Put a Concat of one [N, 1] input per feature in front of a single-matrix model."""
    inner = onnx.load_from_string(matrix_model)
    graph = helper.make_graph(
        [helper.make_node("Concat", names, ["stacked"], axis=1)],
        "columns",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names],
        [helper.make_tensor_value_info("stacked", TensorProto.FLOAT, [None, len(names)])],
    )
    front = helper.make_model(graph, opset_imports=list(inner.opset_import))
    front.ir_version = inner.ir_version
    return compose.merge_models(
        front, inner, io_map=[("stacked", matrix_input)]
    ).SerializeToString()


def test_one_input_per_feature_classifier(logistic: tuple[LogisticRegression, np.ndarray]) -> None:
    """The same classifier taking one [N, 1] input per feature gives the same scores."""
    estimator, X = logistic
    matrix_bytes = export(estimator, [("x", FloatTensorType([None, 4]))], zipmap=False)
    # inputs declared in another order than the bundle's features: fed by name
    columns = OnnxModel(per_feature_inputs(matrix_bytes, NAMES, "x"), NAMES, name="m", version="1")
    shuffled = OnnxModel(
        per_feature_inputs(matrix_bytes, NAMES, "x"),
        ["f2", "f0", "f3", "f1"],
        name="m",
        version="1",
    )
    matrix = OnnxModel(matrix_bytes, NAMES, name="m", version="1")
    rows = X[:20].astype(np.float64)
    a, b = columns.predict(rows), matrix.predict(rows)
    c = shuffled.predict(rows[:, [2, 0, 3, 1]])
    assert a.probabilities is not None and b.probabilities is not None
    assert c.probabilities is not None
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(c.probabilities, b.probabilities)
    assert a.labels is not None and b.labels is not None
    assert a.labels.tolist() == b.labels.tolist()


def handmade_per_feature_regressor(inputs: list[str], weights: list[float], bias: float) -> bytes:
    """y = sum(w_i * x_i) + bias with one [N, 1] float input per feature, built by hand."""
    graph = helper.make_graph(
        [
            helper.make_node("Concat", inputs, ["stacked"], axis=1),
            helper.make_node("MatMul", ["stacked", "W"], ["product"]),
            helper.make_node("Add", ["product", "B"], ["y"]),
        ],
        "per_feature",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [len(inputs), 1], weights),
            helper.make_tensor("B", TensorProto.FLOAT, [1], [bias]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_one_input_per_feature_is_fed_by_name_not_position() -> None:
    onnx_bytes = handmade_per_feature_regressor(["temp", "pressure", "rpm"], [1, 10, 100], 0.5)
    # the bundle orders its features differently from the model's inputs
    model = OnnxModel(onnx_bytes, ["rpm", "temp", "pressure"], name="m", version="1")
    assert model.task == "regression"
    rows = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 4.0, 0.25]])
    scores = model.predict(rows)
    # rpm*100 + temp*1 + pressure*10 + 0.5: rows are [rpm, temp, pressure]
    np.testing.assert_array_equal(scores.score, np.array([132.5, 0.5, -93.0]))
    assert scores.labels is None and scores.probabilities is None


def test_single_feature_named_input_is_a_column_input() -> None:
    onnx_bytes = handmade_per_feature_regressor(["temp"], [2.0], 1.0)
    model = OnnxModel(onnx_bytes, ["temp"], name="m", version="1")
    np.testing.assert_array_equal(model.predict(np.array([[3.0], [-1.0]])).score, [7.0, -1.0])


# -- regressors -----------------------------------------------------------------------------------


def test_linear_regressor_scores_are_the_predicted_values() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    target = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
    estimator = LinearRegression().fit(X, target)
    onnx_bytes = export(estimator, [("x", FloatTensorType([None, 4]))])
    model = OnnxModel(onnx_bytes, NAMES, name="lin", version="2")
    assert model.task == "regression"
    assert model.classes == []
    scores = model.predict(X[:10].astype(np.float64))
    (expected,) = reference_run(onnx_bytes, {"x": X[:10]})
    assert scores.score.shape == (10,)
    assert scores.score.dtype == np.float64
    np.testing.assert_array_equal(scores.score, expected.reshape(-1).astype(np.float64))
    np.testing.assert_allclose(scores.score, target[:10], atol=1e-4)
    assert scores.labels is None and scores.probabilities is None


def test_double_input_model_is_fed_float64() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 4))
    estimator = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0, 4.0]))
    onnx_bytes = export(estimator, [("x", DoubleTensorType([None, 4]))])
    scores = OnnxModel(onnx_bytes, NAMES, name="m", version="1").predict(X[:5])
    (expected,) = reference_run(onnx_bytes, {"x": X[:5]})
    np.testing.assert_array_equal(scores.score, expected.reshape(-1))


# -- empty input and refusals ---------------------------------------------------------------------


def test_empty_matrix(logistic: tuple[LogisticRegression, np.ndarray]) -> None:
    estimator, _ = logistic
    inputs = [("x", FloatTensorType([None, 4]))]
    classifier = OnnxModel(export(estimator, inputs, zipmap=False), NAMES, name="m", version="1")
    scores = classifier.predict(np.empty((0, 4)))
    assert scores.score.shape == (0,)
    assert scores.labels is not None and scores.labels.shape == (0,)
    regressor = OnnxModel(
        handmade_per_feature_regressor(NAMES, [1, 1, 1, 1], 0.0), NAMES, name="r", version="1"
    )
    empty = regressor.predict(np.empty((0, 4)))
    assert empty.score.shape == (0,)
    assert empty.labels is None and empty.probabilities is None


def test_wrong_feature_count_is_a_signature_mismatch(
    logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    estimator, _ = logistic
    onnx_bytes = export(estimator, [("x", FloatTensorType([None, 4]))], zipmap=False)
    with pytest.raises(SignatureMismatch, match="model takes 4 features, bundle names 3"):
        OnnxModel(onnx_bytes, NAMES[:3], name="m", version="1")
    with pytest.raises(SignatureMismatch, match="model takes 4 features, bundle names 5"):
        OnnxModel(onnx_bytes, [*NAMES, "f4"], name="m", version="1")


def test_per_feature_inputs_not_matching_the_feature_names_are_a_signature_mismatch() -> None:
    onnx_bytes = handmade_per_feature_regressor(["temp", "pressure", "rpm"], [1, 1, 1], 0.0)
    with pytest.raises(SignatureMismatch, match=r"differ in \['humidity', 'rpm'\]"):
        OnnxModel(onnx_bytes, ["temp", "pressure", "humidity"], name="m", version="1")


def test_non_float_input_is_a_signature_mismatch() -> None:
    X, y = three_class_data()
    estimator = LogisticRegression(max_iter=1000).fit(X.round().astype(np.int64), y)
    onnx_bytes = export(estimator, [("x", Int64TensorType([None, 4]))], zipmap=False)
    with pytest.raises(SignatureMismatch, match="not a float tensor"):
        OnnxModel(onnx_bytes, NAMES, name="m", version="1")


@pytest.mark.parametrize("data", [b"", b"not an onnx model", b"\x08\x07" * 40], ids=repr)
def test_corrupt_bytes_are_a_model_error(data: bytes) -> None:
    with pytest.raises(ModelError, match="onnxruntime cannot load the model") as info:
        OnnxModel(data, NAMES, name="m", version="9")
    assert not isinstance(info.value, SignatureMismatch)
    assert "m v9" in str(info.value)


# -- ServingModel: the runtime plus the bundle contract -------------------------------------------


def _meta(task: str, names: list[str], profile_rows: np.ndarray) -> BundleMeta:
    return BundleMeta(
        name="tiny",
        version="5",
        task=task,  # type: ignore[arg-type]
        feature_names=names,
        classes=["0", "1", "2"] if task == "classification" else [],
        profile=build_profile(profile_rows, names[: profile_rows.shape[1]]),
    )


def test_serving_model_takes_hard_ranges_from_the_profile(
    logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    estimator, _ = logistic
    onnx_bytes = export(estimator, [("x", FloatTensorType([None, 4]))], zipmap=False)
    # profile only the first two features: the others are unbounded
    rows = np.array([[0.0, 10.0], [2.0, 10.5], [4.0, 10.0]])
    serving = ServingModel.build(onnx_bytes, _meta("classification", NAMES, rows))
    np.testing.assert_array_equal(serving.lower, [-4.0, 9.0, -np.inf, -np.inf])
    np.testing.assert_array_equal(serving.upper, [8.0, 11.5, np.inf, np.inf])
    assert (serving.name, serving.version, serving.feature_names) == ("tiny", "5", NAMES)


def test_serving_model_refuses_a_task_the_model_does_not_have(
    logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    estimator, _ = logistic
    onnx_bytes = export(estimator, [("x", FloatTensorType([None, 4]))], zipmap=False)
    meta = _meta("regression", NAMES, np.zeros((3, 4)))
    with pytest.raises(SignatureMismatch, match="bundle says regression, the model is a classif"):
        ServingModel.build(onnx_bytes, meta)


def test_serving_model_from_a_missing_bundle_is_a_model_error(tmp_path: Any) -> None:
    with pytest.raises(ModelError, match="no model bundle"):
        ServingModel.from_bundle(tmp_path / "nothing-here")
