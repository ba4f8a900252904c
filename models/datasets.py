"""The reference dataset: river's Shuttle (NASA space-shuttle sensor readings).

It ships inside the river wheel, so nothing is downloaded. 49,097 rows, nine
numeric sensor features ``f1..f9`` and a binary ``anomaly`` target (~7 %).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    feature_names: list[str]
    X: np.ndarray  # float64 [rows, features]
    y: np.ndarray  # int64 [rows]

    @property
    def content_hash(self) -> str:
        """SHA-256 of the feature matrix and labels: the lineage of a trained model."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.X).tobytes())
        digest.update(np.ascontiguousarray(self.y).tobytes())
        return digest.hexdigest()


@cache
def shuttle() -> Dataset:
    from river import datasets

    rows = list(datasets.Shuttle())
    names = sorted(rows[0][0], key=lambda n: int(n[1:]))
    X = np.array([[x[n] for n in names] for x, _ in rows], dtype=np.float64)
    y = np.array([int(label) for _, label in rows], dtype=np.int64)
    return Dataset(name="river.datasets.Shuttle", feature_names=names, X=X, y=y)
