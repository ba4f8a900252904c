"""The controller's false-promotion rate under continuous monitoring: seeded, >= 1,000 runs.

The figure is printed (``-s`` shows it) and must be consistent with a rate <= alpha: the
count of false promotions may not be significantly above ``alpha * runs`` (one-sided
binomial test at 0.001). ``streamscore autopilot simulate`` gives the same figure.
"""

from __future__ import annotations

from streams.autopilot.simulation import binomial_check, simulate


def test_an_equal_challenger_is_promoted_in_at_most_alpha_of_1000_watched_runs() -> None:
    result = simulate(
        runs=1000,
        labels=5000,
        batch=100,
        champion_accuracy=0.9,
        challenger_accuracy=0.9,
        alpha=0.05,
        min_paired_labels=100,
        seed=7,
    )
    print(
        f"\nfalse promotions: {result.promoted}/{result.runs} = {result.rate:.2%} "
        f"(alpha 5%, watched every {result.batch} labels up to {result.labels})"
    )
    assert result.runs == 1000
    assert binomial_check(result.promoted, result.runs, result.alpha) > 1e-3
    assert result.promoted == 46  # seeded: the exact figure of the README


def test_a_better_challenger_is_promoted_in_every_run() -> None:
    result = simulate(runs=100, champion_accuracy=0.85, challenger_accuracy=0.90, seed=7)
    assert result.promoted == 100 and result.median_labels == 500.0


def test_the_paired_labels_guard_only_delays() -> None:
    result = simulate(
        runs=100, champion_accuracy=0.85, challenger_accuracy=0.90, min_paired_labels=1500, seed=7
    )
    assert result.promoted == 100 and result.median_labels is not None
    assert result.median_labels >= 1500
