"""The drift bench's seeded streams and the runs over them; :mod:`streams.drift.bench` sums up.

* **Shuttle streams** — rows sampled with replacement from the reference split (the
  data the champion's profile was built from), in random batch sizes, with one feature
  changed from a random point inside a window (:data:`CHANGES`), every feature in turn
  for every seed; and **joint-only changes**: one of the features the champion relies
  on drawn from another row (every marginal unchanged, its tie to the other features
  gone). The score is that of a gradient-boosted stand-in for the champion (the
  reference champion's algorithm and parameters, trained on the same split).
* **Concept drift** — river's ``ConceptDriftStream`` over SEA (threshold 8 → 7, 10 %
  label noise; abrupt and gradual) and, in full mode, Agrawal (function 0 → 2), scored
  by a tree trained on the first concept; ADWIN watches its per-event error, as the
  evaluator does once labels arrive.
* **Stationary streams** — the same sources with no change, for false alarms: the
  reference rows themselves, and (for the calibration) references rebuilt from
  bootstrap samples, so that the reference is a sample of the stream's population as
  a training set is.

A change counts as detected by a detector when it reports the changed target (the
feature, or the score) at alert severity over events after the change; the delay is
the number of events from the change to the last event judged, i.e. when the record
is emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.profile import ReferenceProfile, build_profile
from schemas.settings import DriftSettings
from streams.drift.adwin import AdwinMonitor
from streams.drift.monitor import DriftMonitor

SIGMA_SHIFTS = (0.25, 0.5, 1.0, 2.0)
#: Events per millisecond of synthetic event time (50k events/s).
EVENTS_PER_MS = 50
START_MS = 1_700_000_000_000
#: A feature the champion relies on: at least this share of its feature importance.
USED_FEATURE_IMPORTANCE = 0.01


@dataclass(frozen=True)
class BenchConfig:
    seeds: int
    pre_windows: int
    post_windows: int
    stationary_events: int
    synthetic_events: int
    agrawal: bool
    #: Bootstrap references for the calibration check, and events streamed against each.
    fresh_references: int
    fresh_events: int

    @classmethod
    def for_mode(cls, quick: bool) -> BenchConfig:
        if quick:
            return cls(1, 3, 2, 1_000_000, 60_000, agrawal=False, fresh_references=2,
                       fresh_events=500_000)  # fmt: skip
        return cls(10, 3, 4, 5_000_000, 100_000, agrawal=True, fresh_references=10,
                   fresh_events=500_000)  # fmt: skip


@dataclass(frozen=True)
class ShuttleData:
    X: np.ndarray
    profile: ReferenceProfile
    score: Callable[[np.ndarray], np.ndarray]
    #: Score of every reference row (stationary streams need no model call).
    reference_scores: np.ndarray
    #: Features the champion relies on (indices), for the joint-only changes.
    used_features: list[int]


def shuttle_data() -> ShuttleData:
    from sklearn.ensemble import GradientBoostingClassifier

    from models.datasets import shuttle
    from models.train import SEED, split

    data = shuttle()
    X_train, _, y_train, _ = split(data)
    model = GradientBoostingClassifier(
        n_estimators=50, max_depth=3, learning_rate=0.1, random_state=SEED
    ).fit(X_train, y_train)

    def score(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(matrix)[:, 1], dtype=np.float64)

    importance = np.asarray(model.feature_importances_)
    return ShuttleData(
        X=X_train,
        profile=build_profile(X_train, data.feature_names),
        score=score,
        reference_scores=score(X_train),
        used_features=np.flatnonzero(importance >= USED_FEATURE_IMPORTANCE).tolist(),
    )


def batches(rng: np.random.Generator, n: int) -> Iterator[tuple[int, int]]:
    """Random batch sizes (1..2000, mean ~1000), so batches straddle window boundaries."""
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 2001)))
        yield start, stop
        start = stop


@dataclass
class Fed:
    """What one stream through a monitor gave."""

    records: list[dict[str, Any]]
    #: PSI of every feature at each window close, and that window's last offset.
    psi: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def psi_max(self) -> float:
        return max((float(v.max()) for _, v in self.psi), default=0.0)


def feed(
    monitor: DriftMonitor,
    rng: np.random.Generator,
    n: int,
    matrix: np.ndarray | None,
    scores: np.ndarray | None = None,
    errors: np.ndarray | None = None,
) -> Fed:
    """Feed ``n`` events in random batches (offsets 0..n-1, 50 events per ms)."""
    offsets = np.arange(n, dtype=np.int64)
    times = START_MS + offsets // EVENTS_PER_MS
    fed = Fed(records=[])
    windows = 0
    names = [] if monitor.profile is None else monitor.profile.names
    for a, b in batches(rng, n):
        fed.records += monitor.update(
            None if matrix is None else matrix[a:b],
            None if scores is None else scores[a:b],
            offsets[a:b],
            times[a:b],
            errors=None if errors is None else errors[a:b],
        )
        # Batches are shorter than a window: at most one closes per batch.
        if monitor.windows_closed != windows and monitor.latest_psi:
            windows = monitor.windows_closed
            last = windows * monitor.settings.window_events - 1
            fed.psi.append((last, np.array([monitor.latest_psi[f] for f in names])))
    return fed


def first_alert(
    records: list[dict[str, Any]], detector: str, target: str, change: int
) -> tuple[int, list[str]]:
    """Delay in events of the first alert on ``target`` over the change (-1: none), and the
    tests over their thresholds in that record."""
    for r in records:
        if (
            r["detector"] == detector
            and r["target"] == target
            and r["severity"] == "alert"
            and r["window_last_offset"] >= change
        ):
            over = [t["test"] for t in r["tests"] if t["severity"] == "alert"] or [r["trigger"]]
            return int(r["window_last_offset"]) - change + 1, over
    return -1, []


def first_psi_alert(fed: Fed, j: int, change: int, alert: float) -> int:
    """Delay of the first window close over the change with PSI at alert, else -1."""
    for last, values in fed.psi:
        if last >= change and values[j] >= alert:
            return last - change + 1
    return -1


def adwin_delay(scores: np.ndarray, change: int, settings: DriftSettings) -> int:
    """ADWIN on the score, reported at the close of the window its first detection is in."""
    adwin = AdwinMonitor("score", delta=settings.adwin_delta, clock=settings.adwin_clock)
    window = settings.window_events
    for d in adwin.update(scores):
        if d.index >= change:
            return (d.index // window + 1) * window - change
    return -1


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class Change:
    """One kind of change applied to feature ``j`` of the post-change rows."""

    name: str
    kind: str  # "shift" | "scale" | "constant" | "vanish" | "decouple"
    amount: float = 0.0

    def rows(self, data: ShuttleData, j: int, rng: np.random.Generator, n: int) -> np.ndarray:
        feature = data.profile.features[j]
        if self.kind == "vanish":
            values, counts = np.unique(data.X[:, j], return_counts=True)
            pool = np.flatnonzero(data.X[:, j] != values[counts.argmax()])
            return data.X[rng.choice(pool, n)]
        rows = data.X[rng.integers(0, len(data.X), n)].copy()
        column = rows[:, j]
        if self.kind == "shift":
            rows[:, j] = column + self.amount * feature.std
        elif self.kind == "scale":
            rows[:, j] = feature.mean + (column - feature.mean) * self.amount
        elif self.kind == "constant":
            rows[:, j] = float(np.median(data.X[:, j]))
        elif self.kind == "decouple":
            rows[:, j] = data.X[rng.integers(0, len(data.X), n), j]
        else:
            raise ValueError(f"unknown change {self.kind!r}")
        return rows


CHANGES = [
    *(Change(f"mean +{k:g} sd", "shift", k) for k in SIGMA_SHIFTS),
    Change("sd x0.5", "scale", 0.5),
    Change("sd x1.5", "scale", 1.5),
    Change("stuck at median", "constant"),
    Change("top value vanishes", "vanish"),
]
#: A change of the joint distribution only, applied to each feature the champion uses.
JOINT = Change("decoupled (joint only)", "decouple")


def shuttle_runs(
    data: ShuttleData, config: BenchConfig, seed: int, settings: DriftSettings
) -> list[dict[str, Any]]:
    """One run per (seed, change, feature): every detector's delay on the changed target."""
    window = settings.window_events
    plan = [(c, change, j) for c, change in enumerate(CHANGES) for j in range(data.X.shape[1])]
    plan += [(len(CHANGES), JOINT, j) for j in data.used_features]
    runs = []
    for s in range(config.seeds):
        for c, change, j in plan:
            feature = data.profile.features[j]
            rng = np.random.default_rng([seed, s, c, j])
            change_at = config.pre_windows * window + int(rng.integers(0, window))
            post = config.post_windows * window
            before = data.X[rng.integers(0, len(data.X), change_at)]
            after = change.rows(data, j, rng, post)
            matrix = np.concatenate([before, after])
            scores = data.score(matrix)
            monitor = DriftMonitor(data.profile, "bench", "1", settings, clock=lambda: 0)
            fed = feed(monitor, rng, len(matrix), matrix, scores)
            monitor_delay, over = first_alert(fed.records, "psi", feature.name, change_at)
            runs.append(
                {
                    "change": change.name,
                    "feature": feature.name,
                    "seed": s,
                    "change_at": change_at,
                    "events": len(matrix),
                    "psi_delay": first_psi_alert(fed, j, change_at, settings.alert),
                    "monitor_delay": monitor_delay,
                    "over": over,
                    "score_delay": first_alert(fed.records, "distribution", "score", change_at)[0],
                    "adwin_delay": adwin_delay(scores, change_at, settings),
                }
            )
    return runs


