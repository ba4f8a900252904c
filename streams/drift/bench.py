"""Drift detection quality, measured on seeded streams with known change points.

``streamscore drift bench`` runs :class:`~streams.drift.monitor.DriftMonitor` with its
default settings (10,000-event windows, PSI 0.1 / 0.25, ADWIN delta 0.002) over:

* **Shuttle streams** — rows sampled with replacement from the reference split
  (the data the champion's profile was built from), in random batch sizes, with
  one feature changed from a random point inside a window: mean shift of
  0.25 / 0.5 / 1 / 2 standard deviations (sd), sd x0.5 and x1.5 around the mean, the
  feature stuck at its median, and its most frequent value vanishing (rows holding
  it are no longer sampled). Every feature in turn, for every seed. PSI watches the
  features; ADWIN watches the score of a depth-6 decision tree trained on the same
  split (a cheap stand-in for the champion, so the bench trains in a second).
* **Concept drift** — river's ``ConceptDriftStream`` over SEA (threshold 8 → 7,
  10 % label noise; abrupt and gradual) and, in full mode, Agrawal (function
  0 → 2), scored by a tree trained on the first concept; ADWIN watches its
  per-event error, as the evaluator does once labels arrive.
* **Stationary streams** — the same sources with no change, for false alarms.

A change counts as detected when an alert-severity record for the changed target
(the feature for PSI, the stream for ADWIN) covers events after the change; the
delay is the number of events from the change to the end of that window, i.e.
when the record is emitted. False alarms per million events count alert windows
(PSI, every feature) and ADWIN detections on the stationary streams.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.profile import ReferenceProfile, build_profile
from streams.drift.monitor import DriftMonitor, DriftSettings

SIGMA_SHIFTS = (0.25, 0.5, 1.0, 2.0)
#: Events per millisecond of synthetic event time (50k events/s).
EVENTS_PER_MS = 50
START_MS = 1_700_000_000_000


@dataclass(frozen=True)
class BenchConfig:
    seeds: int
    pre_windows: int
    post_windows: int
    stationary_events: int
    synthetic_events: int
    agrawal: bool

    @classmethod
    def for_mode(cls, quick: bool) -> BenchConfig:
        if quick:
            return cls(1, 2, 2, 1_000_000, 60_000, agrawal=False)
        return cls(10, 3, 4, 5_000_000, 100_000, agrawal=True)


@dataclass(frozen=True)
class ShuttleData:
    X: np.ndarray
    profile: ReferenceProfile
    score: Callable[[np.ndarray], np.ndarray]
    #: Score of every reference row (stationary streams need no model call).
    reference_scores: np.ndarray


def _shuttle() -> ShuttleData:
    from sklearn.tree import DecisionTreeClassifier

    from models.datasets import shuttle
    from models.train import SEED, split

    data = shuttle()
    X_train, _, y_train, _ = split(data)
    model = DecisionTreeClassifier(max_depth=6, random_state=SEED).fit(X_train, y_train)

    def score(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(matrix)[:, 1], dtype=np.float64)

    return ShuttleData(
        X=X_train,
        profile=build_profile(X_train, data.feature_names),
        score=score,
        reference_scores=score(X_train),
    )


def _batches(rng: np.random.Generator, n: int) -> Iterator[tuple[int, int]]:
    """Random batch sizes (1..2000, mean ~1000), so batches straddle window boundaries."""
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 2001)))
        yield start, stop
        start = stop


def _feed(
    monitor: DriftMonitor,
    rng: np.random.Generator,
    n: int,
    matrix: np.ndarray | None,
    scores: np.ndarray | None = None,
    errors: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Feed ``n`` events in random batches; returns the records and the highest PSI seen."""
    offsets = np.arange(n, dtype=np.int64)
    times = START_MS + offsets // EVENTS_PER_MS
    records: list[dict[str, Any]] = []
    highest, windows = 0.0, 0
    for a, b in _batches(rng, n):
        records += monitor.update(
            None if matrix is None else matrix[a:b],
            None if scores is None else scores[a:b],
            offsets[a:b],
            times[a:b],
            errors=None if errors is None else errors[a:b],
        )
        if monitor.windows_closed != windows and monitor.latest_psi:
            windows = monitor.windows_closed
            highest = max(highest, *monitor.latest_psi.values())
    return records, highest


def _first_alert(records: list[dict[str, Any]], detector: str, target: str, change: int) -> int:
    """Delay in events of the first alert on ``target`` covering the change, else -1."""
    for r in records:
        if (
            r["detector"] == detector
            and r["target"] == target
            and r["severity"] == "alert"
            and r["window_last_offset"] >= change
        ):
            return int(r["window_last_offset"]) - change + 1
    return -1


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Change:
    """One kind of change applied to feature ``j`` of the post-change rows."""

    name: str
    kind: str  # "shift" | "scale" | "constant" | "vanish"
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


