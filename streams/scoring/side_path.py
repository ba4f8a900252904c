"""What a side path is, and the bounded worker the slow ones run on.

A side path gets each batch's output after the champion's records are produced:
the shadow challenger, the Redis prediction store writer and the drift watch. The
processor knows them only through :class:`SidePath`; the composition root
(:mod:`streams.scoring.compose`) gives each exactly what it uses.

Slow side paths run on a :class:`BackgroundWorker`: one thread and a *bounded*
queue. The loop hands it a batch and moves on; when the worker falls behind the
batch is dropped and counted, never queued without bound, and when it raises the
error is counted and logged: nothing a side path does stops the champion's path.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from streams.scoring.pipeline import BatchOutput, RawBatch

log = logging.getLogger(__name__)

T = TypeVar("T")


class SidePath(Protocol):
    """Sees every batch after the champion's outputs; never fails the batch."""

    def __call__(self, out: BatchOutput, raw: RawBatch) -> None: ...

    def report(self) -> dict[str, dict[str, Any]]:
        """Its part of the run summary, keyed by its stable name."""
        ...

    def close(self) -> None:
        """Drain what is queued (shutdown); outputs it produces are flushed after."""
        ...


class BackgroundWorker(Generic[T]):
    """One thread, a bounded queue, counted drops and errors."""

    def __init__(self, name: str, handle: Callable[[T], None], *, max_pending: int) -> None:
        self.name = name
        self._handle = handle
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize=max_pending)
        self.submitted = 0
        self.dropped = 0
        self.errors = 0
        self.processed = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the worker is behind."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
                self.processed += 1
            except Exception as exc:  # noqa: BLE001 - counted and logged; the hot path goes on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.errors <= 5 or self.errors % 1000 == 0:
                    log.error("%s failed (%d so far): %s", self.name, self.errors, self.last_error)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued is handled (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
            with self._queue.mutex:
                if not self._queue.queue and self.processed + self.errors >= self.submitted:
                    return True
        return self.processed + self.errors >= self.submitted

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("%s did not stop in time", self.name)
            return
        self._thread.join(timeout)
