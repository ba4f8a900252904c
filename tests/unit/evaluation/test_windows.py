"""Event-time windows: tumbling and hopping bounds, the spec's checks, the CLI defaults."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from streams.evaluation import windows
from streams.evaluation.windows import WindowSpec, hopping_starts, tumbling_starts


def test_doctests() -> None:
    result = doctest.testmod(windows)
    assert result.attempted >= 2 and result.failed == 0


def test_tumbling_window_bounds() -> None:
    ts = [0, 1, 59_999, 60_000, 119_999, 120_000, -1, -60_000, -60_001]
    assert tumbling_starts(ts, 60_000).tolist() == [
        0, 0, 0, 60_000, 60_000, 120_000, -60_000, -60_000, -120_000,
    ]  # fmt: skip


def test_hopping_windows_hold_the_timestamp_and_nothing_else() -> None:
    ts = np.array([0, 59_999, 60_000, 299_999, 1_234_567])
    starts = hopping_starts(ts, 300_000, 60_000)
    assert starts.shape == (5, 5)
    assert starts[2].tolist() == [60_000, 0, -60_000, -120_000, -180_000]
    # every listed window [s, s + size) holds its timestamp, and starts are step multiples
    assert ((starts <= ts[:, None]) & (ts[:, None] < starts + 300_000)).all()
    assert (starts % 60_000 == 0).all()
    # and no other step-aligned window does: the next one starts after ts, the one
    # before the oldest ends at or before ts
    assert (starts[:, 0] + 60_000 > ts).all()
    assert (starts[:, -1] - 60_000 + 300_000 <= ts).all()


def test_window_spec_validates_and_shapes() -> None:
    spec = WindowSpec(tumbling_s=60, hopping_s=120, hop_s=60, grace_s=5, retention_s=600)
    assert spec.starts("tumbling", [61_000]).tolist() == [[60_000]]
    assert spec.starts("hopping", [61_000]).tolist() == [[60_000, 0]]
    assert spec.size_ms("hopping") == 120_000 and spec.grace_ms == 5_000
    with pytest.raises(ValueError, match="multiple"):
        WindowSpec(hopping_s=100, hop_s=30)
    with pytest.raises(ValueError, match="tumbling_s"):
        WindowSpec(tumbling_s=0)
    with pytest.raises(ValueError, match="retention"):
        WindowSpec(grace_s=10, retention_s=5)


def test_cli_window_defaults_match_the_spec() -> None:
    from streams.cli.evaluate import _DEFAULT_WINDOWS

    spec = WindowSpec()
    expected = (spec.tumbling_s, spec.hopping_s, spec.hop_s, spec.grace_s, spec.retention_s)
    assert expected == _DEFAULT_WINDOWS
