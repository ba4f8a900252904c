"""The worker-scaling row: the pipeline as 1, 2 ... N members of one consumer group, each a
process of its own (what ``streamscore run --workers N`` runs), over the same events.

For each N: the members start on an empty input topic and join the group; once every
member has partitions and the group has settled (every partition assigned), the events are
sent as fast as the bench's producer goes. Each member runs until idle and reports its
events, the time its first batch arrived and the time of its last commit.

throughput (N members)
    events consumed by all members / (latest last commit - earliest first batch). The
    members share the machine with the broker and the producer sending the events, so on
    a machine with few cores the row says where the cores run out, not how far the design
    scales.
"""

from __future__ import annotations

import queue
import threading
import time
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from schemas.settings import Settings
from streams.bench.common import BenchError, Progress
from streams.bench.feed import Topics, event_source, send_events
from streams.bench.processes import SPAWN, spawn_helper

#: A member stops once no input arrived for this long (after the events were sent).
MEMBER_IDLE_S = 6.0
#: How long the members may take to join and settle before the run is given up.
SETTLE_TIMEOUT_S = 120.0


def _member(settings: Settings, index: int, reports: MpQueue[Any], stop: MpEvent) -> None:
    """Child process: one processor of the group; its assignment and its run, reported."""
    from streams.bench.loops import _clock
    from streams.scoring.compose import build_processor

    processor = build_processor(settings)
    clock = _clock(processor)
    done = threading.Event()

    def watch() -> None:  # the assignment as it changes, for the parent's settle check
        last = -1
        while not done.wait(0.01):
            if stop.is_set():
                processor.stop("told to stop")
            now = processor.health.partitions_assigned
            if now != last:
                reports.put(("assigned", index, now))
                last = now

    watcher = threading.Thread(target=watch, name="bench-member-watch", daemon=True)
    watcher.start()
    cpu0 = time.process_time()
    summary = processor.run(exit_when_idle=MEMBER_IDLE_S)
    done.set()
    reports.put(
        (
            "done",
            index,
            {
                "events": summary.events_in,
                "first_at": summary.first_event_at,
                "last_commit_at": clock.last_at,
                "cpu_s": time.process_time() - cpu0,
                "exit_reason": summary.exit_reason,
            },
        )
    )


def scaling_run(topics: Topics, members: int, events: int, run_id: str) -> dict[str, Any]:
    """``members`` processes of one group over ``events`` events sent once they settled."""
    settings = topics.phase(f"scale-{members}")
    reports: MpQueue[Any] = SPAWN.Queue()
    stop = SPAWN.Event()
    children = [
        spawn_helper(_member, settings, i, reports, stop, daemon=False) for i in range(members)
    ]
    assigned: dict[int, int] = {}
    done: dict[int, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        partitions = settings.topics.partitions
        while not (
            len(assigned) == members
            and all(assigned.values())
            and sum(assigned.values()) == partitions
        ):
            if time.monotonic() > deadline:
                raise BenchError(f"{members} members did not settle: assignment {assigned}")
            _take(reports, assigned, done, children)
        factory = event_source(settings, events, f"{run_id}-scale-{members}")
        send_events(settings, factory, f"bench-scale-{members}")
        deadline = time.monotonic() + events / 1000 + 120
        while len(done) < members:
            if time.monotonic() > deadline:
                raise BenchError(f"{members} members: only {len(done)} finished in time")
            _take(reports, assigned, done, children)
    finally:
        stop.set()
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
        topics.drop(settings)
    consumed = sum(d["events"] for d in done.values())
    if consumed < events:
        raise BenchError(f"{members} members consumed {consumed} of {events} events")
    first = min(d["first_at"] for d in done.values() if d["first_at"] is not None)
    last = max(d["last_commit_at"] for d in done.values() if d["last_commit_at"] is not None)
    seconds = max(last - first, 1e-9)
    return {
        "members": members,
        "events": consumed,
        "seconds": round(seconds, 3),
        "eps": round(consumed / seconds, 1),
        "per_member_events": [done[i]["events"] for i in range(members)],
        "cpu_us_per_event": round(sum(d["cpu_s"] for d in done.values()) * 1e6 / consumed, 3),
    }


def _take(
    reports: MpQueue[Any],
    assigned: dict[int, int],
    done: dict[int, dict[str, Any]],
    children: list[Any],
) -> None:
    try:
        kind, index, payload = reports.get(timeout=0.2)
    except queue.Empty:
        for child in children:
            if child.exitcode not in (None, 0):
                raise BenchError(f"a scaling member exited with code {child.exitcode}") from None
        return
    if kind == "assigned":
        assigned[index] = payload
    else:
        done[index] = payload


def scaling_phase(
    topics: Topics, max_members: int, events: int, run_id: str, say: Progress
) -> dict[str, Any]:
    """Throughput with 1 .. ``max_members`` members; the share of the one-member figure."""
    rows = []
    for members in range(1, max_members + 1):
        say(f"scaling: {members} member(s) of one group, {events:,} events")
        rows.append(scaling_run(topics, members, events, run_id))
    one = rows[0]["eps"]
    for row in rows:
        row["speedup"] = round(row["eps"] / one, 3) if one else None
    return {"rows": rows}
