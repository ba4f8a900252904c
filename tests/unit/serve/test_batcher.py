"""Dynamic batching: concurrent jobs share a call, each gets its own slice back."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.serve.batcher import Batcher


def _doubler(calls: list[list[int]]):  # type: ignore[no-untyped-def]
    def run(jobs: list[int]) -> list[int | BaseException]:
        calls.append(list(jobs))
        time.sleep(0.01)
        return [ValueError(f"bad {j}") if j < 0 else 2 * j for j in jobs]

    return run


def test_concurrent_jobs_are_coalesced_and_answered_from_their_slice() -> None:
    calls: list[list[int]] = []
    batcher = Batcher(_doubler(calls), max_rows=8, max_delay_s=0.05, concurrency=1)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(j, 1) for j in range(20)))

    try:
        assert asyncio.run(main()) == [2 * j for j in range(20)]
    finally:
        batcher.close()
    assert sorted(j for call in calls for j in call) == list(range(20))
    assert max(len(c) for c in calls) == 8  # never more than max_rows
    assert len(calls) < 20


def test_a_lone_request_does_not_wait_and_errors_reach_their_request() -> None:
    calls: list[list[int]] = []
    batcher = Batcher(_doubler(calls), max_rows=64, max_delay_s=5.0)

    async def main() -> tuple[int, float]:
        started = time.perf_counter()
        result = await batcher.submit(3, 1)
        lone = time.perf_counter() - started
        with pytest.raises(ValueError, match="bad -1"):
            await batcher.submit(-1, 1)
        return result, lone

    try:
        result, lone = asyncio.run(main())
    finally:
        batcher.close()
    assert result == 6
    assert lone < 2.0  # far below max_delay_s: every runner was idle


def test_batching_off_makes_one_call_per_job() -> None:
    calls: list[list[int]] = []
    batcher = Batcher(_doubler(calls), max_rows=64, max_delay_s=0.05, enabled=False)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit(j, 1) for j in range(6)))

    try:
        assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10]
    finally:
        batcher.close()
    assert sorted(calls) == [[j] for j in range(6)]
