"""Dynamic batching: concurrent requests coalesced into one model call, each answered alone.

After Seldon MLServer's adaptive batcher, on asyncio: a request puts its job on a
queue and awaits its own future; a gathering task hands batches of waiting jobs (at
most ``max_rows`` rows) to ``run`` on worker threads (onnxruntime releases the GIL, so
the event loop keeps reading requests meanwhile), at most ``concurrency`` batches at a
time; ``run`` answers each job from its slice of the batched result.

When a batch leaves is what makes it adaptive:

* every runner idle: at once, with whatever waits (a lone client never waits);
* a runner busy, another free: when ``max_rows`` rows wait, or ``max_delay_s`` after the
  oldest job arrived (more requests are coming: let them join);
* every runner busy: when one is free; meanwhile the batch grows by itself.

With batching off, every job is its own call on the same threads: the baseline the
benchmark compares against.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")

#: Scores a batch of jobs: one result (or the exception that job gets) per job, in order.
RunBatch = Callable[[list[J]], Sequence[R | BaseException]]


@dataclass(slots=True)
class _Waiting(Generic[J, R]):
    job: J
    rows: int
    arrived: float
    future: asyncio.Future[R] = field(repr=False)


class Batcher(Generic[J, R]):
    """Coalesces jobs submitted concurrently (see the module docstring)."""

    def __init__(
        self,
        run: RunBatch[J, R],
        *,
        max_rows: int,
        max_delay_s: float,
        enabled: bool = True,
        concurrency: int = 2,
        threads: int = 4,
        name: str = "batch",
    ) -> None:
        self.run = run
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.enabled = enabled
        #: Batches scored at the same time, at most (with batching on).
        self.concurrency = concurrency
        self.name = name
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._waiting: deque[_Waiting[J, R]] = deque()
        self._rows_waiting = 0
        self._busy = 0
        self._scoring: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: Jobs per model call, for the metrics (observed by the caller's ``observe``).
        self.observe: Callable[[int], None] = lambda _jobs: None

    async def submit(self, job: J, rows: int) -> R:
        """Score ``job`` (``rows`` rows), alone or with whatever arrives with it."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.observe(1)
            results = await loop.run_in_executor(self.executor, self.run, [job])
            return _unwrap(results[0])
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._gather(), name=f"{self.name}-batcher")
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Waiting(job, rows, time.monotonic(), future))
        self._rows_waiting += rows
        assert self._wake is not None  # noqa: S101 - narrows the type for mypy, never a check
        self._wake.set()
        return await future

    async def _gather(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None  # noqa: S101 - narrows the type for mypy, never a check
        while True:
            wake.clear()
            if not self._waiting or self._busy >= self.concurrency:
                await wake.wait()
                continue
            if self._busy and self._rows_waiting < self.max_rows:
                left = self._waiting[0].arrived + self.max_delay_s - time.monotonic()
                if left > 0:
                    timer = loop.call_later(left, wake.set)
                    await wake.wait()
                    timer.cancel()
                    continue
            batch = self._take()
            self._busy += 1
            self.observe(len(batch))
            task = loop.create_task(self._score(batch))
            self._scoring.add(task)  # a running task must stay referenced
            task.add_done_callback(self._scoring.discard)

    async def _score(self, batch: list[_Waiting[J, R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.run, [w.job for w in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            results = [exc] * len(batch)
        finally:
            self._busy -= 1
            if self._wake is not None:
                self._wake.set()
        for waiting, result in zip(batch, results, strict=True):
            if waiting.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)

    def _take(self) -> list[_Waiting[J, R]]:
        """The oldest jobs up to ``max_rows`` rows (always at least one)."""
        batch = [self._waiting.popleft()]
        rows = batch[0].rows
        while self._waiting and rows + self._waiting[0].rows <= self.max_rows:
            waiting = self._waiting.popleft()
            rows += waiting.rows
            batch.append(waiting)
        self._rows_waiting -= rows
        return batch

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _unwrap(result: R | BaseException) -> R:
    if isinstance(result, BaseException):
        raise result
    return result
