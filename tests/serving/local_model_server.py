"""The local model server as ``make run`` starts it: ``python -m providers.local.serve`` in a
process of its own (so a test can kill it), on a free port of 127.0.0.1, with the test
settings' model cache, reading adapters from ``adapter_root``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
# Loading the 135M model takes seconds; with both cores busy, many more.
START_TIMEOUT_S = 240


@dataclass(frozen=True)
class LocalModelServer:
    origin: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])

    def metrics(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.origin}/metrics", timeout=30) as answer:
            metrics: dict[str, Any] = json.loads(answer.read())
        return metrics


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(origin: str) -> bool:
    try:
        with urllib.request.urlopen(f"{origin}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextmanager
def running_local_model_server(
    adapter_root: Path, *, window_ms: float = 25.0, max_batch: int = 16, port: int | None = None
) -> Iterator[LocalModelServer]:
    """The server, stopped on leaving; on ``port`` when given (a restart where the gateway
    still looks for it), else on a free one."""
    port = _free_port() if port is None else port
    command = [
        sys.executable, "-m", "providers.local.serve", "--port", str(port),
        "--model-cache", str(settings.FTPORTAL_MODEL_CACHE), "--adapter-root", str(adapter_root),
        "--window-ms", str(window_ms), "--max-batch", str(max_batch),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(origin):
            if process.poll() is not None:
                raise RuntimeError(f"the local model server exited ({process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError("the local model server did not start")
            time.sleep(0.2)
        yield LocalModelServer(origin, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
