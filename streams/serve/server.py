"""uvicorn around the app: bound first (a taken port is one error line), run here or on a thread."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from schemas.errors import ConfigError
from schemas.settings import Settings
from streams.ops.metrics import Metrics
from streams.serve.app import create_app
from streams.serve.wiring import ServeContext, build_context

log = logging.getLogger(__name__)


class HttpServer:
    """``streamscore serve``: the app of :func:`create_app` on uvicorn, on ``serve.host:port``."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        s = settings.serve
        self.socket = _bind(s.host, s.port)
        self.host, self.port = self.socket.getsockname()[:2]
        try:
            self.context: ServeContext = build_context(settings, metrics=metrics)
        except BaseException:
            self.socket.close()
            raise
        self.app = create_app(self.context)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=10,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def run(self) -> None:
        """Serve until SIGINT / SIGTERM (uvicorn's handlers), then close everything."""
        log.info("serving on %s (docs at %s/docs)", self.url, self.url)
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout_s: float = 30.0) -> HttpServer:
        """Serve on a thread (tests, embedders); returns once requests are answered."""
        self._thread = threading.Thread(target=self.run, name="http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve on {host}:{port} ({exc.strerror}); set serve.port "
            "(STREAMSCORE_SERVE__PORT or --port) to a free port"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
