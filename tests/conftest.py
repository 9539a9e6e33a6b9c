"""Shared fixtures: users in each role (an ML lead among them), a project with a dataset, and a
real Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from catalog.models import BaseModel, Provider
from datasets.models import Dataset
from ftportal.models import Membership, Project
from ftportal.roles import Role

REPO = Path(__file__).resolve().parent.parent
WORKER_START_TIMEOUT_S = 90
WORKER_QUEUES = ("default", "training", "inference")


@pytest.fixture
def project(db: None) -> Project:
    return Project.objects.create(name="Ticket triage", description="test project")


@pytest.fixture
def make_member(project: Project) -> Callable[[Role], User]:
    def make(role: Role, *, target: Project | None = None) -> User:
        user = User.objects.create_user(
            username=f"{role.value}-{User.objects.count()}", password="pw"
        )
        Membership.objects.create(project=target or project, user=user, role=role)
        return user

    return make


@pytest.fixture
def lead(make_member: Callable[..., User]) -> User:
    return make_member(Role.ML_LEAD)


@pytest.fixture
def dataset(project: Project) -> Dataset:
    return Dataset.objects.create(project=project, name="tickets")


@pytest.fixture
def base_model(db: None) -> BaseModel:
    # Transactional tests flush the seeded catalog, so make sure the row exists.
    model, _ = BaseModel.objects.get_or_create(
        key="smollm2-135m-instruct",
        defaults={
            "display_name": "SmolLM2-135M-Instruct",
            "provider": Provider.LOCAL,
            "parameter_count": 135_000_000,
        },
    )
    return model


@pytest.fixture(autouse=True)
def unsent_tasks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tasks a test queued, recorded instead of sent unless the test runs a
    worker (it asks for `celery_worker_process` or is marked `worker`).

    Once an earlier test has started the session's worker it stays alive, so a task sent by a
    test that wanted none would run there against rows the test's teardown is truncating, and
    the two can deadlock ("couldn't be flushed")."""
    sent: list[str] = []
    if _uses_session_worker(request.node):
        return sent

    def record(task: Any, *args: Any, **kwargs: Any) -> None:
        sent.append(task.name)

    monkeypatch.setattr("celery.app.task.Task.apply_async", record)
    return sent


def _broker() -> tuple[Any, str]:
    """A Redis client on the session's broker, and the key prefix of this run's messages."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return client, str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"])


def _flush_broker() -> None:
    """Drop this run's leftover messages, leaving other runs' keys alone."""
    client, prefix = _broker()
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def start_celery_worker(
    log_path: Path,
    *,
    queues: str = ",".join(WORKER_QUEUES),
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    private_broker: bool = False,
) -> subprocess.Popen[bytes]:
    """A real worker in its own process, on Redis, writing to the test database; returns once
    it says it is ready. With ``private_broker`` it sends and takes messages under a key prefix
    of its own, so the session's worker (alive once an earlier test started it) cannot take
    what this one's beat or reaper queues: a test that times heartbeats needs its own worker
    to run the job."""
    test_db = settings.DATABASES["default"]["NAME"]
    base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"{base_url}/{test_db}",
        **(extra_env or {}),
    }
    if private_broker:
        prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
        env["FTPORTAL_TEST_BROKER_PREFIX"] = f"{prefix}private-{uuid.uuid4().hex[:12]}:"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={queues}",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while b" ready." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    return process


def stop_celery_worker(process: subprocess.Popen[bytes], log_path: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    sys.stderr.write(
        f"\n--- worker log tail ({log_path.name}) ---\n{log_path.read_text()[-3000:]}\n"
    )


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """The session's worker on all three queues."""
    _flush_broker()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_celery_worker(log_path)
    _session_worker.append(process)
    yield process
    _session_worker.clear()
    stop_celery_worker(process, log_path)


# The session's worker once a test has started it: tests that used it wait, before their
# teardown truncates the tables, until it has finished what they queued.
_session_worker: list[subprocess.Popen[bytes]] = []
WORKER_IDLE_TIMEOUT_S = 180


def _worker_is_idle() -> bool:
    """Nothing waits in the session's queues and the worker says it runs and holds no task.
    Its pool is solo, so it answers only between tasks: no reply means it is busy."""
    from config.celery import app

    client, prefix = _broker()
    if any(client.llen(f"{prefix}{queue}") for queue in WORKER_QUEUES):
        return False
    inspect = app.control.inspect(timeout=1.0, limit=1)
    for tasks in (inspect.active(), inspect.reserved()):
        if not tasks or any(tasks.values()):
            return False
    return True


def _uses_session_worker(item: pytest.Item) -> bool:
    return "celery_worker_process" in getattr(item, "fixturenames", ()) or bool(
        item.get_closest_marker("worker")
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Before fixtures are torn down: a task still running when a transactional test flushes
    its tables can deadlock with the TRUNCATE ("couldn't be flushed"), and fail a test that
    had passed. So wait for the worker to go idle; a task that outlives the wait is reported,
    and the flush goes ahead."""
    if not _session_worker or _session_worker[0].poll() is not None:
        return
    if not _uses_session_worker(item):
        return
    deadline = time.monotonic() + WORKER_IDLE_TIMEOUT_S
    while not _worker_is_idle():
        if time.monotonic() > deadline:
            sys.stderr.write(f"\n{item.nodeid}: the worker was still busy after its test\n")
            return
        time.sleep(0.2)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)
