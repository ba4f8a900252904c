"""Redis at the edge: connection, reachability, and the prediction store.

The prediction store keeps, per event, what each variant predicted so that
delayed labels can be joined; it is written in one pipelined call per batch.
"""

from __future__ import annotations

import redis

from streams.settings import RedisSettings


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
