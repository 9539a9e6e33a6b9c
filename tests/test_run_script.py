"""`make run` starts the worker and celery beat as two processes (scripts/workers.sh): one beat
per checkout even when an earlier run left one behind, and a killed worker takes its beat with
it instead of leaving it to run on under PID 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from ftportal.models import WorkerPresence
from tests.conftest import REPO, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
QUEUE = "run-script-test"
START_TIMEOUT_S = 90


def test_run_sh_starts_beat_beside_the_worker_not_inside_it():
    run = (REPO / "scripts" / "run.sh").read_text()
    workers = (REPO / "scripts" / "workers.sh").read_text()
    assert "bash scripts/workers.sh &" in run and " -B" not in run
    assert " -B" not in workers
    assert "beat --schedule" in workers and '--pidfile "$beat_pidfile"' in workers


def environment(var_dir: Path) -> dict[str, str]:
    """The test database and broker, and a var dir of the test's own."""
    base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"{base_url}/{settings.DATABASES['default']['NAME']}",
        "FTPORTAL_VAR_DIR": str(var_dir),
        "FTPORTAL_WORKER_QUEUES": QUEUE,
        "FTPORTAL_WORKER_PRESENCE_SECONDS": "0.5",
    }


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names ``text`` (this test's var dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def beats(var_dir: Path) -> list[int]:
    return [
        pid
        for pid in processes_mentioning(str(var_dir))
        if " beat " in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    ]


@pytest.fixture
def var_dir(tmp_path: Path) -> Iterator[Path]:
    var = tmp_path / "var"
    var.mkdir()
    yield var
    # Whatever a failed test left behind: the worker names no path, its presence row does.
    workers = WorkerPresence.objects.filter(queues=[QUEUE]).values_list("pid", flat=True)
    for pid in [*processes_mentioning(str(var)), *workers]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start_workers(var_dir: Path) -> subprocess.Popen[bytes]:
    script = subprocess.Popen(
        ["bash", "scripts/workers.sh", "--without-gossip", "--without-mingle"],
        cwd=REPO,
        env=environment(var_dir),
        stderr=(var_dir / "script.log").open("wb"),
    )
    wait_until(
        lambda: (
            WorkerPresence.objects.filter(queues=[QUEUE], stopped_at=None).exists()
            and (var_dir / "celerybeat.pid").exists()
        ),
        timeout=START_TIMEOUT_S,
        what="the worker's presence and beat's pidfile",
    )
    return script


def test_a_beat_left_by_an_earlier_run_is_stopped_and_a_killed_worker_takes_beat_with_it(
    var_dir: Path,
):
    leftover = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--schedule",
            str(var_dir / "celerybeat-schedule"),
            "--pidfile",
            str(var_dir / "celerybeat.pid"),
        ],
        cwd=REPO,
        env=environment(var_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: (var_dir / "celerybeat.pid").exists(), timeout=60, what="the leftover beat")

    script = start_workers(var_dir)

    leftover.wait(timeout=10)  # stopped by the new run, not merely outnumbered
    assert "left running by an earlier run" in (var_dir / "script.log").read_text()
    wait_until(
        lambda: (var_dir / "celerybeat.pid").exists(), timeout=60, what="the new beat's pidfile"
    )
    assert len(beats(var_dir)) == 1
    assert beats(var_dir) != [leftover.pid]

    worker_pid = WorkerPresence.objects.get(queues=[QUEUE]).pid
    os.kill(worker_pid, signal.SIGKILL)  # as the review did: no chance to clean up

    assert script.wait(timeout=20) != 0
    wait_until(lambda: not beats(var_dir), timeout=20, what="beat to stop with its worker")
    assert "The Celery worker stopped" in (var_dir / "script.log").read_text()


def test_stopping_the_script_stops_the_worker_and_beat(var_dir: Path):
    script = start_workers(var_dir)
    worker_pid = WorkerPresence.objects.get(queues=[QUEUE]).pid
    time.sleep(1)  # past beat's start-up, so its TERM handler is in place

    script.terminate()  # what run.sh's trap does when `make run` ends

    script.wait(timeout=10)
    wait_until(
        lambda: not beats(var_dir) and not alive(worker_pid),
        timeout=30,
        what="the worker and beat to exit",
    )
    # A warm shutdown: the worker said it stopped.
    assert WorkerPresence.objects.get(queues=[QUEUE]).stopped_at is not None
