"""A/B routing: a stable variant per sensor, shares within a binomial bound, column alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models.serving import ServingModel
from schemas.errors import SignatureMismatch
from streams.scoring.routing import ABRouting, VariantRouter, column_order
from tests.unit.scoring.conftest import CHALLENGER_FEATURES, FEATURES, TO_CHALLENGER, classifier


def seeded_sensor_ids(count: int, seed: int = 2024) -> list[str]:
    """Distinct sensor ids as a fleet would name them, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(10**9, size=count, replace=False)
    return [f"sensor-{n:09d}" for n in numbers]


# -- column_order ---------------------------------------------------------------------------------


def test_column_order_picks_the_target_order_from_the_source() -> None:
    columns = column_order(FEATURES, CHALLENGER_FEATURES)
    assert columns.tolist() == TO_CHALLENGER
    assert columns.dtype == np.int64
    matrix = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # temp, pressure, rpm
    assert matrix[:, columns].tolist() == [[3.0, 1.0, 2.0], [6.0, 4.0, 5.0]]
    assert column_order(FEATURES, FEATURES).tolist() == [0, 1, 2]
    assert column_order(FEATURES, ["rpm"]).tolist() == [2]  # a model may use fewer features


def test_column_order_refuses_features_the_source_lacks() -> None:
    with pytest.raises(
        SignatureMismatch,
        match=r"challenger needs features the champion lacks: \['humidity', 'vibration'\]",
    ):
        column_order(FEATURES, ["rpm", "humidity", "temp", "vibration"])


# -- VariantRouter --------------------------------------------------------------------------------


def test_an_entity_always_gets_the_same_variant() -> None:
    ids = seeded_sensor_ids(500)
    first = VariantRouter({"champion": 0.5, "challenger": 0.5}).assign(ids)
    # another router (another process, another replay) and the ids in another order
    again = VariantRouter({"champion": 0.5, "challenger": 0.5})
    reversed_ids = list(reversed(ids))
    assert again.assign(reversed_ids).tolist() == list(reversed(first.tolist()))
    # an id repeated inside a batch, and again in later batches, keeps its variant
    to_champion = ids[first.tolist().index(0)]
    to_challenger = ids[first.tolist().index(1)]
    batch = [to_champion, to_challenger, to_champion, to_challenger, to_challenger]
    assert again.assign(batch).tolist() == [0, 1, 0, 1, 1]
    assert again.assign(batch).tolist() == [0, 1, 0, 1, 1]


def test_positions_are_fixed_points_in_the_unit_interval() -> None:
    positions = [VariantRouter.position(s) for s in seeded_sensor_ids(1000)]
    assert all(0.0 <= p < 1.0 for p in positions)
    assert VariantRouter.position("sensor-0001") == VariantRouter.position("sensor-0001")
    assert VariantRouter.position("sensor-0001") != VariantRouter.position("sensor-0002")


def test_shares_follow_the_weights_within_a_binomial_bound() -> None:
    n = 20_000
    ids = seeded_sensor_ids(n)
    assigned = VariantRouter({"champion": 7.0, "challenger": 3.0}).assign(ids)
    counts = np.bincount(assigned, minlength=2).tolist()
    assert sum(counts) == n
    # 4 standard deviations of a binomial(n, 0.3): about 1 in 15 000 to fail by chance
    bound = 4 * math.sqrt(n * 0.3 * 0.7)
    assert abs(counts[1] - 0.3 * n) <= bound
    assert counts == [13_943, 6_057]  # the fixed seed's exact split


def test_three_variants_and_a_zero_weight() -> None:
    n = 12_000
    ids = seeded_sensor_ids(n, seed=7)
    router = VariantRouter({"a": 1.0, "b": 0.0, "c": 1.0, "d": 2.0})
    assert router.variants == ["a", "b", "c", "d"]
    counts = np.bincount(router.assign(ids), minlength=4).tolist()
    assert counts[1] == 0  # a zero weight serves nobody
    for share, count in zip([0.25, 0.0, 0.25, 0.5], counts, strict=True):
        assert abs(count - share * n) <= 4 * math.sqrt(n * share * (1 - share))


@pytest.mark.parametrize(
    "weights",
    [{"champion": 0.0, "challenger": 0.0}, {"champion": 1.0, "challenger": -0.5}, {}],
    ids=["all-zero", "negative", "empty"],
)
def test_weights_that_cannot_split_traffic_are_refused(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="A/B weights must be non-negative and not all zero"):
        VariantRouter(weights)


# -- ABRouting ------------------------------------------------------------------------------------


def test_build_orders_models_as_the_weights_and_aligns_their_columns(
    binary_champion: ServingModel,
    binary_challenger: ServingModel,
    rows: np.ndarray,
) -> None:
    ab = ABRouting.build(
        {"champion": 0.8, "challenger": 0.2},
        {"challenger": binary_challenger, "champion": binary_champion},
    )
    assert ab.router.variants == ["champion", "challenger"]
    assert ab.models == [binary_champion, binary_challenger]
    assert [c.tolist() for c in ab.columns] == [[0, 1, 2], TO_CHALLENGER]
    # each model scores the champion-ordered matrix exactly as it scores its own order
    own = binary_challenger.model.predict(rows[:, TO_CHALLENGER])
    routed = ab.models[1].model.predict(rows[:, ab.columns[1]])
    assert routed.score.tolist() == own.score.tolist()


def test_build_refuses_a_variant_that_needs_a_feature_the_champion_lacks(
    binary_champion: ServingModel, rows: np.ndarray
) -> None:
    wide_rows = np.column_stack([rows, rows[:, 1]])
    estimator = LogisticRegression().fit(wide_rows.astype(np.float32), rows[:, 1] > 0)
    needs_humidity = classifier(
        estimator, wide_rows, [*FEATURES, "humidity"], name="humid", version="3"
    )
    with pytest.raises(SignatureMismatch, match=r"lacks: \['humidity'\]"):
        ABRouting.build(
            {"champion": 0.5, "challenger": 0.5},
            {"champion": binary_champion, "challenger": needs_humidity},
        )
