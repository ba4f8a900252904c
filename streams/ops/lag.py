"""Consumer lag as operators read it: samples with trends, a watch, and a Prometheus collector.

Lag is read from the outside through the admin API (:mod:`connectors.lag`), so it works
for any group, including groups that are not streamscore's, and keeps working while every
member of the group is down. That is why the exporter exists next to the processors' own
``streamscore_consumer_lag_records``: a stopped processor cannot report the lag piling up
behind it. :class:`LagRefresher` is the processor's own view, refreshed off the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from connectors.kafka import PartitionOffsets
from schemas.errors import StreamscoreError
from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)

LagKey = tuple[str, int]

LOWER_BOUND_NOTE = (
    "embedded broker: end offsets and lag are lower bounds (understated by up to one "
    "producer batch per partition)"
)


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True, slots=True)
class LagRow:
    """One partition of one lag sample; ``delta`` is the lag change since the previous sample."""

    topic: str
    partition: int
    committed: int | None
    low: int
    end: int
    lag: int
    delta: int | None

    @property
    def trend(self) -> str:
        if self.delta is None:
            return "new"
        if self.delta > 0:
            return "growing"
        if self.delta < 0:
            return "shrinking"
        return "steady"

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "low": self.low,
            "end": self.end,
            "lag": self.lag,
            "lag_delta": self.delta,
            "trend": self.trend,
        }


def lag_rows(
    offsets: Sequence[PartitionOffsets], previous: Mapping[LagKey, int] | None = None
) -> list[LagRow]:
    """Rows for ``offsets``; deltas against ``previous`` lags (None where there is none)."""
    rows = []
    for o in offsets:
        before = None if previous is None else previous.get((o.topic, o.partition))
        rows.append(
            LagRow(
                topic=o.topic,
                partition=o.partition,
                committed=o.committed,
                low=o.low,
                end=o.high,
                lag=o.lag,
                delta=None if before is None else o.lag - before,
            )
        )
    return rows


@dataclass(frozen=True)
class LagSample:
    """Lag of one group at one moment, or the error that prevented reading it."""

    group: str
    taken_at: float
    rows: list[LagRow] = field(default_factory=list)
    #: Seconds since the previous sample of the same watch, if any.
    interval_s: float | None = None
    error: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(r.lag for r in self.rows)

    @property
    def total_delta(self) -> int | None:
        deltas = [r.delta for r in self.rows if r.delta is not None]
        return sum(deltas) if deltas else None

    def lags(self) -> dict[LagKey, int]:
        return {(r.topic, r.partition): r.lag for r in self.rows}

    def as_dict(self, *, lower_bound: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "group": self.group,
            "timestamp": self.taken_at,
            "interval_s": self.interval_s,
            "total_lag": self.total_lag,
            "total_lag_delta": self.total_delta,
            "end_is_lower_bound": lower_bound,
            "partitions": [r.as_dict() for r in self.rows],
        }
        if self.error is not None:
            body["error"] = self.error
        return body


def watch_lag(
    lookup: Callable[[], list[PartitionOffsets]],
    group: str,
    *,
    interval: float,
    count: int | None,
    keep_going: bool,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> Iterator[LagSample]:
    """Sample ``lookup`` every ``interval`` seconds, ``count`` times (None = forever).

    With ``keep_going`` a failed lookup becomes a sample carrying the error and
    the watch goes on (a broker restart should not end a watch); without it the
    error propagates.
    """
    previous: dict[LagKey, int] | None = None
    previous_at: float | None = None
    taken = 0
    while count is None or taken < count:
        if taken:
            sleep(interval)
        now = clock()
        try:
            offsets = lookup()
        except StreamscoreError as exc:
            if not keep_going:
                raise
            yield LagSample(group, now, error=str(exc))
        else:
            sample = LagSample(
                group,
                now,
                lag_rows(offsets, previous),
                interval_s=None if previous_at is None else now - previous_at,
            )
            previous, previous_at = sample.lags(), now
            yield sample
        taken += 1


# --------------------------------------------------------------------------- exporter


class GroupLagCollector(Collector):
    """Prometheus collector that looks the lag of consumer groups up at each scrape.

    Pull, not push: the lookup runs when Prometheus scrapes, so the numbers are
    as fresh as the scrape and nothing runs between scrapes. A group whose
    lookup fails reports ``streamscore_lag_exporter_up{consumer_group} 0`` and
    no partition series (a stale number would look like a healthy one).
    """

    METRIC_NAMES = (
        "streamscore_group_lag_records",
        "streamscore_group_committed_offset",
        "streamscore_partition_end_offset",
        "streamscore_lag_exporter_up",
    )

    def __init__(
        self, groups: Sequence[str], lookup: Callable[[str], list[PartitionOffsets]]
    ) -> None:
        self.groups = list(groups)
        self.lookup = lookup

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        partition_labels = ["consumer_group", "topic", "partition"]
        return (
            GaugeMetricFamily(
                "streamscore_group_lag_records",
                "Log end offset minus committed offset of a consumer group, per partition "
                "(read through the admin API, independent of the group's members).",
                labels=partition_labels,
            ),
            GaugeMetricFamily(
                "streamscore_group_committed_offset",
                "Committed offset (next offset to read) of a consumer group, per partition.",
                labels=partition_labels,
            ),
            GaugeMetricFamily(
                "streamscore_partition_end_offset",
                "Log end offset (high watermark) per partition.",
                labels=["topic", "partition"],
            ),
            GaugeMetricFamily(
                "streamscore_lag_exporter_up",
                "1 when the last lag lookup of the consumer group answered, else 0.",
                labels=["consumer_group"],
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag, committed, end, up = self._families()
        ends_seen: set[LagKey] = set()
        for group in self.groups:
            try:
                offsets = self.lookup(group)
            except StreamscoreError as exc:
                log.warning("lag lookup of group %s failed: %s", group, exc)
                up.add_metric([group], 0.0)
                continue
            up.add_metric([group], 1.0)
            for o in offsets:
                labels = [group, o.topic, str(o.partition)]
                lag.add_metric(labels, float(o.lag))
                if o.committed is not None:
                    committed.add_metric(labels, float(o.committed))
                if (o.topic, o.partition) not in ends_seen:
                    ends_seen.add((o.topic, o.partition))
                    end.add_metric([o.topic, str(o.partition)], float(o.high))
        yield from (lag, committed, end, up)


class LagRefresher:
    """Refreshes ``streamscore_consumer_lag_records`` on its own thread.

    ``lookup`` returns (topic, partition, lag) rows, e.g. from
    ``connectors.lag.group_lag``; a failed lookup is logged once and the gauge
    keeps its last values. The scoring loop never waits for it.
    """

    def __init__(
        self,
        lookup: Callable[[], Iterable[tuple[str, int, int]]],
        metrics: Metrics,
        *,
        interval_s: float = 5.0,
    ) -> None:
        self._lookup = lookup
        self._metrics = metrics
        self.interval_s = interval_s
        self.refreshes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-refresher", daemon=True)

    def start(self) -> LagRefresher:
        self._thread.start()
        return self

    def refresh(self) -> None:
        try:
            rows = list(self._lookup())
        except Exception as exc:  # noqa: BLE001 - any lookup failure: keep last values, log
            self.failures += 1
            if self.failures == 1 or self.failures % 60 == 0:
                log.warning("consumer lag lookup failed (%d times): %s", self.failures, exc)
            return
        for topic, partition, lag in rows:
            self._metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        self.refreshes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)
