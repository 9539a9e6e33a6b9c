"""POST /v1/feedback and POST /v1/events through a real uvicorn server: stored against an
answer just given (its log row maybe not stored yet) or one stored long ago, feedback replaced
when posted again, and every refusal in OpenAI's error shape: no key, a revoked key, another
project's or an unknown request id, each bad field named. Also the /v1/ table's own 404 and
405 in that shape."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import openai
import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from django.utils import timezone

from fakes.chat_servers import FakeOpenAIChatServer, fake_openai_chat_fixture  # noqa: F401
from ftportal.models import Project
from ftportal.roles import Role
from serving import outcomes
from serving.models import Feedback, OutcomeEvent, RequestLog, RequestStatus
from serving.request_log import (
    RequestLogEntry,
    request_log_close,
    request_log_dropped_count,
    request_log_flush,
    request_logs_write,
)
from serving.services import application_key_create, application_key_revoke
from tests.threads import on_own_thread

from .gateway_server import (
    fake_chat_key,  # noqa: F401
    running_gateway,
)
from .test_gateway import QUESTION, client, hosted_version, promote

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_chat_key")]
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def gateway() -> Iterator[str]:
    with running_gateway() as origin:
        yield origin


@pytest.fixture
def key(project: Project, lead: User) -> str:
    return application_key_create(project=project, user=lead, name="support bot").plaintext


def post(origin: str, path: str, body: Any, key: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{origin}/v1/{path}", data=data, headers=headers, timeout=30)


def stored_request(project: Project, request_id: str) -> None:
    """A row of ``project``'s log, as the writer stores it (not queued by this process)."""
    request_logs_write(
        [
            RequestLogEntry(
                project_id=project.pk,
                requested_model="Ticket triage/production",
                messages=[{"role": "user", "content": "hello"}],
                output="hi",
                status=RequestStatus.OK,
                latency_ms=5,
                request_id=request_id,
                created_at=timezone.now(),
            )
        ]
    )


