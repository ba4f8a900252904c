"""``streamscore bench-http``: the HTTP door under concurrent clients, batching off and on.

For each setting of ``serve.batching`` a ``streamscore serve`` subprocess is started on a
free loopback port (no keys asked, no Kafka outputs: the door alone is measured), and
this process drives it with ``C`` keep-alive connections for ``seconds`` each, every
connection sending its next request as soon as the answer arrived. Reported per ``C``:
requests/s and the p50 / p99 latency; then rows/s for requests of ``rows`` rows at 16
clients. The client is a few lines of asyncio over raw HTTP/1.1 (on uvloop when it is
installed), so that it costs the shared cores as little as possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.serving import ServingModel
from schemas.errors import ConfigError, ModelError
from schemas.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def _bodies(model: ServingModel, door: str, rows: int) -> tuple[str, bytes, bytes]:
    """(path, one-row body, ``rows``-row body) with values inside the model's ranges."""
    row = np.clip(np.zeros(len(model.feature_names)), model.lower, model.upper).tolist()
    if door == "infer":
        path = f"/v2/models/{model.name}/infer"

        def tensor(n: int) -> bytes:
            data = row * n
            body = {"inputs": [{"name": "input", "shape": [n, len(row)], "datatype": "FP64",
                                "data": data}]}  # fmt: skip
            return json.dumps(body).encode()

        return path, tensor(1), tensor(rows)
    features = dict(zip(model.feature_names, row, strict=True))

    def events(n: int) -> bytes:
        items = [
            {"event_id": f"b{i}", "sensor_id": f"s{i % 50}", "event_time": 1_767_225_600_000,
             "features": features}
            for i in range(n)
        ]  # fmt: skip
        return json.dumps(items[0] if n == 1 else items).encode()

    return "/v1/score", events(1), events(rows)


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    try:
        while clock() < deadline:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.index(b"content-length:") + 15
            length = int(lower[at : lower.index(b"\r\n", at)])
            await reader.readexactly(length)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
            latencies.append(clock() - started)
    finally:
        writer.close()


async def _drive(port: int, request: bytes, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(port, request, deadline, latencies, errors) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else 0.0,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else 0.0,
    }


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@contextlib.contextmanager
def _server(settings: Settings, batching: bool, config: Path | None) -> Iterator[int]:
    port = _free_port()
    command = [sys.executable, "-m", "streams", "--log-level", "WARNING"]
    if config is not None:
        command += ["--config", str(config)]
    command += ["serve", "--port", str(port), "--batching" if batching else "--no-batching"]
    env = {
        **os.environ,
        "STREAMSCORE_HOME": str(settings.home),
        "STREAMSCORE_MODELS__DIR": str(settings.models.dir),
        "STREAMSCORE_MODELS__SOURCE": settings.models.source,
        "STREAMSCORE_SHADOW__MODE": "off",
        "STREAMSCORE_SERVE__REQUIRE_KEY_FOR_SCORING": "false",
        "STREAMSCORE_SERVE__AUDIT": "false",
        "STREAMSCORE_SERVE__PUBLISH_PREDICTIONS": "false",
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)  # noqa: S603 - our own server, an argument list
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise ConfigError(
                    f"the server exited with {process.returncode}: {shlex.join(command)}"
                )
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise ConfigError("the server did not get ready within 60 s")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_http_bench(
    settings: Settings,
    *,
    seconds: float = 5.0,
    clients: list[int] | None = None,
    rows: int = 256,
    door: str = "infer",
    config: Path | None = None,
) -> dict[str, Any]:
    """Both settings of ``serve.batching``, each at every client count, plus a rows run."""
    levels = clients or [1, 16, 64]
    try:
        model = ServingModel.from_bundle(settings.models.champion_path)
    except ModelError as exc:
        raise ConfigError(f"no champion to serve ({exc}); run `streamscore train` first") from exc
    path, one, many = _bodies(model, door, rows)
    result: dict[str, Any] = {
        "command": shlex.join(["streamscore", *sys.argv[1:]]),
        "machine": _machine(),
        "door": path,
        "seconds": seconds,
        "max_batch": settings.serve.max_batch,
        "max_queue_delay_ms": settings.serve.max_queue_delay_ms,
        "rows_per_request": rows,
        "runs": {},
    }
    for batching in (False, True):
        with _server(settings, batching, config) as port:
            _run(_drive(port, _request(path, one), 16, min(seconds, 1.0)))  # warm-up
            runs = [_run(_drive(port, _request(path, one), c, seconds)) for c in levels]
            bulk = _run(_drive(port, _request(path, many), 16, seconds))
            bulk["rows_per_s"] = round(bulk["requests_per_s"] * rows, 1)
        result["runs"]["on" if batching else "off"] = {"single_row": runs, "rows": bulk}
    return result


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side Markdown table of :func:`run_http_bench`."""
    off, on = result["runs"]["off"], result["runs"]["on"]
    lines = [
        f"`{result['command']}` — {result['machine']}; {result['door']}, "
        f"{result['seconds']:g} s per run, max_batch {result['max_batch']}, "
        f"max_queue_delay_ms {result['max_queue_delay_ms']:g}",
        "",
        "| clients | batching off: req/s | p50 ms | p99 ms | batching on: req/s | p50 ms "
        "| p99 ms | on / off |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(off["single_row"], on["single_row"], strict=True):
        ratio = b["requests_per_s"] / a["requests_per_s"] if a["requests_per_s"] else 0.0
        lines.append(
            f"| {a['clients']} | {a['requests_per_s']:,.0f} | {a['p50_ms']:.2f} | "
            f"{a['p99_ms']:.2f} | {b['requests_per_s']:,.0f} | {b['p50_ms']:.2f} | "
            f"{b['p99_ms']:.2f} | {ratio:.2f}x |"
        )
    a, b = off["rows"], on["rows"]
    lines += [
        "",
        f"| {result['rows_per_request']}-row requests, 16 clients | rows/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| batching off | {a['rows_per_s']:,.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} |",
        f"| batching on | {b['rows_per_s']:,.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} |",
    ]
    errors = sum(r["errors"] for side in (off, on) for r in [*side["single_row"], side["rows"]])
    if errors:
        lines.append(f"\n{errors} request(s) answered with an error status.")
    return "\n".join(lines)
