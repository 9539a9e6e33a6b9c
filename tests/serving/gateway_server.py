"""The gateway as applications meet it: the site's ASGI application under a real uvicorn
server, in a thread of the test process (so it reads the test database; tests that use it
commit their rows: ``transactional_db``), on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from fakes.chat_servers import DEFAULT_API_KEY

START_TIMEOUT_S = 20
# Where the gateway's process reads the fake OpenAI server's key (a hosted version's endpoint
# names this variable).
FAKE_CHAT_KEY_ENV = "FAKE_CHAT_KEY"


@pytest.fixture
def fake_chat_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake's key where this process reads it; no backend chat kept from another test."""
    from serving.backends import backends_forget

    monkeypatch.setenv(FAKE_CHAT_KEY_ENV, DEFAULT_API_KEY)
    backends_forget()
    yield
    backends_forget()


@contextmanager
def running_gateway() -> Iterator[str]:
    """The origin (``http://127.0.0.1:<port>``) of a uvicorn server running
    ``config.asgi:application``, stopped on leaving."""
    from config.asgi import application
    from serving.request_log import request_log_close

    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    # Its lifespan as in production: a clean stop writes the request log and closes the
    # backends' connections on the server's own loop.
    config = uvicorn.Config(application, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name="gateway", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway's uvicorn server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()
        # The log's writer thread stores what the requests queued and stops, closing its
        # database connection before the test's teardown truncates (or drops) the database.
        request_log_close()
