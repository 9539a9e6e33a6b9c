"""What every fake server does the same way: answer with a JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


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
