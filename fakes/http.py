"""What every fake server does the same way: serve on 127.0.0.1 from a thread for the length of a
test, read the request, answer with a JSON body, and queue the failures and stalls a test asks
for. Each fake adds only its API: routes, JSON shapes, error envelopes and counters."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Reply:
    """A JSON answer, or, with ``events``, a stream of server-sent events (each JSON, then
    ``[DONE]``). With ``hold_after``, the stream waits on ``gate`` after that many events (what
    a client has before the server has finished); with ``break_after``, the connection is
    closed after that many (a server that died mid-answer)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Any] | None = None
    hold_after: int | None = None
    gate: threading.Event | None = None
    break_after: int | None = None


@dataclass(frozen=True)
class InjectedFailure:
    """An error a test asked for; each fake wraps it in its API's error envelope."""

    status: int
    headers: dict[str, str]
    message: str
    code: str | None = None


def send_json(handler: BaseHTTPRequestHandler, reply: Reply, *, keep_alive: bool = False) -> None:
    """The reply as JSON; the connection is closed after it unless ``keep_alive``."""
    payload = json.dumps(reply.body).encode()
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        if not keep_alive:
            handler.send_header("Connection", "close")
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout), as real clients do


def send_events(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    """The reply's events as ``text/event-stream``, each flushed as it is written; the body
    ends when the connection closes (no length is known beforehand)."""
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for sent, event in enumerate([*(reply.events or []), "[DONE]"], start=1):
            data = event if isinstance(event, str) else json.dumps(event)
            handler.wfile.write(f"data: {data}\n\n".encode())
            handler.wfile.flush()
            if sent == reply.break_after:
                break
            if sent == reply.hold_after and reply.gate is not None:
                reply.gate.wait(timeout=30)
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True


class JSONHandler(BaseHTTPRequestHandler):
    """The request side every fake's handler shares: HTTP/1.1, the raw body, lower-case header
    names, a JSON reply, and no log lines (tests read the fakes' counters instead)."""

    protocol_version = "HTTP/1.1"

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def lower_case_headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def send(self, reply: Reply) -> None:
        if reply.events is not None:
            send_events(self, reply)
        else:
            send_json(self, reply, keep_alive=not self.close_connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BacklogServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when 50 clients connect at once.
    request_queue_size = 256
    daemon_threads = True


class FakeServer:
    """A fake's life: a threaded HTTP server on a free port of 127.0.0.1, started and stopped
    with the test (``with Fake() as fake:``), and the queues of injected failures and stalls that
    its handler threads take from under ``_lock``. A subclass sets its own attributes, then calls
    ``super().__init__`` with its handler class (which knows the fake)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._failures: deque[InjectedFailure] = deque()
        self._stalls: deque[float] = deque()
        self._http = _BacklogServer(("127.0.0.1", 0), handler)
        # A short poll interval: stop() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``; each fake's ``base_url`` adds what its SDK expects."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled and delayed requests
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _queue_failures(self, count: int, failure: InjectedFailure) -> None:
        with self._lock:
            self._failures.extend([failure] * count)

    def _queue_stalls(self, count: int, seconds: float) -> None:
        with self._lock:
            self._stalls.extend([seconds] * count)
