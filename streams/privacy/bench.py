"""What privacy costs per event, measured: ``python -m streams.privacy.bench``.

A measurement script run by hand (the README's privacy section quotes it), not a
stage: it is the one module of the package that does IO. It times, per event of a
1000-event batch, best of ``--repeats``:

* **pseudonymisation** — :meth:`ScoringPipeline.run` on the reference champion with and
  without a :class:`Pseudonymiser` (``sensor_id`` and ``event_id``, 50 sensors), so the
  difference is everything it adds (HMACs, the extra columns, the keys);
* **audit chain** — :meth:`AuditChain.link` (the digest and the headers), and producing
  the batch with its headers against ``produce_many`` without them (librdkafka's
  enqueue, to an address no broker listens on: nothing leaves the process);
* **erasure index** — the Redis prediction store's write with and without the
  per-bucket sensor index, and the time one erasure takes on a store of
  ``--erase-entries`` entries (needs Redis at ``--redis``; skipped when unreachable).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.settings import PrivacySettings, RedisSettings
from streams.privacy.chain import AuditChain
from streams.privacy.keys import PrivacyKey
from streams.privacy.pseudonym import Pseudonymiser

BATCH = 1000
SENSORS = 50


def _best(runs: dict[str, Callable[[], object]], repeats: int, inner: int) -> dict[str, float]:
    """µs per event of a batch for each run: the best of ``repeats`` medians of ``inner``
    calls, the runs interleaved round by round (a load spike on a shared machine hits
    every run of its round, not one of them)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            times = []
            for _ in range(inner):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], statistics.median(times) / BATCH * 1e6)
    return best


def pseudonymisation(models: Path, repeats: int) -> dict[str, float]:
    from connectors.source import EventFactory, SourceOptions
    from models.datasets import shuttle
    from models.serving import ServingModel
    from schemas.serde import AvroSerde
    from streams.scoring.pipeline import ScoringPipeline, raw_batch_from

    champion = ServingModel.from_bundle(models / "champion")
    factory = EventFactory(
        champion.feature_names, shuttle().X, AvroSerde("sensor_event"),
        SourceOptions(count=BATCH, sensors=SENSORS, seed=1, run_id="bench"),
    )  # fmt: skip
    made = [factory.make(n, 1_704_067_200_000 + n) for n in range(BATCH)]
    raw = raw_batch_from([v for _, v, _ in made], [k for k, _, _ in made])
    key = PrivacyKey.from_secret(bytes(range(32)))
    both = Pseudonymiser.for_key(
        key, PrivacySettings(key_file=Path("k"), pseudonymise=["sensor_id", "event_id"])
    )
    sensor_only = Pseudonymiser.for_key(
        key, PrivacySettings(key_file=Path("k"), pseudonymise=["sensor_id"])
    )

    def pipeline(pseudonymiser: Pseudonymiser | None) -> ScoringPipeline:
        return ScoringPipeline(
            event_serde=AvroSerde("sensor_event"), prediction_serde=AvroSerde("prediction"),
            audit_serde=AvroSerde("audit_event"), max_message_bytes=65_536, actor="bench",
            pseudonymiser=pseudonymiser,
        )  # fmt: skip

    off, on = pipeline(None), pipeline(both)
    events = off.run(raw, champion).events
    keys: list[bytes | None] = [s.encode() for s in events.sensor_ids]
    runs: dict[str, Callable[[], object]] = {
        "pipeline": lambda: off.run(raw, champion),
        "pipeline_pseudonymised": lambda: on.run(raw, champion),
        "both": lambda: both.identities(events.event_ids, events.sensor_ids, keys),
        "sensor_only": lambda: sensor_only.identities(events.event_ids, events.sensor_ids, keys),
    }
    t = _best(runs, repeats, 30)
    return {
        "identities_sensor_and_event_id_us": round(t["both"], 3),
        "identities_sensor_id_only_us": round(t["sensor_only"], 3),
        "pipeline_us_per_event": round(t["pipeline"], 3),
        "pipeline_pseudonymised_us_per_event": round(t["pipeline_pseudonymised"], 3),
    }


