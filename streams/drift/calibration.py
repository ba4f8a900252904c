"""Thresholds of the two-sample tests, derived from a false-alarm budget by simulation.

The user sets ``false_alarm_events``: the expected number of events between false
alarms on a stream that is a sample of the reference (Alibi Detect's online detectors
call it the expected run time). The monitor's targets (every feature, the score)
share it equally. A target is judged every ``h`` events (a hop) over the last
``n = K h`` events, so it may be above its thresholds on a fraction
``λ = h / (false_alarm_events · targets)`` of the hops. Per target:

1. **Simulate the null on the reference profile**: ``R`` replicates, each a reference
   sample of the profile's ``count`` events and ``S`` windows of ``n`` events, all drawn
   from the profile's fractions — the reference's own sampling noise is in, as it is
   in production.
2. Compute both tests on each of the ``R · S`` windows and read them as one
   p-value, the smaller of the two null tails of :mod:`streams.drift.twosample`. The
   simulation measures what those tails cannot say: how the two tests overlap, how
   binning and a small reference bend them.
3. The **level** ``u`` is the one a fraction ``λ`` of the simulated windows fall below:
   their empirical quantile when ``λ R S`` is at least :data:`MIN_HITS` windows; for a
   deeper budget it is extrapolated from the :data:`MIN_HITS`-th smallest p-value along
   the p-value scale, on which a tail is linear (``P(p < u) ∝ u``) — simulating a 10⁻⁷
   tail directly would take some 10⁹ windows per target.
4. Each test's **threshold** is its statistic at that level.

Every hop above the thresholds counts against the budget, not only the first of a run
(where an incident opens), so false alarms come out below the budget — about half of
it where ``streamscore drift bench`` can count them. Deterministic (seeded); cached per
(feature, hop, window, rate), so the monitors of one profile calibrate once per process
(about 25 ms per feature, 55 ms for a 20-bin score, on 2 busy cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.profile import FeatureProfile
from streams.drift.twosample import (
    BinnedTests,
    chi2_tail,
    chi2_threshold,
    ks_tail,
    ks_threshold,
)

#: Replicates (each with its own reference sample) and null windows judged in each.
REPLICATES = 512
WINDOWS_PER_REPLICATE = 64
#: Below this many simulated windows under the level, the level is extrapolated.
MIN_HITS = 50
SEED = 16


@dataclass(frozen=True, slots=True)
class Calibration:
    """The level and thresholds of one target's tests."""

    #: Hops a target may be above its thresholds, as a fraction of all hops.
    hop_rate: float
    #: The p-value both tests are read at.
    level: float
    #: Threshold of the KS distance (``inf`` for a discrete target) and of chi-squared.
    ks: float
    chi2: float
    #: True when the level is the simulated quantile itself, False when extrapolated.
    simulated: bool


def calibrate(
    feature: FeatureProfile, *, hop_events: int, hops_per_window: int, hop_rate: float
) -> Calibration:
    """Thresholds of ``feature``'s tests for windows of ``hops_per_window`` hops of ``hop_events``.

    >>> from models.profile import FeatureProfile
    >>> f = FeatureProfile(name="x", kind="continuous", edges=[0.0],
    ...                    reference_fractions=[0.5, 0.5], count=10_000, min=-1, max=1,
    ...                    mean=0, std=1, hard_min=-9, hard_max=9)
    >>> loose = calibrate(f, hop_events=100, hops_per_window=10, hop_rate=0.01)
    >>> deep = calibrate(f, hop_events=100, hops_per_window=10, hop_rate=1e-7)
    >>> loose.simulated, deep.simulated, loose.chi2 < deep.chi2, loose.ks < deep.ks
    (True, False, True, True)
    """
    return _calibrate(feature.model_dump_json(), hop_events, hops_per_window, float(hop_rate))


@lru_cache(maxsize=512)
def _calibrate(
    feature_json: str, hop_events: int, hops_per_window: int, hop_rate: float
) -> Calibration:
    feature = FeatureProfile.model_validate_json(feature_json)
    reference_events = max(feature.count, 1)
    events = hop_events * hops_per_window
    tests = BinnedTests([feature], events)
    p_min = simulated_p_values(tests, hop_events, hops_per_window)
    total = p_min.size
    if hop_rate * total >= MIN_HITS:
        level, simulated = float(np.quantile(p_min, min(hop_rate, 1.0))), True
    else:
        anchor = float(np.partition(p_min, MIN_HITS - 1)[MIN_HITS - 1])
        level, simulated = hop_rate * total * anchor / MIN_HITS, False
    degrees = int(tests.degrees[0])
    ks = (
        ks_threshold(level, tests.edge_cdf(0), events, reference_events)
        if feature.kind == "continuous"
        else float("inf")
    )
    return Calibration(
        hop_rate=hop_rate,
        level=level,
        ks=ks,
        chi2=chi2_threshold(level, degrees, events, reference_events),
        simulated=simulated,
    )


def simulated_p_values(tests: BinnedTests, hop_events: int, hops_per_window: int) -> np.ndarray:
    """The smaller p-value of the two tests on every simulated null window of one target.

    A window's counts are independent Poisson draws: given their total they are exactly
    multinomial, so each simulated window is a null window of its own total (within a
    few per cent of ``hop_events * hops_per_window``), four times cheaper to draw than
    binomial chains. Windows are drawn apart, not as overlapping hops: the budget counts
    every hop above the thresholds, a rate of single windows.
    """
    rng = np.random.default_rng(SEED)
    fractions = tests.reference / tests.reference.sum()
    events = hop_events * hops_per_window
    reference_events = float(tests.reference_events[0])
    windows = rng.poisson(events * fractions, (REPLICATES, WINDOWS_PER_REPLICATE, fractions.size))
    totals = np.maximum(windows.sum(axis=-1, keepdims=True), 1)
    references = rng.multinomial(int(reference_events), fractions, REPLICATES)
    sample = (references / reference_events)[:, None, :]
    chi2 = tests.chi2(windows, totals, sample)[..., 0]
    p = chi2_tail(chi2, int(tests.degrees[0]), events, reference_events)
    if tests.continuous[0]:
        distance = tests.ks(windows, totals, sample)[..., 0]
        p = np.minimum(p, ks_tail(distance, tests.edge_cdf(0), events, reference_events))
    return np.asarray(p).ravel()
