"""What keeps the gateway's own cost low (bench/gateway.py measures it), checked for behaviour:
resolutions kept a moment and forgotten on a change, one build of a backend's chat however many
first requests arrive at once, a middleware chain that stays async, the request log written at
the ASGI server's clean stop, and its queue's figures at /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient

from catalog.models import BaseModel
from ftportal.models import Project
from ftportal.roles import Role
from providers.base import ChatModel
from registry.models import Alias, ModelVersion
from registry.services import model_version_register
from serving import backends, generations, request_log
from serving.backends import backend_chat_model, backends_forget
from serving.models import RequestLog
from serving.plans import KEPT_PLAN_SECONDS, serving_plan, serving_plans_forget
from serving.request_log import RequestLogEntry, RequestLogWriter, request_logs_write
from tests.factories import frozen_version
from tests.threads import on_own_thread
from training.models import JobStatus, TrainingJob

NAME = "Ticket triage/production"


@pytest.fixture(autouse=True)
def nothing_kept() -> Iterator[None]:
    serving_plans_forget()
    backends_forget()
    yield
    serving_plans_forget()
    backends_forget()


def version(project: Project, lead: User, base_model: BaseModel) -> ModelVersion:
    job = TrainingJob.objects.create(
        project=project,
        dataset_version=frozen_version(project, lead),
        base_model=base_model,
        provider=base_model.provider,
        hyperparameters={"epochs": 1},
        model_name="triage",
        created_by=lead,
        status=JobStatus.SUCCEEDED,
    )
    return model_version_register(job=job, checkpoint=None, adapter_dir=f"/adapters/{job.pk}")


@pytest.fixture
def two_versions(
    project: Project, make_member: Callable[[Role], User], base_model: BaseModel
) -> tuple[ModelVersion, ModelVersion]:
    lead = make_member(Role.ML_LEAD)
    return version(project, lead, base_model), version(project, lead, base_model)


def point_production(at: ModelVersion) -> Alias:
    """As the registry moves an alias (``update_or_create``: a save, signals sent)."""
    alias, _ = Alias.objects.update_or_create(
        registered_model=at.registered_model, name="production", defaults={"model_version": at}
    )
    return alias


# --- resolutions ---------------------------------------------------------------------------------


def test_a_resolution_is_kept_for_the_ttl_then_read_again(
    project: Project, two_versions: tuple[ModelVersion, ModelVersion], settings: Any
) -> None:
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 1.0
    first, second = two_versions
    alias = point_production(first)
    assert serving_plan(project=project, name=NAME, now=100.0).resolution.version == first

    # Moved by another process (an UPDATE: no signal reaches this one).
    Alias.objects.filter(pk=alias.pk).update(model_version=second)

    assert serving_plan(project=project, name=NAME, now=100.9).resolution.version == first
    assert serving_plan(project=project, name=NAME, now=101.0).resolution.version == second


def test_a_change_saved_in_this_process_is_served_at_the_next_request(
    project: Project,
    two_versions: tuple[ModelVersion, ModelVersion],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 60.0
    first, second = two_versions
    point_production(first)
    assert serving_plan(project=project, name=NAME, now=100.0).resolution.version == first

    with django_capture_on_commit_callbacks(execute=True):
        point_production(second)

    assert serving_plan(project=project, name=NAME, now=100.1).resolution.version == second


def test_a_renamed_project_stops_serving_its_old_names_at_once(
    project: Project, two_versions: tuple[ModelVersion, ModelVersion], settings: Any
) -> None:
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 60.0
    point_production(two_versions[0])
    assert serving_plan(project=project, name=NAME, now=100.0).resolution.version == two_versions[0]
    # Renamed elsewhere (no signal here); this process's key object carries the new name.
    Project.objects.filter(pk=project.pk).update(name="Billing")
    project.refresh_from_db()

    from serving.model_names import OtherProjectModelName, UnknownModelName

    with pytest.raises((UnknownModelName, OtherProjectModelName)):
        serving_plan(project=project, name=NAME, now=100.1)


def test_a_ttl_of_zero_reads_the_rows_every_time(
    project: Project, two_versions: tuple[ModelVersion, ModelVersion], settings: Any
) -> None:
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 0
    first, second = two_versions
    alias = point_production(first)
    assert serving_plan(project=project, name=NAME, now=100.0).resolution.version == first
    Alias.objects.filter(pk=alias.pk).update(model_version=second)
    assert serving_plan(project=project, name=NAME, now=100.0).resolution.version == second


# --- plans kept under the plans' generation token (serving.generations) -------------------------


def another_process_commits_a_plan_change() -> str:
    """What ``serving_plans_changed`` does in another gateway process, seen from this one: the
    token in Redis is replaced (this process's kept plans are left as they are); the new one."""
    token = f"t{uuid.uuid4().hex}"
    url = generations.redis_url()
    assert url is not None, "these tests need the Redis cache (REDIS_URL)"
    redis.Redis.from_url(url).set(generations.cache_key(generations.PLANS), token)
    return token


def served(project: Project, *, generation: str | None, now: float) -> ModelVersion | None:
    """The version NAME serves to a request that saw ``generation``, at ``now``."""
    return serving_plan(
        project=project, name=NAME, generation=generation, now=now
    ).resolution.version


Kept = tuple[Alias, ModelVersion, ModelVersion, str]


@pytest.fixture
def production_kept(
    project: Project, two_versions: tuple[ModelVersion, ModelVersion], settings: Any
) -> Kept:
    """A TTL of 1 s, production at the first version, its plan read at 100 s under a token
    another process set: (the alias, the first version, the second, the token)."""
    settings.FTPORTAL_GATEWAY_NAME_TTL_SECONDS = 1.0
    first, second = two_versions
    alias = point_production(first)
    seen = another_process_commits_a_plan_change()
    assert served(project, generation=seen, now=100.0) == first
    return alias, first, second, seen


def test_a_plan_is_kept_past_the_ttl_while_the_generation_stays_and_read_at_its_change(
    project: Project, production_kept: Kept
) -> None:
    alias, first, second, seen = production_kept

    Alias.objects.filter(pk=alias.pk).update(model_version=second)  # no signal reaches here
    # Thirty TTLs later, under the same token: still the kept plan (no rows read).
    assert served(project, generation=seen, now=130.0) == first

    changed = another_process_commits_a_plan_change()
    assert served(project, generation=changed, now=130.1) == second


def test_a_plan_kept_under_a_generation_is_read_again_after_its_bound(
    project: Project, production_kept: Kept
) -> None:
    """A change whose token Redis lost (a restart between two reads) is served all the same,
    within KEPT_PLAN_SECONDS."""
    alias, first, second, seen = production_kept
    Alias.objects.filter(pk=alias.pk).update(model_version=second)

    just_before = 100.0 + KEPT_PLAN_SECONDS - 0.1
    assert served(project, generation=seen, now=just_before) == first
    bound = 100.0 + KEPT_PLAN_SECONDS
    assert served(project, generation=seen, now=bound) == second


def test_a_request_that_saw_no_generation_is_served_a_plan_no_older_than_the_ttl(
    project: Project, production_kept: Kept
) -> None:
    """Redis could not be asked while admitting it: the TTL is the bound, as without Redis."""
    alias, first, second, seen = production_kept
    Alias.objects.filter(pk=alias.pk).update(model_version=second)

    assert served(project, generation=None, now=100.9) == first
    assert served(project, generation=None, now=101.0) == second


def test_a_committed_change_to_what_a_name_serves_replaces_the_plans_token(
    project: Project,
    two_versions: tuple[ModelVersion, ModelVersion],
    django_capture_on_commit_callbacks: Any,
) -> None:
    url = generations.redis_url()
    assert url is not None, "these tests need the Redis cache (REDIS_URL)"
    before = another_process_commits_a_plan_change()
    with django_capture_on_commit_callbacks(execute=True):
        point_production(two_versions[1])
    [after] = generations.generations_read(url, generations.PLANS)
    assert after not in ("", before)


# --- a backend's chat: built once ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_first_requests_arriving_together_build_the_chat_once(
    two_versions: tuple[ModelVersion, ModelVersion], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = ModelVersion.objects.select_related(
        "registered_model__project", "base_model__endpoint"
    ).get(pk=two_versions[0].pk)
    entered, release = threading.Event(), threading.Event()
    builds: list[ChatModel] = []

    def slow_build(**_: object) -> ChatModel:
        entered.set()
        assert release.wait(30), "the test never released the build"
        chat: Any = object()
        builds.append(chat)
        return chat

    monkeypatch.setattr(backends, "fine_tuned_chat_model", slow_build)
    got: list[ChatModel] = []

    def ask() -> None:
        got.append(backend_chat_model(served))

    askers = [threading.Thread(target=ask) for _ in range(8)]
    for asker in askers:
        asker.start()
    assert entered.wait(30)
    release.set()
    for asker in askers:
        asker.join(30)

    assert len(builds) == 1
    assert got == builds * 8


# --- the middleware chain and the server's lifespan ----------------------------------------------


def test_every_middleware_keeps_an_async_request_on_the_event_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One sync-only middleware makes Django run the chain of every ASGI request (the
    gateway's) in a thread of its own; Django logs each such adaptation."""
    caplog.set_level(logging.DEBUG, logger="django.request")
    handler = ASGIHandler()
    handler.load_middleware(is_async=True)

    adapted = [record.getMessage() for record in caplog.records if "adapted" in record.getMessage()]
    assert adapted == []


@pytest.mark.django_db
def test_a_static_file_is_served_in_an_async_chain(tmp_path: Any, settings: Any) -> None:
    """As with DEBUG off after collectstatic (tests/test_auth_deploy_settings.py), over ASGI."""
    from pathlib import Path

    from django.core.management import call_command

    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)

    async def fetched() -> tuple[int, bytes]:
        response: Any = await AsyncClient().get("/static/js/actions.js")
        return response.status_code, b"".join(response.streaming_content)

    status, body = on_own_thread(lambda: asyncio.run(fetched()))

    assert status == 200
    assert body == (Path(__file__).resolve().parents[2] / "static/js/actions.js").read_bytes()


def entry(project: Project, number: int) -> RequestLogEntry:
    return RequestLogEntry(
        project_id=project.pk,
        requested_model=NAME,
        messages=[{"role": "user", "content": f"question {number}"}],
        status="ok",
        latency_ms=5,
    )


@pytest.mark.django_db(transaction=True)
def test_the_servers_clean_stop_writes_the_queued_rows(project: Project, settings: Any) -> None:
    """uvicorn ends on SIGTERM by raising it again: no exit hook runs, the lifespan's
    shutdown does."""
    from config.asgi import application

    settings.FTPORTAL_REQUEST_LOG_BATCH_MS = 60_000
    settings.FTPORTAL_REQUEST_LOG_BATCH_ROWS = 100_000
    request_log.request_log_close()  # a writer with these settings
    for number in range(7):
        assert request_log.request_log_enqueue(entry(project, number))

    async def serve_lifespan() -> list[str]:
        events = asyncio.Queue[dict[str, str]]()
        for kind in ("lifespan.startup", "lifespan.shutdown"):
            events.put_nowait({"type": kind})
        sent: list[str] = []

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])

        await application({"type": "lifespan"}, events.get, send)
        return sent

    assert on_own_thread(lambda: asyncio.run(serve_lifespan())) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert RequestLog.objects.count() == 7