def refused(response: requests.Response, status: int, param: str | None) -> str:
    """The error's message, after checking its status, OpenAI's shape and the field named."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert error["param"] == param
    if param is not None:
        assert error["message"].startswith(f"{param}: ")
    return str(error["message"])


def test_feedback_and_an_event_on_an_answer_given_a_moment_ago(
    project: Project,
    lead: User,
    key: str,
    fake_openai_chat: FakeOpenAIChatServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    # A batch window longer than the test, so the answer's row is still queued when the
    # feedback names it: the process's own record of what it answered must vouch for it.
    request_log_close()
    monkeypatch.setattr(settings, "FTPORTAL_REQUEST_LOG_BATCH_MS", 600_000)
    with running_gateway() as origin:
        answer = client(origin, key).chat.completions.create(
            model="Ticket triage/production", messages=QUESTION, user="customer-7"
        )
        assert not RequestLog.objects.filter(request_id=answer.id).exists()

        first = post(
            origin,
            "feedback",
            {
                "request_id": answer.id,
                "thumbs": "down",
                "comment": "wrong team",
                "correction": '{"team": "billing"}',
                "user": "customer-7",
            },
            key,
        )
        event = post(origin, "events", {"request_id": answer.id, "name": "ticket_reopened"}, key)
        valued = post(
            origin, "events", {"request_id": answer.id, "name": "refund", "value": 42.5}, key
        )
        again = post(origin, "feedback", {"request_id": answer.id, "score": 0.75}, key)

    assert first.status_code == 201
    body = first.json()
    assert body["object"] == "feedback" and body["request_id"] == answer.id
    assert (body["score"], body["thumbs"]) == (0.0, "down")
    assert (body["comment"], body["correction"]) == ("wrong team", '{"team": "billing"}')
    assert body["user"] == "customer-7"
    assert first.headers["x-ratelimit-limit-requests"]
    assert event.status_code == 201 and event.json()["value"] == 1.0
    assert valued.status_code == 201 and valued.json()["value"] == 42.5
    # Posted again: replaced, not added; what was left out is cleared.
    assert again.status_code == 200
    assert (again.json()["score"], again.json()["thumbs"], again.json()["correction"]) == (
        0.75,
        None,
        "",
    )
    stored = Feedback.objects.get()
    assert (stored.project, stored.request_id, stored.score) == (project, answer.id, 0.75)
    assert stored.application_key is not None and stored.application_key.project == project
    events = OutcomeEvent.objects.order_by("id")
    assert [(e.project, e.request_id, e.name, e.value) for e in events] == [
        (project, answer.id, "ticket_reopened", 1.0),
        (project, answer.id, "refund", 42.5),
    ]
    # The row was stored on the gateway's clean shutdown, with the feedback posted before it
    # (the browser's feedback filter reads it there).
    row = RequestLog.objects.get(request_id=answer.id)
    assert row.project == project
    assert (row.feedback_score, row.feedback_corrected) == (0.75, False)


def test_feedback_on_a_request_stored_long_ago(gateway: str, project: Project, key: str) -> None:
    stored_request(project, "req_stored")

    answer = post(gateway, "feedback", {"request_id": "req_stored", "thumbs": "up"}, key)

    assert answer.status_code == 201 and answer.json()["thumbs"] == "up"
    assert Feedback.objects.get().score == 1.0


def test_a_request_another_process_stores_while_the_feedback_waits_is_accepted(
    gateway: str, project: Project, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind several gateway processes the answer may come from another one, whose writer
    stores the row within its batch window: the feedback looks once more after that wait."""

    async def other_process_stores_the_row() -> None:
        await outcomes._in_thread(lambda: stored_request(project, "req_elsewhere"))

    monkeypatch.setattr(outcomes, "_stored_elsewhere_wait", other_process_stores_the_row)

    answer = post(gateway, "feedback", {"request_id": "req_elsewhere", "thumbs": "up"}, key)

    assert answer.status_code == 201
    assert Feedback.objects.get().request_id == "req_elsewhere"


def test_keys_that_are_missing_wrong_or_revoked_get_401_and_store_nothing(
    gateway: str, project: Project, lead: User, key: str
) -> None:
    stored_request(project, "req_stored")
    feedback = {"request_id": "req_stored", "thumbs": "up"}
    event = {"request_id": "req_stored", "name": "resolved"}
    revoked = application_key_create(project=project, user=lead, name="old bot")
    application_key_revoke(key=revoked.key, user=lead)

    for path, body in (("feedback", feedback), ("events", event)):
        assert refused(post(gateway, path, body, None), 401, None)
        assert refused(post(gateway, path, body, "ftp_000000000000." + "x" * 43), 401, None)
        message = refused(post(gateway, path, body, revoked.plaintext), 401, None)
        assert "revoked" in message
        # Bad fields are not even read without a key: 401, not 400.
        assert refused(post(gateway, path, b"{not json", None), 401, None)

    assert not Feedback.objects.exists() and not OutcomeEvent.objects.exists()


def test_a_key_over_its_rate_limit_gets_429_here_too(
    gateway: str, project: Project, lead: User
) -> None:
    stored_request(project, "req_stored")
    limited = application_key_create(
        project=project, user=lead, name="slow bot", rate_limit_per_minute=1
    ).plaintext
    if time.time() % 60 > 55:  # the limit counts per clock minute: start a new one
        time.sleep(61 - time.time() % 60)

    assert post(gateway, "events", {"request_id": "req_stored", "name": "a"}, limited).ok
    over = post(gateway, "feedback", {"request_id": "req_stored", "thumbs": "up"}, limited)

    refused(over, 429, None)
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert not Feedback.objects.exists()


