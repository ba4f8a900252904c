"""The stage profile: the pipeline over the same input with one stage switched off at a time
(side paths one by one, Avro decoding, champion scoring, Avro encoding, and all three
together), next to the pipeline as built.

A stage is switched off by a stand-in that hands out real results of the bench's own stream
(decoded events, encoded outputs, the champion's scores), so everything downstream of it
sees the same shapes and types and does the same work.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.runtime import OnnxModel, Scores
from schemas.codec import Column
from schemas.errors import ConfigError
from streams.bench.common import BenchError, Progress
from streams.bench.feed import Topics
from streams.bench.loops import LoopRun, fastest, run_pipeline

if TYPE_CHECKING:
    from connectors.source import EventFactory
    from schemas.serde import Record, Serde
    from streams.scoring.processor import Processor

#: Distinct records behind the canned stages of the stage profile.
CANNED_POOL = 4096


class CannedDecode:
    """Event serde whose ``decode`` hands out already decoded events: decoding switched off."""

    def __init__(self, inner: Serde, records: Sequence[Record]) -> None:
        self.format = inner.format
        self._inner = inner
        self._records = list(records)
        self._next = 0

    def decode(self, data: bytes) -> Record:
        record = self._records[self._next % len(self._records)]
        self._next += 1
        return record

    def encode(self, record: Record) -> bytes:
        return self._inner.encode(record)

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        return self._inner.encode_many(records)

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        return self._inner.encode_columns(columns, n)


class CannedEncode:
    """Output serde whose ``encode_many`` returns one real encoded record per input."""

    def __init__(self, inner: Serde, sample: bytes) -> None:
        self.format = inner.format
        self._inner = inner
        self._sample = sample

    def decode(self, data: bytes) -> Record:
        return self._inner.decode(data)

    def encode(self, record: Record) -> bytes:
        return self._sample

    def encode_many(self, records: Sequence[Record]) -> list[bytes]:
        return [self._sample] * len(records)

    def encode_columns(self, columns: Mapping[str, Column], n: int) -> list[bytes]:
        return [self._sample] * n


class CannedModel(OnnxModel):
    """The champion with scoring switched off: the real model's scores of sample rows, cycled.

    It keeps the real model's name, version, features, classes and task, so everything
    downstream of scoring sees the same shapes and types.
    """

    def __init__(self, real: OnnxModel, scores: Scores) -> None:  # no session: nothing runs
        self.name, self.version = real.name, real.version
        self.feature_names = list(real.feature_names)
        self.classes = list(real.classes)
        self.task = real.task
        self._scores = scores
        self._pool = len(scores.score)

    def predict(self, matrix: np.ndarray) -> Scores:
        rows = np.arange(matrix.shape[0]) % self._pool
        s = self._scores
        return Scores(
            score=s.score[rows],
            labels=None if s.labels is None else s.labels[rows],
            probabilities=None if s.probabilities is None else s.probabilities[rows],
        )


@dataclass
class Samples:
    """Real records of the bench's stream, to stand in for a switched-off stage."""

    events: list[Record]
    prediction: bytes
    audit: bytes
    scores: Scores


def samples_from(processor: Processor, factory: EventFactory) -> Samples:
    """Decoded events, their encoded outputs and their scores, from the real pipeline."""
    from streams.scoring.pipeline import raw_batch_from

    now = int(time.time() * 1000)
    records = [factory.event(n, now) for n in range(CANNED_POOL)]
    values = [factory.make(n, now)[1] for n in range(CANNED_POOL)]
    out = processor.pipeline.run(raw_batch_from(values), processor.champion)
    if out.scores is None or not out.prediction_values or not out.audit_values:
        raise BenchError("the pipeline scored none of the sample events")
    return Samples(records, out.prediction_values[0], out.audit_values[0], out.scores)


def _decode_off(processor: Processor, samples: Samples) -> None:
    pipeline = processor.pipeline
    pipeline.event_serde = CannedDecode(pipeline.event_serde, samples.events)


def _score_off(processor: Processor, samples: Samples) -> None:
    champion = processor.champion
    canned = CannedModel(champion.model, samples.scores)
    processor.champion = dataclasses.replace(champion, model=canned)


def _encode_off(processor: Processor, samples: Samples) -> None:
    pipeline = processor.pipeline
    pipeline.prediction_serde = CannedEncode(pipeline.prediction_serde, samples.prediction)
    pipeline.audit_serde = CannedEncode(pipeline.audit_serde, samples.audit)


def side_path_name(side_path: object) -> str:
    return str(getattr(side_path, "name", None) or type(side_path).__name__)


@dataclass(frozen=True)
class Variant:
    """The pipeline with something switched off (or, with ``processor``, built otherwise)."""

    name: str
    what: str
    apply: Callable[[Processor, Samples], None]
    #: ``processor`` settings this variant is built with (e.g. side paths on threads).
    processor: dict[str, Any] | None = None


