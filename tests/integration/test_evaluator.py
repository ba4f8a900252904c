"""The evaluator against the session's broker and Redis, run as a subprocess
(``streamscore evaluate``) the way an operator runs it.

Predictions with known correctness are written to the prediction store, labels
are published (plus unknown, undecodable and empty ones), and the evaluation
records are read back: counts, accuracy, log-loss, Brier and confusion must be
exact, unknown labels counted, and the verdict's evidence must match the
discordant counts. The restart tests stop the evaluator after half the labels
(SIGTERM, and SIGKILL with no warning), start it again on the rest, and require
the cumulative tables to hold *all* the labels, each counted once.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from connectors.kafka import Producer
from connectors.kafka_admin import Admin
from connectors.redis_store import PredictionStore
from connectors.schema_registry import topic_serde
from connectors.topic_reader import read_topic_from_start
from models.bundle import load_bundle
from schemas.settings import Settings
from streams.evaluation.app import build_evaluator
from streams.evaluation.options import EvaluatorOptions
from streams.evaluation.records import latest_report
from streams.evaluation.sequential import discordant_log_e_values
from streams.evaluation.windows import tumbling_starts

pytestmark = pytest.mark.integration

TUMBLING_MS, HOPPING_MS, HOP_MS = 60_000, 120_000, 60_000
#: Event time of the first label: a minute boundary, so window bounds are easy to state.
BASE_MS = 1_700_000_040_000 - 1_700_000_040_000 % TUMBLING_MS


def _env(settings: Settings, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMSCORE_HOME": str(home),
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": "false",
        "STREAMSCORE_REDIS__URL": settings.redis.url,
        "STREAMSCORE_REDIS__EMBEDDED": "false",
        "STREAMSCORE_TOPICS__LABELS": settings.topics.labels,
        "STREAMSCORE_TOPICS__EVALUATION": settings.topics.evaluation,
        "STREAMSCORE_TOPICS__DRIFT": settings.topics.drift,
        "STREAMSCORE_DRIFT__WINDOW_EVENTS": "1000",
        "STREAMSCORE_DRIFT__MIN_WINDOW_EVENTS": "200",
        "STREAMSCORE_MODELS__DIR": str(settings.models.dir),
        "STREAMSCORE_METRICS__ENABLED": "false",
    }


def _command(settings: Settings, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streams", "evaluate",
        "--app-id", f"{settings.processor.group_id}-evaluator",
        "--emit-interval", "0.5",
        "--tumbling", str(TUMBLING_MS / 1000), "--hopping", str(HOPPING_MS / 1000),
        "--hop", str(HOP_MS / 1000), "--grace", "0",
        "--min-samples", "50",
        "--json", *extra,
    ]  # fmt: skip


def _run_until_idle(settings: Settings, home: Path) -> dict[str, Any]:
    done = subprocess.run(
        _command(settings, "--exit-when-idle", "3"),
        env=_env(settings, home),
        cwd=home,
        capture_output=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return summary


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    s: Settings = make_settings()
    Admin(s.kafka).ensure_topics(
        [s.topics.labels, s.topics.evaluation, s.topics.drift], partitions=3, replication_factor=1
    )
    return s


@pytest.fixture
def classes(settings: Settings) -> tuple[str, str]:
    """The champion bundle's classes (negative, positive): the evaluator reads them there."""
    _, meta = load_bundle(settings.models.champion_path)
    assert len(meta.classes) == 2
    return meta.classes[0], meta.classes[1]


class World:
    """Events with known truth, and what each variant predicted for them."""

    def __init__(self, classes: tuple[str, str], n: int, run: str) -> None:
        negative, positive = classes
        self.positive = positive
        i = np.arange(n)
        self.ids = [f"{run}-{k}" for k in range(n)]
        self.truth = np.where(i % 3 == 0, positive, negative).astype(object)
        flip = {positive: negative, negative: positive}
        self.champion_correct = i % 4 != 0
        self.challenger_correct = i % 5 != 0
        self.champion = [
            t if ok else flip[t] for t, ok in zip(self.truth, self.champion_correct, strict=True)
        ]
        self.challenger = [
            t if ok else flip[t] for t, ok in zip(self.truth, self.challenger_correct, strict=True)
        ]
        # P(positive): confident, with some spread so the metrics are not trivial
        self.champion_score = np.array(
            [(0.9 - (k % 7) / 20) if p == positive else (0.1 + (k % 5) / 20)
             for k, p in enumerate(self.champion)]
        )  # fmt: skip
        self.challenger_score = np.array([0.8 if p == positive else 0.3 for p in self.challenger])
        self.labelled_at = BASE_MS + 500 * i  # two labels a second of event time

    def store(
        self, store: PredictionStore, index: Sequence[int], *, challenger: bool = True
    ) -> None:
        ids = [self.ids[k] for k in index]
        store.put_batch("champion", "1", ids, [self.champion[k] for k in index],
                        self.champion_score[index].tolist())  # fmt: skip
        if challenger:
            store.put_batch("challenger", "2", ids, [self.challenger[k] for k in index],
                            self.challenger_score[index].tolist())  # fmt: skip

    def label_records(self, index: Sequence[int]) -> list[dict[str, Any]]:
        return [
            {"event_id": self.ids[k], "label": str(self.truth[k]), "value": None,
             "labelled_at": int(self.labelled_at[k])}
            for k in index
        ]  # fmt: skip

    def expected(self, index: Sequence[int], which: str) -> dict[str, float]:
        idx = np.asarray(index)
        correct = (self.champion_correct if which == "champion" else self.challenger_correct)[idx]
        score = (self.champion_score if which == "champion" else self.challenger_score)[idx]
        y = self.truth[idx] == self.positive
        p = np.where(y, score, 1 - score)
        return {
            "n": float(idx.size),
            "correct": float(correct.sum()),
            "accuracy": float(correct.mean()),
            "log_loss": float(-np.log(p).mean()),
            "brier": float(((score - y) ** 2).mean()),
        }


