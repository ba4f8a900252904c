"""Scoring with onnxruntime: one call per batch.

:class:`OnnxModel` loads any ONNX classifier (binary or multi-class) or
regressor whose inputs are named float features, in either of the two shapes
exporters produce:

* one input of shape ``[N, n_features]`` (skl2onnx's default), fed the whole
  feature matrix in the bundle's feature order;
* one ``[N, 1]`` input per feature, named after it, fed one column each.

Outputs are recognised by type, not by name: an integer or string tensor of
rank 1 is the label, a float tensor ``[N, C]`` (or a ZipMap sequence of maps)
the class probabilities; a model with a single float output is a regressor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from schemas.errors import ModelError, SignatureMismatch

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


@dataclass(frozen=True, slots=True)
class Scores:
    """A batch of model outputs, aligned with the input rows."""

    #: Per-row score: P(positive class) for binary, P(predicted class) for
    #: multi-class, the predicted value for a regressor.
    score: np.ndarray
    #: Predicted label as text (classifiers), else None.
    labels: np.ndarray | None = None
    #: ``[N, C]`` class probabilities (classifiers), else None.
    probabilities: np.ndarray | None = None


class OnnxModel:
    """An onnxruntime session with the feature contract of its bundle."""

    def __init__(
        self,
        onnx_bytes: bytes,
        feature_names: Sequence[str],
        *,
        name: str,
        version: str,
        classes: Sequence[str] = (),
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        self.name = name
        self.version = version
        self.feature_names = list(feature_names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors on bad files
            raise ModelError(
                f"{name} v{version}: onnxruntime cannot load the model: {exc}"
            ) from exc
        self._bind_inputs()
        self._bind_outputs(classes)

    # -- signature ---------------------------------------------------------------------------

    def _bind_inputs(self) -> None:
        inputs = self._session.get_inputs()
        n = len(self.feature_names)
        for inp in inputs:
            if inp.type not in _FLOAT_TYPES:
                raise SignatureMismatch(
                    f"{self.name}: input {inp.name!r} is {inp.type}, not a float tensor"
                )
        if len(inputs) == 1:
            shape = inputs[0].shape
            width = shape[-1] if len(shape) == 2 else None
            if isinstance(width, int) and width != n:
                raise SignatureMismatch(
                    f"{self.name}: model takes {width} features, bundle names {n}"
                )
            self._matrix_input: str | None = inputs[0].name
            self._input_dtype = _FLOAT_TYPES[inputs[0].type]
            self._column_inputs: list[str] = []
            if n == 1 and inputs[0].name in self.feature_names:
                self._matrix_input, self._column_inputs = None, [inputs[0].name]
            return
        names = [i.name for i in inputs]
        if sorted(names) != sorted(self.feature_names):
            missing = sorted(set(self.feature_names) ^ set(names))
            raise SignatureMismatch(
                f"{self.name}: model inputs {names} do not match features; differ in {missing}"
            )
        self._matrix_input = None
        self._column_inputs = names
        self._input_dtype = _FLOAT_TYPES[inputs[0].type]

    def _bind_outputs(self, classes: Sequence[str]) -> None:
        outputs = self._session.get_outputs()
        self._label_output: str | None = None
        self._proba_output: str | None = None
        self._value_output: str | None = None
        for out in outputs:
            if out.type in ("tensor(int64)", "tensor(int32)", "tensor(string)"):
                self._label_output = out.name
            elif out.type.startswith("seq(map(") or (
                out.type in _FLOAT_TYPES and len(out.shape) == 2 and len(outputs) > 1
            ):
                self._proba_output = out.name
            elif out.type in _FLOAT_TYPES:
                self._value_output = out.name
        if self._label_output is None and self._proba_output is None:
            if self._value_output is None:
                raise SignatureMismatch(f"{self.name}: no usable output in {outputs}")
            self.task = "regression"
        else:
            self.task = "classification"
        self.classes = [str(c) for c in classes]
        self._index = {f: i for i, f in enumerate(self.feature_names)}

    # -- scoring -------------------------------------------------------------------------

    def predict(self, matrix: np.ndarray) -> Scores:
        """Score a ``[N, n_features]`` matrix in the bundle's feature order."""
        if matrix.shape[0] == 0:
            empty = np.empty(0)
            if self.task == "regression":
                return Scores(score=empty)
            return Scores(
                score=empty,
                labels=np.empty(0, dtype=object),
                probabilities=np.empty((0, len(self.classes))),
            )
        feed = self._feed(matrix)
        wanted = [o for o in (self._label_output, self._proba_output, self._value_output) if o]
        results = dict(zip(wanted, self._session.run(wanted, feed), strict=True))
        if self.task == "regression":
            assert self._value_output is not None
            return Scores(score=np.asarray(results[self._value_output], np.float64).reshape(-1))
        proba = self._probabilities(results.get(self._proba_output or ""))
        labels = self._labels(results.get(self._label_output or ""), proba)
        if proba is None:
            return Scores(score=np.ones(len(labels)), labels=labels)
        score = proba[:, -1] if proba.shape[1] == 2 else proba.max(axis=1)
        return Scores(score=score.astype(np.float64), labels=labels, probabilities=proba)

    def _feed(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        data = np.ascontiguousarray(matrix, dtype=self._input_dtype)
        if self._matrix_input is not None:
            return {self._matrix_input: data}
        return {name: data[:, self._index[name]].reshape(-1, 1) for name in self._column_inputs}

    def _probabilities(self, raw: object) -> np.ndarray | None:
        if raw is None:
            return None
        if isinstance(raw, list):  # ZipMap: a list of {class: probability}
            if not self.classes and raw:
                self.classes = [str(k) for k in raw[0]]
            keys = list(raw[0]) if raw else []
            return np.array([[row[k] for k in keys] for row in raw], dtype=np.float64)
        proba = np.asarray(raw, dtype=np.float64)
        if not self.classes:
            self.classes = [str(i) for i in range(proba.shape[1])]
        return proba

    def _labels(self, raw: object, proba: np.ndarray | None) -> np.ndarray:
        if raw is not None:
            return np.asarray(raw).reshape(-1).astype(str).astype(object)
        assert proba is not None
        return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