def variants(side_paths: Sequence[str], side_path_mode: str = "thread") -> list[Variant]:
    """Each side path off in turn, all of them off, then decode, score and encode off; with
    side paths in a process of their own, also the same pipeline with them on threads."""

    def without(names: set[str]) -> Callable[[Processor, Samples], None]:
        def apply(processor: Processor, _samples: Samples) -> None:
            processor.side_paths[:] = [
                sp for sp in processor.side_paths if side_path_name(sp) not in names
            ]

        return apply

    def together(*parts: Callable[[Processor, Samples], None]) -> Callable[..., None]:
        def apply(processor: Processor, samples: Samples) -> None:
            for part in parts:
                part(processor, samples)

        return apply

    result = [Variant(f"{name} off", f"side path {name} removed", without({name}))
              for name in side_paths]  # fmt: skip
    if len(side_paths) > 1:
        result.append(
            Variant("side paths off", "every side path removed", without(set(side_paths)))
        )
    if side_path_mode == "process":
        result.append(
            Variant(
                "side paths on threads",
                "processor.side_paths = thread: shadow records and Redis writes on threads",
                lambda _p, _s: None,
                processor={"side_paths": "thread"},
            )
        )
    result += [
        Variant("decode off", "events handed out already decoded", _decode_off),
        Variant("score off", "champion returns precomputed scores", _score_off),
        Variant("encode off", "outputs built, Avro encoding replaced by copies", _encode_off),
        Variant(
            "decode+score+encode off",
            "the three together: the loop, validation, record building and side paths",
            together(_decode_off, _score_off, _encode_off),
        ),
    ]
    return result


def check_names(names: Sequence[str]) -> None:
    """Refuse, before anything runs, a name no processor's profile has (a typo): each must
    be a variant every profile has or ``<side path> off``, a side path's class name; which
    side paths there are is known once the processor is built (:func:`pick` checks then)."""
    placeholders = ("first", "second")
    named = {f"{p} off" for p in placeholders}
    fixed = [v.name for v in variants(placeholders, "process") if v.name not in named]
    bad = [n for n in names if n not in fixed and not re.fullmatch(r"[A-Z]\w* off", n)]
    if bad:
        raise ConfigError(
            f"--stage {', '.join(map(repr, bad))}: no such variant; the variants are "
            f"{', '.join(map(repr, fixed))} and '<side path> off' (e.g. 'DriftPath off')"
        )


def pick(every: list[Variant], names: Sequence[str]) -> list[Variant]:
    """The variants named in ``names`` (all of them when it is empty), in profile order."""
    if not names:
        return every
    known = [v.name for v in every]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(
            f"no stage variant {', '.join(map(repr, unknown))}; "
            f"the variants are: {', '.join(map(repr, known))}"
        )
    return [v for v in every if v.name in names]


def stage_profile(
    topics: Topics,
    input_topic: str,
    events: int,
    samples: Samples,
    switched: list[Variant],
    say: Progress,
    *,
    repeats: int = 1,
) -> dict[str, Any]:
    """The pipeline as built, then with each variant's stage switched off, same input.

    With ``repeats`` > 1 the variants run in rounds (all of them, then all again), and each
    keeps its best events/s and its lowest CPU time per event.
    """
    every = [Variant("full", "as built", lambda _p, _s: None), *switched]
    runs: dict[str, list[LoopRun]] = {v.name: [] for v in every}
    for r in range(repeats):
        for k, variant in enumerate(every):
            say(f"stages: {variant.name} (round {r + 1} of {repeats})")
            phase = topics.phase(f"stage-{r}-{k}", events_topic=input_topic)
            if variant.processor:
                processor = phase.processor.model_copy(update=variant.processor)
                phase = phase.model_copy(update={"processor": processor})
            run = run_pipeline(
                phase,
                events=events,
                prepare=lambda p, v=variant: v.apply(p, samples),  # type: ignore[misc]
                name=variant.name,
            )
            topics.drop(phase)
            if run.outputs.get("predictions") != events:
                raise BenchError(f"stage variant {variant.name!r} produced {run.outputs}")
            runs[variant.name].append(run)
    rows: list[dict[str, Any]] = []
    base_wall = base_cpu = 0.0
    for variant in every:
        best = fastest(runs[variant.name])
        wall = 1e6 / best.eps
        cpu = min(r.cpu_s for r in runs[variant.name]) * 1e6 / events
        if variant.name == "full":
            base_wall, base_cpu = wall, cpu
        rows.append(
            {
                "variant": variant.name,
                "what": variant.what,
                "eps": round(best.eps, 1),
                "us_per_event": round(wall, 3),
                "saved_us_per_event": round(base_wall - wall, 3),
                "cpu_us_per_event": round(cpu, 3),
                "saved_cpu_us_per_event": round(base_cpu - cpu, 3),
                "broker_cpu_us_per_event": best.per_event_us(best.broker_cpu_s),
                "stage_us_per_event": best.stage_us(),
                "all_eps": [round(r.eps, 1) for r in runs[variant.name]],
            }
        )
    return {"repeats": repeats, "variants": rows}