def _publish(settings: Settings, values: list[bytes | None], keys: list[bytes]) -> None:
    producer = Producer(settings.kafka, client_id="test-labels")
    for value, key in zip(values, keys, strict=True):
        producer.produce(settings.topics.labels, value, key)
    producer.flush()


def _evaluations(settings: Settings) -> list[dict[str, Any]]:
    serde = topic_serde(settings, "evaluation")
    raw = read_topic_from_start(settings.kafka, settings.topics.evaluation, idle_s=1.5)
    return [serde.decode(r.value) for r in raw if r.value is not None]


def _latest(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Newest record per (variant, window, start); cumulative ones under start 0."""
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in records:  # records of one key come from one partition, in order
        start = 0 if r["window"] == "cumulative" else r["window_start"]
        latest[(r["variant"], r["window"], start)] = r
    return latest


def test_evaluator_quality_verdict_and_unmatched_labels(
    settings: Settings, classes: tuple[str, str], tmp_path: Path
) -> None:
    n, partial, unknown = 600, 20, 37
    world = World(classes, n + partial, settings.processor.group_id)
    store = PredictionStore(settings.redis)
    paired = list(range(n))
    champion_only = list(range(n, n + partial))
    world.store(store, paired)
    world.store(store, champion_only, challenger=False)

    serde = topic_serde(settings, "labels")
    records = world.label_records(paired + champion_only)
    records += [
        {"event_id": f"ghost-{k}", "label": classes[1], "value": None, "labelled_at": BASE_MS}
        for k in range(unknown)
    ]
    records += [{"event_id": "empty", "label": None, "value": None, "labelled_at": BASE_MS}] * 2
    values: list[bytes | None] = [*serde.encode_many(records), b"\x01\x02", b"not a label", b""]
    keys = [r["event_id"].encode() for r in records] + [b"junk-1", b"junk-2", b"junk-3"]
    _publish(settings, values, keys)
    received = len(values)

    started = time.monotonic()
    summary = _run_until_idle(settings, tmp_path)
    elapsed = time.monotonic() - started
    assert summary["exit"] == "idle" and summary["labels_in"] == received
    assert summary["resumed_labels"] == 0

    latest = _latest(_evaluations(settings))
    champion = latest[("champion", "cumulative", 0)]
    challenger = latest[("challenger", "cumulative", 0)]
    everything = paired + champion_only
    for record, index, which in ((champion, everything, "champion"),
                                 (challenger, paired, "challenger")):  # fmt: skip
        expected = world.expected(index, which)
        assert record["count"] == len(index)
        assert record["metrics"]["correct"] == expected["correct"]
        assert record["metrics"]["accuracy"] == pytest.approx(expected["accuracy"], rel=1e-12)
        assert record["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-9)
        assert record["metrics"]["brier"] == pytest.approx(expected["brier"], rel=1e-9)
        truth = world.truth[np.asarray(index)]
        predicted = np.asarray(world.champion if which == "champion" else world.challenger,
                               dtype=object)[np.asarray(index)]  # fmt: skip
        for t in classes:
            for p in classes:
                count = int(((truth == t) & (predicted == p)).sum())
                assert record["metrics"].get(f"confusion/{t}/{p}", 0.0) == count
        assert record["window_start"] == BASE_MS
        assert record["window_end"] == int(world.labelled_at[max(index)])

    # every label is accounted for, none silently dropped
    labels = {k: v for k, v in champion["metrics"].items() if k.startswith("labels/")}
    assert labels == {
        "labels/received": received,
        "labels/matched": n,
        "labels/partial": partial,
        "labels/missing": unknown,
        "labels/undecodable": 3,
        "labels/invalid": 2,
        "labels/missing/challenger": partial + unknown,
        "labels/missing/champion": unknown,
    }
    assert summary["outcomes"]["missing"] == unknown

    # the verdict: paired labels only, evidence consistent with the discordant counts
    challenger_wins = int((world.challenger_correct[:n] & ~world.champion_correct[:n]).sum())
    champion_wins = int((world.champion_correct[:n] & ~world.challenger_correct[:n]).sum())
    for record in (champion, challenger):
        evidence = record["evidence"]
        assert record["verdict"] in ("promote", "keep", "inconclusive")
        assert evidence["n"] == n
        assert (evidence["challenger_wins"], evidence["champion_wins"]) == (
            challenger_wins, champion_wins,
        )  # fmt: skip
        log_e = discordant_log_e_values([challenger_wins], [champion_wins])[0][0]
        assert evidence["e_value"] == pytest.approx(math.exp(log_e), rel=1e-9)
        assert evidence["effect"] == pytest.approx((challenger_wins - champion_wins) / n)

    # windows: tumbling counts per minute of event time, hopping covers each label twice
    for variant, index in (("champion", everything), ("challenger", paired)):
        starts = tumbling_starts(world.labelled_at[np.asarray(index)], TUMBLING_MS)
        expected_counts = dict(zip(*np.unique(starts, return_counts=True), strict=True))
        tumbling = {k[2]: r for k, r in latest.items() if k[:2] == (variant, "tumbling")}
        assert {s: r["count"] for s, r in tumbling.items()} == expected_counts
        for start, record in tumbling.items():
            assert record["window_end"] == start + TUMBLING_MS
        hopping = [r for k, r in latest.items() if k[:2] == (variant, "hopping")]
        assert sum(r["count"] for r in hopping) == 2 * len(index)

    report = latest_report(settings, idle_s=1.0)
    assert [(v["variant"], v["count"]) for v in report["variants"]] == [
        ("champion", n + partial),
        ("challenger", n),
    ]
    assert report["verdict"]["n"] == n
    assert report["verdict"]["versions"] == {"champion": "1", "challenger": "2"}
    assert report["labels"]["missing"] == unknown
    print(f"evaluator: {received} labels, run {elapsed:.1f}s (start + 3s idle included)")


def _wait_for_count(settings: Settings, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = _latest(_evaluations(settings))
        record = latest.get(("challenger", "cumulative", 0))
        if record is not None and record["count"] >= count:
            return
    raise AssertionError(f"no cumulative record with {count} labels within {timeout}s")


@pytest.fixture(params=[signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def stop_signal(request: pytest.FixtureRequest) -> Iterator[signal.Signals]:
    yield request.param


def test_restart_resumes_the_tables(
    settings: Settings, classes: tuple[str, str], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    n = 400
    world = World(classes, n, settings.processor.group_id)
    world.store(PredictionStore(settings.redis), list(range(n)))
    serde = topic_serde(settings, "labels")
    first, second = list(range(n // 2)), list(range(n // 2, n))

    def publish(index: list[int]) -> None:
        _publish(settings, list(serde.encode_many(world.label_records(index))),
                 [world.ids[k].encode() for k in index])  # fmt: skip

    publish(first)
    running = subprocess.Popen(
        _command(settings), env=_env(settings, tmp_path), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_count(settings, len(first))
    finally:
        running.send_signal(stop_signal)
        _, stderr = running.communicate(timeout=30)
    if stop_signal == signal.SIGTERM:
        assert running.returncode == 0, stderr.decode()[-3000:]

    publish(second)
    summary = _run_until_idle(settings, tmp_path)
    # the first half came back from the changelogs, not from re-reading the labels ...
    assert summary["resumed_labels"] == len(first)
    # ... and whatever the second run re-read (labels not committed before a SIGKILL)
    # was recognised and not counted twice
    assert len(second) <= summary["labels_in"] <= n
    assert summary["outcomes"]["received"] == len(second)  # replays were not counted
    print(f"{stop_signal.name}: second run read {summary['labels_in']} labels")
    assert summary["tables"]["labels"]["received"] == n
    assert summary["tables"]["labels"]["matched"] == n

    latest = _latest(_evaluations(settings))
    for variant in ("champion", "challenger"):
        record = latest[(variant, "cumulative", 0)]
        expected = world.expected(range(n), variant)
        assert record["count"] == n
        assert record["metrics"]["correct"] == expected["correct"]
        assert record["metrics"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-9)
        assert record["metrics"]["labels/received"] == n
        assert record["evidence"]["n"] == n
        tumbling = [r["count"] for k, r in latest.items() if k[:2] == (variant, "tumbling")]
        assert sum(tumbling) == n
    challenger_wins = int((world.challenger_correct & ~world.champion_correct).sum())
    champion_wins = int((world.champion_correct & ~world.challenger_correct).sum())
    evidence = latest[("challenger", "cumulative", 0)]["evidence"]
    assert (evidence["challenger_wins"], evidence["champion_wins"]) == (
        challenger_wins, champion_wins,
    )  # fmt: skip
    log_e = discordant_log_e_values([challenger_wins], [champion_wins])[0][0]
    assert evidence["e_value"] == pytest.approx(math.exp(log_e), rel=1e-9)
    # the always-valid p-value comes from the running maximum restored across the restart
    assert evidence["p_value_sequential"] <= 1 / evidence["e_value"] * (1 + 1e-12)


def test_labels_that_never_reached_the_agent_are_read_back(make_settings: Any) -> None:
    """The guard against faust-streaming dropping a fetched record (see
    ``Evaluator.complete_batch``): offsets missing before and inside a batch are read
    back from the real broker, duplicates are dropped, and the order is restored."""
    settings: Settings = make_settings()
    Admin(settings.kafka).ensure_topics([settings.topics.labels], partitions=1)
    serde = topic_serde(settings, "labels")
    values = serde.encode_many(
        [{"event_id": f"e{k}", "label": "1", "value": None, "labelled_at": BASE_MS + k}
         for k in range(10)]
    )  # fmt: skip
    producer = Producer(settings.kafka, client_id="test-gaps", **{"batch.num.messages": 1})
    for value in values:
        producer.produce(settings.topics.labels, value, b"k")
    producer.flush()

    options = EvaluatorOptions(app_id=f"{settings.processor.group_id}-gaps", classes=("0", "1"))
    evaluator = build_evaluator(
        settings, store=PredictionStore(settings.redis), options=options
    ).evaluator
    evaluator.labels = {"counts": {"counts": {}, "offsets": {"0": 1}}}  # absorbed up to 1

    def event(offset: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(partition=0, offset=offset),
                               value=values[offset])  # fmt: skip

    # the agent got 4, 5 (twice) and 8: 2-3 never arrived, nor did 6-7
    messages = asyncio.run(evaluator.complete_batch([event(5), event(4), event(5), event(8)]))
    assert [(p, o) for p, o, _ in messages] == [(0, o) for o in range(2, 9)]
    assert [v for _, _, v in messages] == values[2:9]
    assert evaluator.refetched == 4
    # nothing missing: nothing read, and replays of absorbed offsets are kept for the
    # tables to skip
    evaluator.refetched = 0
    messages = asyncio.run(evaluator.complete_batch([event(1), event(2), event(3)]))
    assert [o for _, o, _ in messages] == [1, 2, 3] and evaluator.refetched == 0


def test_a_jump_in_the_champions_error_rate_raises_an_adwin_drift_event(
    settings: Settings, classes: tuple[str, str], tmp_path: Path
) -> None:
    """Concept drift: 1 % errors, then 50 %; ADWIN on the evaluator's error stream sees it."""
    negative, positive = classes
    n = 6000
    ids = [f"err-{k}" for k in range(n)]
    truth = [positive if k % 3 == 0 else negative for k in range(n)]
    flip = {positive: negative, negative: positive}
    wrong = [k % 2 == 0 if k >= n // 2 else k % 100 == 0 for k in range(n)]
    predicted = [flip[t] if w else t for t, w in zip(truth, wrong, strict=True)]
    scores = [0.9 if p == positive else 0.1 for p in predicted]
    PredictionStore(settings.redis).put_batch("champion", "1", ids, predicted, scores)
    serde = topic_serde(settings, "labels")
    records = [
        {"event_id": e, "label": t, "value": None, "labelled_at": BASE_MS + 10 * k}
        for k, (e, t) in enumerate(zip(ids, truth, strict=True))
    ]
    # One key: one partition, so the error stream keeps its order.
    _publish(settings, serde.encode_many(records), [b"sensor-1"] * n)

    summary = _run_until_idle(settings, tmp_path)
    assert summary["labels_in"] == n
    assert summary["drift_records"] >= 1

    drift_serde = topic_serde(settings, "drift")
    raw = read_topic_from_start(settings.kafka, settings.topics.drift, idle_s=1.5)
    drift = [drift_serde.decode(r.value) for r in raw if r.value is not None]
    error_events = [d for d in drift if d["detector"] == "adwin" and d["target"] == "error"]
    assert error_events, f"no ADWIN error-stream drift event among {drift}"
    opened = [d for d in error_events if d["status"] == "open"]
    assert len(opened) == 1
    assert opened[0]["model_version"] == "1"
    assert opened[0]["window_first_offset"] >= n // 2 - 1000, "alarm before the change"
