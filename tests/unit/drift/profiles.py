"""Small reference profiles and the epoch shared by the drift tests."""

from __future__ import annotations

from models.profile import FeatureProfile, ReferenceProfile

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def two_bin_profile(*names: str) -> ReferenceProfile:
    """Features with one edge at 0: half the reference below, half above."""
    return ReferenceProfile(
        features=[
            FeatureProfile(
                name=name, kind="continuous", edges=[0.0], reference_fractions=[0.5, 0.5],
                count=100, min=-1, max=1, mean=0, std=1, hard_min=-10, hard_max=10,
            )
            for name in names
        ]
    )  # fmt: skip