def _shuttle_runs(
    data: ShuttleData, config: BenchConfig, seed: int, settings: DriftSettings
) -> list[dict[str, Any]]:
    window = settings.window_events
    runs = []
    for s in range(config.seeds):
        for c, change in enumerate(CHANGES):
            for j, feature in enumerate(data.profile.features):
                rng = np.random.default_rng([seed, s, c, j])
                change_at = config.pre_windows * window + int(rng.integers(0, window))
                post = config.post_windows * window
                before = data.X[rng.integers(0, len(data.X), change_at)]
                after = change.rows(data, j, rng, post)
                matrix = np.concatenate([before, after])
                scores = data.score(matrix)
                monitor = DriftMonitor(data.profile, "bench", "1", settings, clock=lambda: 0)
                records, _ = _feed(monitor, rng, len(matrix), matrix, scores)
                runs.append(
                    {
                        "change": change.name,
                        "feature": feature.name,
                        "seed": s,
                        "change_at": change_at,
                        "events": len(matrix),
                        "psi_delay": _first_alert(records, "psi", feature.name, change_at),
                        "adwin_delay": _first_alert(records, "adwin", "score", change_at),
                    }
                )
    return runs


#: Events of the first concept a concept-drift model is trained on (before the stream).
TRAIN_EVENTS = 20_000
ABRUPT_WIDTH = 1_000
GRADUAL_WIDTH = 10_000


def _concept_streams(config: BenchConfig) -> list[tuple[str, Callable[[int, int], Any], int]]:
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


def _concept_runs(
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
    for c, (name, make, width) in enumerate(_concept_streams(config)):
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
            records, _ = _feed(monitor, rng, len(errors), None, errors=errors)
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
                    "adwin_delay": _first_alert(records, "adwin", "error", change_at),
                    "false_alarms": sum(
                        1
                        for r in records
                        if r["detector"] == "adwin"
                        and r["severity"] == "alert"
                        and r["window_last_offset"] < change_at
                    ),
                }
            )
    return runs, pools


def _stationary(
    data: ShuttleData,
    pools: dict[str, np.ndarray],
    config: BenchConfig,
    seed: int,
    settings: DriftSettings,
) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 99])
    n = config.stationary_events
    rows = rng.integers(0, len(data.X), n)
    matrix, scores = data.X[rows], data.reference_scores[rows]
    monitor = DriftMonitor(data.profile, "bench", "1", settings, clock=lambda: 0)
    started = time.perf_counter()
    _, highest = _feed(monitor, rng, n, matrix, scores)
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "shuttle": {
            "events": n,
            "psi_alert_windows": monitor.raised["psi", "alert"],
            "psi_warning_windows": monitor.raised["psi", "warning"],
            "psi_max": highest,
            "adwin_detections": monitor.adwin["score"].n_detections,
            "monitor_us_per_event": elapsed / n * 1e6,
        }
    }
    for name, pool in pools.items():
        errors = pool[rng.integers(0, len(pool), n)]
        monitor = DriftMonitor(None, "bench", "1", settings, clock=lambda: 0)
        _feed(monitor, rng, n, None, errors=errors)
        out[name] = {"events": n, "adwin_detections": monitor.adwin["error"].n_detections}
    return out


# --------------------------------------------------------------------------- summary


def _delays(values: list[int]) -> dict[str, Any]:
    hits = [v for v in values if v >= 0]
    return {
        "runs": len(values),
        "detected": len(hits),
        "detection_rate": len(hits) / len(values) if values else 0.0,
        "median_delay": float(np.median(hits)) if hits else None,
        "p90_delay": float(np.quantile(hits, 0.9)) if hits else None,
    }


