"""Issue 13, item 2, on the embedded default that `make run` uses: SQLite and the filesystem
Celery broker, a real web server and a real worker, each in its own process.

There the issue measured it: a 1.5 MB gzip of 1.5 GiB of newlines kept the upload request busy
for 9 to 10 minutes inside one transaction, which on SQLite holds the one write lock, so every
other write (uploads, reviewer comments) waited 30 s and failed with a 500 "database is
locked". Now the upload is only queued, the worker parses without holding the lock and stops at
the lines cap, and reviewers keep writing the whole time.

The app runs in a temporary folder with none of the test settings: no DATABASE_URL and no
CELERY_BROKER_URL, so config.settings picks SQLite and the filesystem broker itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .bombs import gzip_of_newlines

pytestmark = pytest.mark.worker

REPO = Path(__file__).resolve().parents[2]
# A request that answers later than this is a stall; generous for a busy two-core machine.
QUICK_S = 5.0
WRITE_EVERY_S = 0.5
IMPORT_ENDS_WITHIN_S = 60.0
START_TIMEOUT_S = 60.0
# The variables that would switch the app off its embedded default, or into the test settings.
NOT_EMBEDDED = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")

SETUP = """
import json
from django.contrib.auth.models import User
from datasets.models import Dataset, Example
from ftportal.models import Membership, Project
from ftportal.roles import Role

project = Project.objects.create(name="Ticket triage")
for name, role in (("lead", Role.ML_LEAD), ("reviewer", Role.REVIEWER)):
    user = User.objects.create_user(username=name, password="embedded-pass-123")
    Membership.objects.create(project=project, user=user, role=role)
