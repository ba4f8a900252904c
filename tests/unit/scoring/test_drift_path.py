"""The drift side path: its monitor is built before the first batch, and per champion."""

from __future__ import annotations

import numpy as np

from models.serving import ServingModel
from schemas.serde import AvroSerde
from schemas.settings import DriftSettings
from streams.ops.metrics import Metrics
from streams.scoring.drift_path import DriftPath
from streams.scoring.pipeline import raw_batch_from
from tests.unit.scoring.conftest import OutputFactory, metric


def drift_path(
    metrics: Metrics, emitted: list[list[bytes]], settings: DriftSettings | None = None
) -> DriftPath:
    return DriftPath(
        settings or DriftSettings(),
        serde=AvroSerde("drift_event"),
        emit=lambda values, _keys: emitted.append(values),
        metrics=metrics,
    )


def test_prepare_builds_the_monitor_the_first_batch_then_uses(
    metrics: Metrics,
    make_output: OutputFactory,
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
) -> None:
    path = drift_path(metrics, [])
    path.prepare(binary_champion)
    prepared = path.monitor
    assert prepared is not None
    assert (prepared.model_name, prepared.model_version) == ("lr-champion", "1")
    out = make_output(binary_champion, rows[:50])
    path(out, raw_batch_from([b"x"] * 50))
    assert path.monitor is prepared  # no second build (and calibration) at the first batch
    # another champion (a swap) gets a monitor of its own at its first batch
    swapped = make_output(binary_challenger, rows[:50][:, [2, 0, 1]])
    path(swapped, raw_batch_from([b"x"] * 50))
    assert path.monitor is not prepared
    assert path.monitor is not None and path.monitor.model_name == "lr-challenger"


def test_an_empty_batch_builds_nothing(
    metrics: Metrics, make_output: OutputFactory, binary_champion: ServingModel, rows: np.ndarray
) -> None:
    path = drift_path(metrics, [])
    path(make_output(binary_champion, rows[:0]), raw_batch_from([]))
    assert path.monitor is None
    assert path.report() == {"drift": {"windows": 0}}


def test_the_psi_gauges_follow_every_window_that_closes(
    metrics: Metrics, make_output: OutputFactory, binary_champion: ServingModel, rows: np.ndarray
) -> None:
    """Gauges are set only when a value changes; each still shows the latest value."""
    path = drift_path(metrics, [], DriftSettings(window_events=50, min_window_events=50))
    shifted = rows + np.array([3.0, 0.0, 0.0])  # the first feature moves, far
    shown = []
    for batch in (rows[:50], rows[50:100], shifted[:50], shifted[50:100], rows[100:150]):
        path(make_output(binary_champion, batch), raw_batch_from([b"x"] * len(batch)))
        assert path.monitor is not None and path.monitor.latest_psi
        for feature, value in path.monitor.latest_psi.items():
            assert metric(metrics, "streamscore_drift_psi", feature=feature) == value
        shown.append(dict(path.monitor.latest_psi))
    assert len({tuple(sorted(s.items())) for s in shown}) > 1  # the values did change
