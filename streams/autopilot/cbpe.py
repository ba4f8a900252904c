"""Confidence-based performance estimation (CBPE): a classifier's accuracy before labels.

A classifier's confidence in the class it predicts, once *calibrated*, is the
probability that the prediction is right; its mean over a window estimates the
window's accuracy, with no label at all (the idea of NannyML's CBPE, here per
streaming window). Confidence is ``max(p, 1 - p)`` for a binary model whose score
is P(positive class), and the score itself for a multi-class one (P(predicted
class)). Calibration maps confidence to P(correct): isotonic regression (the
default; monotone, no shape assumed) or Platt's logistic curve on the logit of
the confidence, fitted on reference data with labels (the held-out split the
model was evaluated on).

What it can and cannot see: inputs moving into regions where the model is
unsure lower the estimate, and they do so as soon as the predictions are made.
A change of P(label | inputs) with confident predictions (concept drift) is
invisible to it: the estimate stays high while the realised accuracy falls.
That is why every window reports the realised accuracy next to the estimate as
labels arrive, and the estimation error between them.

:class:`CbpeWindows` keeps tumbling windows of scoring time per variant and
model version; it is pure (no IO) and fed whole batches.

>>> cal = fit_calibration(np.array([0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
...                       np.array([0, 1, 1, 1, 1, 1]), method="isotonic", binary=True)
>>> [round(float(v), 2) for v in cal(np.array([0.6, 0.99]))]
[0.0, 1.0]
>>> round(estimated_accuracy(cal, confidence(np.array([0.95, 0.05]), binary=True)), 2)
1.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Method = Literal["isotonic", "platt"]

#: The registry tag a version's calibration is kept in (JSON, see :meth:`Calibration.to_json`).
CALIBRATION_TAG = "streamscore.cbpe.calibration"
#: Isotonic calibrations are stored as at most this many (confidence, P(correct)) knots.
MAX_KNOTS = 64
_EPS = 1e-6


def confidence(scores: npt.ArrayLike, *, binary: bool) -> FloatArray:
    """Confidence in the predicted class: ``max(p, 1-p)`` (binary) or the score itself."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    return np.maximum(s, 1.0 - s) if binary else s