# --- /healthz ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_healthz_shows_the_request_logs_queue_and_its_dropped_rows(
    project: Project, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, release = threading.Event(), threading.Event()

    def stuck_write(entries: list[RequestLogEntry]) -> int:
        writing.set()
        assert release.wait(30), "the test never released the write"
        return request_logs_write(entries)

    # This process's writer: room for 2 rows, one row a batch, its first write held.
    writer = RequestLogWriter(queue_rows=2, batch_rows=1, batch_ms=10, write=stuck_write)
    monkeypatch.setattr(request_log, "_writer", writer)
    try:
        assert request_log.request_log_enqueue(entry(project, 0))
        assert writing.wait(30)  # row 0 is being written; the queue is empty again
        accepted = [request_log.request_log_enqueue(entry(project, n)) for n in range(1, 6)]
        assert accepted == [True, True, False, False, False]

        body = json.loads(client.get("/healthz").content)

        assert body["request_log"] == {"queued": 3, "queue_rows": 2, "dropped": 3}
    finally:
        release.set()
        writer.close(timeout=30)
    assert RequestLog.objects.count() == 3
    assert json.loads(client.get("/healthz").content)["request_log"]["queued"] == 0


def asgi_get(path: str) -> tuple[int, dict[str, str]]:
    """A GET through the site's ASGI application (config.asgi), as uvicorn would send it."""
    from config.asgi import application

    async def call() -> tuple[int, dict[str, str]]:
        start: dict[str, Any] = {}
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # The client stays connected: Django cancels this wait once it has answered.
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8001),
        }
        await application(scope, receive, send)
        headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
        return int(start["status"]), headers

    return on_own_thread(lambda: asyncio.run(call()))


