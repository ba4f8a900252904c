"""The training window: events joined with labels, what is left out and why, the lineage."""

from __future__ import annotations

import math

import numpy as np

from connectors.topic_reader import RawRecord
from schemas.serde import AvroSerde
from streams.autopilot.dataset import join_window

EVENTS, LABELS = AvroSerde("sensor_event"), AvroSerde("label")
INF = np.array([np.inf, np.inf])


def event(n: int, at: int, f1: float = 1.0, f2: float | None = 2.0) -> dict:
    features = {"f1": f1} if f2 is None else {"f1": f1, "f2": f2}
    return {"event_id": f"e{n}", "sensor_id": "s", "event_time": at, "features": features}


def raw(records: list[dict], serde: AvroSerde, partition: int = 0) -> list[RawRecord]:
    return [RawRecord(partition, offset, None, serde.encode(r)) for offset, r in enumerate(records)]


def test_join_keeps_labelled_valid_events_of_the_window_and_counts_the_rest() -> None:
    events = raw(
        [
            event(0, 100),
            event(1, 200, f1=5.0),
            event(2, 50),  # before the window
            event(3, 300, f2=None),  # a feature missing
            event(4, 400, f1=math.nan),  # not finite
            event(5, 500, f1=99.0),  # outside the hard range
            event(6, 600),  # no label
            event(0, 100),  # a replayed copy
            event(7, 700),  # a label of an unknown class
        ],
        EVENTS,
    )
    events.append(RawRecord(0, 99, None, b"\xffgarbage"))
    labels = raw(
        [{"event_id": f"e{n}", "label": "0", "labelled_at": 1} for n in (0, 1, 2, 3, 4, 5, 7)],
        LABELS,
        partition=1,
    )
    labels[1] = RawRecord(
        1, 1, None, LABELS.encode({"event_id": "e1", "label": "1", "labelled_at": 2})
    )
    labels[-1] = RawRecord(
        1, 6, None, LABELS.encode({"event_id": "e7", "label": "7", "labelled_at": 2})
    )
    window = join_window(
        events,
        labels,
        event_serde=EVENTS,
        label_serde=LABELS,
        topics=("ev", "lab"),
        feature_names=["f1", "f2"],
        lower=-INF,
        upper=np.array([10.0, np.inf]),
        since_ms=100,
        until_ms=1000,
        task="classification",
        classes=["0", "1"],
    )
    assert window.rows == 2
    assert window.X.tolist() == [[1.0, 2.0], [5.0, 2.0]]
    assert window.y.tolist() == ["0", "1"] and window.event_time.tolist() == [100, 200]
    assert window.skipped == {
        "duplicate": 1,
        "invalid_features": 2,
        "out_of_range": 1,
        "outside_window": 1,
        "undecodable_events": 1,
        "unknown_class": 1,
        "unlabelled": 1,
    }
    lineage = window.lineage()
    assert lineage["lineage.source_topics"] == "ev,lab"
    assert lineage["lineage.offsets"] == "ev[0]=0-1,lab[1]=0-1"
    assert lineage["lineage.rows"] == "2" and len(lineage["lineage.data_sha256"]) == 64
    assert window.class_counts() == {"0": 1, "1": 1}


def test_the_held_out_slice_is_the_newest_by_event_time() -> None:
    events = raw([event(n, 1000 - n) for n in range(8)], EVENTS)
    labels = raw([{"event_id": f"e{n}", "label": "0", "labelled_at": 1} for n in range(8)], LABELS)
    window = join_window(
        events,
        labels,
        event_serde=EVENTS,
        label_serde=LABELS,
        topics=("ev", "lab"),
        feature_names=["f1", "f2"],
        lower=-INF,
        upper=INF,
        since_ms=0,
        until_ms=2000,
        task="classification",
    )
    train, holdout = window.split(0.25)
    assert window.event_time[holdout].tolist() == [1000, 999]
    assert sorted(window.event_time[train].tolist()) == [993, 994, 995, 996, 997, 998]


def test_regression_labels_are_values_and_the_hash_names_the_data() -> None:
    events = raw([event(n, 10 * n) for n in range(3)], EVENTS)
    labels = raw(
        [{"event_id": f"e{n}", "value": float(n), "labelled_at": 1} for n in range(3)], LABELS
    )
    kwargs = dict(
        event_serde=EVENTS,
        label_serde=LABELS,
        topics=("ev", "lab"),
        feature_names=["f1", "f2"],
        lower=-INF,
        upper=INF,
        since_ms=0,
        until_ms=100,
    )
    window = join_window(events, labels, task="regression", **kwargs)  # type: ignore[arg-type]
    assert window.y.tolist() == [0.0, 1.0, 2.0]
    again = join_window(events, labels, task="regression", **kwargs)  # type: ignore[arg-type]
    assert again.data_sha256 == window.data_sha256
    assert join_window(events, labels, task="classification", **kwargs).rows == 0  # type: ignore[arg-type]
