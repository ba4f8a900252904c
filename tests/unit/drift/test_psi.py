"""PSI: the formula by hand, counts and samples, and every feature of a profile per window.

Seeded throughout; every expected value is exact or hand-computed.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from pydantic import ValidationError

import streams.drift.psi
from models.profile import FeatureProfile, ReferenceProfile, build_profile
from schemas.errors import ConfigError
from schemas.settings import DriftSettings, FeatureThresholds
from streams.drift.psi import DEFAULT_EPSILON, PsiMonitor, psi, psi_from_counts, psi_from_samples
from tests.unit.drift.profiles import two_bin_profile


def discrete_profile() -> ReferenceProfile:
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name="mode", kind="discrete", values=[1.0, 2.0, 3.0],
                reference_fractions=[0.5, 0.3, 0.2, 0.0],
                count=10, min=1, max=3, mean=1.7, std=0.78, hard_min=0, hard_max=9,
            )
        ]
    )  # fmt: skip


# --------------------------------------------------------------------------- psi()


def test_psi_hand_computed_two_bins() -> None:
    value, parts = psi([0.5, 0.5], [75, 25])
    # 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    assert value == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert parts.tolist() == pytest.approx([0.25 * math.log(1.5), 0.25 * math.log(2)], rel=1e-12)


def test_psi_identical_distribution_is_zero() -> None:
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == (0.0, pytest.approx([0.0, 0.0, 0.0]))


def test_psi_empty_bins_use_the_epsilon_floor() -> None:
    eps = DEFAULT_EPSILON
    value, parts = psi([0.5, 0.5, 0.0], [0, 100, 0])
    emptied = (eps - 0.5) * math.log(eps / 0.5)
    assert parts.tolist() == pytest.approx([emptied, 0.5 * math.log(2), 0.0], rel=1e-12)
    assert value == pytest.approx(emptied + 0.5 * math.log(2), rel=1e-12)
    # A bin empty on both sides contributes nothing, whatever the epsilon.
    assert psi([0.5, 0.5, 0.0], [50, 50, 0], epsilon=1e-3)[0] == 0.0
    # A larger epsilon makes an emptied bin count for less.
    assert psi([0.5, 0.5], [0, 10], epsilon=1e-2)[0] < value


def test_psi_rejects_mismatched_or_empty_counts() -> None:
    with pytest.raises(ValueError, match="2 current bins for 3"):
        psi([0.2, 0.3, 0.5], [1, 2])
    with pytest.raises(ValueError, match="empty window"):
        psi([0.5, 0.5], [0, 0])


# --------------------------------------------------------------------------- counts and samples


def test_psi_from_counts_normalises_the_reference() -> None:
    assert psi_from_counts([50, 50], [75, 25]) == pytest.approx(0.25 * math.log(3), rel=1e-12)
    assert psi_from_counts([1, 1], [75, 25]) == psi_from_counts([500, 500], [3, 1])
    eps = 1e-3
    emptied = (eps - 0.5) * math.log(eps / 0.5) + 0.5 * math.log(2)
    assert psi_from_counts([5, 5], [0, 7], epsilon=eps) == pytest.approx(emptied, rel=1e-12)
    with pytest.raises(ValueError, match="empty reference"):
        psi_from_counts([0, 0], [1, 1])
    with pytest.raises(ValueError, match="2 current bins for 3"):
        psi_from_counts([1, 1, 1], [1, 2])


def test_psi_from_samples_with_edges_bins_right_closed() -> None:
    eps = DEFAULT_EPSILON
    emptied = (eps - 0.5) * math.log(eps / 0.5) + 0.5 * math.log(2)
    reference, current = [0.1, 0.2, 0.7, 0.8], [0.7, 0.8, 0.9, 0.95]
    assert psi_from_samples(reference, current, [0.5]) == pytest.approx(emptied, rel=1e-12)
    # A value on an edge falls in the bin below it: (-inf, 0.5], (0.5, inf).
    assert psi_from_samples([0.5, 0.6], [0.5, 0.5], [0.5]) == pytest.approx(emptied, rel=1e-12)
    assert psi_from_samples(np.array(reference), np.array(reference), np.array([0.5])) == 0.0


def test_psi_from_samples_without_edges_uses_pooled_deciles() -> None:
    # Pooled deciles of 0..19 are 1.9, 3.8, ..., 17.1: the reference fills the five
    # lower bins, the current sample the five upper ones, 20 % each.
    eps = DEFAULT_EPSILON
    value = psi_from_samples(np.arange(10.0), np.arange(10.0, 20.0))
    assert value == pytest.approx(10 * (0.2 - eps) * math.log(0.2 / eps), rel=1e-12)
    assert psi_from_samples(np.arange(10.0), np.arange(10.0)) == 0.0


def test_psi_from_samples_of_an_empty_sample_is_zero() -> None:
    assert psi_from_samples([], [0.1, 0.2]) == 0.0
    assert psi_from_samples(np.array([0.1]), np.array([]), [0.5]) == 0.0


# --------------------------------------------------------------------------- PsiMonitor


def test_psi_monitor_matches_psi_on_every_window_whatever_the_batching() -> None:
    rng = np.random.default_rng(11)
    profile = build_profile(rng.normal(size=(20_000, 3)), ["a", "b", "c"])
    stream = rng.normal(size=(7_300, 3)) * [1.0, 1.3, 1.0] + [0.0, 0.0, 0.4]
    monitor = PsiMonitor(profile, window_events=1_000)
    closed = []
    start = 0
    while start < len(stream):
        stop = min(len(stream), start + int(rng.integers(1, 700)))
        closed += monitor.update(stream[start:stop], np.arange(start, stop))
        start = stop
    assert [w.window.index for w in closed] == list(range(7))
    assert monitor.window_events_seen == 300
    for w in closed:
        first = w.window.index * 1000
        assert (w.window.first_offset, w.window.last_offset) == (first, first + 999)
        chunk = stream[first : first + 1000]
        for j, feature in enumerate(profile.features):
            expected, parts = psi(feature.reference_fractions, feature.bin_counts(chunk[:, j]))
            assert w.psi[j] == pytest.approx(expected, rel=1e-12)
            assert w.contributions[j] == pytest.approx(parts, rel=1e-12)
    assert monitor.latest_psi == pytest.approx(
        dict(zip("abc", closed[-1].psi.tolist(), strict=True))
    )


def test_discrete_feature_vanishing_category_and_unseen_values() -> None:
    monitor = PsiMonitor(discrete_profile(), window_events=10)
    # Category 3 vanishes; 1 event of an unseen value lands in "other".
    [window] = monitor.update(np.array([[1.0]] * 5 + [[2.0]] * 4 + [[7.0]]))
    eps = DEFAULT_EPSILON
    expected = (
        0.0  # category 1: 0.5 vs 0.5
        + (0.4 - 0.3) * math.log(0.4 / 0.3)
        + (eps - 0.2) * math.log(eps / 0.2)
        + (0.1 - eps) * math.log(0.1 / eps)
    )
    assert window.psi[0] == pytest.approx(expected, rel=1e-12)
    assert window.current[0].tolist() == [0.5, 0.4, 0.0, 0.1]
    assert window.severity == ["alert"]


def test_per_feature_thresholds_override_the_defaults() -> None:
    profile = two_bin_profile("loose", "strict")
    monitor = PsiMonitor(
        profile,
        window_events=100,
        thresholds={"loose": FeatureThresholds(warning=0.5, alert=1.0)},
    )
    # 70 / 30 on both features: PSI 0.2 ln(0.7 / 0.5) + 0.2 ln(0.5 / 0.3) = 0.1695
    rows = np.array([[-1.0, -1.0]] * 70 + [[1.0, 1.0]] * 30)
    [window] = monitor.update(rows)
    value = 0.2 * math.log(0.7 / 0.5) + 0.2 * math.log(0.5 / 0.3)
    assert window.psi.tolist() == pytest.approx([value, value])
    assert window.severity == ["none", "warning"]


def test_thresholds_for_unknown_features_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\['nope'\]"):
        PsiMonitor(two_bin_profile("x"), thresholds={"nope": FeatureThresholds(warning=1, alert=2)})


def test_drift_settings_validate_thresholds() -> None:
    with pytest.raises(ValidationError):
        DriftSettings(warning=0.3, alert=0.2)
    with pytest.raises(ValidationError):
        FeatureThresholds(warning=0.3, alert=0.2)
    settings = DriftSettings(thresholds={"f1": FeatureThresholds(warning=0.2, alert=0.5)})
    assert settings.thresholds_for("f1").alert == 0.5
    assert settings.thresholds_for("f2") == FeatureThresholds(warning=0.1, alert=0.25)


def test_docstring_examples() -> None:
    result = doctest.testmod(streams.drift.psi, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 13
    assert result.failed == 0


def test_bin_batch_bins_each_cell_as_its_features_profile_does() -> None:
    rng = np.random.default_rng(5)
    train = np.column_stack([rng.normal(size=500), rng.integers(0, 4, size=500).astype(float)])
    continuous, discrete = build_profile(train, ["x", "k"]).features
    assert (continuous.kind, discrete.kind) == ("continuous", "discrete")
    profile = ReferenceProfile(features=[continuous, discrete, continuous.model_copy()])
    monitor = PsiMonitor(profile, window_events=1_000)
    edges = continuous.edges
    column = np.array([edges[0], edges[-1], -np.inf, np.inf, np.nan, 0.0, *edges[1:3]])
    matrix = np.column_stack([column, [0.0, 1.0, 2.0, 3.0, 9.0, np.nan, 1.5, 3.0], column])
    bins = monitor.bin_batch(matrix)
    sizes = [f.n_bins for f in profile.features]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    expected = (
        np.column_stack([f.bin_indices(matrix[:, j]) for j, f in enumerate(profile.features)])
        + offsets
    )
    assert bins.tolist() == expected.tolist()