dataset = Dataset.objects.create(project=project, name="tickets")
example = Example.objects.create(
    dataset=dataset,
    messages=[
        {"role": "user", "content": "Printer jammed"},
        {"role": "assistant", "content": "hardware"},
    ],
)
print(json.dumps({"project": project.pk, "dataset": dataset.pk, "example": example.pk}))
"""

# Counts what the import left, hidden rows included (the Example manager hides pending ones).
LEFT_BY_IMPORT = """
from datasets.models import Example
print(Example._base_manager.filter(import_batch_id={batch_id}).count())
"""


@dataclass(frozen=True)
class EmbeddedApp:
    base_url: str
    env: dict[str, str]
    var_dir: Path
    ids: dict[str, int]

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def api(self, path: str) -> str:
        return f"{self.base_url}/api/projects/{self.ids['project']}/{path}"

    def token(self, username: str) -> dict[str, str]:
        response = requests.post(
            f"{self.base_url}/api/auth/token/",
            json={"username": username, "password": "embedded-pass-123"},
            timeout=QUICK_S,
        )
        assert response.status_code in (200, 201), response.text
        return {"Authorization": f"Token {response.json()['token']}"}


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in NOT_EMBEDDED}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # As scripts/run.sh runs it: DEBUG off, plain http on one's own machine.
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "embedded-default-test-key-not-a-secret-0123456789",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        # Everything the app writes goes under the temporary folder: the SQLite file, the
        # uploads, the broker's queue folders and the file cache all live under the var dir.
        "FTPORTAL_VAR_DIR": str(var_dir),
        "FTPORTAL_UPLOADS_DIR": str(var_dir / "uploads"),
        "FTPORTAL_ARTIFACTS_DIR": str(var_dir / "artifacts"),
        "DJANGO_STATIC_ROOT": str(var_dir / "static"),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(
    ready: Callable[[], bool], *, process: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.RequestException:
        return False
    return True


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    sys.stderr.write(f"\n--- {log.name} (tail) ---\n{log.read_text()[-3000:]}\n")


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    bomb = gzip_of_newlines()
    assert 1_400_000 < len(bomb) < 1_700_000  # the 1.5 MB
    return bomb


@pytest.fixture
def embedded_app(tmp_path: Path) -> Iterator[EmbeddedApp]:
    """Migrated SQLite with a lead, a reviewer and a pending example; `runserver` and a Celery
    worker on the filesystem broker, as `make run` starts them. Both stop even on failure."""
    var_dir = tmp_path / "var"
    env = embedded_env(var_dir)
    port = free_port()
    app = EmbeddedApp(base_url=f"http://127.0.0.1:{port}", env=env, var_dir=var_dir, ids={})
    app.manage("migrate", "--no-input", "-v0")
    # The last line: `shell` may first say what it imported on its own.
    app.ids.update(json.loads(app.manage("shell", "-c", SETUP).strip().splitlines()[-1]))
    assert (var_dir / "ftportal.sqlite3").exists()  # SQLite, in the temporary folder

    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        worker_log = tmp_path / "worker.log"
        worker = start(
            [
                *(sys.executable, "-m", "celery", "-A", "config", "worker"),
                *("--pool=solo", "--concurrency=1", "--queues=default,training,inference"),
                *("--without-gossip", "--without-mingle", "--loglevel=INFO"),
            ],
            env=env,
            log=worker_log,
        )
        processes.append((worker, worker_log))
        server_log = tmp_path / "server.log"
        server = start(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env,
            log=server_log,
        )
        processes.append((server, server_log))
        wait_for(
            lambda: b" ready." in worker_log.read_bytes(),
            process=worker,
            log=worker_log,
            what="the Celery worker",
        )
        assert b"filesystem://" in worker_log.read_bytes()  # the embedded broker
        wait_for(
            lambda: answers(f"{app.base_url}/healthz"),
            process=server,
            log=server_log,
            what="the web server",
        )
        yield app
    finally:
        for process, log in processes:
            stop(process, log)


def test_a_gzip_bomb_on_sqlite_is_queued_ended_at_the_lines_cap_and_writes_never_lock(
    embedded_app: EmbeddedApp, gzip_bomb: bytes
) -> None:
    app = embedded_app
    lead, reviewer = app.token("lead"), app.token("reviewer")
    comments_url = app.api(f"examples/{app.ids['example']}/comments/")

    started = time.monotonic()
    upload = requests.post(
        app.api(f"datasets/{app.ids['dataset']}/imports/"),
        headers=lead,
        files={"file": ("bomb.jsonl.gz", gzip_bomb, "application/gzip")},
        timeout=2 * QUICK_S,  # the old code kept this request busy for 9 to 10 minutes
    )
    assert time.monotonic() - started < QUICK_S
    assert upload.status_code == 202, upload.text
    batch_id = upload.json()["id"]
    batch_url = app.api(f"imports/{batch_id}/")

    # A reviewer comments every half second for as long as the import is queued or running
    # (and at once when the worker takes it); each must succeed quickly: the old code answered
    # 500 "database is locked" after 30 s.
    comments = comments_while_running = 0
    last_comment = 0.0
    deadline = time.monotonic() + IMPORT_ENDS_WITHIN_S
    while True:
        batch = requests.get(batch_url, headers=lead, timeout=QUICK_S)
        assert batch.status_code == 200, batch.text
        status = batch.json()["status"]
        if status not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, f"the import is still {status}"
        first_seen_running = status == "running" and comments_while_running == 0
        if first_seen_running or time.monotonic() - last_comment >= WRITE_EVERY_S:
            last_comment = time.monotonic()
            comment = requests.post(
                comments_url, headers=reviewer, json={"body": f"still here {comments}"}, timeout=30
            )
            took = time.monotonic() - last_comment
            assert comment.status_code == 201, (status, comment.status_code, comment.text[:500])
            assert took < QUICK_S, f"a comment took {took:.1f} s while the import was {status}"
            comments += 1
            if status == "running":
                comments_while_running += 1
        time.sleep(0.1)

    assert comments_while_running > 0  # the worker really was at it meanwhile
    final = batch.json()
    assert final["status"] == "failed", final
    assert final["failure_message"] == (
        "bomb.jsonl.gz: line 2000001: the file has more than 2000000 lines (blank lines count),"
        " the limit of one import; split it into smaller files; nothing was imported."
    )
    # The upload is gone (uploads also hold the web server's temporary files: none is left).
    assert [p.name for p in (app.var_dir / "uploads").rglob("*") if p.is_file()] == []
    # Nothing was imported, not even hidden rows; every comment was stored.
    left = app.manage("shell", "-c", LEFT_BY_IMPORT.format(batch_id=batch_id))
    assert left.strip().splitlines()[-1] == "0"
    listed = requests.get(comments_url, headers=reviewer, timeout=QUICK_S)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    stored = body["results"] if isinstance(body, dict) else body
    assert len(stored) == comments
