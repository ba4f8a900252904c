"""The guards of an automatic promotion, each a named check with its value and its limit.

The always-valid verdict says whether the challenger is better; the guards say
whether the evidence can be trusted and the swap is safe now. Each only ever
*refuses* a promotion, so together they keep the verdict's guarantee (a
challenger that is no better is promoted in at most alpha of experiments):

================  ===========================================================
``verdict``       the evaluator's decision is ``promote`` for the current pair
``paired_labels`` at least ``min_paired_labels`` labels with both predictions
``effect``        the estimated gain is at least ``min_effect`` (and, with
                  ``max_p_value``, the always-valid p-value is at most that)
``shadow_time``   the challenger has been in the shadow ``min_shadow_s``
``errors``        challenger scoring errors since it became the challenger
``drops``         shadow batches it dropped (it fell behind) since then
``served``        the processors serve this version as the challenger
``drift``         no open drift incident against the challenger's version
``srm``           A/B: the observed split of sensors matches ``ab_weights``
``cooldown``      the last alias move is ``cooldown_s`` old
``not_rolled_back`` the challenger was never rolled back by the autopilot
================  ===========================================================

A guard whose input cannot be read (the processors' /metrics unreachable)
fails: a promotion that cannot be checked is not made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from schemas.settings import AutopilotSettings
from streams.evaluation.verdict import Verdict


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One guard: did it hold, what was seen, what was required."""

    name: str
    ok: bool
    value: str
    limit: str

    def describe(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.value} (limit {self.limit})"


@dataclass(frozen=True, slots=True)
class ChallengerCounts:
    """What the processors report of the challenger (summed over their /metrics)."""

    errors: float
    drops: float
    #: The versions the processors serve as the challenger (one per processor).
    served_versions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GuardInputs:
    """Everything the guards look at, read by the controller at one tick."""

    verdict: Verdict | None
    now_s: float
    #: When the controller first saw the challenger alias at this version (epoch s).
    challenger_since_s: float | None
    #: Errors and drops *since* the challenger arrived; None: the guard is not checked;
    #: a string: why the counts could not be read.
    counts: ChallengerCounts | str | None
    challenger_version: str
    #: Incident id of an open drift incident against the challenger's version, if any.
    open_incident: str | None
    #: A/B: distinct sensors served by each variant; None outside A/B.
    observed_split: Mapping[str, int] | None
    ab_weights: Mapping[str, float]
    #: When an alias last moved (epoch s), None if never.
    last_move_s: float | None
    rolled_back: bool


def sample_ratio_p_value(observed: Mapping[str, int], weights: Mapping[str, float]) -> float:
    """Chi-square p-value of the observed split against the configured weights.

    The unit is the one A/B routing randomises: sensors (a hash of ``sensor_id``
    picks the variant), not events, whose counts follow the sensors' rates.

    >>> round(sample_ratio_p_value({"champion": 95, "challenger": 5},
    ...                            {"champion": 0.95, "challenger": 0.05}), 3)
    1.0
    >>> sample_ratio_p_value({"champion": 50, "challenger": 50},
    ...                      {"champion": 0.95, "challenger": 0.05}) < 1e-6
    True
    """
    names = [n for n in weights if weights[n] > 0]
    counts = [float(observed.get(n, 0)) for n in names]
    total = sum(counts)
    if total == 0 or len(names) < 2:
        return 1.0
    weight_sum = sum(weights[n] for n in names)
    expected = [total * weights[n] / weight_sum for n in names]
    return float(stats.chisquare(counts, expected).pvalue)


def promotion_guards(inputs: GuardInputs, policy: AutopilotSettings) -> list[GuardCheck]:
    """Every guard of a promotion, in the order of the module docstring."""
    v = inputs.verdict
    n = v.n if v is not None else 0
    effect_limit = f">= {policy.min_effect}"
    if policy.max_p_value is not None:
        effect_limit += f", p <= {policy.max_p_value}"
    effect_ok = (
        v is not None
        and v.effect >= policy.min_effect
        and (policy.max_p_value is None or v.p_value_sequential <= policy.max_p_value)
    )
    effect = f"{v.effect:.4f}, p {v.p_value_sequential:.3g}" if v is not None else "none"
    since = inputs.challenger_since_s
    in_shadow = inputs.now_s - since if since is not None else 0.0
    checks = [
        GuardCheck("verdict", v is not None and v.decision == "promote",
                   v.decision if v is not None else "none", "promote"),
        GuardCheck("paired_labels", n >= policy.min_paired_labels, str(n),
                   f">= {policy.min_paired_labels}"),
        GuardCheck("effect", effect_ok, effect, effect_limit),
        GuardCheck("shadow_time", in_shadow >= policy.min_shadow_s, f"{in_shadow:.0f}s",
                   f">= {policy.min_shadow_s:.0f}s"),
        *_health_guards(inputs, policy),
        GuardCheck("drift", inputs.open_incident is None,
                   inputs.open_incident or "no open incident", "none open"),
    ]  # fmt: skip
    if inputs.observed_split is not None:
        p = sample_ratio_p_value(inputs.observed_split, inputs.ab_weights)
        split = ", ".join(f"{k} {count}" for k, count in sorted(inputs.observed_split.items()))
        checks.append(
            GuardCheck("srm", p >= policy.srm_alpha, f"p {p:.3g} ({split} sensors)",
                       f"p >= {policy.srm_alpha}")
        )  # fmt: skip
    last = inputs.last_move_s
    since_move = None if last is None else inputs.now_s - last
    moved = "no move yet" if since_move is None else f"{since_move:.0f}s since the last move"
    rolled = "rolled back before" if inputs.rolled_back else "never rolled back"
    checks += [
        GuardCheck("cooldown", since_move is None or since_move >= policy.cooldown_s, moved,
                   f">= {policy.cooldown_s:.0f}s"),
        GuardCheck("not_rolled_back", not inputs.rolled_back, rolled, "never"),
    ]  # fmt: skip
    return checks


def _health_guards(inputs: GuardInputs, policy: AutopilotSettings) -> list[GuardCheck]:
    counts = inputs.counts
    if counts is None:
        return [GuardCheck("errors", True, "not checked", "processor_metrics_urls = []")]
    if isinstance(counts, str):
        return [GuardCheck("errors", False, f"unreadable: {counts}", "readable /metrics")]
    served = inputs.challenger_version in counts.served_versions and all(
        version == inputs.challenger_version for version in counts.served_versions
    )
    return [
        GuardCheck("errors", counts.errors <= policy.max_challenger_errors,
                   f"{counts.errors:.0f}", f"<= {policy.max_challenger_errors}"),
        GuardCheck("drops", counts.drops <= policy.max_challenger_drops,
                   f"{counts.drops:.0f}", f"<= {policy.max_challenger_drops}"),
        GuardCheck("served", served, ",".join(counts.served_versions) or "none",
                   f"v{inputs.challenger_version} everywhere"),
    ]  # fmt: skip


def all_hold(checks: Sequence[GuardCheck]) -> bool:
    return all(check.ok for check in checks)


def failing(checks: Sequence[GuardCheck]) -> list[str]:
    return [check.name for check in checks if not check.ok]


def guard_details(checks: Sequence[GuardCheck]) -> dict[str, str]:
    """Audit details: ``guard.<name>`` -> ``ok|FAIL value (limit ...)``."""
    return {f"guard.{check.name}": check.describe() for check in checks}
