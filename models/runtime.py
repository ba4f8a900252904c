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

Labels always come out as class *names*. A string label already is one. An
integer label is a class code: with the bundle's class names it is mapped to
the name of its class, the code's position among the class labels the model's
classifier node declares (``classlabels_ints`` / ``classlabels_int64s``; a
model that declares none is taken to emit the column index). Without names it
stays the code as text.

The execution providers are asked for, not assumed: those of the asked-for
providers that this onnxruntime build has serve, in the order asked; when none
of them is there the CPU serves, and a missing provider is one warning, never
a refusal (a GPU setting on a CPU-only host still scores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from schemas.errors import ModelError, SignatureMismatch

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
#: What serves when nothing else is asked for.
DEFAULT_PROVIDERS: tuple[str, ...] = (CPU_PROVIDER,)

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_INT_LABEL_TYPES = ("tensor(int64)", "tensor(int32)")
_LABEL_TYPES = (*_INT_LABEL_TYPES, "tensor(string)")


@dataclass(frozen=True, slots=True)
class Scores:
    """A batch of model outputs, aligned with the input rows."""

    #: Per-row score: P(positive class) for binary, P(predicted class) for
    #: multi-class, the predicted value for a regressor.
    score: np.ndarray
    #: Predicted class name (classifiers), else None: the bundle's name for the class
    #: when it names them, else the model's own label as text.
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
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ) -> None:
        self.name = name
        self.version = version
        self.feature_names = list(feature_names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Fatal only: a failing Run raises, and the caller logs it rate-limited; at ERROR
        # onnxruntime also wrote its own ~500-character line to stderr for every failing batch.
        options.log_severity_level = 4
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available] or [CPU_PROVIDER]
        try:
            self._session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors on bad files
            raise ModelError(
                f"{name} v{version}: onnxruntime cannot load the model: {exc}"
            ) from exc
        #: The execution providers of the session, the one that serves first.
        self.providers: list[str] = self._session.get_providers()
        self.provider = self.providers[0]
        self._report_providers(list(providers), available)
        self._bind_inputs()
        self._bind_outputs(onnx_bytes, classes)

    def _report_providers(self, asked: list[str], available: list[str]) -> None:
        missing = [p for p in asked if p not in self.providers]
        if missing:
            log.warning(
                "%s v%s: execution provider(s) %s not available (this onnxruntime has %s): "
                "served by %s",
                self.name, self.version, ", ".join(missing), ", ".join(available), self.provider,
            )  # fmt: skip
        log.info("%s v%s served by %s", self.name, self.version, self.provider)

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

    def _bind_outputs(self, onnx_bytes: bytes, classes: Sequence[str]) -> None:
        outputs = self._session.get_outputs()
        self._label_output: str | None = None
        self._proba_output: str | None = None
        self._value_output: str | None = None
        proba_width: int | None = None
        int_labels = False
        for out in outputs:
            if out.type in _LABEL_TYPES:
                self._label_output = out.name
                int_labels = out.type in _INT_LABEL_TYPES
            elif out.type.startswith("seq(map(") or (
                out.type in _FLOAT_TYPES and len(out.shape) == 2 and len(outputs) > 1
            ):
                self._proba_output = out.name
                if out.type in _FLOAT_TYPES and isinstance(out.shape[1], int):
                    proba_width = out.shape[1]
            elif out.type in _FLOAT_TYPES:
                self._value_output = out.name
        self._index = {f: i for i, f in enumerate(self.feature_names)}
        self.classes = [str(c) for c in classes]
        #: Sorted class codes and the name of each (int-coded labels with bundle names).
        self._codes: np.ndarray | None = None
        self._names_by_code: np.ndarray | None = None
        if self._label_output is None and self._proba_output is None:
            if self._value_output is None:
                raise SignatureMismatch(f"{self.name}: no usable output in {outputs}")
            self.task = "regression"
            return
        self.task = "classification"
        declared = _declared_class_labels(onnx_bytes) if self._label_output else []
        n_classes = len(declared) or proba_width
        if self.classes and n_classes is not None and n_classes != len(self.classes):
            raise SignatureMismatch(
                f"{self.name} v{self.version}: the model has {n_classes} classes, "
                f"the bundle names {len(self.classes)}: {self.classes}"
            )
        if not self.classes:
            self.classes = [str(c) for c in declared]
        elif int_labels:
            self._bind_class_codes(declared)
        elif declared and [str(c) for c in declared] != self.classes:
            raise SignatureMismatch(
                f"{self.name} v{self.version}: the model's labels are {declared}, the bundle "
                f"names {self.classes}: a string-labelled model's classes are its own labels, "
                "in the order of its probability columns"
            )

    def _bind_class_codes(self, declared: list[int] | list[str]) -> None:
        """Look-up from the model's integer class codes to the bundle's class names."""
        if declared and isinstance(declared[0], int):
            codes = np.asarray(declared, dtype=np.int64)
        else:  # nothing declared: the code is the column index
            codes = np.arange(len(self.classes), dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        self._codes = codes[order]
        self._names_by_code = np.asarray(self.classes, dtype=object)[order]

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
            assert self._value_output is not None  # noqa: S101 - narrows the type for mypy, never a check
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
        if raw is None:
            assert proba is not None  # noqa: S101 - narrows the type for mypy, never a check
            return np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        labels = np.asarray(raw).reshape(-1)
        if self._codes is None or self._names_by_code is None:
            return labels.astype(str).astype(object)
        at = np.minimum(np.searchsorted(self._codes, labels), len(self._codes) - 1)
        known = self._codes[at] == labels
        if not known.all():
            unknown = sorted(set(labels[~known].tolist()))
            raise ModelError(
                f"{self.name} v{self.version}: the model predicted class code(s) {unknown}, "
                f"not among its {len(self._codes)} classes {self.classes}"
            )
        return np.take(self._names_by_code, at)


def _declared_class_labels(onnx_bytes: bytes) -> list[int] | list[str]:
    """The class labels the first classifier node of the graph declares, else ``[]``."""
    for node in onnx.load_model_from_string(onnx_bytes).graph.node:
        for attr in node.attribute:
            if attr.name in ("classlabels_ints", "classlabels_int64s") and attr.ints:
                return [int(i) for i in attr.ints]
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode("utf-8") for s in attr.strings]
    return []