@pytest.mark.django_db(transaction=True)
def test_the_gateways_paths_skip_the_sites_middleware_and_the_pages_keep_it() -> None:
    from django.conf import settings

    from config.asgi import GATEWAY_MIDDLEWARE

    status, headers = asgi_get("/v1/models")
    assert status == 401  # no key: the gateway's own answer
    assert "x-frame-options" not in headers  # the site's page headers are not added

    status, headers = asgi_get("/healthz")
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert settings.MIDDLEWARE != GATEWAY_MIDDLEWARE  # the site's list, put back


# --- the server's start ---------------------------------------------------------------------------

LIFESPAN_PROBE = """
import asyncio, gc, json, sys

import config.asgi

before = {"anthropic": "anthropic" in sys.modules, "openai": "openai" in sys.modules}

async def started():
    messages = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        messages.put_nowait({"type": kind})
    seen = {}

    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            seen["anthropic"] = "anthropic" in sys.modules
            seen["openai"] = "openai" in sys.modules
            seen["frozen"] = gc.get_freeze_count()

    await config.asgi.application({"type": "lifespan"}, messages.get, send)
    return seen

print(json.dumps({"before": before, "started": asyncio.run(started())}))
"""


def test_the_gateway_imports_what_requests_use_before_it_starts() -> None:
    """Imported by a first request instead, the providers' SDKs came in while traffic was
    served, and the full collections after them stopped a worker for 20 to 70 ms."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    probe = subprocess.run(
        [sys.executable, "-c", LIFESPAN_PROBE],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["before"] == {"anthropic": False, "openai": False}  # not at import
    assert seen["started"]["anthropic"] and seen["started"]["openai"]  # before serving
    assert seen["started"]["frozen"] > 0  # and frozen with the rest (ftportal.collector)