def test_another_projects_request_and_an_unknown_one_are_the_same_404(
    gateway: str,
    project: Project,
    lead: User,
    key: str,
    fake_openai_chat: FakeOpenAIChatServer,
    make_member: Callable[..., User],
) -> None:
    other = Project.objects.create(name="Other team")
    other_lead = make_member(Role.ML_LEAD, target=other)
    promote(hosted_version(other, other_lead, fake_openai_chat, model_name="theirs"), other_lead)
    other_key = application_key_create(project=other, user=other_lead, name="theirs").plaintext
    # One answered a moment ago by this very process (the recent record) and one stored.
    theirs = client(gateway, other_key).chat.completions.create(
        model="Other team/production", messages=QUESTION
    )
    stored_request(other, "req_theirs_stored")

    for request_id in (theirs.id, "req_theirs_stored", "req_never_answered"):
        for path, body in (
            ("feedback", {"request_id": request_id, "thumbs": "down", "correction": "x"}),
            ("events", {"request_id": request_id, "name": "resolved"}),
        ):
            message = refused(post(gateway, path, body, key), 404, "request_id")
            assert request_id in message
            assert post(gateway, path, body, key).json()["error"]["code"] == "request_not_found"
    assert not Feedback.objects.exists() and not OutcomeEvent.objects.exists()
    # Their own key may.
    mine = post(gateway, "feedback", {"request_id": theirs.id, "thumbs": "up"}, other_key)
    assert mine.status_code == 201 and Feedback.objects.get().project == other


BAD_FEEDBACK: list[tuple[Any, str | None]] = [
    (b"{not json", None),
    ([1, 2], None),
    ({"thumbs": "up"}, "request_id"),
    ({"request_id": "", "thumbs": "up"}, "request_id"),
    ({"request_id": 7, "thumbs": "up"}, "request_id"),
    ({"request_id": "req_" + "a" * 60, "thumbs": "up"}, "request_id"),
    ({"request_id": "req_stored"}, "thumbs"),
    ({"request_id": "req_stored", "thumbs": "sideways"}, "thumbs"),
    ({"request_id": "req_stored", "thumbs": True}, "thumbs"),
    ({"request_id": "req_stored", "score": 1.5}, "score"),
    ({"request_id": "req_stored", "score": -0.1}, "score"),
    ({"request_id": "req_stored", "score": "1"}, "score"),
    ({"request_id": "req_stored", "score": True}, "score"),
    (b'{"request_id": "req_stored", "score": NaN}', "score"),
    ({"request_id": "req_stored", "score": 1, "thumbs": "up"}, "score"),
    ({"request_id": "req_stored", "thumbs": "up", "comment": 5}, "comment"),
    ({"request_id": "req_stored", "thumbs": "up", "comment": "x" * 10_001}, "comment"),
    ({"request_id": "req_stored", "thumbs": "up", "correction": ["a"]}, "correction"),
    ({"request_id": "req_stored", "thumbs": "up", "correction": "x" * 32_001}, "correction"),
    ({"request_id": "req_stored", "thumbs": "up", "user": "u" * 201}, "user"),
    ({"request_id": "req_stored", "thumb": "up"}, "thumb"),
]
BAD_EVENTS: list[tuple[Any, str | None]] = [
    (b"[]", None),
    ({"name": "resolved"}, "request_id"),
    ({"request_id": "req_stored"}, "name"),
    ({"request_id": "req_stored", "name": "  "}, "name"),
    ({"request_id": "req_stored", "name": "n" * 101}, "name"),
    ({"request_id": "req_stored", "name": "resolved", "value": "12"}, "value"),
    ({"request_id": "req_stored", "name": "resolved", "value": False}, "value"),
    (b'{"request_id": "req_stored", "name": "resolved", "value": Infinity}', "value"),
    ({"request_id": "req_stored", "name": "resolved", "amount": 3}, "amount"),
]