# --------------------------------------------------------------------------- concept drift

#: Events of the first concept a concept-drift model is trained on (before the stream).
TRAIN_EVENTS = 20_000
ABRUPT_WIDTH = 1_000
GRADUAL_WIDTH = 10_000


def concept_streams(config: BenchConfig) -> list[tuple[str, Callable[[int, int], Any], int]]:
    """(name, (seed, change) -> ConceptDriftStream, width) of the river generators used.

    Each stream starts with ``TRAIN_EVENTS`` for the model, then the monitored
    ``synthetic_events``, the drift centred ``change`` events into them.
    """
    from river.datasets import synth

    def sea(width: int) -> Callable[[int, int], Any]:
        def make(seed: int, change: int) -> Any:
            return synth.ConceptDriftStream(
                synth.SEA(variant=0, noise=0.1, seed=seed),
                synth.SEA(variant=2, noise=0.1, seed=seed + 1),
                position=TRAIN_EVENTS + change,
                width=width,
                seed=seed + 2,
            )

        return make

    def agrawal(seed: int, change: int) -> Any:
        return synth.ConceptDriftStream(
            synth.Agrawal(classification_function=0, seed=seed, perturbation=0.05),
            synth.Agrawal(classification_function=2, seed=seed + 1, perturbation=0.05),
            position=TRAIN_EVENTS + change,
            width=ABRUPT_WIDTH,
            seed=seed + 2,
        )

    # river's sigmoid overflows before the change unless position <= 177 * width; 1,000
    # events is abrupt next to a 10,000-event window.
    if TRAIN_EVENTS + config.synthetic_events > 177 * ABRUPT_WIDTH:
        raise ValueError(f"streams too long for a {ABRUPT_WIDTH}-event change")
    streams = [
        ("SEA 8→7 abrupt", sea(ABRUPT_WIDTH), ABRUPT_WIDTH),
        ("SEA 8→7 gradual", sea(GRADUAL_WIDTH), GRADUAL_WIDTH),
    ]
    if config.agrawal:
        streams.append(("Agrawal 0→2 abrupt", agrawal, ABRUPT_WIDTH))
    return streams


