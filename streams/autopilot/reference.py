"""Each model version's calibration for CBPE, fitted once on its reference data.

Where a version's calibration comes from, in order:

1. its registry tag ``streamscore.cbpe.calibration`` (the retraining flow writes
   it at registration, fitted on the held-out slice the candidate was judged on);
2. for a version trained on the reference dataset (``dataset.name`` is river's
   Shuttle, as ``streamscore models train`` registers them): the held-out split
   of that dataset, scored by the version's own ONNX model; the result is
   written to the tag, so it is fitted once;
3. otherwise none: the version gets no estimate (said once in the log).

A registry that cannot answer is asked again later; nothing is remembered then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from connectors.model_registry import RegistryError
from models.cache import FetchedModel
from models.runtime import Scores
from models.serving import ServingModel
from schemas.errors import InfrastructureError, ModelError
from streams.autopilot.cbpe import CALIBRATION_TAG, Calibration, Method, confidence, fit_calibration

log = logging.getLogger(__name__)


class TaggedRegistry(Protocol):
    def version_tags(self, name: str, version: str) -> dict[str, str]: ...

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...

    def fetch(self, name: str, alias: str) -> FetchedModel: ...


def scores_confidence(scores: Scores, classes: int) -> np.ndarray:
    """Confidence in the predicted class of a batch of scores."""
    if scores.probabilities is not None:
        return np.asarray(scores.probabilities, dtype=np.float64).max(axis=1)
    return confidence(scores.score, binary=classes == 2)


def calibrate_on(
    model: ServingModel, X: np.ndarray, truth: np.ndarray, method: Method
) -> Calibration:
    """Fit a model's calibration on labelled reference rows (class names as ``truth``)."""
    scores = model.model.predict(np.asarray(X, dtype=np.float64))
    if scores.labels is None:
        raise ModelError(f"{model.name} v{model.version} is not a classifier: no CBPE")
    correct = np.asarray(scores.labels).astype(str) == np.asarray(truth).astype(str)
    classes = len(model.meta.classes)
    return fit_calibration(
        scores_confidence(scores, classes), correct, method=method, binary=classes == 2
    )


class ReferenceCalibrations:
    """Calibration per version of one registered model (see the module docstring)."""

    def __init__(self, registry: TaggedRegistry, model_name: str, method: Method) -> None:
        self.registry = registry
        self.model_name = model_name
        self.method = method
        self._known: dict[str, Calibration | None] = {}

    def get(self, version: str, alias: str) -> Calibration | None:
        """The calibration of ``version`` (currently behind ``alias``), or None."""
        if version in self._known:
            return self._known[version]
        try:
            found = self._load(version, alias)
        except (InfrastructureError, RegistryError) as exc:
            log.warning("calibration of %s v%s not available yet: %s", self.model_name, version,
                        exc)  # fmt: skip
            return None
        self._known[version] = found
        return found

    def _load(self, version: str, alias: str) -> Calibration | None:
        tags = self.registry.version_tags(self.model_name, version)
        if CALIBRATION_TAG in tags:
            return Calibration.from_json(tags[CALIBRATION_TAG])
        from models.datasets import shuttle

        data = shuttle()
        if tags.get("dataset.name") != data.name:
            log.info("%s v%s has no calibration and no known reference data: no CBPE estimate",
                     self.model_name, version)  # fmt: skip
            return None
        fetched = self.registry.fetch(self.model_name, alias)
        if fetched.version != version:
            raise InfrastructureError(f"{alias} moved to v{fetched.version} while calibrating")
        try:
            model = ServingModel.from_bundle(fetched.path)
            from models.train import split

            _, X_test, _, y_test = split(data)
            calibration = calibrate_on(model, X_test, y_test, self.method)
        except ModelError as exc:
            log.warning("no CBPE for %s v%s: %s", self.model_name, version, exc)
            return None
        self.registry.set_version_tags(
            self.model_name, version, {CALIBRATION_TAG: calibration.to_json()}
        )
        log.info("calibrated %s v%s on %d reference rows", self.model_name, version,
                 calibration.rows)  # fmt: skip
        return calibration
