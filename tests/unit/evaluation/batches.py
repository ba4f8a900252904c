"""Label batches built by hand for the evaluation tests (the kinds follow from truth and values)."""

from __future__ import annotations

import numpy as np

from streams.evaluation.labels import CLASSIFICATION, INVALID, REGRESSION, LabelBatch


def label_batch(
    truth: list[str | None],
    values: list[float | None] | None = None,
    *,
    partitions: list[int] | None = None,
    offsets: list[int] | None = None,
    labelled_at: list[int] | None = None,
) -> LabelBatch:
    n = len(truth)
    values = values or [None] * n
    kind = [
        CLASSIFICATION if t is not None else REGRESSION if v is not None else INVALID
        for t, v in zip(truth, values, strict=True)
    ]
    return LabelBatch(
        partitions=np.asarray(partitions or [0] * n, dtype=np.int64),
        offsets=np.asarray(offsets or list(range(n)), dtype=np.int64),
        event_ids=[f"e{i}" for i in range(n)],
        kind=np.asarray(kind, dtype=np.int8),
        truth=truth,
        values=np.asarray([np.nan if v is None else v for v in values], dtype=np.float64),
        labelled_at=np.asarray(labelled_at or [1000 * i for i in range(n)], dtype=np.int64),
    )