def _to_arrays(rows: list[tuple[dict[str, Any], Any]]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(rows[0][0])
    X = np.array([[x[k] for k in keys] for x, _ in rows], dtype=np.float64)
    y = np.array([int(label) for _, label in rows], dtype=np.int64)
    return X, y


def concept_runs(
    config: BenchConfig, seed: int, settings: DriftSettings
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """ADWIN on the error stream of a model trained before the drift.

    Also returns, per generator, the error pool of the first concept (the
    stationary streams are resampled from it).
    """
    from sklearn.tree import DecisionTreeClassifier

    window = settings.window_events
    runs = []
    pools: dict[str, np.ndarray] = {}
    for c, (name, make, width) in enumerate(concept_streams(config)):
        for s in range(config.seeds):
            rng = np.random.default_rng([seed, s, c, 7])
            # Half-way in, at a random point inside a window.
            change_at = config.synthetic_events // 2 + int(rng.integers(0, window))
            stream_seed = 1_000 * seed + 10 * s
            make_stream = make(stream_seed, change_at)
            rows = list(make_stream.take(TRAIN_EVENTS + config.synthetic_events))
            X, y = _to_arrays(rows)
            model = DecisionTreeClassifier(max_depth=8, random_state=s)
            model.fit(X[:TRAIN_EVENTS], y[:TRAIN_EVENTS])
            errors = (model.predict(X[TRAIN_EVENTS:]) != y[TRAIN_EVENTS:]).astype(np.float64)
            monitor = DriftMonitor(None, "bench", "1", settings, clock=lambda: 0)
            fed = feed(monitor, rng, len(errors), None, errors=errors)
            if width == ABRUPT_WIDTH:
                # The first concept's errors, well before the drift starts: stationary pool.
                generator = name.split(" ")[0]
                pools[generator] = np.concatenate(
                    [pools.get(generator, np.empty(0)), errors[: change_at - 5 * width]]
                )
            runs.append(
                {
                    "change": name,
                    "seed": s,
                    "change_at": change_at,
                    "events": len(errors),
                    "error_before": float(errors[:change_at].mean()),
                    "error_after": float(errors[change_at + width :].mean()),
                    "adwin_delay": first_alert(fed.records, "adwin", "error", change_at)[0],
                }
            )
    return runs, pools


# --------------------------------------------------------------------------- stationary


def _alarms(monitor: DriftMonitor) -> dict[str, int]:
    """Two-sample alarm onsets (first hop of a run) and hops above thresholds, all targets."""
    parts = [t for t in (monitor.tests, monitor.score_tests) if t is not None]
    return {
        "onsets": int(sum(int(t.alarm_onsets.sum()) for t in parts)),
        "alarm_hops": int(sum(int(t.alarm_hops.sum()) for t in parts)),
        "target_hops": int(sum(t.hops_judged * len(t.features) for t in parts)),
    }


def stationary(
    data: ShuttleData,
    pools: dict[str, np.ndarray],
    config: BenchConfig,
    seed: int,
    settings: DriftSettings,
) -> dict[str, Any]:
    """False alarms on streams without a change, and the monitor's cost per event."""
    import time

    rng = np.random.default_rng([seed, 99])
    n = config.stationary_events
    rows = rng.integers(0, len(data.X), n)
    matrix, scores = data.X[rows], data.reference_scores[rows]
    monitor = DriftMonitor(data.profile, "bench", "1", settings, clock=lambda: 0)
    started = time.perf_counter()
    fed = feed(monitor, rng, n, matrix, scores)
    elapsed = time.perf_counter() - started
    adwin = AdwinMonitor("score", delta=settings.adwin_delta, clock=settings.adwin_clock)
    adwin.update(scores)
    out: dict[str, Any] = {
        "shuttle": {
            "events": n,
            "psi_alert_windows": monitor.raised["psi", "alert"],
            "psi_warning_windows": monitor.raised["psi", "warning"],
            "psi_max": fed.psi_max,
            "incidents": sum(1 for r in fed.records if r["status"] == "open"),
            **_alarms(monitor),
            "adwin_score_detections": adwin.n_detections,
            "monitor_us_per_event": elapsed / n * 1e6,
        }
    }
    out["cost"] = cost_per_event(data, matrix, scores, settings)
    for name, pool in pools.items():
        errors = pool[rng.integers(0, len(pool), n)]
        monitor = DriftMonitor(None, "bench", "1", settings, clock=lambda: 0)
        feed(monitor, rng, n, None, errors=errors)
        out[name] = {"events": n, "adwin_detections": monitor.adwin["error"].n_detections}
    return out


def cost_per_event(
    data: ShuttleData, matrix: np.ndarray, scores: np.ndarray, settings: DriftSettings
) -> dict[str, float]:
    """µs per event of the monitor (batches of 1,000), its defaults and with parts off.

    The best of five stretches of 100,000 events each (the machine may be busy), after
    four untimed windows: calibration and the score reference are paid once per model
    version. ``matrix`` must hold 540,000 events.
    """
    import time

    variants = {
        "default": settings,
        "psi only": settings.model_copy(update={"two_sample": False, "score_detector": "none"}),
        "before (psi + adwin on the score)": settings.model_copy(
            update={"two_sample": False, "score_detector": "adwin"}
        ),
    }
    warm, stretch, batch = 4 * settings.window_events, 100_000, 1_000
    offsets = np.arange(len(matrix), dtype=np.int64)
    out = {}
    for name, variant in variants.items():
        monitor = DriftMonitor(data.profile, "bench", "1", variant, clock=lambda: 0)
        for a in range(0, warm, batch):
            monitor.update(matrix[a : a + batch], scores[a : a + batch], offsets[a : a + batch])
        best = np.inf
        for start in range(warm, warm + 5 * stretch, stretch):
            started = time.perf_counter()
            for a in range(start, start + stretch, batch):
                monitor.update(matrix[a : a + batch], scores[a : a + batch], offsets[a : a + batch])
            best = min(best, time.perf_counter() - started)
        out[name] = best / stretch * 1e6
    return out


def calibration_check(
    data: ShuttleData, config: BenchConfig, seed: int, settings: DriftSettings
) -> dict[str, Any]:
    """False alarms of the two-sample tests at a loose budget, where they are countable.

    Two nulls: the stream is the reference rows themselves (the reference is the
    population), and the reference is rebuilt from a bootstrap sample of them (the
    reference is a sample of the stream's population, as a training set is).
    """
    from models.profile import build_profile

    out: dict[str, Any] = {"budget_events": settings.false_alarm_events}
    rng = np.random.default_rng([seed, 77])
    n = config.stationary_events
    rows = rng.integers(0, len(data.X), n)
    monitor = DriftMonitor(data.profile, "bench", "1", settings, clock=lambda: 0)
    fed = feed(monitor, rng, n, data.X[rows], data.reference_scores[rows])
    out["reference rows"] = {
        "events": n,
        "incidents": sum(1 for r in fed.records if r["status"] == "open"),
        **_alarms(monitor),
    }
    totals = {"events": 0, "incidents": 0, "onsets": 0, "alarm_hops": 0, "target_hops": 0}
    for r in range(config.fresh_references):
        sample = data.X[rng.integers(0, len(data.X), len(data.X))]
        profile = build_profile(sample, data.profile.names)
        m = config.fresh_events
        rows = rng.integers(0, len(data.X), m)
        monitor = DriftMonitor(profile, "bench", str(r), settings, clock=lambda: 0)
        fed = feed(monitor, rng, m, data.X[rows], data.reference_scores[rows])
        found = {
            "events": m,
            "incidents": sum(1 for rec in fed.records if rec["status"] == "open"),
            **_alarms(monitor),
        }
        for key in totals:
            totals[key] += found[key]
    out["fresh reference samples"] = totals
    return out
