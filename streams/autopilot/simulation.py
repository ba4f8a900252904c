"""The whole controller's promotion rate on seeded streams, watched after every label batch.

Each run streams paired outcomes of a champion and a challenger with known
accuracies. After every batch of labels the evaluator's paired comparison gives
its verdict (:class:`streams.evaluation.verdict.PairedComparison`, the same code
the evaluator runs) and the controller decides exactly as it does live
(:func:`streams.autopilot.decisions.promotion_decision`, with every guard that
is not about the evidence holding: time in the shadow, health, drift, cooldown).
A promotion ends the run. With equal accuracies every promotion is a false one,
and the always-valid test bounds their share by alpha whenever the controller
looks; :func:`binomial_check` says whether an observed count is consistent with
that bound. Run it with ``streamscore autopilot simulate``.

Outcomes: with probability ``agreement`` both models share one draw (they agree
on the event), otherwise each is right with its own accuracy, independently.

>>> r = simulate(runs=20, labels=2000, batch=200, seed=3)
>>> r.runs, r.promoted <= 20
(20, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from schemas.settings import AutopilotSettings
from streams.autopilot.decisions import promotion_decision
from streams.autopilot.guards import GuardInputs
from streams.evaluation.verdict import PairedComparison


@dataclass(frozen=True, slots=True)
class SimulationResult:
    runs: int
    promoted: int
    labels: int
    batch: int
    champion_accuracy: float
    challenger_accuracy: float
    agreement: float
    alpha: float
    min_paired_labels: int
    #: Median labels until the promotion, over the runs that promoted.
    median_labels: float | None
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.promoted / self.runs

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "runs": self.runs,
            "promoted": self.promoted,
            "rate": round(self.rate, 4),
            "labels": self.labels,
            "batch": self.batch,
            "champion_accuracy": self.champion_accuracy,
            "challenger_accuracy": self.challenger_accuracy,
            "agreement": self.agreement,
            "alpha": self.alpha,
            "min_paired_labels": self.min_paired_labels,
            "median_labels_to_promote": self.median_labels,
            "p_value_rate_at_most_alpha": round(binomial_check(self.promoted, self.runs,
                                                               self.alpha), 4),
            "elapsed_s": round(self.elapsed_s, 2),
        }  # fmt: skip


def binomial_check(promoted: int, runs: int, alpha: float) -> float:
    """P(at least ``promoted`` of ``runs`` promote) if each run promoted with probability
    alpha: a small value says the observed rate is above alpha.

    >>> round(binomial_check(50, 1000, 0.05), 2), binomial_check(80, 1000, 0.05) < 1e-4
    (0.53, True)
    """
    if promoted == 0:
        return 1.0
    return float(stats.binom.sf(promoted - 1, runs, alpha))


def _outcomes(
    rng: np.random.Generator, n: int, p_champion: float, p_challenger: float, agreement: float
) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.random(n) < agreement
    common = rng.random(n) < p_champion
    champion = np.where(shared, common, rng.random(n) < p_champion)
    challenger = np.where(shared, common, rng.random(n) < p_challenger)
    return champion, challenger


def simulate(
    *,
    runs: int = 1000,
    labels: int = 5000,
    batch: int = 100,
    champion_accuracy: float = 0.9,
    challenger_accuracy: float = 0.9,
    agreement: float = 0.0,
    alpha: float = 0.05,
    min_paired_labels: int = 100,
    seed: int = 7,
) -> SimulationResult:
    """``runs`` seeded runs of ``labels`` paired labels in batches of ``batch``."""
    if not (0 < batch <= labels and runs > 0):
        raise ValueError("need runs > 0 and 0 < batch <= labels")
    policy = AutopilotSettings(min_paired_labels=min_paired_labels, min_shadow_s=0.0)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    promoted_at: list[int] = []
    for _ in range(runs):
        champion, challenger = _outcomes(
            rng, labels, champion_accuracy, challenger_accuracy, agreement
        )
        comparison = PairedComparison()
        for start in range(0, labels, batch):
            comparison.update(champion[start : start + batch], challenger[start : start + batch])
            if comparison.p_value_sequential > alpha:
                continue  # the verdict cannot be promote: skip building it (same decision)
            verdict = comparison.verdict(alpha=alpha, min_samples=min(100, min_paired_labels))
            inputs = GuardInputs(
                verdict=verdict, now_s=0.0, challenger_since_s=-math.inf, counts=None,
                challenger_version="2", open_incident=None, observed_split=None,
                ab_weights={}, last_move_s=None, rolled_back=False,
            )  # fmt: skip
            if promotion_decision(inputs, policy)[0]:
                promoted_at.append(comparison.n)
                break
    return SimulationResult(
        runs=runs,
        promoted=len(promoted_at),
        labels=labels,
        batch=batch,
        champion_accuracy=champion_accuracy,
        challenger_accuracy=challenger_accuracy,
        agreement=agreement,
        alpha=alpha,
        min_paired_labels=min_paired_labels,
        median_labels=float(np.median(promoted_at)) if promoted_at else None,
        elapsed_s=time.perf_counter() - started,
    )