@dataclass(frozen=True, slots=True)
class Calibration:
    """A monotone map from confidence to P(correct), small enough for a registry tag."""

    method: Method
    binary: bool
    #: Isotonic: knots of a piecewise-linear map (clipped at the ends).
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    #: Platt: P(correct) = sigmoid(slope * logit(confidence) + intercept).
    slope: float = 0.0
    intercept: float = 0.0
    #: Reference rows it was fitted on.
    rows: int = 0

    def __call__(self, conf: npt.ArrayLike) -> FloatArray:
        c = np.asarray(conf, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(c, self.knots_x, self.knots_y)
        z = np.log(np.clip(c, _EPS, 1 - _EPS)) - np.log1p(-np.clip(c, _EPS, 1 - _EPS))
        return np.asarray(1.0 / (1.0 + np.exp(-(self.slope * z + self.intercept))))

    def to_json(self) -> str:
        data: dict[str, Any] = {"method": self.method, "binary": self.binary, "rows": self.rows}
        if self.method == "isotonic":
            data["x"] = [round(v, 6) for v in self.knots_x]
            data["y"] = [round(v, 6) for v in self.knots_y]
        else:
            data.update(slope=self.slope, intercept=self.intercept)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        method = data["method"]
        if method == "isotonic":
            return cls(
                "isotonic",
                bool(data["binary"]),
                knots_x=tuple(float(v) for v in data["x"]),
                knots_y=tuple(float(v) for v in data["y"]),
                rows=int(data.get("rows", 0)),
            )
        if method == "platt":
            return cls(
                "platt",
                bool(data["binary"]),
                slope=float(data["slope"]),
                intercept=float(data["intercept"]),
                rows=int(data.get("rows", 0)),
            )
        raise ValueError(f"unknown calibration method {method!r}")


def fit_calibration(
    conf: npt.ArrayLike, correct: npt.ArrayLike, *, method: Method, binary: bool
) -> Calibration:
    """Fit confidence → P(correct) on reference rows (``correct`` is 0/1 or booleans)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    c = np.asarray(conf, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or c.shape != y.shape or c.size == 0:
        raise ValueError("calibration needs two aligned, non-empty one-dimensional arrays")
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, y)
        xs = np.asarray(iso.X_thresholds_, dtype=np.float64)
        if xs.size > MAX_KNOTS:
            xs = np.unique(np.quantile(c, np.linspace(0.0, 1.0, MAX_KNOTS)))
        ys = np.asarray(iso.predict(xs), dtype=np.float64)
        return Calibration(
            "isotonic", binary, tuple(xs.tolist()), tuple(ys.tolist()), rows=int(c.size)
        )
    if np.all(y == y[0]):  # one outcome only: a constant is all the data says
        p = float(np.clip(y[0], _EPS, 1 - _EPS))
        return Calibration(
            "platt", binary, intercept=math.log(p) - math.log1p(-p), rows=int(c.size)
        )
    z = np.log(np.clip(c, _EPS, 1 - _EPS)) - np.log1p(-np.clip(c, _EPS, 1 - _EPS))
    model = LogisticRegression(C=1e6).fit(z.reshape(-1, 1), y.astype(np.int64))
    return Calibration(
        "platt",
        binary,
        slope=float(model.coef_[0][0]),
        intercept=float(model.intercept_[0]),
        rows=int(c.size),
    )


def estimated_accuracy(calibration: Calibration, conf: FloatArray) -> float:
    """The CBPE estimate: the mean calibrated probability that each prediction is right."""
    return float(calibration(conf).mean()) if conf.size else float("nan")


# --------------------------------------------------------------------------- windows


WindowKey = tuple[str, str, int]  # variant, model version, window start (ms)


@dataclass(slots=True)
class WindowStats:
    """One window of one variant and version: the estimate, and the labelled part."""

    count: int = 0
    expected: float = 0.0  # sum of P(correct) over every prediction
    labelled: int = 0
    correct: int = 0
    labelled_expected: float = 0.0  # sum of P(correct) over the labelled ones
    emitted: tuple[int, int] | None = None  # (count, labelled) at the last emission

    def metrics(self) -> dict[str, float]:
        """``estimated_accuracy`` always; realised accuracy and the error once labelled."""
        out = {"estimated_accuracy": self.expected / self.count, "labelled": float(self.labelled)}
        if self.labelled:
            realised = self.correct / self.labelled
            out["realised_accuracy"] = realised
            out["estimated_accuracy_labelled"] = self.labelled_expected / self.labelled
            out["estimation_error"] = out["estimated_accuracy"] - realised
            out["estimation_error_labelled"] = out["estimated_accuracy_labelled"] - realised
            out["label_coverage"] = self.labelled / self.count
        return out


@dataclass(frozen=True, slots=True)
class CbpeWindow:
    """A window due for publication (see :meth:`CbpeWindows.due`)."""

    variant: str
    model_version: str
    start_ms: int
    end_ms: int
    count: int
    metrics: dict[str, float]


@dataclass
class CbpeWindows:
    """Tumbling windows of scoring time, per variant and version; predictions joined with
    labels by event id.

    :meth:`add_predictions` takes a batch of one variant's predictions (their
    P(correct) already calibrated), :meth:`add_labels` a batch of labels;
    :meth:`due` gives the windows to publish. At most ``max_pending`` event ids
    wait for their label (the oldest are forgotten first, and counted); windows
    older than ``retention_ms`` past their end are dropped.

    >>> w = CbpeWindows(window_ms=1000)
    >>> w.add_predictions("champion", "1", ["a", "b"], np.array([10, 20]), ["x", "y"],
    ...                   np.array([0.9, 0.7]))
    >>> w.add_labels(["a", "b"], ["x", "x"])
    2
    >>> [(d.count, round(d.metrics["estimated_accuracy"], 2), d.metrics["realised_accuracy"])
    ...  for d in w.due(now_ms=5000, min_predictions=1)]
    [(2, 0.8, 0.5)]
    """

    window_ms: int
    max_pending: int = 200_000
    retention_ms: int = 3_600_000
    windows: dict[WindowKey, WindowStats] = field(default_factory=dict)
    #: event id -> (window, predicted label, P(correct)) per variant that scored it.
    pending: dict[str, list[tuple[WindowKey, str | None, float]]] = field(default_factory=dict)
    forgotten: int = 0
    watermark_ms: int = 0

    def add_predictions(
        self,
        variant: str,
        version: str,
        event_ids: Sequence[str],
        processed_at_ms: npt.NDArray[np.int64],
        predicted: Sequence[str | None],
        p_correct: FloatArray,
    ) -> None:
        if not len(event_ids):
            return
        starts = (processed_at_ms // self.window_ms) * self.window_ms
        for start in np.unique(starts).tolist():
            mask = starts == start
            stats = self.windows.setdefault((variant, version, int(start)), WindowStats())
            stats.count += int(mask.sum())
            stats.expected += float(p_correct[mask].sum())
        pending = self.pending
        for event_id, start, label, p in zip(
            event_ids, starts.tolist(), predicted, p_correct.tolist(), strict=True
        ):
            pending.setdefault(event_id, []).append(((variant, version, int(start)), label, p))
        self.watermark_ms = max(self.watermark_ms, int(processed_at_ms.max()))
        while len(pending) > self.max_pending:
            del pending[next(iter(pending))]
            self.forgotten += 1

    def add_labels(self, event_ids: Sequence[str], labels: Sequence[str | None]) -> int:
        """Join labels with the predictions waiting for them; returns how many matched."""
        matched = 0
        for event_id, truth in zip(event_ids, labels, strict=True):
            entries = self.pending.pop(event_id, None)
            if entries is None or truth is None:
                continue
            matched += 1
            for key, predicted, p in entries:
                stats = self.windows.get(key)
                if stats is None:
                    continue
                stats.labelled += 1
                stats.correct += int(predicted == truth)
                stats.labelled_expected += p
        return matched

    def due(self, now_ms: int, min_predictions: int) -> list[CbpeWindow]:
        """Closed windows (their end passed the newest scoring time, or ``now_ms`` minus a
        window) with enough predictions, new or changed since their last publication."""
        closed_before = max(self.watermark_ms, now_ms - self.window_ms)
        out: list[CbpeWindow] = []
        for key, stats in list(self.windows.items()):
            variant, version, start = key
            end = start + self.window_ms
            if end + self.retention_ms <= closed_before:
                del self.windows[key]
                continue
            if end > closed_before or stats.count < min_predictions:
                continue
            signature = (stats.count, stats.labelled)
            if stats.emitted == signature:
                continue
            stats.emitted = signature
            out.append(CbpeWindow(variant, version, start, end, stats.count, stats.metrics()))
        return sorted(out, key=lambda w: (w.start_ms, w.variant))

    def latest(self, variant: str, version: str, min_predictions: int) -> CbpeWindow | None:
        """The newest closed window of one variant and version with enough predictions."""
        closed_before = self.watermark_ms
        best: CbpeWindow | None = None
        for (v, ver, start), stats in self.windows.items():
            end = start + self.window_ms
            if v != variant or ver != version or end > closed_before:
                continue
            if stats.count < min_predictions or (best is not None and start <= best.start_ms):
                continue
            best = CbpeWindow(v, ver, start, end, stats.count, stats.metrics())
        return best


# --------------------------------------------------------------------------- the feed


CalibrationFor = Callable[[str, str], "Calibration | None"]


class CbpeMonitor:
    """Predictions, shadow records and labels in; CBPE evaluation records out.

    ``calibration_for(version, alias)`` gives a version's calibration (None: no
    estimate for it). The champion's estimate comes from ``sensor.predictions``
    (confidence from the class probabilities), the shadow challenger's from
    ``sensor.shadow`` (confidence from its score); both join the labels by event id.
    """

    def __init__(
        self,
        calibration_for: CalibrationFor,
        *,
        window_s: float,
        min_window_predictions: int = 100,
        max_pending: int = 200_000,
        retention_s: float = 3600.0,
    ) -> None:
        self.calibration_for = calibration_for
        self.min_window_predictions = min_window_predictions
        self.windows = CbpeWindows(
            window_ms=int(window_s * 1000),
            max_pending=max_pending,
            retention_ms=int(retention_s * 1000),
        )
        self.uncalibrated = 0

    def add_predictions(self, records: Sequence[dict[str, Any]]) -> None:
        """``Prediction`` records (classifiers only: a record without a label is skipped)."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in records:
            if r.get("predicted_label") is not None:
                groups.setdefault((str(r["variant"]), str(r["model_version"])), []).append(r)
        for (variant, version), rows in groups.items():
            calibration = self.calibration_for(version, variant)
            if calibration is None:
                self.uncalibrated += len(rows)
                continue
            conf = np.array(
                [max(r["probabilities"].values()) if r.get("probabilities") else
                 float(confidence([r["score"]], binary=calibration.binary)[0]) for r in rows]
            )  # fmt: skip
            self.windows.add_predictions(
                variant,
                version,
                [r["event_id"] for r in rows],
                np.array([int(r["processed_at"]) for r in rows], dtype=np.int64),
                [r["predicted_label"] for r in rows],
                calibration(conf),
            )

    def add_shadow(self, records: Sequence[dict[str, Any]]) -> None:
        """``ShadowRecord`` s: the challenger's side."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            if r.get("challenger_label") is not None:
                groups.setdefault(str(r["challenger_version"]), []).append(r)
        for version, rows in groups.items():
            calibration = self.calibration_for(version, "challenger")
            if calibration is None:
                self.uncalibrated += len(rows)
                continue
            conf = confidence([r["challenger_score"] for r in rows], binary=calibration.binary)
            self.windows.add_predictions(
                "challenger",
                version,
                [r["event_id"] for r in rows],
                np.array([int(r["processed_at"]) for r in rows], dtype=np.int64),
                [r["challenger_label"] for r in rows],
                calibration(conf),
            )

    def add_labels(self, records: Sequence[dict[str, Any]]) -> int:
        return self.windows.add_labels(
            [r["event_id"] for r in records],
            [None if r.get("label") is None else str(r["label"]) for r in records],
        )

    def evaluation_records(self, now_ms: int) -> list[dict[str, Any]]:
        """``Evaluation`` records (window ``cbpe``) of the windows due now."""
        return [
            {
                "variant": w.variant,
                "model_version": w.model_version,
                "window": "cbpe",
                "window_start": w.start_ms,
                "window_end": w.end_ms,
                "count": w.count,
                "metrics": {k: v for k, v in w.metrics.items() if math.isfinite(v)},
                "verdict": None,
                "evidence": {},
                "emitted_at": now_ms,
            }
            for w in self.windows.due(now_ms, self.min_window_predictions)
        ]

    def latest(self, variant: str, version: str) -> CbpeWindow | None:
        return self.windows.latest(variant, version, self.min_window_predictions)