def run_drift_bench(seed: int = 7, quick: bool = False) -> dict[str, Any]:
    """Run every scenario; returns rows per (detector, stream, change) and the targets.

    ``quick`` (one seed, shorter stationary streams, no Agrawal) takes seconds and
    is what the tests run; the full run takes a few minutes.
    """
    started = time.perf_counter()
    config = BenchConfig.for_mode(quick)
    settings = DriftSettings()
    window = settings.window_events
    data = _shuttle()
    shuttle_runs = _shuttle_runs(data, config, seed, settings)
    concept_runs, pools = _concept_runs(config, seed, settings)
    stationary = _stationary(data, pools, config, seed, settings)

    rows: list[dict[str, Any]] = []
    for change in CHANGES:
        runs = [r for r in shuttle_runs if r["change"] == change.name]
        for detector, stream, key in (
            ("psi", "features", "psi_delay"),
            ("adwin", "score", "adwin_delay"),
        ):
            stats = _delays([r[key] for r in runs])
            within = sum(1 for r in runs if 0 <= r[key] <= 2 * window)
            rows.append(
                {
                    "detector": detector,
                    "stream": stream,
                    "change": change.name,
                    **stats,
                    "within_two_windows": within / len(runs),
                }
            )
    for name, *_ in _concept_streams(config):
        runs = [r for r in concept_runs if r["change"] == name]
        stats = _delays([r["adwin_delay"] for r in runs])
        within = sum(1 for r in runs if 0 <= r["adwin_delay"] <= 2 * window)
        rows.append(
            {
                "detector": "adwin",
                "stream": "error",
                "change": name,
                **stats,
                "within_two_windows": within / len(runs),
                "error_before": float(np.mean([r["error_before"] for r in runs])),
                "error_after": float(np.mean([r["error_after"] for r in runs])),
            }
        )

    shuttle_stationary = stationary["shuttle"]
    per_million = 1e6 / shuttle_stationary["events"]
    false_alarms = [
        {
            "detector": "psi",
            "stream": "features (all 9)",
            "events": shuttle_stationary["events"],
            "alarms": shuttle_stationary["psi_alert_windows"],
            "warnings": shuttle_stationary["psi_warning_windows"],
        },
        {
            "detector": "adwin",
            "stream": "score",
            "events": shuttle_stationary["events"],
            "alarms": shuttle_stationary["adwin_detections"],
        },
    ]
    for name, found in stationary.items():
        if name != "shuttle":
            false_alarms.append(
                {
                    "detector": "adwin",
                    "stream": f"error ({name})",
                    "events": found["events"],
                    "alarms": found["adwin_detections"],
                }
            )
    for row in false_alarms:
        row["per_million"] = row["alarms"] * 1e6 / row["events"]

    half_sigma = [
        r
        for r in rows
        if r["detector"] == "psi" and r["change"] in {f"mean +{k:g} sd" for k in SIGMA_SHIFTS[1:]}
    ]
    adwin_fa = [r["per_million"] for r in false_alarms if r["detector"] == "adwin"]
    targets = {
        "psi: every mean shift >= 0.5 sd detected within two windows": all(
            r["within_two_windows"] == 1.0 for r in half_sigma
        ),
        "psi: zero alerts on stationary data": shuttle_stationary["psi_alert_windows"] == 0,
        "adwin: <= 1 alarm per million stationary events": max(adwin_fa) <= 1.0,
    }
    return {
        "seed": seed,
        "quick": quick,
        "window_events": window,
        "settings": settings.model_dump(),
        "seeds": config.seeds,
        "rows": rows,
        "false_alarms": false_alarms,
        "stationary_psi_max": shuttle_stationary["psi_max"],
        "monitor_us_per_event": shuttle_stationary["monitor_us_per_event"],
        "per_million_scale": per_million,
        "targets": targets,
        "runs": {"shuttle": shuttle_runs, "concept": concept_runs},
        "elapsed_s": time.perf_counter() - started,
        "machine": (
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        ),
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The bench result as markdown: detection table, false alarms, targets."""
    lines = [
        f"Drift bench (seed {result['seed']}, {result['seeds']} seed(s), "
        f"{'quick' if result['quick'] else 'full'}, windows of {result['window_events']:,} "
        f"events, {result['elapsed_s']:.0f} s)",
        "",
        "| detector | stream | change | runs | detected | within 2 windows "
        "| median delay (events) | p90 delay (events) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['detector']} | {r['stream']} | {r['change']} | {r['runs']} "
            f"| {r['detection_rate']:.0%} | {r['within_two_windows']:.0%} "
            f"| {_num(r['median_delay'])} | {_num(r['p90_delay'])} |"
        )
    lines += [
        "",
        "| detector | stationary stream | events | alarms | false alarms / 1M events |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in result["false_alarms"]:
        lines.append(
            f"| {r['detector']} | {r['stream']} | {r['events']:,} | {r['alarms']} "
            f"| {r['per_million']:.2f} |"
        )
    lines += [
        "",
        f"Stationary PSI: highest {result['stationary_psi_max']:.4f} over all windows; "
        f"DriftMonitor cost {result['monitor_us_per_event']:.2f} µs/event "
        f"(9 features PSI + ADWIN on the score) on {result['machine']}.",
        "",
    ]
    for name, ok in result["targets"].items():
        lines.append(f"- [{'x' if ok else ' '}] {name}")
    return "\n".join(lines) + "\n"
