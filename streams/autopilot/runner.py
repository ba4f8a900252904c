"""Retraining runs on a background thread, one at a time, so the controller keeps looking.

A run's result is collected at the controller's next tick; a run that crashed
(a bug, not a classified failure, which is a ``failed`` result) is raised there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.autopilot.retrain import RetrainJob, RetrainResult


class Retrainer:
    """Runs retraining jobs one at a time on a background thread."""

    def __init__(self, run: Callable[[RetrainJob], RetrainResult]) -> None:
        self.run = run
        self._thread: threading.Thread | None = None
        self._done: list[tuple[RetrainJob, RetrainResult]] = []
        self._crash: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: RetrainJob) -> None:
        if self.running:
            raise RuntimeError("a retraining run is already going")

        def body() -> None:
            try:
                result = self.run(job)
            except BaseException as exc:  # noqa: BLE001 - re-raised by finished()
                with self._lock:
                    self._crash = exc
                return
            with self._lock:
                self._done.append((job, result))

        self._thread = threading.Thread(target=body, name="autopilot-retrain", daemon=True)
        self._thread.start()

    def finished(self) -> list[tuple[RetrainJob, RetrainResult]]:
        """Runs finished since the last call; a run that crashed (a bug) is raised here."""
        with self._lock:
            crash, self._crash = self._crash, None
            done, self._done = self._done, []
        if crash is not None:
            raise crash
        return done

    def wait(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