def chain(repeats: int) -> dict[str, float]:
    from connectors.kafka import Producer
    from schemas.settings import KafkaSettings

    values = [bytes(200) + i.to_bytes(4, "big") for i in range(BATCH)]
    keys: list[bytes | None] = [f"sensor-{i % SENSORS:04d}".encode() for i in range(BATCH)]
    key = PrivacyKey.from_secret(bytes(range(32)))
    # Nothing listens there: records stay in librdkafka's queue, the enqueue is timed.
    local: dict[str, Any] = {
        "log_level": 0,
        "queue.buffering.max.messages": 10_000_000,
        "queue.buffering.max.kbytes": 2**21,
    }
    nowhere = KafkaSettings(bootstrap_servers="127.0.0.1:1", embedded=False)
    producer = Producer(nowhere, client_id="privacy-bench", **local)
    audit_chain = AuditChain("bench", key)
    runs: dict[str, Callable[[], object]] = {
        "link": lambda: AuditChain("bench", key).link(keys, values),
        "plain": lambda: producer.produce_many("bench", values, keys),
        "chained": lambda: audit_chain.publish(producer.produce, "bench", values, keys),
    }
    t = _best(runs, repeats, 20)
    return {
        "link_us_per_event": round(t["link"], 3),
        "produce_us_per_event": round(t["plain"], 3),
        "produce_with_chain_us_per_event": round(t["chained"], 3),
        "added_us_per_event": round(t["chained"] - t["plain"], 3),
    }


def erasure_index(url: str, repeats: int, entries: int) -> dict[str, Any]:
    from connectors.redis_store import PredictionStore, client, ping

    settings = RedisSettings(url=url, embedded=False)
    if not ping(settings):
        return {"skipped": f"no Redis at {url}"}
    prefix = f"streamscore:bench:{time.time_ns()}:"
    store = PredictionStore(settings, prefix=prefix, timeout=30.0)
    sensors = [f"sensor-{i % SENSORS:04d}" for i in range(BATCH)]
    labels, scores = ["1"] * BATCH, [0.5] * BATCH
    rounds = iter(range(10**9))

    def write(indexed: bool) -> Callable[[], None]:
        def run() -> None:
            ids = [f"e{next(rounds)}-{i}" for i in range(BATCH)]
            store.put_batch_indexed(
                "champion", "1", ids, labels, scores, sensors if indexed else None
            )

        return run

    try:
        t = _best({"plain": write(False), "indexed": write(True)}, repeats, 50)
        plain, indexed = t["plain"], t["indexed"]
        redis = client(settings)
        now = time.time()
        memory: dict[bool, int] = {}
        for with_index in (False, True):
            before = int(redis.info("memory")["used_memory"])
            for n in range(entries // BATCH):
                ids = [f"x{with_index:d}{n}-{i}" for i in range(BATCH)]
                bucket_age = (n % (store.ttl_s // store.bucket_s)) * store.bucket_s
                store.put_batch_indexed(
                    "champion", "1", ids, labels, scores, sensors if with_index else None,
                    now_s=now - bucket_age,
                )  # fmt: skip
            memory[with_index] = int(redis.info("memory")["used_memory"]) - before
        started = time.perf_counter()
        deleted = store.erase_sensor(["sensor-0007", "0" * 8 + ":" + "0" * 32], ["champion"])
        erase_s = time.perf_counter() - started
    finally:
        redis = client(settings)
        for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            redis.delete(key)
    return {
        "store_write_us_per_event": round(plain, 3),
        "store_write_indexed_us_per_event": round(indexed, 3),
        "added_us_per_event": round(indexed - plain, 3),
        "store_bytes_per_entry": round(memory[False] / entries, 1),
        "store_bytes_per_entry_indexed": round(memory[True] / entries, 1),
        "erase_entries": entries,
        "erase_deleted": deleted,
        "erase_s": round(erase_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models", type=Path, default=None, help="model bundles (default: trained)"
    )
    parser.add_argument("--redis", default=RedisSettings().url)
    parser.add_argument("--erase-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    models = args.models
    if models is None:
        from models.train import ensure_reference_models

        models = Path(tempfile.gettempdir()) / "streamscore-privacy-bench-models"
        ensure_reference_models(models)
    result = {
        "batch": BATCH,
        "sensors": SENSORS,
        "pseudonymisation": pseudonymisation(models, args.repeats),
        "audit_chain": chain(args.repeats),
        "erasure_index": erasure_index(args.redis, args.repeats, args.erase_entries),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
