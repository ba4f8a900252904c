"""Helper processes of the bench (the paced source, the observer, the soak processor): each
started in a fresh interpreter, each sending one message back on a queue."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue as MpQueue
from typing import Any, cast

from streams.bench.common import BenchError

#: Where helper processes, their queues and their events come from (never fork: see below).
SPAWN = multiprocessing.get_context("spawn")


def spawn_helper(target: Callable[..., None], *args: Any, daemon: bool = True) -> SpawnProcess:
    """Start ``target`` in a fresh interpreter (never fork a process running librdkafka).

    As with any spawn, a script calling :func:`~streams.bench.run.run_bench` needs the
    ``if __name__ == "__main__":`` guard. ``daemon=False`` for a helper that runs a
    processor: it starts a side-path process of its own, which a daemon may not.
    """
    name = target.__name__.strip("_")
    process = SPAWN.Process(target=target, args=args, daemon=daemon, name=name)
    process.start()
    return process


def helper_result(
    q: MpQueue[Any], process: SpawnProcess, timeout_s: float, what: str
) -> dict[str, Any]:
    """The one message a helper process sends; fails if it died or took too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            message = q.get(timeout=0.5)
        except queue.Empty:
            if not process.is_alive():
                with contextlib.suppress(queue.Empty):
                    message = q.get(timeout=1.0)
                    break
                raise BenchError(f"{what} exited with code {process.exitcode}") from None
            continue
        break
    else:
        process.kill()
        raise BenchError(f"{what} sent nothing within {timeout_s:.0f}s")
    process.join(10)
    if "error" in message:
        raise BenchError(f"{what}: {message['error']}")
    return cast(dict[str, Any], message)
