"""Micro-benchmark: fastavro vs the compiled codec on the scoring loop's records.

Per event the loop decodes one ``SensorEvent`` and encodes one ``Prediction`` and
one ``AuditEvent``; this times exactly those three, in batches shaped like the
pipeline's (model name, version, variant, actor and the batch timestamp shared by
the batch; ids, sensor ids, event times, offsets and digests distinct).

Run it with ``python -m schemas.codec_bench``. Absolute numbers on a shared
machine are noisy; both sides run interleaved in one process, so the speed-up
ratio is the number to quote.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import fastavro

from schemas.catalog import load_schema
from schemas.codec import compile_codec

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in epoch milliseconds
FEATURES = [f"x{i}" for i in range(1, 10)]  # the Shuttle reference model's nine inputs
#: Per event the loop decodes one SensorEvent and encodes a Prediction and an AuditEvent.
CASES = (("sensor_event", "decode"), ("prediction", "encode"), ("audit_event", "encode"))


def sample_batches(n: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """``n`` events with the predictions and audit events the pipeline makes of them."""
    rng = random.Random(seed)  # noqa: S311 - seeded benchmark data, not a secret
    now = T0 + 60_000
    events, predictions, audits = [], [], []
    name, version, variant = "shuttle-gbm", "3", "champion"
    actor, topic = "processor-1", "sensor.events"
    for i in range(n):
        event = {
            "event_id": f"bench-{i:08d}",
            "sensor_id": f"sensor-{rng.randrange(200):04d}",
            "event_time": T0 + i * 3 + rng.randrange(3),
            "features": {f: rng.uniform(-100.0, 150.0) for f in FEATURES},
        }
        events.append(event)
        p1 = rng.random()
        predictions.append(
            {
                "event_id": event["event_id"],
                "sensor_id": event["sensor_id"],
                "event_time": event["event_time"],
                "model_name": name,
                "model_version": version,
                "variant": variant,
                "predicted_label": "1" if p1 >= 0.5 else "0",
                "score": p1,
                "probabilities": {"0": 1.0 - p1, "1": p1},
                "processed_at": now,
            }
        )
        audits.append(
            {
                "action": "scored",
                "event_id": event["event_id"],
                "sensor_id": event["sensor_id"],
                "model_name": name,
                "model_version": version,
                "decision": "1" if p1 >= 0.5 else "0",
                "input_digest": hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest(),
                "source_topic": topic,
                "source_partition": i % 3,
                "source_offset": 1_000_000 + i,
                "actor": actor,
                "occurred_at": now,
                "details": {},
            }
        )
    return {"sensor_event": events, "prediction": predictions, "audit_event": audits}


def _cpu_us(run: Callable[[], object], per: int) -> float:
    """CPU time of one ``run()`` in µs per record: time spent descheduled on a
    shared machine does not count, which steadies the numbers a lot."""
    start = time.process_time()
    run()
    return (time.process_time() - start) / per * 1e6


def _fastavro_encoder(schema: Any) -> Callable[[list[dict[str, Any]]], list[bytes]]:
    """fastavro the way ``AvroSerde.encode_many`` drives it (one reused buffer)."""
    write = fastavro.schemaless_writer

    def encode_many(records: list[dict[str, Any]]) -> list[bytes]:
        buf = io.BytesIO()
        out = []
        for record in records:
            buf.seek(0)
            buf.truncate()
            write(buf, schema, record)
            out.append(buf.getvalue())
        return out

    return encode_many


def _fastavro_decoder(schema: Any) -> Callable[[list[bytes]], list[Any]]:
    """fastavro the way ``AvroSerde.decode`` drives it, with its trailing-bytes check."""
    read = fastavro.schemaless_reader

    def decode_many(values: list[bytes]) -> list[Any]:
        out = []
        for value in values:
            buf = io.BytesIO(value)
            record = read(buf, schema, None)
            if buf.tell() != len(value):
                raise ValueError("trailing bytes")
            out.append(record)
        return out

    return decode_many


def _case_timings(
    name: str, direction: str, rows: list[dict[str, Any]]
) -> dict[str, Callable[[], object]]:
    """The three contenders for one case, after checking they give the same answer."""
    schema = load_schema(name)
    codec = compile_codec(schema)
    base_encode = _fastavro_encoder(schema)
    if direction == "encode":
        if codec.encode_many(rows) != base_encode(rows):  # never time a wrong answer
            raise AssertionError(f"compiled {name} bytes differ from fastavro's")
        encode = codec.encode
        return {
            "fastavro_us": lambda: base_encode(rows),
            "compiled_us": lambda: codec.encode_many(rows),
            "compiled_single_us": lambda: [encode(r) for r in rows],
        }
    values = base_encode(rows)
    base_decode = _fastavro_decoder(schema)
    if codec.decode_many(values) != base_decode(values):
        raise AssertionError(f"compiled {name} records differ from fastavro's")
    decode = codec.decode
    return {
        "fastavro_us": lambda: base_decode(values),
        "compiled_us": lambda: codec.decode_many(values),
        "compiled_single_us": lambda: [decode(v) for v in values],
    }


def codec_microbench(batch: int = 1000, repeat: int = 15) -> dict[str, Any]:
    """µs per record, fastavro vs compiled, for the three serialisations of one event.

    Returns ``{"machine": {...}, "batch": n, "repeat": k, "results": {case:
    {"fastavro_us", "compiled_us", "compiled_single_us", "speedup"}}}``.
    ``compiled_us`` is the batch API (``encode_many`` / ``decode_many``),
    ``compiled_single_us`` one ``encode`` / ``decode`` call per record; each is
    the best of ``repeat`` CPU-time runs over a batch of ``batch`` records, the
    contenders interleaved so that load on the machine hits them alike.
    """
    records = sample_batches(batch)
    cases: dict[str, dict[str, float]] = {}
    for name, direction in CASES:
        timings = _case_timings(name, direction, records[name])
        best = dict.fromkeys(timings, float("inf"))
        for _ in range(repeat):
            for key, run in timings.items():
                best[key] = min(best[key], _cpu_us(run, batch))
        best["speedup"] = best["fastavro_us"] / best["compiled_us"]
        cases[f"{name} {direction}"] = {k: round(v, 2) for k, v in best.items()}
    return {
        "machine": {
            "cores": os.cpu_count(),
            "processor": _cpu_model(),
            "python": platform.python_version(),
            "fastavro": fastavro.__version__,
        },
        "batch": batch,
        "repeat": repeat,
        "results": cases,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    report = codec_microbench()
    print(json.dumps(report["machine"]), f"batch={report['batch']} best of {report['repeat']}")
    print(f"{'case':22} {'fastavro µs':>12} {'compiled µs':>12} {'single µs':>10} {'speed-up':>9}")
    for case, row in report["results"].items():
        print(
            f"{case:22} {row['fastavro_us']:12.2f} {row['compiled_us']:12.2f}"
            f" {row['compiled_single_us']:10.2f} {row['speedup']:8.1f}x"
        )


if __name__ == "__main__":
    main()