def test_each_bad_field_is_a_400_that_names_it(gateway: str, project: Project, key: str) -> None:
    stored_request(project, "req_stored")
    for path, cases in (("feedback", BAD_FEEDBACK), ("events", BAD_EVENTS)):
        for body, param in cases:
            response = post(gateway, path, body, key)
            refused(response, 400, param)
    assert not Feedback.objects.exists() and not OutcomeEvent.objects.exists()
    # The same request, well formed, is taken: the refusals were for the fields.
    assert post(gateway, "feedback", {"request_id": "req_stored", "score": 0}, key).ok
    assert post(gateway, "events", {"request_id": "req_stored", "name": "resolved"}, key).ok


def test_unknown_paths_and_wrong_methods_under_v1_answer_in_openais_shape(
    gateway: str, key: str
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    for method, path in (
        ("GET", "nothing"),
        ("POST", "nothing/here"),
        ("GET", ""),
        ("POST", "completions"),
    ):
        response = requests.request(method, f"{gateway}/v1/{path}", headers=auth, timeout=30)
        assert response.status_code == 404, (method, path)
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()["error"]) == ERROR_FIELDS
        assert response.json()["error"]["code"] == "unknown_url"

    for method, path, allowed in (
        ("GET", "feedback", "POST"),
        ("PUT", "events", "POST"),
        ("GET", "chat/completions", "POST"),
        ("POST", "models", "GET"),
        ("DELETE", "models", "GET"),
    ):
        response = requests.request(method, f"{gateway}/v1/{path}", headers=auth, timeout=30)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allowed
        error = response.json()["error"]
        assert set(error) == ERROR_FIELDS and error["code"] == "method_not_allowed"
        assert method in error["message"]


def test_a_signed_in_session_is_not_an_application_key(
    project: Project, make_member: Callable[..., User]
) -> None:
    """Only an application key authenticates under /v1/: a member's session (an admin's
    included) gets 401, and without a CSRF token nothing about the session matters."""
    stored_request(project, "req_stored")
    browser = DjangoClient(enforce_csrf_checks=True)
    browser.force_login(make_member(Role.ADMIN))
    for path, body in (
        ("feedback", {"request_id": "req_stored", "thumbs": "up"}),
        ("events", {"request_id": "req_stored", "name": "resolved"}),
    ):
        response = on_own_thread(
            partial(browser.post, f"/v1/{path}", body, content_type="application/json")
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert not Feedback.objects.exists() and not OutcomeEvent.objects.exists()


def test_a_user_id_longer_than_the_log_keeps_is_refused_not_dropped_with_its_batch(
    gateway: str, project: Project, lead: User, key: str, fake_openai_chat: FakeOpenAIChatServer
) -> None:
    """The chat's ``user`` and the feedback's are one id, bounded by the columns that keep
    them: a longer one would fail the log writer's whole batch, other requests' rows too."""
    promote(hosted_version(project, lead, fake_openai_chat), lead)
    api = client(gateway, key)
    with pytest.raises(openai.BadRequestError) as too_long:
        api.chat.completions.create(
            model="Ticket triage/production", messages=QUESTION, user="u" * 201
        )
    assert too_long.value.param == "user"
    answer = api.chat.completions.create(
        model="Ticket triage/production", messages=QUESTION, user="u" * 200
    )
    assert request_log_flush(timeout=30)
    assert RequestLog.objects.get(request_id=answer.id).caller_user == "u" * 200
    assert request_log_dropped_count() == 0


def test_an_application_key_opens_nothing_outside_v1(project: Project, key: str) -> None:
    """The key is for the gateway: the API and the pages (the request log included) do not
    take it."""
    stored_request(project, "req_stored")
    caller = DjangoClient()
    bearer = {"Authorization": f"Bearer {key}"}
    api = caller.get(f"/api/projects/{project.pk}/app-keys/", headers=bearer)
    assert api.status_code in (401, 403)
    assert "req_stored" not in api.content.decode()
    page = caller.get(f"/projects/{project.pk}/requests/", headers=bearer)
    assert page.status_code == 302 and page["Location"].startswith("/login/")
