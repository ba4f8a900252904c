"""Scale-out over one preloaded topic: 1, 2 ... N ``streamscore run`` processes in a group.

    python -m streams.bench.scale --events 300000 --members 1,2,3

preloads ``--events`` valid Avro events once into a fresh topic of ``--partitions``
partitions, then for each member count starts that many ``python -m streams run``
processes together (a fresh group and fresh output topics each time), lets them run until
each has had no input for 8 s (longer than a rebalance), and reports, next to each
throughput, where the CPU went:

throughput
    events scored by all members / (last prediction - first prediction), by the broker
    timestamps of the predictions read back. Members started together join in one
    generation; a rebalance during the run (``rebalances_during_run``) is inside the span;
CPU
    ``cpu_s`` of the member processes (start-up included, their side-path processes too)
    and of the embedded broker over the run, and ``busy`` = the machine's CPU in use
    during the span, as a share of all its cores (anything else running counts too).

The processes and their logs are what :mod:`tests.integration.test_scale_out` drives as
well (:func:`processor_env`, :class:`Member`). Needs a running broker (``streamscore up``)
and the reference models (``streamscore train``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.settings import Settings, load_settings

#: A rebalance line of a processor's log (``--log-level INFO``).
REBALANCE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ streams\.scoring\.membership: "
    r"(assigned|revoked|lost) (.*)$"
)


def processor_env(settings: Settings, **processor: str) -> dict[str, str]:
    """The environment of a ``python -m streams run`` on the settings' broker, Redis, topics,
    group and models; ``processor`` adds ``STREAMSCORE_PROCESSOR__<NAME>`` values. Metrics
    are off (no port to share)."""
    env = {
        # STREAMSCORE_TEST_* configure the test suite, not the processor it starts
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_TEST_")},
        "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMSCORE_KAFKA__EMBEDDED": str(settings.kafka.is_embedded).lower(),
        "STREAMSCORE_REDIS__URL": settings.redis.url,
        "STREAMSCORE_REDIS__EMBEDDED": "false",
        "STREAMSCORE_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "STREAMSCORE_PROCESSOR__GROUP_ID": settings.processor.group_id,
        "STREAMSCORE_PROCESSOR__COMMIT_INTERVAL_MS": str(settings.processor.commit_interval_ms),
        "STREAMSCORE_PROCESSOR__ASSIGNMENT_STRATEGY": settings.processor.assignment_strategy,
        "STREAMSCORE_MODELS__DIR": str(settings.models.dir.resolve()),
        "STREAMSCORE_METRICS__ENABLED": "false",
    }
    for role, name in settings.topics.by_role().items():
        env[f"STREAMSCORE_TOPICS__{role.upper()}"] = name
    for name, value in processor.items():
        env[f"STREAMSCORE_PROCESSOR__{name.upper()}"] = value
    return env


@dataclass
class Member:
    """One ``streamscore run`` process of a group, its log (stderr) in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    #: Wall clock when the process was started.
    started: float

    @classmethod
    def start(
        cls, settings: Settings, folder: Path, name: str, *args: str, **processor: str
    ) -> Member:
        """``python -m streams --log-level INFO run --json ARGS`` in ``folder``."""
        log = folder / f"{name}.log"
        command = [sys.executable, "-m", "streams", "--log-level", "INFO", "run", "--json", *args]
        with log.open("wb") as stderr:
            process = subprocess.Popen(  # noqa: S603 - this Python running streamscore, a list
                command,
                env=processor_env(settings, **processor),
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        return cls(name, process, log, time.time())

    @property
    def actor(self) -> str:
        """Its client id: the ``actor`` of the audit records it produced."""
        import socket

        return f"streamscore-processor-{socket.gethostname()}-{self.process.pid}"

    def rebalances(self) -> list[tuple[float, str, set[int]]]:
        """(wall time, ``assigned`` | ``revoked`` | ``lost``, partitions), in order."""
        events = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = REBALANCE.match(line)
            if match:
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                parts = {int(p) for p in re.findall(r"\[(\d+)\]", match[3])}
                events.append((at, match[2], parts))
        return events

    def held(self) -> set[int]:
        """The partitions it holds now, by its log."""
        held: set[int] = set()
        for _at, kind, parts in self.rebalances():
            held = held | parts if kind == "assigned" else held - parts
        return held

    def first(self, kind: str, after: float) -> float | None:
        return next((at for at, k, _ in self.rebalances() if k == kind and at >= after), None)

    def last(self, kind: str, after: float) -> float | None:
        times = [at for at, k, _ in self.rebalances() if k == kind and at >= after]
        return times[-1] if times else None

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the exit (at most ``timeout`` s); its JSON run summary."""
        out, _ = self.process.communicate(timeout=timeout)
        if self.process.returncode != 0:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return summary


def shared(members: list[Member], partitions: set[int]) -> bool:
    """Each member holds partitions, none held twice, all of ``partitions`` held."""
    helds = [m.held() for m in members]
    union = set().union(*helds)
    return all(helds) and sum(map(len, helds)) == len(union) and union == partitions


class MachineCpu(threading.Thread):
    """Samples /proc/stat: the share of all cores busy between two wall-clock times."""

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (wall time, busy, total) jiffies
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.samples.append((time.time(), sum(fields) - idle, sum(fields)))
            self._halt.wait(self.interval_s)

    def busy(self, start: float, end: float) -> float | None:
        self._halt.set()
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (_, busy0, total0), (_, busy1, total1) = inside[0], inside[-1]
        return (busy1 - busy0) / max(total1 - total0, 1)


def process_cpu_s(pid: int | None) -> float:
    """utime + stime of a running process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prediction_span(settings: Settings, expected: int) -> tuple[float, float]:
    """Wall times of the first and the last prediction, by their broker timestamps."""
    from connectors.kafka import Consumer

    reader = Consumer(settings.kafka, group_id="scale-bench-reader", client_id="scale-reader")
    reader.assign_topic(settings.topics.predictions, from_beginning=True)
    first, last, seen = float("inf"), 0.0, 0
    try:
        while seen < expected:
            batch = reader.consume(10_000, 2.0)
            if not batch:
                break  # every prediction delivered was committed first: none is missing
            stamps = [m.timestamp()[1] / 1000 for m in batch]
            first, last, seen = min(first, *stamps), max(last, *stamps), seen + len(batch)
    finally:
        reader.close()
    return first, last


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (and the children they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_members(
    settings: Settings, members: int, folder: Path, broker_pid: int | None
) -> dict[str, Any]:
    """``members`` processes over the preloaded topic of ``settings``, until idle."""
    cpu = MachineCpu()
    cpu.start()
    broker_before = process_cpu_s(broker_pid)
    children_before = _children_cpu_s()
    started = time.time()
    group = [Member.start(settings, folder, f"m{members}-{i}", "--exit-when-idle", "8")
             for i in range(members)]  # fmt: skip
    summaries = [m.finish(timeout=600) for m in group]
    wall = time.time() - started
    scored = sum(s["events_in"] for s in summaries)
    first, last = prediction_span(settings, sum(s["predictions"] for s in summaries))
    busy = cpu.busy(first, last)
    revokes = {round(at) for m in group for at, kind, _ in m.rebalances() if kind == "revoked"}
    rebalances = sum(1 for at in revokes if first <= at <= last)  # one per second at most
    return {
        "members": members,
        "events": scored,
        "per_member": [s["events_in"] for s in summaries],
        "span_s": round(last - first, 2),
        "eps": round(scored / max(last - first, 1e-9), 1),
        "rebalances_during_run": rebalances,
        "members_cpu_s": round(_children_cpu_s() - children_before, 2),
        "broker_cpu_s": round(process_cpu_s(broker_pid) - broker_before, 2),
        "wall_s": round(wall, 2),
        "machine_busy": round(busy, 3) if busy is not None else None,
        "cores": os.cpu_count(),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, each throughput next to where the CPU went."""
    one = rows[0]["eps"] if rows else 0
    lines = [
        "| members | events/s | vs 1 | span s | members CPU s | broker CPU s | machine busy |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        busy = row["machine_busy"]
        shown = f"{busy:.0%} of {row['cores']} cores" if busy is not None else "-"
        lines.append(f"| {row['members']} | {row['eps']:,.0f} | {row['eps'] / one:.2f} "
                     f"| {row['span_s']} | {row['members_cpu_s']} | {row['broker_cpu_s']} "
                     f"| {shown} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from connectors.embedded import EmbeddedStack
    from connectors.kafka_admin import Admin, ensure_topics
    from streams.bench.feed import preload

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--members", default="1,2,3", help="member counts, comma-separated")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1, help="runs per count; the best shown")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    base = load_settings()
    run = uuid.uuid4().hex[:6]
    topics = base.topics.model_copy(
        update={"events": f"bench.scale.{run}.events", "partitions": args.partitions}
    )
    settings = base.model_copy(update={"topics": topics})
    ensure_topics(settings)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"preloading {args.events:,} events into {topics.events} ({args.partitions} partitions)")
    preload(settings, args.events, run)
    broker_pid = (
        EmbeddedStack(settings).kafka.recorded_pid() if settings.kafka.is_embedded else None
    )
    rows, created = [], [topics.events]
    with tempfile.TemporaryDirectory(prefix="streamscore-scale-") as tmp:
        for n in (int(x) for x in args.members.split(",")):
            runs = []
            for r in range(args.repeats):
                names = {role: f"bench.scale.{run}.m{n}r{r}.{role}"
                         for role in settings.topics.by_role() if role != "events"}  # fmt: skip
                created += names.values()
                phase = settings.model_copy(update={
                    "topics": settings.topics.model_copy(update=names),
                    "processor": settings.processor.model_copy(
                        update={"group_id": f"scale-{run}-{n}-{r}"}),
                })  # fmt: skip
                say(f"{n} member(s), run {r + 1} of {args.repeats}…")
                runs.append(run_members(phase, n, Path(tmp), broker_pid))
                say(json.dumps(runs[-1]))
            rows.append(
                {**max(runs, key=lambda row: row["eps"]), "runs_eps": [x["eps"] for x in runs]}
            )
    Admin(settings.kafka).delete_topics(created)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"events": args.events, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
