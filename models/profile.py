"""Reference profile of a model's training features.

Saved with every model and used twice downstream: for range validation (the
hard range) and for PSI drift detection (the reference bins and fractions).

A continuous feature gets quantile bins: ``edges`` are the interior cut points,
bin ``i`` holds values in ``(edges[i-1], edges[i]]`` with open ends at ±inf.
A feature with few distinct values (integer codes, categories) gets exact-value
bins: one bin per reference value and a last ``other`` bin for unseen values.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from schemas.errors import ConfigError

DEFAULT_BINS = 10
#: At most this many distinct values makes a feature discrete (exact-value bins).
MAX_DISCRETE_VALUES = 12


class FeatureProfile(BaseModel):
    name: str
    kind: Literal["continuous", "discrete"]
    #: continuous: interior cut points (bins = len(edges) + 1).
    edges: list[float] = []
    #: discrete: the reference values (bins = len(values) + 1, the last is "other").
    values: list[float] = []
    reference_fractions: list[float]
    count: int
    min: float
    max: float
    mean: float
    std: float
    #: Values outside [hard_min, hard_max] are invalid input, not drift.
    hard_min: float
    hard_max: float

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1 if self.kind == "continuous" else len(self.values) + 1

    def bin_labels(self) -> list[str]:
        if self.kind == "discrete":
            return [f"={v:g}" for v in self.values] + ["other"]
        bounds = [-np.inf, *self.edges, np.inf]
        return [f"({lo:g}, {hi:g}]" for lo, hi in itertools.pairwise(bounds)]

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value, vectorised (one call for a whole batch column)."""
        if self.kind == "continuous":
            return np.searchsorted(np.asarray(self.edges), values, side="left")
        ref = np.asarray(self.values)
        idx = np.searchsorted(ref, values)
        clipped = np.minimum(idx, len(ref) - 1)
        hit = ref[clipped] == values
        return np.where(hit, clipped, len(ref))

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.bin_indices(values), minlength=self.n_bins)


class ReferenceProfile(BaseModel):
    features: list[FeatureProfile]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def hard_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds in feature order, for vectorised range checks."""
        lo = np.array([f.hard_min for f in self.features], dtype=np.float64)
        hi = np.array([f.hard_max for f in self.features], dtype=np.float64)
        return lo, hi

    def by_name(self) -> dict[str, FeatureProfile]:
        return {f.name: f for f in self.features}


def profile_feature(
    name: str,
    column: np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
    hard_margin: float = 1.0,
) -> FeatureProfile:
    """Profile one feature column.

    The hard range is the observed range widened by ``hard_margin`` times its
    span on each side (at least 1.0): wide enough that real drift is seen as
    drift, narrow enough that a sensor gone mad is rejected.
    """
    column = np.asarray(column, dtype=np.float64)
    lo, hi = float(column.min()), float(column.max())
    slack = max(hard_margin * (hi - lo), 1.0)
    distinct = np.unique(column)
    common: dict[str, Any] = {
        "name": name,
        "count": int(column.size),
        "min": lo,
        "max": hi,
        "mean": float(column.mean()),
        "std": float(column.std()),
        "hard_min": lo - slack,
        "hard_max": hi + slack,
    }
    if distinct.size <= MAX_DISCRETE_VALUES:
        profile = FeatureProfile(
            kind="discrete", values=[float(v) for v in distinct], reference_fractions=[], **common
        )
    else:
        quantiles = np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(quantiles)
        # The top edge equal to the maximum would leave the last bin empty by construction.
        edges = edges[edges < hi]
        profile = FeatureProfile(
            kind="continuous", edges=[float(e) for e in edges], reference_fractions=[], **common
        )
    counts = profile.bin_counts(column)
    profile.reference_fractions = [float(c) for c in counts / counts.sum()]
    return profile


def build_profile(
    matrix: np.ndarray, names: Sequence[str], *, bins: int = DEFAULT_BINS
) -> ReferenceProfile:
    """Profile every column of ``matrix`` (rows = training examples)."""
    return ReferenceProfile(
        features=[profile_feature(n, matrix[:, i], bins=bins) for i, n in enumerate(names)]
    )


#: What a model without a reference profile loses, said wherever it shows.
NO_PROFILE_WARNING = (
    "no reference profile: events get type checks only (no range checks) and no PSI drift; "
    "give training rows with --reference-csv or --reference-parquet"
)


def read_reference_rows(
    path: Path, features: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Training rows from a CSV (header row) or Parquet file, columns in ``features`` order.

    A file that cannot be read, lacks a feature column or is not numeric is a
    :class:`ConfigError` naming the file.
    """
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            header = list(table.column_names)
            columns = {name: table.column(name).to_numpy() for name in header}
            rows = len(table)
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                lines = list(csv.reader(handle))
            if len(lines) < 2:
                raise ConfigError(f"{path}: need a header row and at least one data row")
            header = [h.strip() for h in lines[0]]
            body = [line for line in lines[1:] if line]
            columns = {h: [line[i] for line in body] for i, h in enumerate(header)}
            rows = len(body)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    order = list(features) if features else header
    missing = [f for f in order if f not in header]
    if missing:
        raise ConfigError(f"{path}: no column for feature(s) {missing}")
    try:
        matrix = np.column_stack([np.asarray(columns[f], dtype=np.float64) for f in order])
    except ValueError as exc:
        raise ConfigError(f"{path}: not numeric: {exc}") from exc
    return order, matrix.reshape(rows, len(order))
