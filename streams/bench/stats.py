"""Quantiles of latencies (raw samples and bucketed histograms) and the slope of memory growth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def percentiles(values_ms: np.ndarray) -> dict[str, float]:
    """p50, p95, p99 and max of latencies in milliseconds (linear interpolation)."""
    if values_ms.size == 0:
        return {"count": 0}
    result: dict[str, float] = {"count": int(values_ms.size)}
    for name, q in QUANTILES:
        result[name] = round(float(np.quantile(values_ms, q)), 3)
    result["max"] = round(float(values_ms.max()), 3)
    return result


def histogram_percentiles(
    counts: np.ndarray, edges: Sequence[float], *, scale: float = 1000.0
) -> dict[str, float]:
    """Quantiles of a bucketed histogram, interpolated within buckets (histogram_quantile).

    ``counts`` has one entry per upper edge plus a last one for +Inf. Values above the
    last edge are reported as the last edge. ``scale`` converts seconds to milliseconds.
    """
    total = int(counts.sum())
    if total == 0:
        return {"count": 0}
    bounds = np.asarray(edges, dtype=np.float64)
    cumulative = np.cumsum(counts)
    result: dict[str, float] = {"count": total}
    for name, q in QUANTILES:
        rank = q * total
        i = int(np.searchsorted(cumulative, rank, side="left"))
        if i >= bounds.size:
            value = float(bounds[-1])
        else:
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            before = float(cumulative[i - 1]) if i > 0 else 0.0
            share = (rank - before) / float(counts[i]) if counts[i] else 1.0
            value = lower + (float(bounds[i]) - lower) * share
        result[name] = round(value * scale, 3)
    highest = int(np.flatnonzero(counts)[-1])
    result["max"] = round(float(bounds[min(highest, bounds.size - 1)]) * scale, 3)
    return result


def slope_per_million(events: np.ndarray, rss: np.ndarray) -> float | None:
    """Least-squares growth of RSS in bytes per million events."""
    if events.size < 3 or float(np.ptp(events)) == 0.0:
        return None
    slope = np.polyfit(events.astype(np.float64), rss.astype(np.float64), 1)[0]
    return float(slope) * 1e6
