"""The real WSGI application, plus a header with the CPU time the worker spent on the request.

Used by bench/review_load.py only. CPU time hardly changes when other work shares the machine,
while wall-clock latency does, so the two side by side show what is ours and what is the wait.
Django builds the whole (non-streamed) response before it calls start_response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from config.wsgi import application as django_application

CPU_HEADER = "X-Server-Cpu-Ms"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    started = time.process_time()

    def timed_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        spent_ms = (time.process_time() - started) * 1000
        return start_response(status, [*headers, (CPU_HEADER, f"{spent_ms:.2f}")], *args)

    return django_application(environ, timed_start_response)
