"""Redis at the edge: connection, reachability, and the prediction store.

The prediction store keeps, per event and variant, what was predicted (model
version, label, score) so that delayed labels can be joined by the evaluator.

Layout, chosen so one batch is two commands, not one per event: predictions
are grouped into *time buckets* (``bucket_s`` seconds of processing time);
each bucket is one Redis hash ``<prefix><bucket>`` whose fields are
``<event_id>|<variant>`` and whose values are ``<version>|<label>|<score>``.
A bucket expires ``ttl_s`` after its last write. A reader looks an event up
in every bucket still alive (``ttl_s / bucket_s`` of them, pipelined).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from streams.errors import InfrastructureError
from streams.settings import RedisSettings


class StoreUnavailable(InfrastructureError):
    """Redis did not answer; the caller counts the gap and carries on."""


def client(settings: RedisSettings, *, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(
        settings.url,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def ping(settings: RedisSettings, timeout: float = 1.0) -> bool:
    """True when Redis answers PING."""
    try:
        return bool(client(settings, timeout=timeout).ping())
    except redis.RedisError:
        return False


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    variant: str
    model_version: str
    label: str | None
    score: float


class PredictionStore:
    """Per-event predictions with a TTL, written one pipelined call per batch."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        ttl_s: int = 3600,
        bucket_s: int = 60,
        prefix: str = "streamscore:pred:",
        timeout: float = 0.5,
    ) -> None:
        self.ttl_s = ttl_s
        self.bucket_s = bucket_s
        self.prefix = prefix
        self._redis = client(settings, timeout=timeout)

    def _bucket_key(self, at_s: float) -> str:
        return f"{self.prefix}{int(at_s // self.bucket_s)}"

    def put_batch(
        self,
        variant: str,
        model_version: str,
        event_ids: Sequence[str],
        labels: Sequence[str | None] | None,
        scores: Sequence[float],
        *,
        now_s: float | None = None,
    ) -> None:
        """Store one variant's predictions for a batch of events (one round trip)."""
        if not event_ids:
            return
        key = self._bucket_key(time.time() if now_s is None else now_s)
        if labels is None:
            mapping = {
                f"{e}|{variant}": f"{model_version}||{s!r}"
                for e, s in zip(event_ids, scores, strict=True)
            }
        else:
            mapping = {
                f"{e}|{variant}": f"{model_version}|{lab}|{s!r}"
                for e, lab, s in zip(event_ids, labels, scores, strict=True)
            }
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
            pipe.expire(key, self.ttl_s + self.bucket_s)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"prediction store write failed: {exc}") from exc

    def get_many(
        self, event_ids: Sequence[str], variants: Sequence[str], *, now_s: float | None = None
    ) -> list[dict[str, StoredPrediction]]:
        """For each event, the stored predictions by variant (empty when missing or expired)."""
        if not event_ids:
            return []
        now = time.time() if now_s is None else now_s
        newest = int(now // self.bucket_s)
        oldest = int((now - self.ttl_s - self.bucket_s) // self.bucket_s)
        fields = [f"{e}|{v}" for e in event_ids for v in variants]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for bucket in range(newest, oldest - 1, -1):
                pipe.hmget(f"{self.prefix}{bucket}", fields)
            per_bucket = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"prediction store read failed: {exc}") from exc
        found: list[bytes | None] = [None] * len(fields)
        for values in per_bucket:
            for i, value in enumerate(values):
                if found[i] is None and value is not None:
                    found[i] = value
        result: list[dict[str, StoredPrediction]] = []
        k = 0
        for _ in event_ids:
            entry: dict[str, StoredPrediction] = {}
            for variant in variants:
                raw = found[k]
                k += 1
                if raw is not None:
                    version, label, score = raw.decode().split("|", 2)
                    entry[variant] = StoredPrediction(variant, version, label or None, float(score))
            result.append(entry)
        return result
