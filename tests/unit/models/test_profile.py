"""Reference profiles on small hand-made columns: edges, fractions and hard ranges by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.profile import MAX_DISCRETE_VALUES, ReferenceProfile, build_profile, profile_feature


def test_continuous_quartile_edges_and_fractions() -> None:
    column = np.arange(20, dtype=np.float64)  # 0..19: 20 distinct values
    p = profile_feature("x", column, bins=4)
    assert p.kind == "continuous"
    # linear quantiles at 0.25, 0.5, 0.75 of 0..19
    assert p.edges == [4.75, 9.5, 14.25]
    assert p.values == []
    assert p.reference_fractions == [0.25, 0.25, 0.25, 0.25]
    assert p.n_bins == 4
    assert p.bin_labels() == ["(-inf, 4.75]", "(4.75, 9.5]", "(9.5, 14.25]", "(14.25, inf]"]
    assert (p.count, p.min, p.max, p.mean) == (20, 0.0, 19.0, 9.5)
    assert p.std == pytest.approx(np.sqrt(33.25), abs=1e-12)


def test_default_ten_bins_hold_a_tenth_each() -> None:
    p = profile_feature("x", np.arange(20, dtype=np.float64))
    assert p.edges == pytest.approx([1.9, 3.8, 5.7, 7.6, 9.5, 11.4, 13.3, 15.2, 17.1], abs=1e-12)
    assert p.reference_fractions == pytest.approx([0.1] * 10, abs=1e-15)


def test_repeated_quantiles_are_merged() -> None:
    """Six zeros then 1..13: the 25 % quantile is 0, the median 4, the 75 % 8.5."""
    column = np.array([0.0] * 6 + list(range(1, 14)))
    p = profile_feature("x", column, bins=4)
    assert p.kind == "continuous"
    assert p.edges == [0.0, 4.0, 8.5]
    assert p.reference_fractions == [6 / 19, 4 / 19, 4 / 19, 5 / 19]


def test_top_edge_at_the_maximum_is_dropped() -> None:
    """0..12 then twenty more 12s: the 50 % and 75 % quantiles are the maximum itself."""
    column = np.array(list(range(13)) + [12.0] * 20)
    p = profile_feature("x", column, bins=4)
    assert p.edges == [8.0]
    assert p.reference_fractions == [9 / 33, 24 / 33]


def test_a_value_on_an_edge_falls_in_the_lower_bin() -> None:
    p = profile_feature("x", np.arange(20, dtype=np.float64), bins=4)
    values = np.array([-100.0, 4.75, np.nextafter(4.75, 5.0), 9.5, 14.25, 14.5, 1e9])
    assert p.bin_indices(values).tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert p.bin_counts(values).tolist() == [2, 2, 1, 2]


def test_discrete_feature_gets_exact_value_bins_and_an_other_bin() -> None:
    column = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 5.0])
    p = profile_feature("code", column)
    assert p.kind == "discrete"
    assert p.values == [0.0, 1.0, 2.0, 5.0]
    assert p.edges == []
    assert p.reference_fractions == [3 / 7, 2 / 7, 1 / 7, 1 / 7, 0.0]
    assert p.n_bins == 5
    assert p.bin_labels() == ["=0", "=1", "=2", "=5", "other"]
    values = np.array([0.0, 3.0, 5.0, 7.0, -1.0, 1.0, 0.5])
    assert p.bin_indices(values).tolist() == [0, 4, 3, 4, 4, 1, 4]
    assert p.bin_counts(values).tolist() == [1, 1, 0, 1, 4]


def test_discrete_threshold() -> None:
    at_limit = profile_feature("x", np.arange(MAX_DISCRETE_VALUES, dtype=np.float64))
    above = profile_feature("x", np.arange(MAX_DISCRETE_VALUES + 1, dtype=np.float64))
    assert MAX_DISCRETE_VALUES == 12
    assert at_limit.kind == "discrete"
    assert at_limit.reference_fractions == [1 / 12] * 12 + [0.0]
    assert above.kind == "continuous"


@pytest.mark.parametrize(
    ("column", "margin", "hard"),
    [
        ([0.0, 19.0, 5.0], 1.0, (-19.0, 38.0)),  # span 19 on each side
        ([0.0, 19.0, 5.0], 0.5, (-9.5, 28.5)),
        ([2.0, 2.5, 2.25], 1.0, (1.0, 3.5)),  # span 0.5 < the 1.0 minimum slack
        ([3.0, 3.0, 3.0], 1.0, (2.0, 4.0)),  # constant column
        ([-10.0, -4.0], 2.0, (-22.0, 8.0)),
    ],
)
def test_hard_range_is_min_minus_span_to_max_plus_span(
    column: list[float], margin: float, hard: tuple[float, float]
) -> None:
    p = profile_feature("x", np.array(column), hard_margin=margin)
    assert (p.hard_min, p.hard_max) == hard


def test_constant_column_is_one_discrete_bin() -> None:
    p = profile_feature("x", np.array([3.0, 3.0, 3.0]))
    assert (p.kind, p.values, p.reference_fractions) == ("discrete", [3.0], [1.0, 0.0])


def test_build_profile_over_a_matrix_keeps_feature_order() -> None:
    matrix = np.column_stack([np.arange(20, dtype=np.float64), np.array([1.0, 2.0] * 10)])
    profile = build_profile(matrix, ["ramp", "flag"], bins=4)
    assert profile.names == ["ramp", "flag"]
    lo, hi = profile.hard_ranges()
    np.testing.assert_array_equal(lo, [-19.0, 0.0])
    np.testing.assert_array_equal(hi, [38.0, 3.0])
    by_name = profile.by_name()
    assert by_name["ramp"].edges == [4.75, 9.5, 14.25]
    assert by_name["flag"].reference_fractions == [0.5, 0.5, 0.0]
    # the profile survives its JSON round trip in the bundle unchanged
    assert ReferenceProfile.model_validate_json(profile.model_dump_json()) == profile
