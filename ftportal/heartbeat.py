"""A thread that proves a long-running worker is alive, so a reaper can tell a slow worker from
a dead one."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from django.db import connection


def worker_name() -> str:
    """Which worker process holds a job or run: what a reaper's message names."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Calls ``touch`` (typically an UPDATE of heartbeat_at, conditional on the worker still
    owning the row) every ``interval`` seconds until the ``with`` block ends, so that one long
    step is never mistaken for a dead worker."""

    def __init__(self, touch: Callable[[], object], interval: float, name: str) -> None:
        self.touch = touch
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.touch()
        finally:
            connection.close()  # this thread's own connection
